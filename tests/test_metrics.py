# SPDX-License-Identifier: Apache-2.0
"""
Metrics against closed forms, numerical integrals, hand-computed examples and sampling limits.
"""
import math
import re
from statistics import NormalDist

import pytest
import torch
from torch.distributions import Categorical, Dirichlet, Independent, Normal

from pyro_probmix.metrics import (
    accuracy,
    expected_calibration_error,
    gaussian_crps,
    gaussian_nll,
    interval_coverage,
    nll,
    pit,
    pit_histogram,
    reliability_bins,
    rmse,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

# the hand-computed top-label example: confidences 0.95, 0.85 (wrong), 0.75, 0.55 in 5 bins
TINY_PROBS = torch.tensor([[0.95, 0.05], [0.15, 0.85], [0.75, 0.25], [0.45, 0.55]])
TINY_Y = torch.tensor([0, 0, 0, 1])


def tensor(values):
    return torch.tensor(values, dtype=torch.float64)


def crps_by_quadrature(mu, sigma, y):
    """CRPS = ∫ (F(t) - 1[t >= y])² dt, split at y so each piece is smooth for the trapezoid rule."""
    lo, hi = min(mu - 12 * sigma, y), max(mu + 12 * sigma, y)
    below = torch.linspace(lo, y, 200_001, dtype=torch.float64)
    above = torch.linspace(y, hi, 200_001, dtype=torch.float64)
    cdf = 0.5 * torch.erfc(-(below - mu) / (sigma * math.sqrt(2)))
    survival = 0.5 * torch.erfc((above - mu) / (sigma * math.sqrt(2)))
    return (torch.trapezoid(cdf**2, below) + torch.trapezoid(survival**2, above)).item()


# ---------------------------------------------------------------- CRPS


def test_crps_standard_normal_at_its_mean():
    expected = 2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi)  # 2 phi(0) - 1/sqrt(pi)
    assert gaussian_crps(tensor([0.0]), 1.0, tensor([0.0])) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi), rel=1e-12)


@pytest.mark.parametrize(
    "mu, sigma, y", [(0.0, 1.0, 0.0), (0.0, 1.0, 2.5), (1.5, 0.3, 1.2), (-2.0, 4.0, 7.0)]
)
def test_crps_matches_numerical_integral(mu, sigma, y):
    closed = gaussian_crps(tensor([mu]), tensor([sigma]), tensor([y]))
    assert closed == pytest.approx(crps_by_quadrature(mu, sigma, y), rel=1e-8)


def test_crps_sums_outputs_averages_rows_and_degenerates_to_absolute_error():
    loc, y = tensor([[0.0, 1.0], [2.0, -1.0]]), tensor([[1.0, 1.0], [0.0, 2.0]])
    per_entry = [[gaussian_crps(loc[i, j : j + 1], 0.5, y[i, j : j + 1]) for j in range(2)] for i in range(2)]
    assert gaussian_crps(loc, 0.5, y) == pytest.approx(sum(map(sum, per_entry)) / 2, rel=1e-12)
    # a point mass scores the absolute error
    assert gaussian_crps(loc, 1e-9, y) == pytest.approx((1 + 0 + 2 + 3) / 2, rel=1e-8)


# ---------------------------------------------------------------- likelihood, error, accuracy


def test_gaussian_nll_known_values():
    assert gaussian_nll(tensor([0.0]), 1.0, tensor([0.0])) == pytest.approx(LOG_SQRT_2PI, rel=1e-12)
    # z = (3 - 1) / 2 = 1: log 2 + 1/2 on top of log sqrt(2 pi)
    expected = LOG_SQRT_2PI + math.log(2) + 0.5
    assert gaussian_nll(tensor([1.0]), tensor([2.0]), tensor([3.0])) == pytest.approx(expected, rel=1e-12)
    # a row with 3 outputs scores the sum of their NLLs
    assert gaussian_nll(torch.zeros(2, 3), 1.0, torch.zeros(2, 3)) == pytest.approx(3 * LOG_SQRT_2PI)


