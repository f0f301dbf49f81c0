# SPDX-License-Identifier: Apache-2.0
"""
Figures of the experiments: predictive bands, calibration diagnostics, decision boundaries and
ablation box plots.

Every function draws on its own :class:`~matplotlib.figure.Figure` attached to the Agg canvas:
no pyplot state, nothing is ever shown, and it works on headless machines. It saves a PNG,
creating missing parent folders, and returns the path. Data may be tensors on any device (with or
without grad), numpy arrays or lists; dict inputs map a method's name to its data, one panel or
one line per method in the dict's order.
"""
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# absolute: this folder may have no __init__.py, and then a relative import has no parent
from pyro_probmix.metrics import pit_histogram

__all__ = [
    "plot_boxplots",
    "plot_coverage",
    "plot_decision_boundaries",
    "plot_pit_histograms",
    "plot_regression_bands",
    "plot_reliability",
]

DPI = 120
_PANEL_SIZE = (3.4, 2.9)  # inches per panel
_MAX_COLUMNS = 4
_CLASS_COLOURS = np.array(matplotlib.colormaps["tab10"].colors)


def _numpy(x):
    """A host array: float64 for floating tensors (numpy has no bfloat16), else as is."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _check_methods(name, methods):
    if not methods:
        raise ValueError(f"{name} must map at least one method name to its data")


def _figure(figsize):
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panels(count, **share):
    """A grid of ``count`` axes, at most ``_MAX_COLUMNS`` wide."""
    columns = min(count, _MAX_COLUMNS)
    rows = math.ceil(count / columns)
    fig = _figure((_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows))
    axes = fig.subplots(rows, columns, squeeze=False, **share).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def plot_regression_bands(
    x_train, y_train, x_grid, results, path, x_test=None, y_test=None, truth=None
):
    """
    One panel per method: predictive mean ± 2 std over ``x_grid``, training points and, when
    given, out-of-distribution test points and the true function (as the paper's Figures 2, 3).

    The y-axis frames the data rather than the bands, so a method whose band explodes out of
    distribution does not flatten every other panel.

    Parameters
    ----------
    x_train, y_train : arrays of N values (shape (N,) or (N, 1))
    x_grid : array of G values
    results : dict name -> (mean, std), each of G values on ``x_grid``
    path : str or Path of the PNG
    x_test, y_test : arrays of M values, optional (both or neither)
    truth : callable on a numpy array, or its G values on ``x_grid``, optional

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, matplotlib.image
    >>> tmp = tempfile.TemporaryDirectory()
    >>> grid = np.linspace(-1, 1, 9)
    >>> results = {"ERM": (grid, 0.1 + 0 * grid), "ProbMix": (grid, 0.2 + 0 * grid)}
    >>> path = plot_regression_bands([-0.5, 0.5], [-0.4, 0.6], grid, results, Path(tmp.name, "bands.png"),
    ...                              x_test=[1.0], y_test=[1.2], truth=lambda x: x)
    >>> path.name, matplotlib.image.imread(path).shape  # two panels of 3.4 x 2.9 in at 120 dpi
    ('bands.png', (348, 816, 4))
    >>> tmp.cleanup()
    """
    _check_methods("results", results)
    if (x_test is None) != (y_test is None):
        raise ValueError("pass x_test and y_test together")
    x_grid = _numpy(x_grid).ravel()
    x_train, y_train = _numpy(x_train).ravel(), _numpy(y_train).ravel()
    if x_train.shape != y_train.shape:
        raise ValueError(f"x_train has {x_train.size} values but y_train has {y_train.size}")
    observed = [y_train]
    if x_test is not None:
        x_test, y_test = _numpy(x_test).ravel(), _numpy(y_test).ravel()
        if x_test.shape != y_test.shape:
            raise ValueError(f"x_test has {x_test.size} values but y_test has {y_test.size}")
        observed.append(y_test)
    if truth is not None:
        truth = _numpy(truth(x_grid) if callable(truth) else truth).ravel()
        if truth.shape != x_grid.shape:
            raise ValueError(f"truth has {truth.size} values but x_grid has {x_grid.size}")
        observed.append(truth)

    fig, axes = _panels(len(results), sharex=True, sharey=True)
    for ax, (name, (mean, std)) in zip(axes, results.items()):
        mean, std = _numpy(mean).ravel(), _numpy(std).ravel()
        if mean.shape != x_grid.shape or std.shape != x_grid.shape:
            raise ValueError(
                f"{name}: mean has {mean.size} values and std {std.size}, x_grid has {x_grid.size}"
            )
        ax.fill_between(x_grid, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.25, lw=0, label="mean ± 2σ")
        ax.plot(x_grid, mean, color="C0", lw=1.5, label="mean")
        if truth is not None:
            ax.plot(x_grid, truth, "k--", lw=1, label="truth")
        ax.scatter(x_train, y_train, s=8, color="k", alpha=0.6, label="train")
        if x_test is not None:
            ax.scatter(x_test, y_test, s=14, color="C3", marker="x", label="test (OOD)")
        ax.set_title(name)
    observed = np.concatenate(observed)
    low, high = observed.min(), observed.max()
    pad = 0.25 * (high - low) or 1.0
    axes[0].set_ylim(low - pad, high + pad)  # shared by every panel
    axes[0].legend(fontsize="small", loc="upper left")
    fig.supxlabel("x")
    fig.supylabel("y")
    return _save(fig, path)


def plot_pit_histograms(pits, path, bins=10, counted=False):
    """
    One panel per method: histogram of PIT values as a density, with the uniform density of a
    calibrated model. U-shaped means overconfident, a hump underconfident.

    Parameters
    ----------
    pits : dict name -> PIT values in [0, 1] (e.g. from :func:`pyro_probmix.metrics.pit`), or
        their counts in ``bins`` equal bins with ``counted=True`` (e.g. the records' ``pit_hist``)
    path : str or Path of the PNG
    bins : int
    counted : bool

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, matplotlib.image
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pits = {"ERM": np.linspace(0, 1, 50), "ProbMix": np.linspace(0, 1, 50) ** 2}
    >>> path = plot_pit_histograms(pits, Path(tmp.name, "figures", "pit.png"), bins=5)
    >>> path.is_file(), matplotlib.image.imread(path).shape  # missing folders are created
    (True, (348, 816, 4))
    >>> tmp.cleanup()
    """
    _check_methods("pits", pits)
    fig, axes = _panels(len(pits), sharex=True, sharey=True)
    centres = (np.arange(bins) + 0.5) / bins
    for ax, (name, values) in zip(axes, pits.items()):
        counts = np.asarray(values, dtype=float) if counted else _numpy(pit_histogram(torch.as_tensor(values), bins))
        if counts.shape != (bins,):
            raise ValueError(f"pits[{name!r}]: {counts.shape[0]} counts for {bins} bins")
        ax.bar(centres, counts * bins / max(counts.sum(), 1), width=1 / bins, color="C0", edgecolor="white")
        ax.axhline(1.0, color="k", ls="--", lw=1, label="calibrated")
        ax.set_xlim(0, 1)
        ax.set_title(name)
    axes[0].legend(fontsize="small")
    fig.suptitle("PIT histograms (flat = calibrated, ∪ = overconfident, ∩ = underconfident)")
    fig.supxlabel("PIT value")
    fig.supylabel("density")
    return _save(fig, path)


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
    >>> from pyro_probmix.metrics import reliability_bins
    >>> tmp = tempfile.TemporaryDirectory()
    >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    >>> bins = reliability_bins(probs, torch.tensor([0, 1, 1, 1]), bins=5)
    >>> path = plot_reliability({"ERM": bins}, Path(tmp.name, "reliability.png"))
    >>> matplotlib.image.imread(path).shape  # one panel
    (348, 408, 4)
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


def plot_coverage(coverages, path):
    """
    Empirical against nominal coverage of central intervals, one line per method, with the
    diagonal. Lines below it are overconfident.

    Parameters
    ----------
    coverages : dict name -> {level: coverage}
        the output of :func:`pyro_probmix.metrics.interval_coverage` per method
    path : str or Path of the PNG

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, matplotlib.image
    >>> tmp = tempfile.TemporaryDirectory()
    >>> coverages = {"ERM": {0.5: 0.31, 0.9: 0.72}, "ProbMix": {0.5: 0.48, 0.9: 0.88}}
    >>> path = plot_coverage(coverages, Path(tmp.name, "coverage.png"))
    >>> path.name, matplotlib.image.imread(path).shape  # one 5 x 5 in axes at 120 dpi
    ('coverage.png', (600, 600, 4))
    >>> tmp.cleanup()
    """
    _check_methods("coverages", coverages)
    fig = _figure((5.0, 5.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="nominal")
    for name, coverage in coverages.items():
        levels = sorted(coverage)
        ax.plot(levels, [coverage[level] for level in levels], "o-", ms=4, label=name)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        aspect="equal",
        xlabel="nominal coverage",
        ylabel="empirical coverage",
        title="Central intervals (below the diagonal = overconfident)",
    )
    ax.legend(fontsize="small", loc="upper left")
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
    >>> tmp = tempfile.TemporaryDirectory()
    >>> xx, yy = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    >>> probs = np.stack([xx > 0, xx <= 0], -1).astype(float)  # class 0 right of x = 0
    >>> x, y = np.array([[-0.5, 0.0], [0.5, 0.0]]), np.array([1, 0])
    >>> path = plot_decision_boundaries(x, y, xx, yy, {"ERM": probs, "Mix": probs}, Path(tmp.name, "b.png"))
    >>> matplotlib.image.imread(path).shape  # two panels
    (348, 816, 4)
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


def plot_boxplots(values, path, ylabel, title):
    """
    Box plot of a score per method over runs, with the runs as points (as the paper's ablation
    Figures 4-13).

    Non-finite runs (a diverged NLL) cannot be drawn: they are left out and counted in the
    method's label.

    Parameters
    ----------
    values : dict name -> list of floats (one per run)
    path : str or Path of the PNG
    ylabel, title : str

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, matplotlib.image
    >>> tmp = tempfile.TemporaryDirectory()
    >>> values = {"ERM": [1.0, 1.2, float("nan")], "ProbMix": [0.8, 0.9, 0.85]}  # the NaN is left out
    >>> path = plot_boxplots(values, Path(tmp.name, "nll.png"), "NLL", "test NLL")
    >>> path.suffix, matplotlib.image.imread(path).shape
    ('.png', (480, 480, 4))
    >>> tmp.cleanup()
    """
    _check_methods("values", values)
    fig = _figure((max(4.0, 0.9 * len(values) + 1.5), 4.0))
    ax = fig.subplots()
    data, labels = [], []
    for name, runs in values.items():
        runs = _numpy(runs).astype(float).ravel()
        finite = runs[np.isfinite(runs)]
        dropped = runs.size - finite.size
        data.append(finite)
        labels.append(f"{name}\n({dropped} non-finite)" if dropped else name)
    positions = np.arange(1, len(data) + 1)
    ax.boxplot(data, positions=positions, widths=0.6, showfliers=False)
    jitter = np.random.default_rng(0)  # fixed, so a figure is reproducible
    for position, runs in zip(positions, data):
        ax.scatter(position + jitter.uniform(-0.15, 0.15, runs.size), runs, s=10, color="C0", alpha=0.6, zorder=3)
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
