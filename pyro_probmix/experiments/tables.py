# SPDX-License-Identifier: Apache-2.0
"""
The cells and tables of a report: ``mean ± std`` over runs, markdown tables with the best mean of
each row in bold, and the column order of the methods.
"""
import json
import math

import numpy as np

from .methods import METHOD_NAMES

__all__ = ["METRICS", "method_order", "hp_key", "aggregate", "format_cell", "markdown_table"]

#: metric -> (label, better): lower or higher is better
METRICS = {
    "nll": ("NLL", "min"),
    "rmse": ("RMSE", "min"),
    "mse": ("MSE", "min"),
    "crps": ("CRPS", "min"),
    "accuracy": ("Accuracy", "max"),
    "ece": ("ECE", "min"),
}


def method_order(name):
    """The column of method ``name`` in the tables: the paper's order, then the controls, then
    unknown names.

    >>> sorted(["M-ERM", "ProbMix", "ERM", "NewMix"], key=method_order)
    ['ERM', 'ProbMix', 'M-ERM', 'NewMix']
    """
    return METHOD_NAMES.index(name) if name in METHOD_NAMES else len(METHOD_NAMES)


def hp_key(hparams):
    """Hyper-parameters as a canonical JSON string.

    >>> hp_key({"beta": 0.0, "alpha": 0.5})
    '{"alpha": 0.5, "beta": 0.0}'
    """
    return json.dumps(hparams, sort_keys=True)


def aggregate(recs, metric):
    """``(mean, std, n)`` of a test metric over runs (non-finite values count as inf); the std of
    a single run is undefined (nan).

    >>> records = [{"metrics": {"test": {"nll": v}}} for v in (1.0, 2.0, 3.0)]
    >>> aggregate(records, "nll")
    (2.0, 1.0, 3)
    >>> aggregate(records[:1], "nll")
    (1.0, nan, 1)
    >>> aggregate(records, "rmse") is None
    True
    """
    values = []
    for r in recs:
        v = r["metrics"]["test"].get(metric)
        if v is None:
            continue
        values.append(float(v) if math.isfinite(float(v)) else math.inf)
    if not values:
        return None
    arr = np.asarray(values)
    if not np.all(np.isfinite(arr)):
        return (math.inf, math.nan, len(values))
    std = float(arr.std(ddof=1)) if len(arr) > 1 else math.nan
    return (float(arr.mean()), std, len(values))


def _num(x, fixed):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.2f}" if fixed else f"{x:.2e}"


def format_cell(stat, bold=False):
    """``mean ± std``, both with 2 decimals, or both in scientific notation when the mean is below
    0.01 or above 1e5 in magnitude; the mean alone for a single run (``n = 1``: no std).

    >>> format_cell((1.234, 0.5, 3))
    '1.23 ± 0.50'
    >>> format_cell((0.00123, 0.0004, 3), bold=True)
    '**1.23e-03 ± 4.00e-04**'
    >>> format_cell((1.234, float("nan"), 1))
    '1.23'
    >>> format_cell(None)
    '–'
    """
    if stat is None:
        return "–"
    mean, std = stat[0], stat[1]
    fixed = not math.isfinite(mean) or mean == 0 or 0.01 <= abs(mean) < 1e5
    text = _num(mean, fixed) if stat[2] == 1 else f"{_num(mean, fixed)} ± {_num(std, fixed)}"
    return f"**{text}**" if bold else text


def _best(stats, better):
    if better not in ("min", "max"):
        return None
    finite = {m: s[0] for m, s in stats.items() if s is not None and math.isfinite(s[0])}
    if not finite:
        return None
    pick = min if better == "min" else max
    target = pick(finite.values())
    return {m for m, v in finite.items() if v == target}


def markdown_table(rows, methods, better, first_col="Dataset", marks=None):
    """``rows``: ``{row name: {method: (mean, std, n) or None}}``; best per row in bold.

    >>> rows = {"yacht": {"ERM": (1.0, 0.1, 3), "ProbMix": (0.5, 0.2, 3)}}
    >>> print(markdown_table(rows, ["ERM", "ProbMix"], "min"))
    | Dataset | ERM | ProbMix |
    |---|---|---|
    | yacht | 1.00 ± 0.10 | **0.50 ± 0.20** |
    """
    marks = marks or {}
    lines = [f"| {first_col} | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for row, stats in rows.items():
        best = _best(stats, better) or set()
        cells = [format_cell(stats.get(m), m in best) for m in methods]
        lines.append(f"| {row}{marks.get(row, '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
