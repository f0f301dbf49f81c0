# SPDX-License-Identifier: Apache-2.0
"""
Weighted sampling graphs: :class:`WeightedGraph` (explicit weighted edges) and
:class:`LabelKernelGraph` (edges weighted by a kernel on the labels). Both are importable from
:mod:`pyro_probmix.graphs`.
"""
from __future__ import annotations

import math

import torch

from .graphs import Graph, _as_tensor, _data_rows, _is_int, _is_real
from .knn import CHUNK_ENTRIES, excluding_self

__all__ = ["LabelKernelGraph", "WeightedGraph"]

_KERNEL_CUTOFF = 1e-12


def _kernel_edges(y, bandwidth, max_edges):
    """The edges ``(i, j)``, ``j != i``, sorted by ``i``, and the weights that
    :class:`LabelKernelGraph` keeps for float64 labels ``y`` of shape ``(N, d)``."""
    n, d = y.shape
    two_h2 = 2.0 * bandwidth**2
    # weight / row maximum = exp(-excess / 2h^2) >= cutoff  <=>  excess <= 2h^2 ln(1 / cutoff),
    # where excess is the squared distance less the row's smallest; the row factor cancels once
    # weights are normalised, and weights relative to it cannot underflow.
    largest_excess = two_h2 * math.log(1 / _KERNEL_CUTOFF)
    chunk_size = max(1, CHUNK_ENTRIES // n)
    # one buffer for all chunks: fresh chunk-sized allocations cost more than the arithmetic
    buffer = y.new_empty(min(chunk_size, n), n)
    sources, targets, weights = [], [], []
    kept = 0
    for start in range(0, n, chunk_size):
        rows = y[start : start + chunk_size]
        # exact differences, a label column at a time, not the |a|^2 + |b|^2 - 2ab expansion:
        # an error in a squared distance is an error in the exponent of its weight
        excess = torch.sub(rows[:, :1], y[:, 0], out=buffer[: len(rows)]).square_()
        for col in range(1, d):
            excess.add_((rows[:, col : col + 1] - y[:, col]).square_())
        excluding_self(excess, torch.arange(start, start + len(rows), device=y.device))
        excess.sub_(excess.amin(1, keepdim=True))
        i, j = (excess <= largest_excess).nonzero(as_tuple=True)
        kept += len(i)
        if kept > max_edges:
            raise ValueError(
                f"bandwidth={bandwidth!r} keeps more than max_edges={max_edges} edges ({kept} in "
                f"the first {start + len(rows)} of {n} rows): use a smaller bandwidth, or raise "
                f"max_edges if the memory allows"
            )
        sources.append(i + start)
        targets.append(j)
        weights.append(torch.exp(-excess[i, j] / two_h2))
    return torch.stack([torch.cat(sources), torch.cat(targets)]), torch.cat(weights)


class WeightedGraph(Graph):
    """
    A graph of weighted directed edges ``(i, j)``: the partner of anchor ``i`` is drawn among
    the targets of its out-edges with probability proportional to their weights. Repeated
    edges add their weights; a self-loop ``(i, i)`` is allowed when it is given.

    Sampling is exact and vectorised: edges are sorted by source once, and a float64 array
    holds each row's normalised cumulative weights offset by the row index (row ``i`` spans
    ``(i, i + 1]``), so one ``searchsorted`` of ``anchor + u``, ``u ~ U(0, 1)``, finds every
    edge. Probabilities are resolved to about ``num_nodes * 2**-52``.

    Parameters
    ----------
    edges : torch.LongTensor or numpy.ndarray
        Integer tensor of shape ``(2, E)``: sources ``edges[0]`` and targets ``edges[1]``, in
        any order.
    weights : torch.Tensor or numpy.ndarray, optional
        Finite positive weights of shape ``(E,)``; all 1 by default.
    num_nodes : int, optional
        Number of training rows; by default the largest index + 1. Every node in
        ``range(num_nodes)`` needs at least one out-edge.

    Attributes
    ----------
    edges : torch.LongTensor
        ``(2, E)`` edges sorted by source (stably).
    weights : torch.DoubleTensor
        ``(E,)`` weights in the order of :attr:`edges`.

    Examples
    --------
    >>> edges = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]])
    >>> graph = WeightedGraph(edges, weights=torch.tensor([1.0, 3.0, 1.0, 1.0]))
    >>> graph
    WeightedGraph(num_nodes=3, num_edges=4)
    >>> graph.sample(torch.tensor([1, 2]), num_rows=3).tolist()
    [0, 0]
    """

    check_partners = False  # valid by construction

    def __init__(
        self, edges: torch.Tensor, weights: torch.Tensor | None = None, num_nodes: int | None = None
    ) -> None:
        super().__init__()
        edges = _as_tensor(edges)
        if not (
            isinstance(edges, torch.Tensor)
            and not (edges.is_floating_point() or edges.is_complex() or edges.dtype == torch.bool)
            and edges.dim() == 2
            and edges.shape[0] == 2
            and edges.shape[1] >= 1
        ):
            got = (
                f"dtype {edges.dtype} and shape {tuple(edges.shape)}"
                if isinstance(edges, torch.Tensor)
                else type(edges).__name__
            )
            raise ValueError(f"edges must be an integer tensor of shape (2, E) with E >= 1, got {got}")
        edges = edges.long()
        num_edges = edges.shape[1]
        if weights is None:
            weights = torch.ones(num_edges, dtype=torch.float64, device=edges.device)
        else:
            weights = _as_tensor(weights)
            if not (
                isinstance(weights, torch.Tensor)
                and not (weights.is_complex() or weights.dtype == torch.bool)
                and weights.shape == (num_edges,)
            ):
                got = (
                    f"dtype {weights.dtype} and shape {tuple(weights.shape)}"
                    if isinstance(weights, torch.Tensor)
                    else type(weights).__name__
                )
                raise ValueError(f"weights must be a real tensor of shape (E,)=({num_edges},), got {got}")
            weights = weights.to(device=edges.device, dtype=torch.float64)
            bad = ~(torch.isfinite(weights) & (weights > 0))
            if bool(bad.any()):
                first = int(bad.nonzero()[0])
                raise ValueError(
                    f"weights must be finite and > 0: {int(bad.sum())} of {num_edges} are not, "
                    f"the first is weights[{first}]={weights[first].item()}"
                )
        lowest, highest = int(edges.min()), int(edges.max())
        if lowest < 0:
            raise ValueError(f"edges must hold node indices >= 0, got {lowest}")
        if num_nodes is None:
            num_nodes = highest + 1
        elif not (_is_int(num_nodes) and num_nodes >= 1):
            raise ValueError(f"num_nodes must be None or an int >= 1, got num_nodes={num_nodes!r}")
        elif highest >= num_nodes:
            raise ValueError(
                f"edges must hold node indices in range(num_nodes={num_nodes}), got node {highest}"
            )

        if not bool((edges[0, 1:] >= edges[0, :-1]).all()):  # sorted input (LabelKernelGraph) skips the sort
            order = torch.argsort(edges[0], stable=True)
            edges, weights = edges[:, order], weights[order]
        sources, targets = edges
        degrees = torch.bincount(sources, minlength=num_nodes)
        lonely = (degrees == 0).nonzero().flatten()
        if len(lonely):
            listed = ", ".join(str(i) for i in lonely[:5].tolist()) + (", ..." if len(lonely) > 5 else "")
            raise ValueError(
                f"every node in range(num_nodes={num_nodes}) needs at least one out-edge (i, j) "
                f"to be drawn as an anchor i, but {len(lonely)} have none: {listed}"
            )
        last = degrees.cumsum(0) - 1  # position of each node's last out-edge
        # relative to each row's largest weight, so that no row's total overflows (two weights
        # of 1e308 sum to inf, which sent all of the row's probability to its last edge)
        row_max = torch.zeros(num_nodes, dtype=torch.float64, device=edges.device).scatter_reduce_(
            0, sources, weights, "amax", include_self=False)
        relative = weights / row_max[sources]
        totals = torch.zeros(num_nodes, dtype=torch.float64, device=edges.device).index_add_(0, sources, relative)
        running = torch.cumsum(relative / totals[sources], 0)
        # Each row's cumulative probabilities, taken from the global running sum: non-decreasing,
        # clamped to 1, and ending at exactly 1 so that row i spans (i, i + 1] with no gap.
        before = torch.cat([running.new_zeros(1), running[last[:-1]]])
        cumulative = running.sub_(before[sources]).clamp_(0, 1).add_(sources)
        cumulative[last] = torch.arange(1, num_nodes + 1, dtype=torch.float64, device=edges.device)

        self.edges = edges
        self.weights = weights
        self.num_nodes = num_nodes
        self._set_tables(cumulative, last, targets)

    @property
    def num_edges(self) -> int:
        return self.edges.shape[1]

    def _sample(self, anchors, num_rows):
        cumulative, last, targets = self._tables_on(anchors.device)
        u = torch.rand(anchors.shape, dtype=torch.float64, device=anchors.device)
        # first edge whose cumulative value exceeds anchor + u; where anchor + u rounds up to
        # anchor + 1 it would land in the next row, so clamp to the anchor's last edge
        edge = torch.searchsorted(cumulative, anchors + u, right=True)
        return targets[torch.minimum(edge, last[anchors])]

    def __repr__(self):
        return f"{type(self).__name__}(num_nodes={self.num_nodes}, num_edges={self.num_edges})"


class LabelKernelGraph(WeightedGraph):
    """
    C-Mixup's label-similarity graph: the partner of row ``i`` is ``j != i`` with probability
    proportional to ``exp(-||y_i - y_j||**2 / (2 h**2))``.

    Sampling is exact up to one truncation: row ``i`` keeps the ``j != i`` whose weight is at
    least ``1e-12`` times the largest weight over ``j != i``; lighter edges are dropped (their
    total probability is below ``1e-12 (N - 2)``). The kept edges are built once, in chunks
    of rows so that no dense ``N x N`` matrix is stored, with exact squared distances in
    float64 on the labels' device, then sampled as a :class:`WeightedGraph`.

    Parameters
    ----------
    labels : torch.Tensor or numpy.ndarray
        Floating training labels of shape ``(N,)`` or ``(N, d)``; finite, ``N >= 2``.
    bandwidth : float
        Kernel bandwidth ``h > 0``.
    max_edges : int
        Largest number of kept edges; a larger bandwidth keeps more edges, up to ``N (N - 1)``.

    Examples
    --------
    >>> graph = LabelKernelGraph(torch.tensor([0.0, 0.1, 5.0]), bandwidth=0.1)
    >>> graph.edges.tolist()
    [[0, 1, 2], [1, 0, 1]]
    >>> graph.sample(torch.tensor([2, 0]), num_rows=3).tolist()
    [1, 1]
    """

    def __init__(self, labels: torch.Tensor, bandwidth: float, *, max_edges: int = 5 * 10**7) -> None:
        y = _data_rows("labels", labels).to(torch.float64)
        if not (_is_real(bandwidth) and 0 < bandwidth < math.inf and 0 < 2.0 * float(bandwidth) * float(bandwidth) < math.inf):
            raise ValueError(
                f"bandwidth must be a finite number > 0 whose 2 h^2 is a finite positive float64, "
                f"got bandwidth={bandwidth!r}"
            )
        if not (_is_int(max_edges) and max_edges >= 1):
            raise ValueError(f"max_edges must be an int >= 1, got max_edges={max_edges!r}")
        super().__init__(*_kernel_edges(y, float(bandwidth), max_edges), num_nodes=len(y))
        self.bandwidth = float(bandwidth)

    def __repr__(self):
        return f"LabelKernelGraph(num_nodes={self.num_nodes}, bandwidth={self.bandwidth}, num_edges={self.num_edges})"
