# SPDX-License-Identifier: Apache-2.0
"""
``report``: aggregate the records under ``--out`` into markdown and CSV tables and figures.

For each experiment, architecture, dataset and method the *final* runs are those with the
hyper-parameters chosen on validation data (the selection file written by the sweep; without
one, the same rule is applied to the records: lowest mean validation NLL over units 0-2). Tables
give mean ± standard deviation (``ddof=1``) over units, the best mean of each row in bold, and
the paper's numbers (Tables 1-4) beside ours where the paper gives them. Below each table: every
method paired against ERM and against its no-mixing control (:mod:`~pyro_probmix.experiments.evidence`),
and under the NLL tables a sentence naming the methods that beat their control.

One code version per report: the runs a report uses must all have been trained by the same code
(the ``code`` part of their fingerprint), else it fails and names the versions it found;
``code=...`` (``report --code FINGERPRINT``) reports the runs of one version and leaves out, with
a warning, those of others (a sweep's own report does so for its code).

Every table and figure is made from the runs' rows of the per-run CSV
(:mod:`~pyro_probmix.experiments.runs_csv`), written here from the records, so that
``report --from-csv`` rebuilds them from the CSV alone (except the toy figures drawn over an input
grid, which need the records' prediction arrays).

Files written to ``<out>/report/``: ``report.md`` (everything), ``<experiment>_runs.csv`` (one
row per run), ``<table>.md`` and ``<table>.csv`` per table, ``summary.csv`` (every metric, long
format) and ``figures/*.png``.
"""
import csv
import io
import json
import math
import warnings
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path

import numpy as np

from .data import EXTRA_UCI_DATASETS, PAPER_UCI_DATASETS, ExperimentError
from .evidence import control_sentence, paired_tables
from .methods import METHODS
from .paper_numbers import PAPER, RESCALED, TABLE_NAMES
from .records import RecordStore
from .report_figures import ablation_section, dataset_figures
from .runs_csv import read_runs_csv, row_record, run_row, write_runs_csv
from .stock_data import STOCK_TICKERS
from .sweep import load_selection
from .tables import METRICS, aggregate, format_cell, hp_key, markdown_table, method_order

__all__ = ["ANY_CODE", "code_version", "write_report", "report_runs", "final_records", "group_runs", "aggregate", "format_cell", "markdown_table"]

#: experiment -> the metrics of its tables
TABLE_METRICS = {
    "toy-regression": ("mse", "nll", "crps"),
    "toy-classification": ("accuracy", "nll", "ece"),
    "uci": ("nll", "rmse", "crps"),
    "stocks": ("nll", "rmse", "crps"),
}
EXPERIMENT_ORDER = ("toy-regression", "toy-classification", "uci", "stocks")
#: ``write_report(code=ANY_CODE)``: report runs of any code versions together (a sweep run with
#: ``--reuse-stale``, which keeps records of other code on purpose)
ANY_CODE = "any"


def _val_nll(rec):
    v = rec["metrics"]["val"].get("nll")
    return v if v is not None and math.isfinite(v) else math.inf


def _choose_by_rule(recs):
    """Fallback selection: the most common training config, then lowest mean val NLL over
    units 0-2 (all units when none of them is recorded)."""
    by_train = defaultdict(list)
    for r in recs:
        by_train[hp_key(r["key"]["train"])].append(r)
    train = max(by_train, key=lambda k: (len(by_train[k]), json.loads(k).get("epochs", 0)))
    by_hp = defaultdict(list)
    for r in by_train[train]:
        by_hp[hp_key(r["key"]["hparams"])].append(r)

    def score(k):
        sel = [r for r in by_hp[k] if r["key"]["split"] < 3] or by_hp[k]
        return float(np.mean([_val_nll(r) for r in sel]))

    best = min(by_hp, key=score)
    return by_hp[best]


def _report_order(key):
    experiment, arch, dataset = key
    known = PAPER_UCI_DATASETS + EXTRA_UCI_DATASETS + STOCK_TICKERS
    return (EXPERIMENT_ORDER.index(experiment) if experiment in EXPERIMENT_ORDER else 9, arch,
            known.index(dataset) if dataset in known else len(known), dataset)


def group_runs(runs):
    """``{(experiment, arch, dataset): {method: [runs]}}`` in the report's order: experiments,
    then datasets as in the paper, methods in column order, runs by split and seed.

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> runs = [{"key": RunSpec.make("uci", "yacht", m, split).key()} for m, split in (("ProbMix", 1), ("ERM", 1), ("ERM", 0))]
    >>> grouped = group_runs(runs)
    >>> [(m, [r["key"]["split"] for r in rs]) for m, rs in grouped[("uci", "mlp", "yacht")].items()]
    [('ERM', [0, 1]), ('ProbMix', [1])]
    """
    grouped = defaultdict(lambda: defaultdict(list))
    for run in runs:
        k = run["key"]
        grouped[(k["experiment"], k["arch"], k["dataset"])][k["method"]].append(run)
    return OrderedDict(
        (key, OrderedDict((m, sorted(grouped[key][m], key=lambda r: (r["key"]["split"], r["key"]["seed"])))
                          for m in sorted(grouped[key], key=method_order)))
        for key in sorted(grouped, key=_report_order)
    )


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
    result = OrderedDict()
    for (experiment, arch, dataset), methods in group_runs(records).items():
        selection = load_selection(out, experiment, arch, dataset)
        for method, recs in methods.items():
            chosen = selection.get(method)
            picked = []
            if chosen is not None:
                picked = [
                    r for r in recs
                    if r["key"]["hparams"] == chosen["hparams"] and r["key"]["train"] == chosen.get("train", r["key"]["train"])
                ]
            methods[method] = picked or _choose_by_rule(recs)  # recs and picked are in unit order
        result[(experiment, arch, dataset)] = methods
    return result

