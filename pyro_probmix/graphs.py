# SPDX-License-Identifier: Apache-2.0
"""
Sampling graphs (§5): for each anchor row ``i`` a graph draws the row ``j`` it is mixed with.

The :func:`~pyro_probmix.probmix` handler calls ``graph.sample(anchors, num_rows)`` once
per step. Sampling is vectorised and never synchronises with the device: graphs over a
training set precompute their tables once, copy them to a new device on first use and cache
them there. Randomness comes only from torch's global RNG on the anchors' device, so
``pyro.set_rng_seed`` makes runs repeatable.

* :class:`FullGraph` - uniform over the other rows of any batch (ProbMix).
* :class:`KNNGraph` - uniform over the k nearest neighbours in feature space (LocK-ProbMix).
* :class:`LabelKernelGraph` - weights ``exp(-||y_i - y_j||^2 / 2h^2)`` (C-Mixup).
* :class:`WeightedGraph` - any weighted directed edge list.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from pyro_probmix.knn import CHUNK_ENTRIES, EXACT_MAX_ROWS, exact_neighbors, hnsw_neighbors

__all__ = ["Graph", "FullGraph", "KNNGraph", "LabelKernelGraph", "WeightedGraph"]

# LabelKernelGraph keeps an edge while its weight is at least this fraction of its row's maximum.


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_tensor(value):
    return torch.as_tensor(value) if isinstance(value, np.ndarray) else value


def _data_rows(name, value):
    """``value`` as a floating ``(N, d)`` tensor of ``N >= 2`` finite rows."""
    value = _as_tensor(value)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"{name} must be a floating tensor or numpy array (e.g. float32 or float64), got "
            f"{got}; convert integer data with .float()"
        )
    value = value.detach()  # the graph is a fixed table: no gradient flows through it
    if value.dim() == 1:
        value = value.unsqueeze(1)
    if value.dim() != 2 or value.shape[0] < 2 or value.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape (N,) or (N, d) with N >= 2 rows and d >= 1, got shape "
            f"{tuple(value.shape)}"
        )
    bad = ~torch.isfinite(value).all(1)
    num_bad = int(bad.sum())
    if num_bad:
        raise ValueError(
            f"{name} must be finite: {num_bad} of {value.shape[0]} rows hold NaN or inf, the "
            f"first is row {int(bad.nonzero()[0])}"
        )
    return value


class Graph:
    """
    Base class of sampling graphs: draws a partner row for each anchor row.

    Subclasses implement ``_sample(anchors, num_rows)``; :meth:`sample` checks its arguments
    first. Graphs with precomputed tables register them with ``_set_tables`` and read them with
    ``_tables_on(device)``, which copies them to a new device once and caches the copy.

    Attributes
    ----------
    num_nodes : int or None
        Number of training rows the graph is built over; ``None`` if it pairs the rows of any
        batch.

    Examples
    --------
    >>> graph = FullGraph()
    >>> partners = graph.sample(torch.arange(4), num_rows=4)
    >>> partners.shape, bool((partners != torch.arange(4)).all())
    (torch.Size([4]), True)
    """

    num_nodes = None

    def __init__(self) -> None:
        self._tables = {}  # device -> tuple of sampling tables on that device

    def sample(self, anchors: torch.Tensor, num_rows: int) -> torch.Tensor:
        """
        Draws one partner for each anchor.

        Parameters
        ----------
        anchors : torch.LongTensor
            Anchor row indices, shape ``(A,)``, in ``range(num_rows)``.
        num_rows : int
            Number of rows the indices refer to. Graphs over a training set accept only
            ``num_rows == num_nodes``.

        Returns
        -------
        torch.LongTensor
            Partner row indices, shaped and placed like ``anchors``.
        """
        if not isinstance(anchors, torch.Tensor) or anchors.dtype != torch.long:
            got = f"dtype {anchors.dtype}" if isinstance(anchors, torch.Tensor) else type(anchors).__name__
            raise ValueError(f"anchors must be a LongTensor of row indices, got {got}")
        if not _is_int(num_rows):
            raise ValueError(f"num_rows must be an int, got num_rows={num_rows!r}")
        if self.num_nodes is not None and num_rows != self.num_nodes:
            raise ValueError(
                f"{self!r} is built over the {self.num_nodes} training rows, so it cannot pair "
                f"rows of a plate of num_rows={num_rows}; it accepts only a plate over exactly "
                f"the N={self.num_nodes} training rows, e.g. pyro.plate('data', {self.num_nodes}) "
                f"or pyro.plate('data', {self.num_nodes}, subsample_size=B). FullGraph() pairs "
                f"rows of any batch."
            )
        partners = self._sample(anchors, num_rows)
        return _checked_partners(self, partners, anchors, num_rows) if self.check_partners else partners

    def _sample(self, anchors, num_rows):
        raise NotImplementedError

    #: whether :meth:`sample` checks the partners that ``_sample`` returns (dtype, shape, range):
    #: True for a subclass written outside the library, whose bad index (a -1 for "no
    #: neighbour", say) would otherwise select another row silently; the library's own graphs
    #: return valid partners by construction and skip the check
    check_partners = True

    #: rounds of redrawing in the default :meth:`sample_among`
    among_tries = 16

    def sample_among(self, anchors, num_rows, allowed):
        """
        Draws one partner for each anchor from the graph restricted to the nodes with
        ``allowed`` (bool, one per node), i.e. the graph's distribution conditioned on an
        allowed partner; an anchor with no allowed partner gets itself.

        The default draws once and redraws the anchors whose partner is not allowed up to
        ``among_tries`` times, and then gives the remaining ones themselves: an anchor whose
        allowed partners hold mass ``q`` of its edges gets itself with probability
        ``(1 - q) ** (among_tries + 1)``. Subclasses that
        can sample the restriction exactly override it (:class:`FullGraph`, :class:`KNNGraph`).

        >>> graph = FullGraph()
        >>> graph.sample_among(torch.arange(4), 4, torch.tensor([True, True, False, False])).tolist()[:2]
        [1, 0]
        """
        _check_allowed(allowed, num_rows)
        partners = self.sample(anchors, num_rows)
        for _ in range(self.among_tries):
            rejected = (~allowed[partners]).nonzero().squeeze(-1)
            if not len(rejected):
                return partners
            partners[rejected] = self.sample(anchors[rejected], num_rows)
        rejected = ~allowed[partners]
        return torch.where(rejected, anchors, partners)

    def _set_tables(self, *tables):
        self._tables = {tables[0].device: tables}

    def _tables_on(self, device):
        if device not in self._tables:
            built = next(iter(self._tables.values()))
            self._tables[device] = tuple(table.to(device) for table in built)
        return self._tables[device]

    def __repr__(self):
        return f"{type(self).__name__}(num_nodes={self.num_nodes})"


def _checked_partners(graph, partners, anchors, num_rows):
    """The partners a user's graph returned, as a LongTensor, after checking them."""
    if not (isinstance(partners, torch.Tensor) and not partners.is_floating_point()
            and not partners.is_complex() and partners.dtype != torch.bool):
        got = f"dtype {partners.dtype}" if isinstance(partners, torch.Tensor) else type(partners).__name__
        raise ValueError(f"{graph!r}: _sample must return an integer tensor of partner rows, got {got}")
    if partners.shape != anchors.shape:
        raise ValueError(
            f"{graph!r}: _sample returned partners of shape {tuple(partners.shape)} for anchors of "
            f"shape {tuple(anchors.shape)}: one partner per anchor"
        )
    if partners.numel() and not (0 <= int(partners.min()) and int(partners.max()) < num_rows):
        bad = (partners < 0) | (partners >= num_rows)
        raise ValueError(
            f"{graph!r}: _sample returned partner {int(partners[bad][0])} (of anchor "
            f"{int(anchors[bad][0])}), outside range(num_rows={num_rows}); an anchor with no "
            f"partner can be paired with itself"
        )
    return partners.long()


