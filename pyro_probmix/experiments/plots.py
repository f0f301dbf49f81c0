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
    "line_style",
    "plot_boxplots",
    "plot_coverage",
    "plot_decision_boundaries",
    "plot_pit_histograms",
    "plot_regression_bands",
    "plot_reliability",
]

DPI = 150
_PANEL_SIZE = (3.4, 2.9)  # inches per panel
_MAX_COLUMNS = 4
_CLASS_COLOURS = np.array(matplotlib.colormaps["tab10"].colors)
# one line per method: 12 distinct colours of a qualitative palette (tab10, black, gold), each
# with its own marker, so that the 9 to 11 methods of an experiment never share a style
_LINE_COLOURS = [*matplotlib.colormaps["tab10"].colors, "black", "gold"]
_LINE_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
_WHISKER = 1.5  # box-plot whiskers reach 1.5 interquartile ranges, matplotlib's default
_CLIP_FACTOR = 3.0  # box plots clip their y-axis when the runs span this many times the whiskers


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


def line_style(index):
    """
    The colour, marker and line style of the ``index``-th method of a line plot: distinct for the
    first 12, then the colours repeat with a dashed line.

    >>> line_style(0)["marker"], line_style(11)["color"], line_style(12)["linestyle"]
    ('o', 'gold', '--')
    """
    return {
        "color": _LINE_COLOURS[index % len(_LINE_COLOURS)],
        "marker": _LINE_MARKERS[index % len(_LINE_MARKERS)],
        "linestyle": "-" if index < len(_LINE_COLOURS) else "--",
    }


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

    The upper panels share a y-axis that frames the data rather than the bands, so a method
    whose band explodes out of distribution does not flatten every other panel. Under each, the
    same band on its own scale: ± 2 std around zero with the residuals ``y - mean``, so that
    narrow bands stay readable and the out-of-distribution points outside them are visible.

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
    >>> path.name, matplotlib.image.imread(path).shape  # two columns of 3.4 x 4.2 in at 150 dpi
    ('bands.png', (630, 1020, 4))
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

    columns = min(len(results), _MAX_COLUMNS)
    rows = math.ceil(len(results) / columns)
    fig = _figure((_PANEL_SIZE[0] * columns, 1.45 * _PANEL_SIZE[1] * rows))
    grid = fig.subplots(2 * rows, columns, squeeze=False, sharex=True, height_ratios=[2, 1] * rows)
    tops, bottoms = grid[0::2].ravel(), grid[1::2].ravel()
    for ax in [*tops[len(results):], *bottoms[len(results):]]:
        ax.set_visible(False)
    for ax, below, (name, (mean, std)) in zip(tops, bottoms, results.items()):
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
        _residual_panel(below, x_grid, mean, std, (x_train, y_train), None if x_test is None else (x_test, y_test))
    observed = np.concatenate(observed)
    low, high = observed.min(), observed.max()
    pad = 0.25 * (high - low) or 1.0
    for ax in tops:
        ax.set_ylim(low - pad, high + pad)  # the same frame for every method: the data
    tops[0].legend(fontsize="small", loc="upper left")
    bottoms[0].legend(fontsize="small", loc="lower left")
    for ax in grid[:, 0]:
        ax.set_ylabel("y" if ax in tops else "y − mean")
    fig.supxlabel("x")
    return _save(fig, path)


def _residual_panel(ax, x_grid, mean, std, train, test):
    """
    The band of one method on its own scale: ± 2 std around zero and the residuals
    ``y - mean`` of the data, framed on the band and the training residuals (test residuals
    beyond the frame are drawn at its edge as triangles).
    """
    ax.fill_between(x_grid, -2 * std, 2 * std, color="C0", alpha=0.25, lw=0, label="± 2σ")
    ax.axhline(0.0, color="C0", lw=1)
    x_train, y_train = train
    residual = y_train - np.interp(x_train, x_grid, mean)
    ax.scatter(x_train, residual, s=6, color="k", alpha=0.6)
    limit = 1.3 * max(np.abs(2 * std).max(), np.abs(residual).max(), 1e-12)
    if test is not None:
        x_test, y_test = test
        residual = y_test - np.interp(x_test, x_grid, mean)
        inside = np.abs(residual) <= limit
        ax.scatter(x_test[inside], residual[inside], s=10, color="C3", marker="x")
        beyond = (~inside).sum()
        for sign, marker in ((1, "^"), (-1, "v")):
            out = sign * residual > limit
            ax.scatter(x_test[out], np.full(out.sum(), sign * limit), s=14, color="C3", marker=marker, clip_on=False,
                       label=f"test beyond the axis ({beyond})" if beyond and out.any() else None)
            beyond = 0 if out.any() else beyond  # one legend entry
    ax.set_ylim(-limit, limit)


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
    (True, (435, 1020, 4))
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


