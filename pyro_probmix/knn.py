# SPDX-License-Identifier: Apache-2.0
"""
Neighbour search behind :class:`~pyro_probmix.graphs.KNNGraph`: exact, or approximate with
FAISS and a measured recall.

* :func:`exact_neighbors` - chunked brute force, ``O(N**2 d)`` time, bounded memory.
* :func:`hnsw_neighbors` - a FAISS HNSW index, ``O(N log N)``, whose search effort is raised
  until the recall on a sample of rows reaches a target, then measured on other sampled rows.
* :func:`neighbor_recall` - recall@k of a neighbour table against exact neighbours.

FAISS is an optional extra (``pip install faiss-cpu``, or ``pip install ".[faiss]"`` in a checkout); only
:func:`hnsw_neighbors` imports it.

Examples
--------
>>> x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
>>> exact_neighbors(x, k=2).tolist()
[[1, 2], [0, 2], [1, 0], [2, 1]]
"""
import math
import warnings

import numpy as np
import torch

__all__ = ["EXACT_MAX_ROWS", "exact_neighbors", "hnsw_neighbors", "neighbor_recall"]

# Entries of one chunk of the N x N distance matrix, whatever N is: 2**24 entries are 128 MiB
# in float64, so peak memory stays bounded for N up to 10**6 and more.
CHUNK_ENTRIES = 2**24
# KNNGraph(method="auto") is exact up to this many rows (every UCI set of the paper is below
# it) and approximate above: exact search is O(N**2 d), 27.5 s at 10**5 x 8 rows here against
# 6.1 s for HNSW, and ~25 min at 10**6 (benchmarks/README.md).
EXACT_MAX_ROWS = 50_000
# HNSW graph degree and construction effort (FAISS's usual M; the build is about two thirds of
# the time at 10**6 rows, benchmarks/README.md); the search effort efSearch is calibrated per
# data set instead.
_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 20
_EF_SEARCH_LADDER = (8, 12, 16, 24, 32, 48, 64, 128)
_CALIBRATION_ROWS = 256
_PROBE_SEED = 0  # probe rows come from their own generator: building a graph leaves torch's RNG alone

_FAISS_HINT = 'pip install faiss-cpu (or, in a checkout of pyro-probmix, pip install ".[faiss]")'


def excluding_self(block, rows):
    """Sets to inf the entries ``block[a, rows[a]]`` that pair a row with itself: a row is
    never its own neighbour, even where duplicates of it make the distance 0 (the duplicates
    stay valid neighbours).

    >>> excluding_self(torch.zeros(2, 3), torch.tensor([2, 0])).tolist()
    [[0.0, 0.0, inf], [inf, 0.0, 0.0]]
    """
    block[torch.arange(block.shape[0], device=block.device), rows] = torch.inf
    return block