def _csv_text(header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------- report
def code_version(run):
    """The code fingerprint of a record or of a run read from a per-run CSV (``None`` for runs
    written before fingerprints existed).

    >>> code_version({"fingerprint": {"code": "dc48", "data": {}}}), code_version({"fingerprint": '{"code":"dc48"}'})
    ('dc48', 'dc48')
    >>> code_version({}) is None
    True
    """
    fingerprint = run.get("fingerprint")
    if isinstance(fingerprint, str):
        try:
            fingerprint = json.loads(fingerprint)
        except ValueError:
            return fingerprint or None
    return fingerprint.get("code") if isinstance(fingerprint, dict) else None


def _versions_text(runs):
    counts = Counter(code_version(r) for r in runs)
    return ", ".join(f"{v or 'no fingerprint'} ({n} runs)" for v, n in counts.most_common())


def _of_code(runs, code):
    """The runs of code version ``code`` (a warning counts the others); ``None``: all of them."""
    if code is None or code == ANY_CODE:
        return runs
    kept = [r for r in runs if code_version(r) == code]
    if not kept:
        raise ExperimentError(f"report --code {code}: no run was trained by that code version "
                              f"(found: {_versions_text(runs) or 'no runs'})")
    if len(kept) < len(runs):
        warnings.warn(f"report --code {code}: left out {len(runs) - len(kept)} runs of other code versions "
                      f"({_versions_text([r for r in runs if code_version(r) != code])})", stacklevel=3)
    return kept


def _check_one_code_version(runs, code):
    if code == ANY_CODE:
        return
    versions = {code_version(r) for r in runs}
    if len(versions) > 1:
        raise ExperimentError(
            f"report: the runs to report were trained by {len(versions)} code versions: {_versions_text(runs)}; "
            "report one of them with --code FINGERPRINT, or retrain the others (the sweep's command again "
            "retrains stale records)"
        )


def report_runs(out, records):
    """The runs a report of ``records`` uses, as record-shaped dicts read back from their CSV rows
    (:mod:`~pyro_probmix.experiments.runs_csv`), each with its source under ``"record"``: the
    final runs (the configurations chosen on validation data), then, for the toy experiments,
    every other configuration of their ablations. Returns ``(runs, rows)``.

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> records = [{"key": RunSpec.make("uci", "yacht", "ERM", 0).key(), "metrics": {"test": {"nll": 0.5}, "val": {}}}]
    >>> runs, rows = report_runs("no-selection-here", records)
    >>> runs[0]["role"], runs[0]["record"] is records[0], rows[0]["nll"]
    ('final', True, '0.5')
    """
    finals = final_records(out, records)
    chosen = [r for methods in finals.values() for recs in methods.values() for r in recs]
    final_ids = {id(r) for r in chosen}
    ablation = [r for r in records if r["key"]["experiment"].startswith("toy") and id(r) not in final_ids]
    pairs = [(run_row(r, "final"), r) for r in chosen] + [(run_row(r, "ablation"), r) for r in ablation]
    runs = []
    for row, record in pairs:
        run = row_record(row)
        run["record"] = record
        runs.append(run)
    return runs, [row for row, _ in pairs]


def write_report(out, experiments=None, figures=True, from_csv=None, code=None):
    """Write the report of the records under ``out`` (or of the per-run CSV files ``from_csv``)
    to ``out/report``; returns the path of ``report.md``. ``code``: report only the runs of
    this code version (default: all, which must then share one; :data:`ANY_CODE`: no check).

    From the records it also writes ``<experiment>_runs.csv`` (one row per run it uses), from
    which ``from_csv`` rebuilds the same tables and figures, except the toy figures drawn over an
    input grid (bands, decision boundaries), which need the records' prediction arrays.

    >>> import tempfile
    >>> from pyro_probmix.experiments.records import RunSpec
    >>> tmp = tempfile.TemporaryDirectory()
    >>> for split, nll in enumerate([1.0, 2.0]):
    ...     test = {"nll": nll, "rmse": 0.5, "crps": 0.3}
    ...     _ = RecordStore(tmp.name).write(RunSpec.make("uci", "yacht", "ERM", split),
    ...                                     {"metrics": {"test": test, "val": {"nll": nll}}})
    >>> path = write_report(tmp.name, figures=False)
    >>> path.name, sorted(p.name for p in path.parent.glob("*.csv"))
    ('report.md', ['summary.csv', 'uci_crps.csv', 'uci_nll.csv', 'uci_rmse.csv', 'uci_runs.csv'])
    >>> "| yacht | **1.50 ± 0.71** |" in path.read_text()  # mean ± std over the two splits
    True
    >>> again = write_report(Path(tmp.name, "again"), figures=False, from_csv=[path.parent / "uci_runs.csv"])
    >>> again.read_text() == path.read_text()
    True
    >>> tmp.cleanup()
    """
    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    if from_csv is None:
        store = RecordStore(out)
        records = store.all()
        if experiments:
            records = [r for r in records if r["key"]["experiment"] in experiments]
        records = _of_code(records, code)  # before the selection: its fallback rule reads the records
        runs, rows = report_runs(out, records)
        _check_one_code_version(runs, code)
        for experiment in dict.fromkeys(row["experiment"] for row in rows):
            write_runs_csv(rep / f"{experiment}_runs.csv", [row for row in rows if row["experiment"] == experiment])
    else:
        store = None
        try:
            runs = [run for path in from_csv for run in read_runs_csv(path)]
        except (OSError, ValueError) as e:  # a missing or malformed file: one line, no traceback
            raise ExperimentError(f"--from-csv: {e}") from None
        if experiments:
            runs = [r for r in runs if r["key"]["experiment"] in experiments]
        runs = _of_code(runs, code)
        _check_one_code_version(runs, code)
    return _write(rep, runs, store, figures)


_TITLES = {"toy-regression": "Toy regression", "toy-classification": "Toy classification",
           "uci": "UCI regression", "stocks": "Stock forecasting"}


def _write(rep, runs, store, figures):
    figdir = rep / "figures"
    finals = group_runs([r for r in runs if r["role"] == "final"])
    notes = []
    n_final = sum(len(recs) for methods in finals.values() for recs in methods.values())
    names = dict.fromkeys(experiment for experiment, _, _ in finals)
    md = [f"# {', '.join(_TITLES.get(e, e) for e in names) or 'ProbMix experiments'}: all tables", "",
          f"{n_final} reported runs (one row each in `<experiment>_runs.csv`). Cells: mean ± std (ddof=1) over "
          "units (splits / runs) of the configuration chosen on validation data; best mean per row in **bold**. "
          "NLL, RMSE and CRPS on the original target scale. Paired tables: each method against ERM and "
          "against its no-mixing control (ERM; M-ERM for M-ProbMix and LocKM-ProbMix; M-ERM-star for the star "
          "variants) on the units both ran.", ""]
    settings = sorted({(r["key"]["train"].get("epochs"), r["key"]["train"].get("lr")) for r in runs
                       if r["key"].get("train")}, key=str)
    if settings:  # so that a smoke run does not read like the paper's protocol
        md += ["Training settings of these runs: " + "; ".join(f"{e} epochs, Adam lr {lr}" for e, lr in settings)
               + " (the paper's: toy 500 epochs, UCI 1000, stocks 1500).", ""]
    summary_rows = []
    experiments_seen = OrderedDict()
    for (experiment, arch, dataset), methods in finals.items():
        experiments_seen.setdefault((experiment, arch), OrderedDict())[dataset] = methods
    for (experiment, arch), datasets in experiments_seen.items():
        title = experiment + (f" ({arch})" if experiment == "stocks" else "")
        md += [f"## {title}", ""]
        methods_all = sorted({m for ms in datasets.values() for m in ms}, key=method_order)
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
                        summary_rows.append([experiment, arch, ds, m, metric, s[0], s[1], s[2], hp_key(hp),
                                             *(p if p else ("", ""))])
            (rep / f"{name}.csv").write_text(_csv_text(["dataset", "method", "mean", "std", "n", "paper_mean", "paper_std"], csv_rows))
            if better in ("min", "max"):
                paired = paired_tables(datasets, methods_all, metric, better, label)
                if paired:
                    md += [paired, ""]
                if metric == "nll":
                    md += [control_sentence(datasets, methods_all, metric, better, label), ""]
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
                shown = ", ".join(f"{k}={v}" for k, v in hp.items() if k in ("alpha", "beta", "weight_decay"))
                cells.append("–" if hp is None else (shown or "–"))
            md.append(f"| {ds} | " + " | ".join(cells) + " |")
        md.append("")
        figs = []
        if figures:
            for ds, ms in datasets.items():
                figs += dataset_figures(store, (experiment, arch, ds), ms, figdir, notes)
            if experiment.startswith("toy") and store is None:
                notes.append(f"{experiment}: the figures drawn over an input grid (bands, decision boundaries) "
                             "need the records' prediction arrays; not drawn from the per-run CSV")
        if experiment.startswith("toy"):
            for ds, ms in datasets.items():
                plain = OrderedDict((m, rs) for m, rs in ms.items() if m in METHODS and METHODS[m].family == "erm")
                ab_figs, ab_md = ablation_section(runs, plain, experiment, ds, figdir, notes, figures)
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
