# SPDX-License-Identifier: Apache-2.0
"""
``python -m pyro_probmix.experiments <experiment> [options]``

Experiments: ``toy-regression``, ``toy-classification``, ``uci``, ``stocks`` (train, record,
then write the report), ``report`` (tables and figures from the records under ``--out``) and
``download`` (fetch the UCI splits and stock CSVs). See ``docs/experiments.md``.

Examples::

    python -m pyro_probmix.experiments toy-regression --out results
    python -m pyro_probmix.experiments uci --datasets yacht boston --methods ERM ProbMix --splits 0-4
    python -m pyro_probmix.experiments stocks --archs lstm --device cuda
    python -m pyro_probmix.experiments report --out results
"""
import argparse
import math
import sys
import tempfile
from pathlib import Path

from .data import ExperimentError

__all__ = ["main", "build_parser", "results_table"]

TRAINING = ("toy-regression", "toy-classification", "uci", "stocks")


def _splits(values):
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    a, b = (int(v) for v in part.split("-", 1))
                    if b < a:
                        raise ExperimentError(f"--splits: {part!r} is an empty range (write {b}-{a})")
                    out.extend(range(a, b + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise ExperimentError(f"--splits: {part!r} is not an index or a range like 0-4") from None
    if any(s < 0 for s in out):
        raise ExperimentError(f"--splits: indices must be >= 0, got {out}")
    return list(dict.fromkeys(out))


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _writable_folder(path, option="--out"):
    """Raise :class:`ExperimentError` unless ``path`` is (or can be made) a folder we can write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"{option} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as e:
        raise ExperimentError(f"{option} {path}: cannot write there ({e.strerror or e})") from None


def _add_training(p, experiment):
    p.add_argument("--methods", nargs="+", metavar="M", help="methods (case-insensitive; default: the paper's)")
    p.add_argument("--datasets", nargs="+", metavar="D",
                   help="datasets (uci: folder names, aliases boston/naval/power/wine/protein, or 'all'; "
                        "stocks: tickers)")
    p.add_argument("--splits", nargs="+", metavar="S",
                   help="units to run: split indices (uci), data seeds (toy) or training seeds (stocks); "
                        "ranges like 0-4 allowed")
    p.add_argument("--runs", type=_positive_int,
                   help="shorthand for --splits 0-(RUNS-1). Besides these final runs, every method is trained "
                        "on each configuration of its grid on the first --select-splits units to select its "
                        "hyper-parameters (mixing methods: the (alpha, beta) grid, default 5 x 2; ERM and the "
                        "controls: as many weight decays): --runs 3 with 4 methods trains 4 x 10 x 3 = 120 "
                        "models, the final runs among them. The count is printed before training; "
                        "--alphas/--betas/--weight-decays shrink the grids")
    if experiment == "stocks":
        p.add_argument("--archs", nargs="+", choices=["lstm", "transformer"], help="default: both")
    p.add_argument("--epochs", type=_positive_int, help="default: the paper's (toy 500, uci 1000, stocks 1500)")
    p.add_argument("--lr", type=_positive_float, help="Adam learning rate, > 0 (default: the paper's)")
    p.add_argument("--batch-size", type=_positive_int, help="minibatch size (default: full batch)")
    p.add_argument("--eval-every", type=_positive_int, default=1, help="epochs between validation checks")
    p.add_argument("--alphas", nargs="+", type=float, default=None, help="alpha grid (default 0.01 0.05 0.1 0.5 1)")
    p.add_argument("--betas", nargs="+", type=float, default=None, help="beta grid (default 0 0.01)")
    p.add_argument("--weight-decays", nargs="+", type=float, default=None,
                   help="weight-decay grid of ERM, M-ERM, M-ERM-star (default: 0 and log-spaced 1e-6..1e-2, "
                        "as many points as the alpha x beta grid)")
    p.add_argument("--select-splits", type=_positive_int, default=3, help="units used to select alpha, beta")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--jobs", type=_positive_int, default=1, help="groups trained in parallel (processes)")
    p.add_argument("--threads", type=_positive_int, help="torch threads per process")
    p.add_argument("--compile", action="store_true",
                   help="pool the M-ProbMix embedding with a torch.compile'd kernel (needs a C++ compiler on "
                        "CPU, Triton on CUDA; ~4x faster pooling, compiles once in ~10 s)")
    p.add_argument("--group-size", type=_positive_int, help="most runs trained together in one step")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: --jobs processes here; ray: groups as tasks of a Ray cluster (pip install 'ray[default]')")
    p.add_argument("--address", help="--backend ray: the cluster's HOST:PORT or 'auto' (default: start Ray on this machine)")
    p.add_argument("--out", default="results", help="records, selection and report folder (default: results)")
    p.add_argument("--reuse-stale", action="store_true",
                   help="reuse records trained by other code or on other data files (default: retrain them)")
    p.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                   help="save a training group's state this often, so a killed sweep resumes it (default 10)")
    if experiment in ("uci", "stocks"):
        sub = experiment
        p.add_argument("--data-root", help=f"the {sub}/ data folder (default: $PROBMIX_DATA/{sub}, else "
                                           f"../shared/data/{sub} next to the checkout, else "
                                           f"~/.cache/pyro-probmix/{sub}; see docs/experiments.md)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    """The :class:`argparse.ArgumentParser` of the command line, one subcommand per experiment.

    >>> args = build_parser().parse_args(["uci", "--datasets", "yacht", "boston", "--epochs", "5"])
    >>> args.experiment, args.datasets, args.epochs, args.out, args.compile
    ('uci', ['yacht', 'boston'], 5, 'results', False)
    """
    parser = argparse.ArgumentParser(
        # the console script or the module, as the user called it
        prog="probmix-experiments" if Path(sys.argv[0]).name == "probmix-experiments" else "python -m pyro_probmix.experiments",
        description="Reproduce the experiments of the ProbMix paper (§6, Appendix E).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    sub = parser.add_subparsers(dest="experiment", metavar="experiment")
    sub.required = True
    helps = {
        "toy-regression": "y = x^3 + noise, extrapolation to x in (4, 6) (§6.1)",
        "toy-classification": "three noisy rings (§6.1)",
        "uci": "UCI regression, 20 standard splits (§6.2, Tables 1 and 3)",
        "stocks": "stock forecasting with LSTM / Transformer (§6.3, Tables 2 and 4)",
    }
    for name in TRAINING:
        _add_training(sub.add_parser(name, help=helps[name]), name)
    rep = sub.add_parser("report", help="tables and figures from the records under --out")
    rep.add_argument("--out", default="results", help="the folder a sweep wrote its records to (default: results)")
    rep.add_argument("--experiments", nargs="+", choices=list(TRAINING), help="report only these (default: all found)")
    rep.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib needed)")
    rep.add_argument("--from-csv", nargs="+", metavar="FILE",
                     help="rebuild the tables and figures from per-run CSV files (<experiment>_runs.csv) alone")
    rep.add_argument("--code", metavar="FINGERPRINT",
                     help="report only the runs trained by this code version (the 'code' of the records' "
                          "fingerprint); without it, runs of several code versions are refused")
    rep.add_argument("--quiet", action="store_true", help="do not print the report's path")
    dl = sub.add_parser("download", help="fetch the UCI splits and the stock CSVs")
    dl.add_argument("--dest", help="data folder; writes uci/ and stocks/ there (default: the data folder of "
                                   "docs/experiments.md: $PROBMIX_DATA, ../shared/data or ~/.cache/pyro-probmix)")
    dl.add_argument("--datasets", nargs="*", help="UCI datasets (default: all nine)")
    dl.add_argument("--tickers", nargs="*", help="stock tickers (default: GME GOOG NVDA RCL)")
    dl.add_argument("--base-url", default=None, help="mirror of https://raw.githubusercontent.com (same layout)")
    dl.add_argument("--no-verify", dest="verify", action="store_false", default=True,
                    help="skip the sha256 check of each file against the list shipped with the package "
                         "(for a mirror holding other files)")
    dl.add_argument("--force", action="store_true", help="fetch files that exist already")
    dl.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds per request (default 60)")
    dl.add_argument("--quiet", action="store_true", help="do not list the files written")
    return parser


def _train(args):
    from .fingerprint import code_fingerprint
    from .report import ANY_CODE, write_report
    from .suites import ALPHAS, BETAS
    from .sweep import SweepOptions, run_sweep

    splits = _splits(args.splits) if args.splits else None
    if splits == []:
        raise ExperimentError("--splits selects no unit")
    if not (math.isfinite(args.checkpoint_every) and args.checkpoint_every >= 0):
        raise ExperimentError(f"--checkpoint-every must be a number of seconds >= 0, got {args.checkpoint_every}")
    if args.runs is not None:
        if splits is not None:
            raise ExperimentError("give --splits or --runs, not both")
        splits = list(range(args.runs))
    opts = SweepOptions(
        args.experiment,
        methods=args.methods,
        datasets=args.datasets,
        splits=splits,
        archs=getattr(args, "archs", None),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        alphas=args.alphas or ALPHAS,
        betas=args.betas if args.betas is not None else BETAS,
        weight_decays=args.weight_decays,
        select_splits=args.select_splits,
        device=args.device,
        jobs=args.jobs,
        group_size=args.group_size,
        out=args.out,
        data_root=getattr(args, "data_root", None),
        quiet=args.quiet,
        threads=args.threads,
        compile=args.compile,
        reuse_stale=args.reuse_stale,
        checkpoint_every=args.checkpoint_every,
        backend=args.backend,
        address=args.address,
    )
    _writable_folder(args.out)  # after every other check: bad input creates no folder
    chosen = run_sweep(opts)
    if not args.quiet:
        print(results_table(opts, chosen))
    if not args.no_report:
        # the sweep's own code: records of other versions under --out (another data set's, not
        # retrained by this command) are left out, named by a warning; --reuse-stale keeps them in
        path = write_report(args.out, [args.experiment], code=ANY_CODE if args.reuse_stale else code_fingerprint())
        if not args.quiet:
            print(f"report: {path}")
    return 0


def results_table(opts, chosen):
    """The final runs' test scores, one line per dataset and method: mean ± std over units, as
    the report's tables (printed at the end of a sweep)."""
    from .methods import resolve_method
    from .records import RecordStore
    from .sweep import _spec

    store = RecordStore(opts.out)
    metrics = ("nll", "rmse") if opts.suite.task == "regression" else ("nll", "accuracy")
    lines = [f"{opts.experiment}: test scores of the final runs ({opts.epochs} epochs, lr {opts.lr}; mean ± std over units)",
             f"{'dataset':<24}{'method':<36}{'n':>3}  " + "  ".join(f"{m:>18}" for m in metrics)]
    for (dataset, arch), methods in chosen.items():
        for name, hparams in methods.items():
            method = resolve_method(name, **hparams)
            tests = [store.read(_spec(opts, dataset, arch, method, u))["metrics"]["test"] for u in opts.units[dataset]]
            cells = []
            for m in metrics:
                values = [t[m] for t in tests if t.get(m) is not None]
                mean = sum(values) / len(values) if values else math.nan
                sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
                cells.append(f"{mean:>9.3f} ± {sd:<6.3f}")
            label = dataset + ("/" + arch if arch != "mlp" else "")
            lines.append(f"{label:<24}{method.describe():<36}{len(tests):>3}  " + "  ".join(cells))
    return "\n".join(lines)


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status: 0; 2
    for bad input (one ``error: ...`` line on stderr; argparse itself exits with 2 on bad flags);
    130 when interrupted.

    >>> main(["uci", "--methods", "nosuch", "--quiet"])  # error: unknown method 'nosuch'; ...
    2
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:  # error: --out ...: no records there ...
    ...     main(["report", "--out", out, "--no-figures", "--quiet"])
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.experiment in TRAINING:
            return _train(args)
        if args.experiment == "report":
            from .report import write_report

            if not args.from_csv and not (Path(args.out) / "records").is_dir():
                raise ExperimentError(f"--out {args.out}: no records there (a sweep writes them to <out>/records/)")
            _writable_folder(args.out)
            path = write_report(args.out, args.experiments, figures=not args.no_figures, from_csv=args.from_csv,
                                code=args.code)
            if not args.quiet:
                print(f"report: {path}")
            return 0
        from .download import DEFAULT_BASE_URL, main_download

        if args.base_url is None:
            args.base_url = DEFAULT_BASE_URL
        return main_download(args)
    except ExperimentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, a folder removed under the sweep, ...
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished runs are recorded; rerun the same command to resume", file=sys.stderr)
        return 130
