# SPDX-License-Identifier: Apache-2.0
"""
Scores of a run's predictive distribution on the original target scale.

Gaussian predictives are scored with :mod:`pyro_probmix.metrics`. The star variants predict an
equally weighted mixture of Gaussians (Monte Carlo over the embedding); the library's metrics take
a single Gaussian, so the mixture versions are computed here, in closed form: NLL by
log-sum-exp, CRPS by ``E|X - y| - E|X - X'| / 2`` with ``E|N(m, s^2)| = 2 s phi(m/s) + m (2 Phi(m/s) - 1)``,
PIT by the mixture CDF, and central-interval coverage from the PIT (``y`` lies in the central
interval of level ``l`` iff ``|2 PIT - 1| <= l``, exact for a continuous predictive).
"""
import math

import torch

from pyro_probmix import metrics

__all__ = ["COVERAGE_LEVELS", "pit_values", "regression_scores", "classification_scores", "mixture_pit", "mixture_crps"]

#: levels of the central intervals whose coverage is recorded
COVERAGE_LEVELS = (0.5, 0.8, 0.9, 0.95)
PIT_BINS = 10
ECE_BINS = 15


def _normal_cdf(z):
    return 0.5 * torch.erfc(-z / math.sqrt(2))


def _abs_moment(m, s):
    """E|X| for X ~ N(m, s^2)."""
    z = m / s
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return 2 * s * pdf + m * (2 * _normal_cdf(z) - 1)


def mixture_nll(locs, scales, y):
    log_p = torch.distributions.Normal(locs, scales).log_prob(y)
    return -(torch.logsumexp(log_p, 0) - math.log(locs.shape[0])).mean().item()


def mixture_pit(locs, scales, y):
    """PIT of ``y`` ``(M,)`` under equally weighted Gaussian mixtures ``(S, M)``.

    >>> locs = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])  # S = 2 components, M = 2 targets
    >>> mixture_pit(locs, torch.ones(2, 2), torch.tensor([0.0, 10.0])).tolist()
    [0.5, 1.0]
    """
    return _normal_cdf((y - locs) / scales).mean(0)


def mixture_crps(locs, scales, y, chunk=512):
    """Mean CRPS of equally weighted Gaussian mixtures ``(S, M)`` at ``y`` ``(M,)``.

    One component is a Gaussian, whose CRPS at its mean is ``(sqrt(2) - 1) / sqrt(pi)``:

    >>> round(mixture_crps(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(3)), 4)
    0.2337
    >>> round(mixture_crps(torch.zeros(4, 3), torch.ones(4, 3), torch.zeros(3)), 4)  # equal components
    0.2337
    """
    total = 0.0
    for start in range(0, y.shape[0], chunk):
        sl = slice(start, start + chunk)
        m, s, t = locs[:, sl], scales[:, sl], y[sl]
        first = _abs_moment(t - m, s).mean(0)
        diff = m[:, None] - m[None]
        spread = torch.sqrt(s[:, None] ** 2 + s[None] ** 2)
        second = _abs_moment(diff, spread).mean((0, 1))
        total += (first - 0.5 * second).sum().item()
    return total / y.shape[0]


def pit_values(pred, y):
    """PIT of ``y`` under a ``("gaussian", ...)`` or ``("mixture", ...)`` predictive.

    >>> y = torch.tensor([-1.96, 0.0, 1.96])
    >>> pit_values(("gaussian", torch.zeros(3), torch.ones(3)), y).round(decimals=3).tolist()
    [0.025, 0.5, 0.975]
    >>> pit_values(("mixture", torch.zeros(2, 3), torch.ones(2, 3)), y).round(decimals=3).tolist()
    [0.025, 0.5, 0.975]
    """
    kind, loc, scale = pred
    loc, scale, y = loc.double(), scale.double(), y.double()
    if kind == "gaussian":
        return metrics.pit(loc, scale, y)
    return mixture_pit(loc, scale, y).clamp(0, 1)


def regression_scores(pred, y):
    """Scores of a predictive on the original scale.

    :param pred: ``("gaussian", loc, scale)`` with ``(M,)`` tensors, or ``("mixture", locs,
        scales)`` with ``(S, M)`` tensors.
    :param y: ``(M,)`` targets.
    :returns: dict with ``nll``, ``rmse``, ``crps``, ``coverage`` ({level: fraction}),
        ``pit_hist`` (counts in 10 bins), ``mean_scale``.

    >>> scores = regression_scores(("gaussian", torch.zeros(4), torch.ones(4)), torch.zeros(4))
    >>> round(scores["nll"], 4), scores["rmse"], scores["coverage"]["0.9"], scores["pit_hist"][5]
    (0.9189, 0.0, 1.0, 4)
    >>> mixture = regression_scores(("mixture", torch.zeros(1, 4), torch.ones(1, 4)), torch.zeros(4))
    >>> round(mixture["nll"], 4), round(mixture["crps"], 4) == round(scores["crps"], 4)
    (0.9189, True)
    """
    kind, loc, scale = pred
    loc, scale, y = loc.double(), scale.double(), y.double()
    if kind == "gaussian":
        out = {
            "nll": metrics.gaussian_nll(loc, scale, y),
            "rmse": metrics.rmse(loc, y),
            "crps": metrics.gaussian_crps(loc, scale, y),
            "coverage": {str(k): v for k, v in metrics.interval_coverage(loc, scale, y, COVERAGE_LEVELS).items()},
        }
        u = metrics.pit(loc, scale, y)
        out["mean_scale"] = scale.mean().item()
    else:
        mean = loc.mean(0)
        u = mixture_pit(loc, scale, y).clamp(0, 1)
        central = (2 * u - 1).abs()
        out = {
            "nll": mixture_nll(loc, scale, y),
            "rmse": metrics.rmse(mean, y),
            "crps": mixture_crps(loc, scale, y),
            "coverage": {str(level): (central <= level).double().mean().item() for level in COVERAGE_LEVELS},
        }
        out["mean_scale"] = ((scale**2 + loc**2).mean(0) - mean**2).clamp_min(0).sqrt().mean().item()
    out["pit_hist"] = metrics.pit_histogram(u, bins=PIT_BINS).tolist()
    return out


def classification_scores(probs, y):
    """``nll``, ``accuracy``, ``ece`` (15 bins) and the reliability bins of ``(M, C)`` class
    probabilities at ``(M,)`` labels.

    >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> scores = classification_scores(probs, torch.tensor([0, 1, 1]))
    >>> round(scores["accuracy"], 4), round(scores["nll"], 4)  # -(log 0.9 + log 0.8 + log 0.4) / 3
    (0.6667, 0.4149)
    >>> sum(scores["reliability"]["counts"])
    3
    """
    probs = probs.double()
    probs = probs / probs.sum(-1, keepdim=True)
    conf, acc, counts = metrics.reliability_bins(probs, y, bins=ECE_BINS)
    nan_to_none = lambda t: [None if math.isnan(v) else v for v in t.tolist()]  # noqa: E731
    return {
        # from log-probabilities: Categorical(probs=...) clamps them at eps, which capped a
        # label's NLL at -log(eps) = 36.04 (the validation NLL of train.py takes the same log)
        "nll": metrics.nll(torch.distributions.Categorical(logits=probs.clamp_min(1e-300).log()), y),
        "accuracy": metrics.accuracy(probs, y),
        "ece": metrics.expected_calibration_error(probs, y, bins=ECE_BINS),
        "reliability": {"confidence": nan_to_none(conf), "accuracy": nan_to_none(acc), "counts": counts.tolist()},
    }
