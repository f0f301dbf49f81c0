# SPDX-License-Identifier: Apache-2.0
"""Figures of regression runs: predictive bands, PIT histograms and interval coverage."""
import math

import numpy as np
import torch

# absolute: see pyro_probmix/experiments/plots/__init__.py
from pyro_probmix.experiments.plots._style import (
    _MAX_COLUMNS, _PANEL_SIZE, _check_methods, _figure, _numpy, _panels, _save, line_style,
)
from pyro_probmix.metrics import pit_histogram

__all__ = ["plot_coverage", "plot_pit_histograms", "plot_regression_bands"]


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
    >>> from pathlib import Path
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
    >>> from pathlib import Path
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
    >>> from pathlib import Path
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
