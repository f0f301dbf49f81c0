# SPDX-License-Identifier: Apache-2.0
"""
The figures of a report, made from the runs' scores (PIT histogram counts, interval coverage,
reliability bins, the toy ablations' box plots) and, for the toy experiments, from the records'
prediction arrays (bands, decision boundaries).
"""
import sys
from collections import OrderedDict, defaultdict

import numpy as np

from .tables import METRICS, aggregate, hp_key, markdown_table, method_order

__all__ = ["dataset_figures", "ablation_section"]


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


def dataset_figures(store, key, methods, figdir, notes):
    """The figures of one dataset (``key``: experiment, arch, dataset; ``methods``: ``{method:
    runs}``), their paths: PIT histograms and coverage from the runs' scores; for the toy
    experiments also the reliability diagrams and those drawn from the records' prediction arrays
    (``store``; ``None`` when the runs come from a CSV). Failures go to ``notes``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from pyro_probmix.experiments.records import RunSpec
    >>> runs = [{"key": RunSpec.make("uci", "yacht", "ERM", 0).key(),
    ...          "metrics": {"test": {"pit_hist": [1] * 10, "coverage": {"0.9": 0.8}}}}]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = dataset_figures(None, ("uci", "mlp", "yacht"), {"ERM": runs}, Path(tmp), [])
    ...     [p.name for p in paths]
    ['uci_yacht_pit.png', 'uci_yacht_coverage.png']
    """
    plots = _plots()
    if plots is None:
        return []
    experiment, arch, dataset = key
    stem = f"{experiment}_{arch}_{dataset}" if experiment == "stocks" else f"{experiment}_{dataset}"
    made = []
    if experiment in ("toy-regression", "uci", "stocks"):
        pits = {m: np.sum([r["metrics"]["test"]["pit_hist"] for r in recs if "pit_hist" in r["metrics"]["test"]], 0)
                for m, recs in methods.items() if any("pit_hist" in r["metrics"]["test"] for r in recs)}
        if pits:
            bins = len(next(iter(pits.values())))
            made.append(_figure(notes, plots.plot_pit_histograms, pits, figdir / f"{stem}_pit.png", bins, counted=True))
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
    if store is None:
        arrays = {m: [{} for _ in recs] for m, recs in methods.items()}
    else:
        arrays = {m: [store.arrays(r["record"]) or {} for r in recs] for m, recs in methods.items()}
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


def ablation_section(runs, plain, experiment, dataset, figdir, notes, figures):
    """Tables and (with ``figures``) box plots over runs per (alpha, beta), as the paper's
    Figures 4-13 and 15-24: every configuration of the mixing methods in ``runs``; the methods
    without mixing (``plain``: ``{method: runs}``, ERM and the controls) with their chosen
    configuration in every panel. Returns ``(figure paths, markdown)``.

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> def run(method, alpha, nll):
    ...     hp = {"alpha": alpha, "beta": 0.0} if alpha else {}
    ...     return {"key": RunSpec.make("toy-regression", "cubic", method, 0, hparams=hp).key(),
    ...             "metrics": {"test": {"nll": nll, "mse": 2 * nll}}}
    >>> runs = [run("ProbMix", 0.1, 1.0), run("ProbMix", 1.0, 3.0)]
    >>> _, md = ablation_section(runs, {"ERM": [run("ERM", None, 2.0)]}, "toy-regression", "cubic", None, [], False)
    >>> print(md.split("*α = 1.0, β = 0.0*")[-1].strip().splitlines()[-1])  # the last table: NLL at alpha = 1
    | NLL | **2.00** | 3.00 |
    """
    plots = _plots() if figures else None
    metrics = ("mse", "nll") if experiment == "toy-regression" else ("accuracy", "nll")
    recs = [r for r in runs if r["key"]["experiment"] == experiment and r["key"]["dataset"] == dataset
            and r["key"]["method"] not in plain]
    by_train = defaultdict(list)
    for r in recs:
        by_train[hp_key(r["key"]["train"])].append(r)
    if not by_train:
        return [], ""
    recs = max(by_train.values(), key=len)
    configs = sorted({(r["key"]["hparams"].get("alpha"), r["key"]["hparams"].get("beta")) for r in recs},
                     key=lambda t: (t[1], t[0]))
    made, lines = [], []
    for alpha, beta in configs:
        per = OrderedDict(plain)
        for r in sorted(recs, key=lambda r: method_order(r["key"]["method"])):
            hp = r["key"]["hparams"]
            if hp.get("alpha") == alpha and hp.get("beta") == beta:
                per.setdefault(r["key"]["method"], []).append(r)
        rows = OrderedDict()
        for metric in metrics:
            values = {m: [float(x["metrics"]["test"][metric]) for x in rs] for m, rs in per.items()}
            label = METRICS[metric][0]
            if plots is not None:
                path = figdir / f"{experiment}_ablation_{metric}_alpha{alpha}_beta{beta}.png"
                made.append(_figure(notes, plots.plot_boxplots, values, path, label,
                                    f"{experiment}: test {label} (α = {alpha}, β = {beta})"))
            rows[f"{label}"] = {m: aggregate(rs, metric) for m, rs in per.items()}
        methods = list(per)
        for metric_label, stats in rows.items():
            better = "max" if metric_label == "Accuracy" else "min"
            lines.append(f"\n*α = {alpha}, β = {beta}*\n\n" + markdown_table({metric_label: stats}, methods, better, "Metric"))
    return [p for p in made if p is not None], "\n".join(lines)
