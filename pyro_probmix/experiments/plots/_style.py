# SPDX-License-Identifier: Apache-2.0
"""The figures' common style: panel grids on the Agg canvas, line styles per method, PNG output."""
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 150
_PANEL_SIZE = (3.4, 2.9)  # inches per panel
_MAX_COLUMNS = 4
_CLASS_COLOURS = np.array(matplotlib.colormaps["tab10"].colors)
# one line per method: 12 distinct colours of a qualitative palette (tab10, black, gold), each
# with its own marker, so that the 9 to 11 methods of an experiment never share a style
_LINE_COLOURS = [*matplotlib.colormaps["tab10"].colors, "black", "gold"]
_LINE_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


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