def _check_allowed(allowed, num_rows):
    if not (isinstance(allowed, torch.Tensor) and allowed.dtype == torch.bool and allowed.shape == (num_rows,)):
        got = f"dtype {allowed.dtype} and shape {tuple(allowed.shape)}" if isinstance(allowed, torch.Tensor) else type(allowed).__name__
        raise ValueError(f"allowed must be a bool tensor of shape (num_rows,)=({num_rows},), got {got}")


class FullGraph(Graph):
    """
    The fully connected graph of §5: the partner of row ``i`` is uniform over the other rows
    of the batch, ``range(num_rows)`` minus ``i``.

    Parameters
    ----------
    self_loops : bool
        If True, the partner is uniform over all ``num_rows`` rows including ``i`` (the paper's
        ``n**2`` edges of weight ``1 / n**2``).

    Examples
    --------
    >>> graph = FullGraph(self_loops=True)
    >>> graph
    FullGraph(self_loops=True)
    >>> graph.sample(torch.zeros(3, dtype=torch.long), num_rows=1).tolist()
    [0, 0, 0]
    """

    check_partners = False  # valid by construction

    def __init__(self, self_loops: bool = False) -> None:
        super().__init__()
        if not isinstance(self_loops, bool):
            raise ValueError(f"self_loops must be a bool, got self_loops={self_loops!r}")
        self.self_loops = self_loops

    def _sample(self, anchors, num_rows):
        fewest = 1 if self.self_loops else 2
        if num_rows < fewest:
            raise ValueError(
                f"{self!r} needs num_rows >= {fewest}, got num_rows={num_rows}: a plate of "
                + ("no rows cannot be paired" if num_rows < 1 else "one row cannot be paired with "
                   "another row (FullGraph(self_loops=True) pairs it with itself)")
            )
        shape, device = anchors.shape, anchors.device
        if self.self_loops:
            return torch.randint(num_rows, shape, device=device)
        # a uniform offset in 1..n-1 modulo n is uniform over the n - 1 rows other than the anchor
        return (anchors + torch.randint(1, num_rows, shape, device=device)) % num_rows

    def sample_among(self, anchors, num_rows, allowed):
        self.sample(anchors[:0], num_rows)  # checks the arguments
        _check_allowed(allowed, num_rows)
        candidates = allowed.nonzero().squeeze(-1)
        num_candidates = len(candidates)
        if num_candidates == 0:
            return anchors.clone()
        # uniform over the allowed rows other than the anchor: draw among n - 1 of them (n if the
        # anchor is not allowed, or with self-loops) and skip the anchor's own position
        own = torch.searchsorted(candidates, anchors)
        is_candidate = allowed[anchors] & (own < num_candidates)
        excluded = is_candidate & (not self.self_loops)
        choices = num_candidates - excluded.long()
        u = torch.rand(anchors.shape, device=anchors.device)
        pick = (u * choices).long().clamp_max_(choices - 1).clamp_min_(0)
        pick = pick + (excluded & (pick >= own)).long()
        partners = candidates[pick.clamp_max(num_candidates - 1)]
        return torch.where(choices > 0, partners, anchors)

    def __repr__(self):
        return f"FullGraph(self_loops={self.self_loops})"


