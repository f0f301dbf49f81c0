# SPDX-License-Identifier: Apache-2.0
"""
Paired statistics of two methods over the same units (splits or seeds): wins out of ``n`` and
the two-sided Wilcoxon signed-rank test, in NumPy (SciPy is not a dependency of the library; the
tests check these numbers against :func:`scipy.stats.wilcoxon`).

The test drops zero differences (Wilcoxon's treatment, SciPy's default ``zero_method="wilcox"``)
and ranks the absolute differences of the other ``n`` units, ties taking their average rank. For
``n <= EXACT_MAX_N`` the p-value comes from the exact null distribution of the positive rank sum
given these ranks: each rank counted with probability 1/2 (with ties this is the exact
permutation distribution of the signs); beyond, from the normal approximation with the tie
correction of the variance, ``n (n + 1) (2n + 1) / 24 - sum(t^3 - t) / 48``, and no continuity
correction (SciPy's defaults).
"""
import math
from typing import NamedTuple

import numpy as np

__all__ = ["EXACT_MAX_N", "WilcoxonResult", "PairedComparison", "wilcoxon_signed_rank", "paired_comparison"]

#: the largest number of non-zero differences whose p-value is computed exactly
EXACT_MAX_N = 50


class WilcoxonResult(NamedTuple):
    """``statistic``: the smaller of the positive and negative rank sums (SciPy's two-sided
    statistic); ``pvalue`` (two-sided); ``n``: non-zero differences; ``method``: ``"exact"`` or
    ``"approx"``."""

    statistic: float
    pvalue: float
    n: int
    method: str


class PairedComparison(NamedTuple):
    """A method against a reference on ``n`` paired units: ``wins``, ``losses`` and ``ties``
    (by the metric's direction), and the Wilcoxon p-value of the differences."""

    wins: int
    losses: int
    ties: int
    n: int
    pvalue: float


def _average_ranks(a):
    """Ranks 1..n of ``a`` (ties: their average rank) and the sizes of the tie groups."""
    values, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based position of each group's first element
    return (first + (counts + 1) / 2)[inverse.reshape(-1)], counts


def _differences(x, y):
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
    for name, a in (("x", x), ("y", y)):
        if np.isnan(a).any():
            raise ValueError(f"paired sample {name} holds NaN; a paired test needs numbers (inf is accepted)")
    with np.errstate(invalid="ignore"):
        d = x - y
    d[x == y] = 0.0  # inf against inf: a tie, not inf - inf = nan
    return d


def _exact_pvalue(ranks, r_plus):
    doubled = np.rint(2 * ranks).astype(np.int64)  # average ranks are multiples of 1/2
    counts = np.zeros(int(doubled.sum()) + 1)
    counts[0] = 1.0
    for r in doubled:  # subset sums: each rank in the positive sum or not (exact in float64: n <= 50)
        counts[r:] = counts[r:] + counts[:-r].copy()
    total = counts.sum()
    observed = int(round(2 * r_plus))
    below, above = counts[: observed + 1].sum() / total, counts[observed:].sum() / total
    return float(min(1.0, 2.0 * min(below, above)))


def _approx_pvalue(n, r_plus, tie_sizes):
    mean = n * (n + 1) / 4
    var = (n * (n + 1) * (2 * n + 1) - np.sum(tie_sizes**3 - tie_sizes) / 2) / 24
    z = (r_plus - mean) / math.sqrt(var)
    return float(math.erfc(abs(z) / math.sqrt(2)))


def wilcoxon_signed_rank(x, y, method="auto"):
    """Two-sided Wilcoxon signed-rank test of the paired samples ``x`` and ``y``.

    :param method: ``"auto"`` (exact for at most :data:`EXACT_MAX_N` non-zero differences, else
        the normal approximation), ``"exact"`` or ``"approx"``.

    Five differences, all positive: the exact p is ``2 / 2**5``.

    >>> wilcoxon_signed_rank([1.5, 2.5, 3.5, 4.5, 5.5], [1, 2, 3, 4, 5])
    WilcoxonResult(statistic=0.0, pvalue=0.0625, n=5, method='exact')
    >>> wilcoxon_signed_rank([1, 2, 3], [1, 2, 3]).pvalue  # no difference: no evidence
    1.0
    """
    if method not in ("auto", "exact", "approx"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approx', got {method!r}")
    d = _differences(x, y)
    d = d[d != 0]
    n = int(d.size)
    ranks, tie_sizes = _average_ranks(np.abs(d))
    r_plus, r_minus = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_N else "approx"
    if n == 0:
        p = 1.0
    elif method == "exact":
        p = _exact_pvalue(ranks, r_plus)
    else:
        p = _approx_pvalue(n, r_plus, tie_sizes)
    return WilcoxonResult(min(r_plus, r_minus), p, n, method)


def paired_comparison(values, reference, better="min"):
    """Wins, losses and ties of ``values`` against ``reference`` (paired, same units) and the
    Wilcoxon p; ``better`` is ``"min"`` (lower is better: NLL) or ``"max"`` (accuracy).

    >>> paired_comparison([0.9, 1.1, 0.7, 2.0], [1.0, 1.2, 0.8, 2.0])
    PairedComparison(wins=3, losses=0, ties=1, n=4, pvalue=0.25)
    """
    if better not in ("min", "max"):
        raise ValueError(f"better must be 'min' or 'max', got {better!r}")
    d = _differences(values, reference)
    sign = -1.0 if better == "min" else 1.0
    wins, losses = int(np.sum(sign * d > 0)), int(np.sum(sign * d < 0))
    return PairedComparison(wins, losses, int(d.size) - wins - losses, int(d.size),
                            wilcoxon_signed_rank(values, reference).pvalue)
