# SPDX-License-Identifier: Apache-2.0
"""
Sampling graphs for ``R`` runs trained in one step.

The data plate of a group holds the ``R * N`` rows of its runs, run after run. The graphs below
are block diagonal: a row is only ever paired with a row of its own run, drawn as
:class:`~pyro_probmix.graphs.FullGraph` or :class:`~pyro_probmix.graphs.KNNGraph` would draw it
within that run, from that run's generator (:class:`~pyro_probmix.experiments.streams.RunStreams`),
so one run draws the same partners alone (``R = 1``) as in any group. They subclass the
library's public :class:`~pyro_probmix.graphs.Graph`.
"""
import torch

from pyro_probmix.graphs import Graph, KNNGraph

from .streams import RunStreams

__all__ = ["BlockFullGraph", "BlockKNNGraph", "make_graph"]


class BlockFullGraph(Graph):
    """:class:`~pyro_probmix.graphs.FullGraph` within each of ``runs`` consecutive blocks of ``rows`` rows.

    >>> graph = BlockFullGraph(RunStreams([0, 1], rows=3))
    >>> partners = graph.sample(torch.arange(6), num_rows=6)
    >>> (partners // 3).tolist(), bool((partners != torch.arange(6)).all())  # own block, never itself
    ([0, 0, 0, 1, 1, 1], True)
    """

    check_partners = False  # valid by construction

    def __init__(self, streams):
        super().__init__()
        if streams.rows < 2:
            raise ValueError(f"a block of {streams.rows} row cannot be paired")
        self.streams = streams
        self.runs, self.rows = streams.runs, streams.rows
        self.num_nodes = self.runs * self.rows

    def _sample(self, anchors, num_rows):
        block, local = anchors // self.rows, anchors % self.rows
        offset = self.streams.randint(1, self.rows, anchors).to(anchors.device)
        return block * self.rows + (local + offset) % self.rows

    def __repr__(self):
        return f"BlockFullGraph(runs={self.runs}, rows={self.rows})"


class BlockKNNGraph(Graph):
    """:class:`~pyro_probmix.graphs.KNNGraph` (``k`` nearest neighbours in standardised feature
    space) within each block: ``features`` has shape ``(R, N, ...)``, one block per run; partners
    drawn from ``streams``.

    >>> features = torch.tensor([[0.0, 1.0, 5.0], [0.0, 2.0, 3.0]]).unsqueeze(-1)  # R = 2, N = 3
    >>> graph = BlockKNNGraph(features, RunStreams([0, 1], rows=3), k=1)
    >>> graph
    BlockKNNGraph(runs=2, rows=3, k=1)
    >>> graph.neighbors.flatten().tolist()  # rows of run 1 are 3, 4, 5
    [1, 0, 1, 4, 5, 4]
    >>> graph.sample(torch.tensor([2, 3]), num_rows=6).tolist()
    [1, 4]
    """

    check_partners = False  # valid by construction

    def __init__(self, features, streams, k=5):
        super().__init__()
        runs, rows = features.shape[:2]
        tables = [KNNGraph(features[r].reshape(rows, -1), k=k).neighbors + r * rows for r in range(runs)]
        self.neighbors = torch.cat(tables)
        self.k, self.runs, self.rows, self.streams = k, runs, rows, streams
        self.num_nodes = runs * rows
        self._set_tables(self.neighbors)

    def _sample(self, anchors, num_rows):
        (neighbors,) = self._tables_on(anchors.device)
        column = self.streams.randint(0, self.k, anchors).to(anchors.device)
        return neighbors[anchors, column]

    def __repr__(self):
        return f"BlockKNNGraph(runs={self.runs}, rows={self.rows}, k={self.k})"


def make_graph(method, x_train, streams):
    """The sampling graph of ``method`` for training inputs ``x_train`` of shape ``(R, N, ...)``,
    drawing from ``streams`` (a :class:`~pyro_probmix.experiments.streams.RunStreams`): the k-NN
    graph of the inputs (LocK methods) or the full graph, within each run.

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> x = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(0))
    >>> make_graph(resolve_method("ProbMix"), x, RunStreams([0, 1], rows=8))
    BlockFullGraph(runs=2, rows=8)
    >>> make_graph(resolve_method("LocKProbMix", k=2), x, RunStreams([0, 1], rows=8))
    BlockKNNGraph(runs=2, rows=8, k=2)
    """
    rows = x_train.shape[1]
    if method.spec.local:
        if rows <= method.k:
            raise ValueError(f"k={method.k} neighbours need more than {rows} training rows")
        return BlockKNNGraph(x_train, streams, k=method.k)
    return BlockFullGraph(streams)