class KNNGraph(Graph):
    """
    The nearest-neighbours graph of §5: the partner of row ``i`` is uniform over the ``k``
    nearest neighbours of row ``i`` among all training rows (never ``i`` itself).

    The neighbour table is built once, from Euclidean distances between standardised rows,
    and sampling a partner is one lookup per anchor (``O(batch)``). Up to
    :data:`~pyro_probmix.knn.EXACT_MAX_ROWS` = 50,000 rows the table is exact, built on the
    features' device with distances in float64 (float32 ranks close neighbours by rounding
    noise), in chunks of rows so that peak memory stays bounded (time is ``O(N**2 d)``). Above, it comes from an approximate FAISS HNSW index (an optional
    extra: ``pip install faiss-cpu``) whose search effort is raised until the recall
    on sampled rows reaches ``recall_target``, and whose recall is then measured against exact
    search on ``probes`` other rows (:func:`~pyro_probmix.knn.hnsw_neighbors`): 10**6 x 8 rows
    took about 90 s of CPU time on a 2-core machine (``benchmarks/README.md``). Rows that duplicate row ``i`` are at distance 0 and are valid
    neighbours; ties at the k-th distance are broken arbitrarily.

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray
        Floating training features of shape ``(N, d)``, or ``(N,)`` for one feature; finite,
        ``N >= 2``.
    k : int
        Number of neighbours, ``1 <= k < N``. The paper uses 5.
    standardize : bool
        Scale each column by its standard deviation before measuring distances, so that no
        feature dominates by its units. A column of zero variance (all values equal) is left
        unscaled: it adds no distance.
    chunk_size : int, optional
        Rows per chunk of the exact distance computation; by default about ``2**24 / N`` so
        that one chunk holds about ``2**24`` distances (128 MiB).
    method : str
        ``"auto"`` (exact up to 50,000 rows, ``"hnsw"`` above), ``"exact"`` or ``"hnsw"``.
    recall_target : float
        Recall@k that the approximate search is calibrated to reach, in ``(0, 1]``.
    probes : int
        Number of rows on which the recall of an approximate table is measured.

    Attributes
    ----------
    neighbors : torch.LongTensor
        ``(N, k)`` neighbour indices, nearest first.
    method : str
        ``"exact"`` or ``"hnsw"``: how the table was built.
    recall : float
        Recall@k of the table: 1.0 for exact search, else measured on :attr:`probe_rows`.
    recall_probes : int
        Number of rows the recall was measured on (0 for exact search: nothing was sampled).
    probe_rows : torch.LongTensor or None
        Those rows; ``None`` for exact search.
    ef_search : int or None
        The HNSW search effort the calibration chose; ``None`` for exact search.

    Examples
    --------
    >>> graph = KNNGraph(torch.tensor([0.0, 1.0, 3.0, 7.0]), k=1)
    >>> graph.neighbors.flatten().tolist()
    [1, 0, 1, 2]
    >>> graph.sample(torch.tensor([3, 0]), num_rows=4).tolist()
    [2, 1]
    >>> graph.method, graph.recall, graph.recall_probes
    ('exact', 1.0, 0)
    """

    check_partners = False  # valid by construction

    def __init__(
        self,
        features: torch.Tensor,
        k: int = 5,
        standardize: bool = True,
        chunk_size: int | None = None,
        method: str = "auto",
        recall_target: float = 0.99,
        probes: int = 1000,
    ) -> None:
        super().__init__()
        x = _data_rows("features", features)
        n = x.shape[0]
        if not (_is_int(k) and 1 <= k < n):
            raise ValueError(f"k must be an int with 1 <= k < N={n} (the number of feature rows), got k={k!r}")
        if not isinstance(standardize, bool):
            raise ValueError(f"standardize must be a bool, got standardize={standardize!r}")
        if chunk_size is None:
            chunk_size = max(1, CHUNK_ENTRIES // n)
        elif not (_is_int(chunk_size) and chunk_size >= 1):
            raise ValueError(f"chunk_size must be None or an int >= 1, got chunk_size={chunk_size!r}")
        if method not in ("auto", "exact", "hnsw"):
            raise ValueError(f"method must be 'auto', 'exact' or 'hnsw', got method={method!r}")
        if not (_is_real(recall_target) and 0 < recall_target <= 1):
            raise ValueError(f"recall_target must be a number in (0, 1], got recall_target={recall_target!r}")
        if not (_is_int(probes) and probes >= 1):
            raise ValueError(f"probes must be an int >= 1, got probes={probes!r}")

        # Distances do not change under translation; centring keeps the expansion
        # ||x_j||^2 - 2 q . x_j accurate when the data sit far from the origin.
        x = x - x.mean(0)
        if standardize:
            # Zero variance is tested exactly: the computed std of a constant column is a
            # rounding residue (e.g. 1e-8), which dividing by would blow up.
            constant = x.amax(0) == x.amin(0)
            x = x / torch.where(constant, 1.0, x.std(0, correction=0))
        requested = method
        if method == "auto":
            method = "exact" if n <= EXACT_MAX_ROWS else "hnsw"
        if method == "exact":
            self.neighbors = exact_neighbors(x, k, chunk_size=chunk_size)
            self.recall, self.probe_rows, self.ef_search = 1.0, None, None
        else:
            reason = (
                "KNNGraph(method='hnsw')" if requested == "hnsw" else
                f"KNNGraph over N={n} > {EXACT_MAX_ROWS} rows (approximate search; method='exact' "
                f"searches exactly in O(N**2 d) time, ~25 min at N=10**6)"
            )
            self.neighbors, report = hnsw_neighbors(x, k, recall_target, probes, reason=reason)
            self.recall, self.probe_rows, self.ef_search = report["recall"], report["probe_rows"], report["ef_search"]
        self.method = method
        self.recall_probes = 0 if self.probe_rows is None else len(self.probe_rows)
        self.k = k
        self.num_nodes = n
        self._set_tables(self.neighbors)

    def _sample(self, anchors, num_rows):
        (neighbors,) = self._tables_on(anchors.device)
        column = torch.randint(self.k, anchors.shape, device=anchors.device)
        return neighbors[anchors, column]

    def sample_among(self, anchors, num_rows, allowed):
        self.sample(anchors[:0], num_rows)  # checks the arguments
        _check_allowed(allowed, num_rows)
        (neighbors,) = self._tables_on(anchors.device)
        candidates = neighbors[anchors]
        weights = allowed[candidates].to(torch.get_default_dtype())
        none_allowed = weights.sum(-1) == 0
        weights[none_allowed] = 1.0
        column = torch.multinomial(weights, 1).squeeze(-1)
        partners = candidates.gather(-1, column[:, None]).squeeze(-1)
        return torch.where(none_allowed, anchors, partners)

    def __repr__(self):
        if self.method == "exact":
            return f"KNNGraph(num_nodes={self.num_nodes}, k={self.k})"
        return f"KNNGraph(num_nodes={self.num_nodes}, k={self.k}, method='hnsw', recall={self.recall:.4f})"


# the weighted graphs build on Graph and the helpers above
from .weighted_graphs import LabelKernelGraph, WeightedGraph  # noqa: E402
