# SPDX-License-Identifier: Apache-2.0
"""
Scores of predicted class probabilities: accuracy, the reliability diagram and the expected
calibration error.
"""
from __future__ import annotations

import torch

from ._checks import _check_bins, _check_not_nan, _compute_dtype

__all__ = ["accuracy", "expected_calibration_error", "reliability_bins"]


def _check_scores(name, x):
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, C) with N >= 1, got {tuple(x.shape)}")
    _check_not_nan(**{name: x})
    return x


def _check_labels(y, scores, name):
    y = torch.as_tensor(y, device=scores.device)
    if y.shape != scores.shape[:1]:
        raise ValueError(
            f"y has shape {tuple(y.shape)} but {name} has shape {tuple(scores.shape)};"
            f" expected y of shape ({scores.shape[0]},)"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    num_classes = scores.shape[1]
    if not bool(((y >= 0) & (y < num_classes)).all()):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for {num_classes} classes,"
            f" got range [{y.min().item()}, {y.max().item()}]"
        )
    return y


def accuracy(probs_or_logits: torch.Tensor, y: torch.Tensor) -> float:
    """
    Fraction of rows whose highest-scoring class is the label.

    Parameters
    ----------
    probs_or_logits : Tensor of shape (N, C)
        Probabilities or logits: both have the same argmax.
    y : integer Tensor of shape (N,)

    Returns
    -------
    float

    Examples
    --------
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
    0.5
    """
    scores = _check_scores("probs_or_logits", probs_or_logits)
    y = _check_labels(y, scores, "probs_or_logits")
    return (scores.argmax(-1) == y).to(_compute_dtype(scores)).mean().item()


def _top_label_sums(probs, y, bins):
    """Per-bin (count, sum of confidences, number correct) of the top-label predictions."""
    _check_bins(bins)
    probs = _check_scores("probs", probs)
    y = _check_labels(y, probs, "probs")
    # a half-precision softmax can miss 1 by a few ulps of its own dtype
    tol = max(1e-4, 8 * torch.finfo(probs.dtype).eps) if probs.is_floating_point() else 1e-4
    probs = probs.to(_compute_dtype(probs))
    row_sums = probs.sum(-1)
    if not bool(((probs >= 0).all() & ((row_sums - 1).abs() <= tol).all())):
        raise ValueError(
            f"probs must be class probabilities: non-negative with rows summing to 1 within {tol:g};"
            f" got entries in [{probs.min().item():g}, {probs.max().item():g}] and row sums in"
            f" [{row_sums.min().item():g}, {row_sums.max().item():g}]. For logits pass"
            " logits.softmax(-1)."
        )
    confidence, prediction = probs.max(-1)
    correct = (prediction == y).to(probs.dtype)
    # bins ((k - 1) / B, k / B] as in Guo et al. (2017)
    edges = torch.linspace(0, 1, bins + 1, dtype=probs.dtype, device=probs.device)[1:-1]
    index = torch.bucketize(confidence, edges)
    # a dense membership mask rather than index_add_, whose float atomics are nondeterministic on GPU
    member = index.unsqueeze(-1) == torch.arange(bins, device=probs.device)
    counts = member.sum(0)
    return counts, (member * confidence.unsqueeze(-1)).sum(0), (member * correct.unsqueeze(-1)).sum(0)


def reliability_bins(
    probs: torch.Tensor, y: torch.Tensor, bins: int = 15
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Reliability diagram of the top-label predictions over ``bins`` equal-width confidence bins.

    Bin ``k`` holds the rows whose top probability lies in ``((k - 1) / bins, k / bins]``.

    Parameters
    ----------
    probs : Tensor of shape (N, C)
        Class probabilities: non-negative, rows summing to 1 (apply softmax to logits first).
    y : integer Tensor of shape (N,)
    bins : int

    Returns
    -------
    confidence : Tensor of shape (bins,)
        Mean top probability in each bin, NaN for an empty bin.
    accuracy : Tensor of shape (bins,)
        Fraction of correct top-label predictions in each bin, NaN for an empty bin.
    counts : Tensor of shape (bins,)
        int64 number of rows in each bin; sums to N.

    Examples
    --------
    >>> probs = torch.tensor([[0.95, 0.05], [0.15, 0.85], [0.75, 0.25], [0.45, 0.55]])
    >>> confidence, acc, counts = reliability_bins(probs, torch.tensor([0, 0, 0, 1]), bins=5)
    >>> counts
    tensor([0, 0, 1, 1, 2])
    >>> acc
    tensor([   nan,    nan, 1.0000, 1.0000, 0.5000])
    """
    counts, confidence_sum, correct_sum = _top_label_sums(probs, y, bins)
    # 0 / 0 marks an empty bin as NaN
    return confidence_sum / counts, correct_sum / counts, counts


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """
    Top-label expected calibration error over ``bins`` equal-width confidence bins.

    ``ECE = sum_k (n_k / N) |accuracy_k - confidence_k|`` with the bins of
    :func:`reliability_bins`. 0 is perfect calibration; with finite ``N`` even a calibrated model
    scores of order ``sqrt(bins / N)``.

    Parameters
    ----------
    probs : Tensor of shape (N, C)
        Class probabilities: non-negative, rows summing to 1 (apply softmax to logits first).
    y : integer Tensor of shape (N,)
    bins : int

    Returns
    -------
    float

    Examples
    --------
    >>> probs = torch.tensor([[0.95, 0.05], [0.15, 0.85], [0.75, 0.25], [0.45, 0.55]])
    >>> round(expected_calibration_error(probs, torch.tensor([0, 0, 0, 1]), bins=5), 4)
    0.375
    """
    counts, confidence_sum, correct_sum = _top_label_sums(probs, y, bins)
    # n_k |acc_k - conf_k| = |correct_k - confidence_sum_k|, and empty bins add 0
    return ((correct_sum - confidence_sum).abs().sum() / counts.sum()).item()
