# SPDX-License-Identifier: Apache-2.0
"""Figures of classification runs: reliability diagrams and decision boundaries."""

import numpy as np

# absolute: see pyro_probmix/experiments/plots/__init__.py
from pyro_probmix.experiments.plots._style import _CLASS_COLOURS, _check_methods, _numpy, _panels, _save

__all__ = ["plot_decision_boundaries", "plot_reliability"]


def plot_reliability(reliability, path):
    """
    One panel per method: accuracy against mean confidence of each non-empty bin (marker area by
    the bin's share of rows), with the diagonal of perfect calibration and the ECE in the title.
    Points below the diagonal are overconfident.

    Parameters
    ----------
    reliability : dict name -> (confidence, accuracy, counts)
        the output of :func:`pyro_probmix.metrics.reliability_bins` per method
    path : str or Path of the PNG

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, matplotlib.image
    >>> from pathlib import Path
    >>> import torch
    >>> from pyro_probmix.metrics import reliability_bins
    >>> tmp = tempfile.TemporaryDirectory()
    >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    >>> bins = reliability_bins(probs, torch.tensor([0, 1, 1, 1]), bins=5)
    >>> path = plot_reliability({"ERM": bins}, Path(tmp.name, "reliability.png"))
    >>> matplotlib.image.imread(path).shape  # one panel
    (435, 510, 4)
    >>> tmp.cleanup()
    """
    _check_methods("reliability", reliability)
    fig, axes = _panels(len(reliability), sharex=True, sharey=True)
    for ax, (name, (confidence, acc, counts)) in zip(axes, reliability.items()):
        confidence, acc, counts = _numpy(confidence), _numpy(acc), _numpy(counts)
        if not confidence.shape == acc.shape == counts.shape:
            raise ValueError(
                f"{name}: confidence {confidence.shape}, accuracy {acc.shape} and counts"
                f" {counts.shape} must have one shape"
            )
        filled = counts > 0
        if not filled.any():
            raise ValueError(f"{name}: every bin is empty")
        ece = np.sum(counts[filled] * np.abs(acc[filled] - confidence[filled])) / counts.sum()
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        ax.plot(confidence[filled], acc[filled], "-", color="C0", lw=1, label="model")
        # marker area by share of rows: a nearly empty bin's wild accuracy catches no eye
        share = counts[filled] / counts.sum()
        ax.scatter(confidence[filled], acc[filled], s=8 + 300 * share, color="C0", zorder=3)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=f"{name} (ECE {ece:.3f})")
    axes[0].legend(fontsize="small", loc="upper left")
    fig.supxlabel("confidence")
    fig.supylabel("accuracy")
    return _save(fig, path)


def plot_decision_boundaries(x, y, grid_xx, grid_yy, probs, path):
    """
    One panel per method: the predicted class probabilities over a 2-D grid, with the data (as the
    paper's Figure 14).

    The background blends the class colours by probability, so pure hues are confident regions and
    mixed ones uncertain; black lines trace the argmax decision boundaries.

    Parameters
    ----------
    x : array of shape (N, 2)
    y : integer array of N class labels
    grid_xx, grid_yy : arrays of shape (H, W), e.g. from a meshgrid
    probs : dict name -> (H, W, C) class probabilities on the grid, C <= 10
    path : str or Path of the PNG

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, matplotlib.image
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> xx, yy = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    >>> probs = np.stack([xx > 0, xx <= 0], -1).astype(float)  # class 0 right of x = 0
    >>> x, y = np.array([[-0.5, 0.0], [0.5, 0.0]]), np.array([1, 0])
    >>> path = plot_decision_boundaries(x, y, xx, yy, {"ERM": probs, "Mix": probs}, Path(tmp.name, "b.png"))
    >>> matplotlib.image.imread(path).shape  # two panels
    (435, 1020, 4)
    >>> tmp.cleanup()
    """
    _check_methods("probs", probs)
    x, y = _numpy(x), _numpy(y).astype(int)
    xx, yy = _numpy(grid_xx), _numpy(grid_yy)
    if x.ndim != 2 or x.shape[1] != 2 or y.shape != (len(x),):
        raise ValueError(f"x must have shape (N, 2) and y shape (N,), got {x.shape} and {y.shape}")
    if xx.ndim != 2 or xx.shape != yy.shape:
        raise ValueError(f"grid_xx and grid_yy must share a 2-D shape, got {xx.shape} and {yy.shape}")
    fig, axes = _panels(len(probs), sharex=True, sharey=True)
    for ax, (name, p) in zip(axes, probs.items()):
        p = _numpy(p)
        if p.ndim != 3 or p.shape[:2] != xx.shape:
            raise ValueError(f"{name}: probs has shape {p.shape}, expected {xx.shape} + (C,)")
        num_classes = p.shape[2]
        if not y.max() < num_classes <= len(_CLASS_COLOURS):
            raise ValueError(
                f"{name}: {num_classes} classes, but labels reach {y.max()} and at most"
                f" {len(_CLASS_COLOURS)} classes have colours"
            )
        # washed halfway to white so the data points stand out
        rgb = np.clip(0.5 + 0.5 * p @ _CLASS_COLOURS[:num_classes], 0, 1)
        ax.pcolormesh(xx, yy, rgb, shading="nearest")
        predicted = p.argmax(-1)
        for k in range(num_classes):
            if (predicted == k).any():
                ax.contour(xx, yy, (predicted == k).astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ax.scatter(x[:, 0], x[:, 1], c=_CLASS_COLOURS[y], s=9, edgecolors="k", linewidths=0.3)
        ax.set(aspect="equal", title=name)
    return _save(fig, path)
