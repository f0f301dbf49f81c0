# SPDX-License-Identifier: Apache-2.0
"""
``report``: aggregate the records under ``--out`` into markdown and CSV tables and figures.

For each experiment, architecture, dataset and method the *final* runs are those with the
hyper-parameters chosen on validation data (the selection file written by the sweep; without
one, the same rule is applied to the records: lowest mean validation NLL over units 0-2). Tables
give mean ± standard deviation (``ddof=1``) over units, the best mean of each row in bold, and
the paper's numbers (Tables 1-4) beside ours where the paper gives them.

Files written to ``<out>/report/``: ``report.md`` (everything), ``<table>.md`` and ``<table>.csv``
per table, ``summary.csv`` (every metric, long format) and ``figures/*.png``.
"""
import csv
import io
import json
import math
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np

from .data import EXTRA_UCI_DATASETS, PAPER_UCI_DATASETS, STOCK_TICKERS
from .methods import METHOD_NAMES
from .paper_numbers import PAPER, RESCALED, TABLE_NAMES
from .records import RecordStore
from .sweep import load_selection

__all__ = ["write_report", "final_records", "aggregate", "format_cell", "markdown_table"]

#: metric -> (label, better): lower or higher is better
METRICS = {
    "nll": ("NLL", "min"),
    "rmse": ("RMSE", "min"),
    "mse": ("MSE", "min"),
    "crps": ("CRPS", "min"),
    "accuracy": ("Accuracy", "max"),
    "ece": ("ECE", "min"),
}
TABLE_METRICS = {
    "toy-regression": ("mse", "nll", "crps"),
    "toy-classification": ("accuracy", "nll", "ece"),
    "uci": ("nll", "rmse", "crps"),
    "stocks": ("nll", "rmse", "crps"),
}
EXPERIMENT_ORDER = ("toy-regression", "toy-classification", "uci", "stocks")


def _method_order(name):
    return METHOD_NAMES.index(name) if name in METHOD_NAMES else len(METHOD_NAMES)


def _hp_key(hparams):
    return json.dumps(hparams, sort_keys=True)


def _val_nll(rec):
    v = rec["metrics"]["val"].get("nll")
    return v if v is not None and math.isfinite(v) else math.inf


def _choose_by_rule(recs):
    """Fallback selection: the most common training config, then lowest mean val NLL over
    units 0-2 (all units when none of them is recorded)."""
    by_train = defaultdict(list)
    for r in recs:
        by_train[_hp_key(r["key"]["train"])].append(r)
    train = max(by_train, key=lambda k: (len(by_train[k]), json.loads(k).get("epochs", 0)))
    by_hp = defaultdict(list)
    for r in by_train[train]:
        by_hp[_hp_key(r["key"]["hparams"])].append(r)

    def score(k):
        sel = [r for r in by_hp[k] if r["key"]["split"] < 3] or by_hp[k]
        return float(np.mean([_val_nll(r) for r in sel]))

    best = min(by_hp, key=score)
    return by_hp[best]


def final_records(out, records):
    """``{(experiment, arch, dataset): {method: [records of the chosen configuration]}}``.

    Without a selection file, the configuration of lowest mean validation NLL is kept:

    >>> import tempfile
    >>> from pyro_probmix.experiments.records import RunSpec
    >>> def record(alpha, split, val_nll):
    ...     key = RunSpec.make("uci", "yacht", "ProbMix", split, hparams={"alpha": alpha}).key()
    ...     return {"key": key, "metrics": {"val": {"nll": val_nll}}}
    >>> records = [record(0.1, 0, 2.0), record(0.1, 1, 2.2), record(1.0, 0, 1.0), record(1.0, 1, 1.4)]
    >>> with tempfile.TemporaryDirectory() as out:
    ...     finals = final_records(out, records)
    >>> list(finals), [r["key"]["hparams"] for r in finals[("uci", "mlp", "yacht")]["ProbMix"]]
    ([('uci', 'mlp', 'yacht')], [{'alpha': 1.0}, {'alpha': 1.0}])
    """
    grouped = defaultdict(lambda: defaultdict(list))
    for rec in records:
        k = rec["key"]
        grouped[(k["experiment"], k["arch"], k["dataset"])][k["method"]].append(rec)
    result = OrderedDict()
    def order(t):
        experiment, arch, dataset = t
        known = PAPER_UCI_DATASETS + EXTRA_UCI_DATASETS + STOCK_TICKERS
        return (EXPERIMENT_ORDER.index(experiment) if experiment in EXPERIMENT_ORDER else 9, arch,
                known.index(dataset) if dataset in known else len(known), dataset)

    for (experiment, arch, dataset) in sorted(grouped, key=order):
        selection = load_selection(out, experiment, arch, dataset)
        methods = OrderedDict()
        for method in sorted(grouped[(experiment, arch, dataset)], key=_method_order):
            recs = grouped[(experiment, arch, dataset)][method]
            chosen = selection.get(method)
            picked = []
            if chosen is not None:
                picked = [
                    r for r in recs
                    if r["key"]["hparams"] == chosen["hparams"] and r["key"]["train"] == chosen.get("train", r["key"]["train"])
                ]
            if not picked:
                picked = _choose_by_rule(recs)
            methods[method] = sorted(picked, key=lambda r: (r["key"]["split"], r["key"]["seed"]))
        result[(experiment, arch, dataset)] = methods
    return result


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