def test_nll_of_any_distribution():
    loc, scale = tensor([[0.0, 1.0], [2.0, 3.0]]), tensor([[1.0, 0.5], [2.0, 1.5]])
    y = tensor([[0.3, 0.9], [1.0, 4.0]])
    by_params = gaussian_nll(loc, scale, y)
    assert nll(Normal(loc, scale), y) == pytest.approx(by_params, rel=1e-12)
    assert nll(Independent(Normal(loc, scale), 1), y) == pytest.approx(by_params, rel=1e-12)
    categorical = Categorical(probs=tensor([[0.5, 0.5], [0.25, 0.75], [0.1, 0.9]]))
    expected = -(math.log(0.5) + math.log(0.75) + math.log(0.1)) / 3
    assert nll(categorical, torch.tensor([0, 1, 0])) == pytest.approx(expected, rel=1e-12)


def test_rmse_of_points_and_of_a_distribution_mean():
    assert rmse(tensor([1.0, 2.0, 3.0]), tensor([1.0, 4.0, 0.0])) == pytest.approx(math.sqrt(13 / 3))
    assert rmse(Normal(tensor([[1.0], [2.0]]), 5.0), tensor([[1.0], [4.0]])) == pytest.approx(math.sqrt(2))


def test_accuracy_same_for_probs_and_logits():
    logits = tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.1, 0.2], [5.0, 0.0, 0.0]])
    y = torch.tensor([0, 2, 2, 1])
    assert accuracy(logits, y) == accuracy(logits.softmax(-1), y) == 0.5


# ---------------------------------------------------------------- intervals and PIT


def test_interval_coverage_exact_small_example():
    # z-quantiles of the central intervals: 0.674, 1.282, 1.645, 1.960
    y = tensor([0.0, 0.5, 1.0, 1.5, 2.0])
    assert interval_coverage(torch.zeros(5), 1.0, y) == {0.5: 0.4, 0.8: 0.6, 0.9: 0.8, 0.95: 0.8}


def test_interval_coverage_of_own_samples_is_nominal():
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    loc, scale = torch.randn(n, 2, generator=gen), torch.rand(n, 2, generator=gen) + 0.1
    y = loc + scale * torch.randn(n, 2, generator=gen)
    levels = (0.1, 0.5, 0.8, 0.9, 0.95, 0.99)
    # 0.01 is 4 binomial standard errors at worst (level 0.5, 2n independent draws)
    for level, coverage in interval_coverage(loc, scale, y, levels).items():
        assert coverage == pytest.approx(level, abs=0.01)
    # halving the scale (overconfidence) covers only 2 Phi(z_l / 2) - 1 < l
    for level, coverage in interval_coverage(loc, scale / 2, y, levels).items():
        half_width = NormalDist().inv_cdf((1 + level) / 2) / 2
        assert coverage == pytest.approx(2 * NormalDist().cdf(half_width) - 1, abs=0.01)


def test_pit_known_values():
    u = pit(tensor([0.0, 1.0, 1.0]), tensor([1.0, 2.0, 2.0]), tensor([0.0, 1.0 + 2 * 1.959963984540054, -9.0]))
    torch.testing.assert_close(u, tensor([0.5, 0.975, 0.5 * math.erfc(5 / math.sqrt(2))]))


def test_pit_of_calibrated_predictions_is_uniform():
    gen = torch.Generator().manual_seed(1)
    n = 5_000
    loc, scale = torch.randn(n, generator=gen), torch.rand(n, generator=gen) + 0.1
    u = pit(loc, scale, loc + scale * torch.randn(n, generator=gen)).sort().values
    # Kolmogorov–Smirnov distance below its 1% critical value 1.63 / sqrt(n)
    ranks = torch.arange(1, n + 1) / n
    ks = torch.maximum(ranks - u, u - (ranks - 1 / n)).max().item()
    assert ks < 1.63 / math.sqrt(n)
    counts = pit_histogram(u, bins=10)
    assert counts.sum() == n and (counts - n / 10).abs().max() < 0.15 * n / 10


def test_pit_of_overconfident_predictions_is_u_shaped():
    gen = torch.Generator().manual_seed(2)
    n = 5_000
    y = torch.randn(n, generator=gen)
    counts = pit_histogram(pit(torch.zeros(n), 0.5, y), bins=10).double() / n
    # P(Phi(2Z) < 0.1) = P(Z < -0.64) = 0.26 per outer bin, 0.05 per central bin
    assert counts[0] > 0.2 and counts[-1] > 0.2
    assert counts[3:7].max() < 0.07


def test_pit_histogram_bin_edges():
    u = torch.tensor([0.0, 0.05, 0.1, 0.26, 0.55, 0.99, 1.0])
    assert pit_histogram(u, bins=4).tolist() == [3, 1, 1, 2]  # 0 in the first bin, 1 in the last


