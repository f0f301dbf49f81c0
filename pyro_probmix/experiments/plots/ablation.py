# SPDX-License-Identifier: Apache-2.0
"""Box plots of the toy ablations: one box per method and configuration, clipped to the bulk of the runs."""

import numpy as np

# absolute: see pyro_probmix/experiments/plots/__init__.py
from pyro_probmix.experiments.plots._style import _check_methods, _figure, _numpy, _save

__all__ = ["plot_boxplots"]

_WHISKER = 1.5  # box-plot whiskers reach 1.5 interquartile ranges, matplotlib's default
_CLIP_FACTOR = 3.0  # box plots clip their y-axis when the runs span this many times the whiskers


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
    >>> from pathlib import Path
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
