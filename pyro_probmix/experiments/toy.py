# SPDX-License-Identifier: Apache-2.0
"""
The toy experiments of §6.1 as functions, for scripts and notebooks.

>>> table = run_toy_regression(["ERM", "ProbMix"], runs=2, epochs=5, out_dir="out/toy")  # doctest: +SKIP
"""
from pathlib import Path

from .report import aggregate, final_records, write_report
from .records import RecordStore
from .suites import ALPHAS, BETAS
from .sweep import SweepOptions, run_sweep

__all__ = ["run_toy_regression", "run_toy_classification"]


def _run(experiment, metrics, methods, runs, epochs, out_dir, device, alphas, betas, quiet, jobs, report):
    opts = SweepOptions(
        experiment, methods=methods, splits=list(range(runs)), epochs=epochs, device=device,
        alphas=alphas, betas=betas, out=out_dir, quiet=quiet, jobs=jobs,
    )
    run_sweep(opts)
    records = [r for r in RecordStore(out_dir).all(experiment)
               if r["key"]["method"] in opts.methods and r["key"]["split"] < runs
               and r["key"]["train"] == opts.train_config().as_dict()]
    finals = final_records(out_dir, records)
    table = []
    for (_, _, dataset), per_method in finals.items():
        for method in opts.methods:
            recs = per_method.get(method, [])
            row = {"method": method, "hparams": recs[0]["key"]["hparams"] if recs else {}, "runs": len(recs)}
            for metric in metrics:
                stat = aggregate(recs, metric)
                row[f"{metric}_mean"], row[f"{metric}_std"] = (stat[0], stat[1]) if stat else (None, None)
            table.append(row)
    report_path = write_report(out_dir, [experiment]) if report else None
    return table, report_path


def run_toy_regression(methods=None, runs=10, epochs=500, out_dir="results/toy-regression", device="cpu",
                       alphas=ALPHAS, betas=BETAS, quiet=True, jobs=1):
    """Toy regression (§6.1): train ``methods`` (default: the nine of Figure 3) on ``runs`` draws
    of the data with every ``(alpha, beta)`` of the grid, select each method's configuration by
    mean validation NLL over the first 3 runs, and write records, the report and the Figure-2-style
    plot (``<out_dir>/report/figures/toy-regression_cubic_bands.png``) under ``out_dir``.

    Returns a list of rows ``{"method", "hparams", "runs", "mse_mean", "mse_std", "nll_mean",
    "nll_std", "crps_mean", "crps_std"}`` (test, original scale, mean and std over runs; the std
    of a single run is nan).
    Pass ``alphas=[0.1], betas=[0.0]`` to skip the grid.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> table = run_toy_regression(["ERM"], runs=1, epochs=1, out_dir=tmp.name, alphas=[0.1], betas=[0.0])
    >>> [(row["method"], row["runs"]) for row in table], table[0]["nll_std"]
    ([('ERM', 1)], nan)
    >>> bands_figure(tmp.name).is_file()
    True
    >>> tmp.cleanup()
    """
    table, _ = _run("toy-regression", ("mse", "nll", "crps"), methods, runs, epochs, out_dir, device,
                    alphas, betas, quiet, jobs, True)
    return table


def run_toy_classification(methods=None, runs=10, epochs=500, out_dir="results/toy-classification",
                           device="cpu", alphas=ALPHAS, betas=BETAS, quiet=True, jobs=1):
    """Toy classification (§6.1, three noisy rings), as :func:`run_toy_regression`; rows hold
    ``accuracy``, ``nll`` and ``ece``; the decision-boundary figure is
    ``<out_dir>/report/figures/toy-classification_rings_boundaries.png``.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> table = run_toy_classification(["ERM"], runs=1, epochs=1, out_dir=tmp.name, alphas=[0.1], betas=[0.0])
    >>> row = table[0]
    >>> row["method"], row["runs"], 0 <= row["accuracy_mean"] <= 1
    ('ERM', 1, True)
    >>> Path(tmp.name, "report", "figures", "toy-classification_rings_boundaries.png").is_file()
    True
    >>> tmp.cleanup()
    """
    table, _ = _run("toy-classification", ("accuracy", "nll", "ece"), methods, runs, epochs, out_dir, device,
                    alphas, betas, quiet, jobs, True)
    return table


def bands_figure(out_dir, experiment="toy-regression", dataset="cubic"):
    """Path of the Figure-2-style plot written by :func:`run_toy_regression`."""
    return Path(out_dir) / "report" / "figures" / f"{experiment}_{dataset}_bands.png"
