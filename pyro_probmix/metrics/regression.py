# SPDX-License-Identifier: Apache-2.0
"""
Scores of a Gaussian (or any) predictive distribution of real labels: likelihood, error, CRPS,
interval coverage and the probability integral transform.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

from ._checks import TensorLike, _broadcasts_to, _check_bins, _check_not_nan, _check_rows, _compute_dtype

__all__ = ["gaussian_crps", "gaussian_nll", "interval_coverage", "nll", "pit", "pit_histogram", "rmse"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _gaussian_args(loc, scale, y):
    """Validated ``(loc, scale, y)`` on ``loc``'s device, in the compute dtype."""
    loc = torch.as_tensor(loc)
    scale = torch.as_tensor(scale, device=loc.device)
    y = torch.as_tensor(y, device=loc.device)
    _check_rows("loc", loc)
    if y.shape != loc.shape:
        raise ValueError(f"y has shape {tuple(y.shape)} but loc has shape {tuple(loc.shape)}")
    if not _broadcasts_to(scale.shape, loc.shape):
        raise ValueError(
            f"scale of shape {tuple(scale.shape)} does not broadcast to loc's shape {tuple(loc.shape)}"
        )
    if not bool((scale > 0).all()):  # also rejects NaN
        raise ValueError(f"scale must be positive, got a minimum of {scale.min().item():g}")
    _check_not_nan(loc=loc, y=y)
    dtype = _compute_dtype(loc, scale, y)
    return loc.to(dtype), scale.to(dtype), y.to(dtype)


def _row_mean(score):
    """Sum a per-entry score over a row's outputs, then average over rows."""
    return score.reshape(score.shape[0], -1).sum(1).mean().item()


def _std_normal_cdf(z):
    # erfc keeps relative accuracy in the lower tail, where 1 + erf(.) cancels
    return 0.5 * torch.erfc(-z / math.sqrt(2))


def gaussian_nll(loc: torch.Tensor, scale: TensorLike, y: torch.Tensor) -> float:
    """
    Mean negative log-likelihood of ``y`` under ``Normal(loc, scale)``.

    Parameters
    ----------
    loc : Tensor of shape (N,) or (N, d)
    scale : Tensor or float, positive, broadcastable to ``loc``
    y : Tensor of the shape of ``loc``

    Returns
    -------
    float
        ``-log N(y | loc, scale)`` summed over a row's outputs and averaged over rows.

    Examples
    --------
    >>> round(gaussian_nll(torch.zeros(3), 1.0, torch.zeros(3)), 4)  # log(2 pi) / 2
    0.9189
    """
    loc, scale, y = _gaussian_args(loc, scale, y)
    z = (y - loc) / scale
    return _row_mean(0.5 * z**2 + scale.log() + _LOG_SQRT_2PI)


def nll(dist: torch.distributions.Distribution, y: torch.Tensor) -> float:
    """
    Mean negative log-likelihood of ``y`` under any predictive distribution.

    Parameters
    ----------
    dist : torch.distributions.Distribution
        With ``batch_shape`` ``(N,)`` or ``(N, d)``; its ``event_shape`` is free.
    y : Tensor of shape ``dist.batch_shape + dist.event_shape``

    Returns
    -------
    float
        ``-dist.log_prob(y)`` summed over a row's outputs and averaged over rows.

    Examples
    --------
    >>> from torch.distributions import Categorical
    >>> d = Categorical(probs=torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    >>> round(nll(d, torch.tensor([0, 1])), 4)  # -(log 0.5 + log 0.75) / 2
    0.4904
    """
    if not isinstance(dist, torch.distributions.Distribution):
        raise TypeError(f"dist must be a torch.distributions.Distribution, got {type(dist).__name__}")
    if len(dist.batch_shape) not in (1, 2) or dist.batch_shape[0] == 0:
        raise ValueError(
            f"dist must have batch_shape (N,) or (N, d) with N >= 1, got {tuple(dist.batch_shape)}"
        )
    y = torch.as_tensor(y)
    expected = dist.batch_shape + dist.event_shape
    if y.shape != expected:
        raise ValueError(
            f"y has shape {tuple(y.shape)} but dist has batch_shape + event_shape {tuple(expected)}"
        )
    log_p = dist.log_prob(y)
    return _row_mean(-log_p.to(_compute_dtype(log_p)))


def rmse(pred: torch.Tensor, y: torch.Tensor) -> float:
    """
    Root mean squared error over all entries.

    Parameters
    ----------
    pred : Tensor of shape (N,) or (N, d), or a Distribution (its ``mean`` is the prediction)
    y : Tensor of the shape of the prediction

    Returns
    -------
    float

    Examples
    --------
    >>> round(rmse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])), 4)  # sqrt(4 / 2)
    1.4142
    """
    if isinstance(pred, torch.distributions.Distribution):
        pred = pred.mean
    pred = torch.as_tensor(pred)
    y = torch.as_tensor(y, device=pred.device)
    _check_rows("pred", pred)
    if y.shape != pred.shape:
        raise ValueError(f"y has shape {tuple(y.shape)} but pred has shape {tuple(pred.shape)}")
    _check_not_nan(pred=pred, y=y)
    dtype = _compute_dtype(pred, y)
    return (pred.to(dtype) - y.to(dtype)).square().mean().sqrt().item()


