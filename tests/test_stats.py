# SPDX-License-Identifier: Apache-2.0
"""Paired statistics against SciPy (a dev dependency only) and hand counts."""
import numpy as np
import pytest

from pyro_probmix.experiments.stats import EXACT_MAX_N, paired_comparison, wilcoxon_signed_rank

scipy_stats = pytest.importorskip("scipy.stats")


def _sample(n, seed, shift=0.3, rounding=None):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=n) + shift
    if rounding is not None:  # ties and zeros
        x, y = np.round(x, rounding), np.round(y, rounding)
    return x, y


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, EXACT_MAX_N])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_p_matches_scipy_without_ties(n, seed):
    x, y = _sample(n, seed)
    ours = wilcoxon_signed_rank(x, y)
    ref = scipy_stats.wilcoxon(x, y, method="exact")
    assert ours.method == "exact" and ours.n == n
    assert ours.statistic == ref.statistic and ours.pvalue == pytest.approx(ref.pvalue, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_p_with_ties_and_zeros_matches_scipys_permutation_test(seed):
    x, y = _sample(10, seed, rounding=0)  # values in {-2, ..., 2}: many ties and zeros
    ours = wilcoxon_signed_rank(x, y)
    ref = scipy_stats.wilcoxon(x, y)  # n <= 13 with ties: SciPy enumerates all sign flips
    assert ours.n == int(np.sum(x != y)) and ours.statistic == ref.statistic
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize("n, rounding", [(8, 1), (30, 1), (51, None), (200, 1), (200, None)])
@pytest.mark.parametrize("seed", [0, 3])
def test_normal_approximation_with_tie_and_zero_correction_matches_scipy(n, rounding, seed):
    x, y = _sample(n, seed, shift=0.2, rounding=rounding)
    method = "auto" if n > EXACT_MAX_N else "approx"
    ours = wilcoxon_signed_rank(x, y, method=method)
    ref = scipy_stats.wilcoxon(x, y, method="asymptotic")
    assert ours.method == "approx" and ours.statistic == ref.statistic
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


def test_hand_counts_and_bad_input():
    # d = (+1, -2, +3, +4): ranks 1..4, r_plus = 8, r_minus = 2; P(R+ <= 2) = 3/16 (sums 0, 1, 2)
    result = wilcoxon_signed_rank([2, 0, 6, 8], [1, 2, 3, 4])
    assert (result.statistic, result.pvalue, result.n) == (2.0, 0.375, 4)
    assert wilcoxon_signed_rank([np.inf, 1.0], [np.inf, 1.0]).pvalue == 1.0  # inf against inf is a tie
    assert paired_comparison([np.inf, 1.0, 2.0], [1.0, 1.0, 3.0]) == (1, 1, 1, 3, 1.0)
    assert paired_comparison([0.9, 0.8], [0.5, 0.9], better="max")[:3] == (1, 1, 0)
    with pytest.raises(ValueError, match="paired sample y holds NaN"):
        wilcoxon_signed_rank([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="equal lengths, got 2 and 3"):
        wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="method must be"):
        wilcoxon_signed_rank([1.0], [2.0], method="permutation")