def plot_coverage(coverages, path):
    """
    Empirical against nominal coverage of central intervals, one line per method (each its own
    colour and marker, :func:`line_style`), with the diagonal. Lines below it are overconfident.

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
    >>> path.name, matplotlib.image.imread(path).shape  # one 5 x 5 in axes at 150 dpi
    ('coverage.png', (750, 750, 4))
    >>> tmp.cleanup()
    """
    _check_methods("coverages", coverages)
    fig = _figure((5.0, 5.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="nominal")
    for index, (name, coverage) in enumerate(coverages.items()):
        levels = sorted(coverage)
        ax.plot(levels, [coverage[level] for level in levels], ms=4, lw=1.2, label=name, **line_style(index))
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        aspect="equal",
        xlabel="nominal coverage",
        ylabel="empirical coverage",
        title="Central intervals (below the diagonal = overconfident)",
    )
    ax.legend(fontsize="small", loc="upper left", ncols=2 if len(coverages) > 6 else 1)
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


def plot_boxplots(values, path, ylabel, title):
    """
    Box plot of a score per method over runs, with the runs as points (as the paper's ablation
    Figures 4-13).

    Non-finite runs (a diverged NLL) cannot be drawn: they are left out and counted in the
    method's label. When a few runs lie far beyond the whiskers (one run at 6,800 against
    boxes below 100), the y-axis is clipped to the whiskers, those runs are drawn as triangles
    at its edge, and the method's label gives their count and the most extreme value.

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
    ('.png', (600, 600, 4))
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
    low, high, clipped = _box_limits(data)
    jitter = np.random.default_rng(0)  # fixed, so a figure is reproducible
    for index, (position, runs) in enumerate(zip(positions, data)):
        shown = np.clip(runs, low, high)
        ax.scatter(position + jitter.uniform(-0.15, 0.15, runs.size), shown, s=10, color="C0", alpha=0.6, zorder=3,
                   clip_on=False, marker="o")
        beyond = runs != shown
        if beyond.any():  # runs past the axis: a triangle at the edge, the count and extreme in the label
            ax.scatter(np.full(beyond.sum(), position), shown[beyond], s=40, color="C3", zorder=4, clip_on=False,
                       marker="^" if runs[beyond].max() > high else "v")
            extreme = runs[beyond][np.argmax(np.abs(runs[beyond]))]
            labels[index] += f"\n{beyond.sum()} off the axis,\nup to {extreme:,.4g}"
    if clipped:
        ax.set_ylim(low, high)
        ax.set_title(f"{title}\n(axis clipped to the whiskers; ▲/▼ runs off the axis)")
    else:
        ax.set_title(title)
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.set(ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _box_limits(data):
    """
    ``(low, high, clipped)``: y-limits that show every box and its whiskers. When the runs reach
    more than ``_CLIP_FACTOR`` times the whiskers' span (one diverged run flattening the boxes),
    the limits are the whiskers' range, padded, and ``clipped`` is True; else they frame every run.

    >>> _box_limits([np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0, 4.0, 6800.0])])[2]
    True
    >>> _box_limits([np.array([1.0, 2.0, 3.0, 4.0])])
    (0.85, 4.15, False)
    """
    finite = [runs for runs in data if runs.size]
    if not finite:
        return 0.0, 1.0, False
    whiskers = []
    for runs in finite:
        q1, q3 = np.percentile(runs, [25, 75])
        reach = _WHISKER * (q3 - q1)
        whiskers += [runs[runs >= q1 - reach].min(), runs[runs <= q3 + reach].max()]
    every = np.concatenate(finite)
    span, whisker_span = every.max() - every.min(), max(whiskers) - min(whiskers)
    clipped = span > _CLIP_FACTOR * whisker_span
    low, high = (min(whiskers), max(whiskers)) if clipped else (every.min(), every.max())
    pad = 0.05 * (high - low) or 1.0
    return float(low - pad), float(high + pad), bool(clipped)