def gaussian_crps(loc: torch.Tensor, scale: TensorLike, y: torch.Tensor) -> float:
    """
    Continuous ranked probability score of ``Normal(loc, scale)`` at ``y``, in closed form.

    ``CRPS = scale * [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)]`` with ``z = (y - loc) / scale``
    (Gneiting & Raftery, 2007). Lower is better; it has the units of ``y`` and tends to
    ``|y - loc|`` as ``scale -> 0``.

    Parameters
    ----------
    loc : Tensor of shape (N,) or (N, d)
    scale : Tensor or float, positive, broadcastable to ``loc``
    y : Tensor of the shape of ``loc``

    Returns
    -------
    float
        The CRPS summed over a row's outputs and averaged over rows.

    Examples
    --------
    >>> round(gaussian_crps(torch.zeros(1), 1.0, torch.zeros(1)), 4)  # (sqrt(2) - 1) / sqrt(pi)
    0.2337
    """
    loc, scale, y = _gaussian_args(loc, scale, y)
    z = (y - loc) / scale
    pdf = torch.exp(-0.5 * z**2 - _LOG_SQRT_2PI)
    crps = scale * (z * (2 * _std_normal_cdf(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))
    return _row_mean(crps)


def interval_coverage(
    loc: torch.Tensor, scale: TensorLike, y: torch.Tensor, levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95)
) -> dict[float, float]:
    """
    Fraction of ``y`` inside the central intervals of ``Normal(loc, scale)``.

    The interval of level ``l`` is ``loc ± Phi^{-1}((1 + l) / 2) * scale``, bounds included. A
    calibrated predictive covers about ``l``; less means overconfident.

    Parameters
    ----------
    loc : Tensor of shape (N,) or (N, d)
    scale : Tensor or float, positive, broadcastable to ``loc``
    y : Tensor of the shape of ``loc``
    levels : iterable of floats in the open interval (0, 1)

    Returns
    -------
    dict
        ``{level: coverage}``, the coverage a float over all entries of ``y``.

    Examples
    --------
    >>> y = torch.tensor([0.0, 0.5, 1.5, 3.0])
    >>> interval_coverage(torch.zeros(4), 1.0, y, levels=(0.5, 0.9))
    {0.5: 0.5, 0.9: 0.75}
    """
    levels = tuple(float(level) for level in levels)
    if not levels or not all(0 < level < 1 for level in levels):
        raise ValueError(f"levels must be a non-empty collection of numbers in (0, 1), got {levels}")
    loc, scale, y = _gaussian_args(loc, scale, y)
    half_width = torch.tensor(
        [statistics.NormalDist().inv_cdf((1 + level) / 2) for level in levels],
        dtype=loc.dtype,
        device=loc.device,
    )
    inside = ((y - loc) / scale).abs().unsqueeze(-1) <= half_width
    coverage = inside.reshape(-1, len(levels)).to(loc.dtype).mean(0).tolist()
    return dict(zip(levels, coverage))


def pit(loc: torch.Tensor, scale: TensorLike, y: torch.Tensor) -> torch.Tensor:
    """
    Probability integral transform ``Phi((y - loc) / scale)`` of each target.

    Under a calibrated predictive these values are Uniform(0, 1); a U-shaped histogram means an
    overconfident (too narrow) predictive, a hump an underconfident one.

    Parameters
    ----------
    loc : Tensor of shape (N,) or (N, d)
    scale : Tensor or float, positive, broadcastable to ``loc``
    y : Tensor of the shape of ``loc``

    Returns
    -------
    Tensor
        Of the shape of ``loc``, values in [0, 1].

    Examples
    --------
    >>> pit(torch.zeros(3), 1.0, torch.tensor([-1.96, 0.0, 1.96]))
    tensor([0.0250, 0.5000, 0.9750])
    """
    loc, scale, y = _gaussian_args(loc, scale, y)
    return _std_normal_cdf((y - loc) / scale)


def pit_histogram(pit_values: torch.Tensor, bins: int = 10) -> torch.Tensor:
    """
    Counts of PIT values in ``bins`` equal-width bins ``[k / bins, (k + 1) / bins)`` of [0, 1].

    A value of exactly 1 falls in the last bin.

    Parameters
    ----------
    pit_values : Tensor of any shape with values in [0, 1], e.g. the output of :func:`pit`
    bins : int

    Returns
    -------
    Tensor
        int64 counts of shape ``(bins,)``.

    Examples
    --------
    >>> pit_histogram(torch.tensor([0.05, 0.1, 0.55, 1.0]), bins=4)
    tensor([2, 0, 1, 1])
    """
    _check_bins(bins)
    u = torch.as_tensor(pit_values).flatten()
    if not bool(((u >= 0) & (u <= 1)).all()):  # also rejects NaN
        raise ValueError(
            f"PIT values must lie in [0, 1], got range [{u.min().item():g}, {u.max().item():g}]"
        )
    index = (u * bins).long().clamp(max=bins - 1)
    return torch.bincount(index, minlength=bins)