# ---------------------------------------------------------------- classification calibration


def test_ece_and_reliability_bins_on_hand_computed_example():
    # bin (0.8, 1]: conf 0.90, acc 0.5, 2 rows; (0.6, 0.8]: 0.75, 1; (0.4, 0.6]: 0.55, 1
    # ECE = 2/4 * 0.4 + 1/4 * 0.25 + 1/4 * 0.45 = 0.375
    assert expected_calibration_error(TINY_PROBS, TINY_Y, bins=5) == pytest.approx(0.375, abs=1e-6)
    confidence, acc, counts = reliability_bins(TINY_PROBS, TINY_Y, bins=5)
    assert counts.tolist() == [0, 0, 1, 1, 2]
    nan = float("nan")
    torch.testing.assert_close(confidence, torch.tensor([nan, nan, 0.55, 0.75, 0.90]), equal_nan=True)
    torch.testing.assert_close(acc, torch.tensor([nan, nan, 1.0, 1.0, 0.5]), equal_nan=True)


def test_ece_vanishes_for_calibrated_data_and_not_for_sharpened():
    torch.manual_seed(3)
    n = 100_000
    probs = Dirichlet(torch.ones(3)).sample((n,))
    y = Categorical(probs=probs).sample()  # labels drawn from the predictive: calibrated
    # the finite-n bias is of order sqrt(bins / n) = 0.012; observed 0.005
    assert expected_calibration_error(probs, y) < 0.01
    sharpened = (3 * probs.log()).softmax(-1)  # same argmax, overconfident
    assert expected_calibration_error(sharpened, y) > 0.1
    confidence, acc, counts = reliability_bins(probs, y)
    assert counts.sum() == n and counts[:4].sum() == 0  # top-label confidence is at least 1/3
    filled = counts > 0
    assert (acc[filled] - confidence[filled]).abs().max() < 0.03


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_dtype_and_device_agnostic(device, dtype):
    # inputs exactly representable in bfloat16 score as in float64
    loc = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=dtype, device=device)
    y = torch.tensor([[0.5, 1.0], [0.0, 2.0]], dtype=dtype, device=device)
    reference = loc.double().cpu(), 0.5, y.double().cpu()
    assert gaussian_crps(loc, 0.5, y) == pytest.approx(gaussian_crps(*reference), rel=1e-6)
    assert gaussian_nll(loc, 0.5, y) == pytest.approx(gaussian_nll(*reference), rel=1e-6)
    assert pit(loc, 0.5, y).device == loc.device
    probs = TINY_PROBS.to(device, dtype)
    assert expected_calibration_error(probs, TINY_Y.to(device), bins=5) == pytest.approx(0.375, abs=5e-3)


# ---------------------------------------------------------------- validation


def message(text):
    return re.escape(text)


@pytest.mark.parametrize(
    "fn", [gaussian_nll, gaussian_crps, pit, lambda loc, scale, y: interval_coverage(loc, scale, y)]
)
def test_gaussian_metrics_reject_bad_input(fn):
    with pytest.raises(ValueError, match=message("y has shape (3, 1) but loc has shape (3,)")):
        fn(torch.zeros(3), 1.0, torch.zeros(3, 1))
    with pytest.raises(ValueError, match=message("scale of shape (2,) does not broadcast to loc's shape (3,)")):
        fn(torch.zeros(3), torch.ones(2), torch.zeros(3))
    with pytest.raises(ValueError, match=message("scale of shape (3, 2) does not broadcast")):
        fn(torch.zeros(3), torch.ones(3, 2), torch.zeros(3))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale must be positive"):
            fn(torch.zeros(3), torch.tensor([1.0, bad, 1.0]), torch.zeros(3))
    for shape in [(), (0,), (2, 2, 2)]:
        with pytest.raises(ValueError, match=message(f"loc must have shape (N,) or (N, d) with N >= 1, got {shape}")):
            fn(torch.zeros(shape), 1.0, torch.zeros(shape))


@pytest.mark.parametrize("levels", [(0.0,), (1.0,), (0.5, 1.5), (-0.1,), ()])
def test_interval_coverage_rejects_levels_outside_unit_interval(levels):
    with pytest.raises(ValueError, match=message("levels must be a non-empty collection of numbers in (0, 1)")):
        interval_coverage(torch.zeros(3), 1.0, torch.zeros(3), levels)