def exact_neighbors(x, k, rows=None, chunk_size=None):
    """
    The ``k`` nearest rows of ``x`` (squared Euclidean distance, never the row itself) of each
    row in ``rows``, nearest first; ties at the k-th distance are broken arbitrarily.

    Distances are computed on ``x``'s device in float64, a chunk of query rows at a time, as
    ``||x_j||^2 - 2 q . x_j`` (``||q||^2`` is constant along a row and ranks alike). In float32
    that form ranks neighbours closer than about ``sqrt(eps) * ||x||`` by rounding noise: 20,000
    rows of 1-D uniform data on [-4, 4] kept 91.8 % of their true 5 nearest neighbours
    (``tests/test_graphs.py``); float64 costs about 1.4 times the time here.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, d)`` floating rows.
    k : int
        Number of neighbours, ``1 <= k < N``.
    rows : torch.LongTensor, optional
        Query row indices; all rows by default.
    chunk_size : int, optional
        Query rows per chunk; by default about ``2**25 / N``.

    Returns
    -------
    torch.LongTensor
        ``(len(rows), k)`` neighbour indices.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    >>> exact_neighbors(x, k=1, rows=torch.tensor([3, 0])).tolist()
    [[2], [1]]
    """
    n = x.shape[0]
    num_queries = n if rows is None else len(rows)
    chunk_size = chunk_size or max(1, CHUNK_ENTRIES // n)
    x = x.double()
    sq_norms = x.square().sum(1)
    neighbors = torch.empty(num_queries, k, dtype=torch.long, device=x.device)
    # one buffer for all chunks: fresh chunk-sized allocations cost more than the arithmetic
    buffer = x.new_empty(min(chunk_size, num_queries), n)
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        index = torch.arange(start, stop, device=x.device) if rows is None else rows[start:stop]
        queries = x[start:stop] if rows is None else x[index]
        scores = torch.addmm(sq_norms, queries, x.T, alpha=-2, out=buffer[: stop - start])
        neighbors[start:stop] = excluding_self(scores, index).topk(k, largest=False).indices
    return neighbors


def neighbor_recall(x, rows, found, exact):
    """
    Recall@k of the neighbours ``found`` of ``rows`` against their ``exact`` neighbours: the
    fraction of found neighbours no farther (float64 distance) than the farthest exact one, so
    that a tie with an exact neighbour counts as found.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [1.0], [-1.0], [5.0]])
    >>> rows = torch.tensor([0, 1])
    >>> exact = exact_neighbors(x, k=1, rows=rows)  # row 0: 1 and 2 tie at distance 1
    >>> neighbor_recall(x, rows, torch.tensor([[2], [3]]), exact)
    0.5
    """
    x = x.double()
    queries = x[rows].unsqueeze(1)
    found_dist = (x[found] - queries).square().sum(-1)
    exact_dist = (x[exact] - queries).square().sum(-1)
    return float((found_dist <= exact_dist.amax(1, keepdim=True)).double().mean())


def _import_faiss(reason):
    try:
        import faiss
    except ImportError as error:
        raise ImportError(f"{reason} needs FAISS, an optional extra: {_FAISS_HINT}") from error
    return faiss


def _search(index, data, rows, k):
    """HNSW search of ``k + 1`` neighbours of ``data[rows]`` less the query row itself
    (wherever FAISS ranks it among duplicates); ``-1`` where FAISS found too few."""
    _, found = index.search(data[rows], k + 1)
    not_self = found != rows[:, None]
    # the first k results that are not the query row, in FAISS's order (nearest first)
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(found, order, 1)


def _searched(index, data, x, rows, k):
    """:func:`_search` of the rows ``rows`` (a LongTensor), as a LongTensor on the CPU, with
    the rows for which FAISS found fewer than ``k`` neighbours searched exactly."""
    found = torch.from_numpy(_search(index, data, rows.numpy(), k))
    short = (found < 0).any(1).nonzero().flatten()
    if len(short):
        found[short] = exact_neighbors(x, k, rows[short].to(x.device)).cpu()
    return found


def hnsw_neighbors(x, k, recall_target=0.99, probes=1000, reason="approximate neighbour search"):
    """
    Approximate ``k`` nearest rows of every row of ``x`` from a FAISS ``IndexHNSWFlat``
    (M = 16, efConstruction = 20), and their recall.

    The search effort ``efSearch`` climbs 8, 12, 16, 24, ..., 128 until the recall on 256 random
    calibration rows reaches ``recall_target`` plus two standard errors of that estimate (0.9956
    for 0.99, k = 5; a warning says so if even 128 does not); the
    recall returned is then measured on ``probes`` other random rows against exact search.
    Rows for which FAISS returns fewer than ``k`` neighbours are searched exactly.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, d)`` floating rows, ``N >= 4``; searched in float32 on the CPU.
    k : int
        Number of neighbours, ``1 <= k < N``.
    recall_target : float
        Recall@k the calibration aims at.
    probes : int
        Number of rows the reported recall is measured on (at most ``N`` less the calibration
        rows).
    reason : str
        What needs FAISS, for the ImportError raised when it is missing.

    Returns
    -------
    neighbors : torch.LongTensor
        ``(N, k)`` neighbour indices on ``x``'s device.
    report : dict
        ``recall``, ``probe_rows`` (the rows it was measured on) and ``ef_search``.

    Examples
    --------
    >>> import pytest; faiss = pytest.importorskip("faiss")
    >>> x = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0))
    >>> neighbors, report = hnsw_neighbors(x, k=5, probes=500)
    >>> neighbors.shape, report["recall"] >= 0.99, len(report["probe_rows"])
    (torch.Size([2000, 5]), True, 500)
    """
    faiss = _import_faiss(reason)
    n, d = x.shape
    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    index = faiss.IndexHNSWFlat(d, _HNSW_M)
    index.hnsw.efConstruction = _HNSW_EF_CONSTRUCTION
    index.add(data)

    sampled = torch.randperm(n, generator=torch.Generator().manual_seed(_PROBE_SEED))
    calibration = sampled[: min(_CALIBRATION_ROWS, n // 2)]
    probe_rows = sampled[len(calibration) : len(calibration) + probes]
    calibration_exact = exact_neighbors(x, k, calibration.to(x.device)).cpu()
    # aim two standard errors of the calibration estimate above the target, so that the recall
    # measured on the other probe rows reaches the target too
    aim = min(recall_target + 2 * math.sqrt(recall_target * (1 - recall_target) / (k * len(calibration))), 1.0)
    for ef_search in _EF_SEARCH_LADDER:
        index.hnsw.efSearch = ef_search
        found = _searched(index, data, x, calibration, k)
        reached = neighbor_recall(x.cpu(), calibration, found, calibration_exact)
        if reached >= aim:
            break
    else:
        warnings.warn(
            f"HNSW search reached recall@{k} {reached:.4f} < {aim:.4f} (recall_target={recall_target} "
            f"plus two standard errors) on "
            f"{len(calibration)} rows at its largest efSearch={ef_search}: these {d}-dimensional "
            f"rows are hard to search approximately; method='exact' finds exact neighbours in "
            f"O(N**2 d) time",
            UserWarning,
            stacklevel=3,
        )
    neighbors = _searched(index, data, x, torch.arange(n), k).to(x.device)
    probe_rows = probe_rows.to(x.device)
    recall = neighbor_recall(x, probe_rows, neighbors[probe_rows], exact_neighbors(x, k, probe_rows))
    return neighbors, {"recall": recall, "probe_rows": probe_rows, "ef_search": ef_search}