def _csv_text(header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------- figures
def _plots():
    try:
        from . import plots
    except ImportError as e:  # matplotlib missing
        print(f"report: figures skipped ({e})", file=sys.stderr)
        return None
    return plots


def _figure(notes, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # a figure must never break the tables
        notes.append(f"figure {getattr(fn, '__name__', fn)} failed: {e}")
        return None


def _figures(out, store, key, methods, figdir, notes):
    plots = _plots()
    if plots is None:
        return []
    experiment, arch, dataset = key
    stem = f"{experiment}_{arch}_{dataset}" if experiment == "stocks" else f"{experiment}_{dataset}"
    made = []
    arrays = {m: [store.arrays(r) or {} for r in recs] for m, recs in methods.items()}
    if experiment in ("toy-regression", "uci", "stocks"):
        pits = {m: np.concatenate([a["test_pit"] for a in arrs if "test_pit" in a]) for m, arrs in arrays.items()
                if any("test_pit" in a for a in arrs)}
        if pits:
            made.append(_figure(notes, plots.plot_pit_histograms, pits, figdir / f"{stem}_pit.png"))
        cov = {}
        for m, recs in methods.items():
            levels = defaultdict(list)
            for r in recs:
                for lvl, v in (r["metrics"]["test"].get("coverage") or {}).items():
                    levels[float(lvl)].append(v)
            if levels:
                cov[m] = {lvl: float(np.mean(v)) for lvl, v in sorted(levels.items())}
        if cov:
            made.append(_figure(notes, plots.plot_coverage, cov, figdir / f"{stem}_coverage.png"))
    if experiment == "toy-regression":
        bands, data = {}, None
        for m, arrs in arrays.items():
            if arrs and "grid_mean" in arrs[0]:
                bands[m] = (arrs[0]["grid_mean"], arrs[0]["grid_std"])
                data = data or arrs[0]
        if bands and data is not None:
            made.append(_figure(
                notes, plots.plot_regression_bands, data["x_train_raw"], data["y_train_raw"], data["x_grid_raw"],
                bands, figdir / f"{stem}_bands.png", data["x_test_raw"], data["y_test_raw"], truth=lambda x: x**3,
            ))
    if experiment == "toy-classification":
        probs, data = {}, None
        for m, arrs in arrays.items():
            if arrs and "grid_probs" in arrs[0]:
                shape = arrs[0]["grid_xx"].shape
                probs[m] = arrs[0]["grid_probs"].reshape(shape + (-1,))
                data = data or arrs[0]
        if probs and data is not None:
            made.append(_figure(
                notes, plots.plot_decision_boundaries, data["x_train_raw"], data["y_train_raw"],
                data["grid_xx"], data["grid_yy"], probs, figdir / f"{stem}_boundaries.png",
            ))
        rel = {}
        for m, recs in methods.items():
            conf_sum = acc_sum = counts = None
            for r in recs:
                b = r["metrics"]["test"].get("reliability")
                if not b:
                    continue
                n = np.asarray(b["counts"], dtype=float)
                c = np.nan_to_num(np.asarray([np.nan if v is None else v for v in b["confidence"]], dtype=float))
                a = np.nan_to_num(np.asarray([np.nan if v is None else v for v in b["accuracy"]], dtype=float))
                conf_sum = c * n if conf_sum is None else conf_sum + c * n
                acc_sum = a * n if acc_sum is None else acc_sum + a * n
                counts = n if counts is None else counts + n
            if counts is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    rel[m] = (conf_sum / counts, acc_sum / counts, counts.astype(np.int64))
        if rel:
            made.append(_figure(notes, plots.plot_reliability, rel, figdir / f"{stem}_reliability.png"))
    return [p for p in made if p is not None]


def _ablation(records, experiment, dataset, figdir, notes):
    """Box plots over runs per (alpha, beta), as the paper's Figures 4-13 and 15-24."""
    plots = _plots()
    if plots is None:
        return [], ""
    metrics = ("mse", "nll") if experiment == "toy-regression" else ("accuracy", "nll")
    recs = [r for r in records if r["key"]["experiment"] == experiment and r["key"]["dataset"] == dataset]
    by_train = defaultdict(list)
    for r in recs:
        by_train[_hp_key(r["key"]["train"])].append(r)
    if not by_train:
        return [], ""
    recs = max(by_train.values(), key=len)
    erm = [r for r in recs if r["key"]["method"] == "ERM"]
    configs = sorted({(r["key"]["hparams"].get("alpha"), r["key"]["hparams"].get("beta")) for r in recs
                      if r["key"]["method"] != "ERM"}, key=lambda t: (t[1], t[0]))
    made, lines = [], []
    for alpha, beta in configs:
        per = OrderedDict()
        if erm:
            per["ERM"] = erm
        for r in sorted(recs, key=lambda r: _method_order(r["key"]["method"])):
            hp = r["key"]["hparams"]
            if r["key"]["method"] != "ERM" and hp.get("alpha") == alpha and hp.get("beta") == beta:
                per.setdefault(r["key"]["method"], []).append(r)
        rows = OrderedDict()
        for metric in metrics:
            values = {m: [float(x["metrics"]["test"][metric]) for x in rs] for m, rs in per.items()}
            label = METRICS[metric][0]
            path = figdir / f"{experiment}_ablation_{metric}_alpha{alpha}_beta{beta}.png"
            made.append(_figure(notes, plots.plot_boxplots, values, path, label,
                                f"{experiment}: test {label} (α = {alpha}, β = {beta})"))
            rows[f"{label}"] = {m: aggregate(rs, metric) for m, rs in per.items()}
        methods = list(per)
        for metric_label, stats in rows.items():
            better = "max" if metric_label == "Accuracy" else "min"
            lines.append(f"\n*α = {alpha}, β = {beta}*\n\n" + markdown_table({metric_label: stats}, methods, better, "Metric"))
    return [p for p in made if p is not None], "\n".join(lines)


# ----------------------------------------------------------------------------- report
def write_report(out, experiments=None, figures=True):
    """Write the report of the records under ``out``; returns the path of ``report.md``.

    >>> import tempfile
    >>> from pyro_probmix.experiments.records import RunSpec
    >>> tmp = tempfile.TemporaryDirectory()
    >>> for split, nll in enumerate([1.0, 2.0]):
    ...     test = {"nll": nll, "rmse": 0.5, "crps": 0.3}
    ...     _ = RecordStore(tmp.name).write(RunSpec.make("uci", "yacht", "ERM", split),
    ...                                     {"metrics": {"test": test, "val": {"nll": nll}}})
    >>> path = write_report(tmp.name, figures=False)
    >>> path.name, sorted(p.name for p in path.parent.glob("*.csv"))
    ('report.md', ['summary.csv', 'uci_crps.csv', 'uci_nll.csv', 'uci_rmse.csv'])
    >>> "| yacht | **1.50 ± 0.71** |" in path.read_text()  # mean ± std over the two splits
    True
    >>> tmp.cleanup()
    """
    out = Path(out)
    store = RecordStore(out)
    records = store.all()
    if experiments:
        records = [r for r in records if r["key"]["experiment"] in experiments]
    rep = out / "report"
    figdir = rep / "figures"
    rep.mkdir(parents=True, exist_ok=True)
    finals = final_records(out, records)
    notes = []
    md = ["# ProbMix experiments: results", "",
          f"{len(records)} run records under `{out}`. Cells: mean ± std (ddof=1) over units (splits / runs) "
          "of the configuration chosen on validation data; best mean per row in **bold**. "
          "NLL, RMSE and CRPS on the original target scale.", ""]
    settings = sorted({(r["key"]["train"].get("epochs"), r["key"]["train"].get("lr")) for r in records
                       if r["key"].get("train")}, key=str)
    if settings:  # so that a smoke run does not read like the paper's protocol
        md += ["Training settings of these records: " + "; ".join(f"{e} epochs, Adam lr {lr}" for e, lr in settings)
               + " (the paper's: toy 500 epochs, UCI 1000, stocks 1500).", ""]
    summary_rows = []
    experiments_seen = OrderedDict()
    for (experiment, arch, dataset), methods in finals.items():
        experiments_seen.setdefault((experiment, arch), OrderedDict())[dataset] = methods
    for (experiment, arch), datasets in experiments_seen.items():
        title = experiment + (f" ({arch})" if experiment == "stocks" else "")
        md += [f"## {title}", ""]
        methods_all = sorted({m for ms in datasets.values() for m in ms}, key=_method_order)
        for metric in TABLE_METRICS.get(experiment, ("nll",)):
            label, better = METRICS[metric]
            rows = OrderedDict((ds, {m: aggregate(ms.get(m, []), metric) for m in methods_all}) for ds, ms in datasets.items())
            name = f"{experiment}{'_' + arch if experiment == 'stocks' else ''}_{metric}"
            table = markdown_table(rows, methods_all, better)
            md += [f"### Test {label} (ours)", "", table, ""]
            paper = PAPER.get((experiment, arch, metric))
            paper_md = ""
            if paper:
                prow = OrderedDict()
                marks = {}
                for ds in datasets:
                    if ds in paper:
                        prow[ds] = {m: (paper[ds][m][0], paper[ds][m][1], None) if m in paper[ds] else None for m in methods_all}
                        if (experiment, ds) in RESCALED:
                            marks[ds] = " †"
                if prow:
                    paper_md = markdown_table(prow, methods_all, better, marks=marks)
                    md += [f"### Paper, {TABLE_NAMES[(experiment, arch, metric)]}", "", paper_md, ""]
                    if marks:
                        md += ["† rescaled by the paper (\"normalized to one or two integer digits\"): "
                               "compare rankings only.", ""]
            (rep / f"{name}.md").write_text(f"# {title}: test {label}\n\n{table}\n" + (f"\n## Paper\n\n{paper_md}\n" if paper_md else ""))
            csv_rows = []
            for ds, stats in rows.items():
                for m in methods_all:
                    s = stats[m]
                    p = (paper or {}).get(ds, {}).get(m)
                    csv_rows.append([ds, m, *(s if s else ("", "", 0)), *(p if p else ("", ""))])
                    if s:
                        hp = datasets[ds][m][0]["key"]["hparams"] if datasets[ds].get(m) else {}
                        summary_rows.append([experiment, arch, ds, m, metric, s[0], s[1], s[2], _hp_key(hp),
                                             *(p if p else ("", ""))])
            (rep / f"{name}.csv").write_text(_csv_text(["dataset", "method", "mean", "std", "n", "paper_mean", "paper_std"], csv_rows))
        if experiment in ("toy-regression", "uci", "stocks"):
            rows = OrderedDict()
            for ds, ms in datasets.items():
                rows[ds] = {}
                for m in methods_all:
                    vals = [r["metrics"]["test"].get("coverage", {}).get("0.9") for r in ms.get(m, [])]
                    vals = [v for v in vals if v is not None]
                    rows[ds][m] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)) if vals else None
            md += ["### Coverage of the central 90% interval (calibrated: 0.90)", "",
                   markdown_table(rows, methods_all, "none"), ""]
        # chosen hyper-parameters
        md += ["### Chosen hyper-parameters (validation NLL, first 3 units)", "",
               "| Dataset | " + " | ".join(methods_all) + " |", "|---" * (len(methods_all) + 1) + "|"]
        for ds, ms in datasets.items():
            cells = []
            for m in methods_all:
                recs = ms.get(m)
                hp = recs[0]["key"]["hparams"] if recs else None
                cells.append("–" if hp is None else (", ".join(f"{k}={v}" for k, v in hp.items() if k in ("alpha", "beta")) or "–"))
            md.append(f"| {ds} | " + " | ".join(cells) + " |")
        md.append("")
        if figures:
            figs = []
            for ds, ms in datasets.items():
                figs += _figures(out, store, (experiment, arch, ds), ms, figdir, notes)
            if experiment.startswith("toy"):
                for ds in datasets:
                    ab_figs, ab_md = _ablation(records, experiment, ds, figdir, notes)
                    figs += ab_figs
                    if ab_md:
                        md += ["### Ablation over (α, β): test scores of every configuration", ab_md, ""]
            if figs:
                md += ["### Figures", ""] + [f"![{Path(f).stem}](figures/{Path(f).name})" for f in figs] + [""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    (rep / "summary.csv").write_text(_csv_text(
        ["experiment", "arch", "dataset", "method", "metric", "mean", "std", "n", "hparams", "paper_mean", "paper_std"],
        summary_rows,
    ))
    path = rep / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