def test_nll_and_rmse_reject_bad_input():
    with pytest.raises(TypeError, match="dist must be a torch.distributions.Distribution, got Tensor"):
        nll(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=message("dist must have batch_shape (N,) or (N, d) with N >= 1, got ()")):
        nll(Normal(0.0, 1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match=message("y has shape (3,) but dist has batch_shape + event_shape (3, 2)")):
        nll(Independent(Normal(torch.zeros(3, 2), 1.0), 1), torch.zeros(3))
    with pytest.raises(ValueError, match=message("y has shape (4,) but pred has shape (3,)")):
        rmse(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match=message("pred must have shape (N,) or (N, d) with N >= 1, got ()")):
        rmse(torch.tensor(1.0), torch.tensor(1.0))


@pytest.mark.parametrize("fn", [accuracy, expected_calibration_error, reliability_bins])
def test_classification_metrics_reject_bad_labels_and_shapes(fn):
    probs = torch.full((3, 2), 0.5)
    with pytest.raises(ValueError, match=message("must have shape (N, C) with N >= 1, got (3,)")):
        fn(torch.full((3,), 0.5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=message("y has shape (4,) but") + ".*" + message("shape (3, 2)")):
        fn(probs, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="y must hold integer class labels, got dtype torch.float32"):
        fn(probs, torch.zeros(3))
    with pytest.raises(ValueError, match=message("labels must lie in [0, 2) for 2 classes, got range [0, 2]")):
        fn(probs, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("fn", [expected_calibration_error, reliability_bins])
def test_calibration_metrics_reject_non_probabilities_and_bad_bins(fn):
    y = torch.tensor([0, 1])
    accepted = "probs must be class probabilities: non-negative with rows summing to 1 within 0.0001"
    with pytest.raises(ValueError, match=message(accepted) + ".*row sums in \\[1.1, 1.1\\].*logits.softmax"):
        fn(torch.tensor([[0.6, 0.5], [0.5, 0.6]]), y)
    with pytest.raises(ValueError, match=message(accepted) + ".*entries in \\[-1, 2\\]"):
        fn(torch.tensor([[2.0, -1.0], [0.0, 1.0]]), y)  # logits that happen to sum to 1
    for bins in (0, 2.5, True):
        with pytest.raises(ValueError, match="bins must be a positive int"):
            fn(torch.tensor([[0.5, 0.5], [0.5, 0.5]]), y, bins=bins)


def test_pit_histogram_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match=message("PIT values must lie in [0, 1], got range [-0.1, 0.5]")):
        pit_histogram(torch.tensor([-0.1, 0.5]))
    with pytest.raises(ValueError, match="PIT values must lie in"):
        pit_histogram(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="bins must be a positive int, got 0"):
        pit_histogram(torch.tensor([0.5]), bins=0)


def test_classification_scores_take_the_log_of_tiny_label_probabilities():
    """Categorical(probs=...) clamps probabilities at eps, which capped a label's NLL at
    -log(eps) = 36.04 in the experiments' scores (a probe: 36.04 for p = 1e-20, not 46.05)."""
    from pyro_probmix.experiments.scoring import classification_scores

    probs = torch.tensor([[1 - 1e-20, 1e-20], [0.5, 0.5]], dtype=torch.float64)
    nll = classification_scores(probs, torch.tensor([1, 0]))["nll"]
    assert math.isclose(nll, (-math.log(1e-20) + math.log(2)) / 2, rel_tol=1e-12)


@pytest.mark.parametrize(
    "score, message",
    [
        (lambda: interval_coverage(torch.zeros(3), 1.0, torch.tensor([0.0, math.nan, 1.0])), "y holds 1 NaN of 3"),
        (lambda: accuracy(torch.tensor([[math.nan, 0.0], [1.0, 0.0]]), torch.tensor([0, 0])), "probs_or_logits holds 1 NaN"),
        (lambda: gaussian_nll(torch.tensor([0.0, math.nan]), 1.0, torch.zeros(2)), "loc holds 1 NaN of 2"),
        (lambda: rmse(torch.tensor([0.0, math.nan]), torch.zeros(2)), "pred holds 1 NaN of 2"),
    ],
)
def test_nan_inputs_are_refused_not_counted(score, message):
    """NaN was counted as outside every interval (coverage 0.33 for [0, NaN, 1]) and a NaN row
    of logits as correct (accuracy 1.0); the means returned NaN."""
    with pytest.raises(ValueError, match=re.escape(message)):
        score()
