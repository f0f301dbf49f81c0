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
import sys

from .data import ExperimentError

__all__ = ["main", "build_parser"]

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
                    a, b = part.split("-", 1)
                    out.extend(range(int(a), int(b) + 1))
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


def _add_training(p, experiment):
    p.add_argument("--methods", nargs="+", metavar="M", help="methods (case-insensitive; default: the paper's)")
    p.add_argument("--datasets", nargs="+", metavar="D",
                   help="datasets (uci: folder names, aliases boston/naval/power/wine/protein, or 'all'; "
                        "stocks: tickers)")
    p.add_argument("--splits", nargs="+", metavar="S",
                   help="units to run: split indices (uci), data seeds (toy) or training seeds (stocks); "
                        "ranges like 0-4 allowed")
    p.add_argument("--runs", type=_positive_int, help="shorthand for --splits 0-(RUNS-1)")
    if experiment == "stocks":
        p.add_argument("--archs", nargs="+", choices=["lstm", "transformer"], help="default: both")
    p.add_argument("--epochs", type=_positive_int, help="default: the paper's (toy 500, uci 1000, stocks 1500)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the paper's)")
    p.add_argument("--batch-size", type=_positive_int, help="minibatch size (default: full batch)")
    p.add_argument("--eval-every", type=_positive_int, default=1, help="epochs between validation checks")
    p.add_argument("--alphas", nargs="+", type=float, default=None, help="alpha grid (default 0.01 0.05 0.1 0.5 1)")
    p.add_argument("--betas", nargs="+", type=float, default=None, help="beta grid (default 0 0.01)")
    p.add_argument("--select-splits", type=_positive_int, default=3, help="units used to select alpha, beta")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--jobs", type=_positive_int, default=1, help="groups trained in parallel (processes)")
    p.add_argument("--threads", type=_positive_int, help="torch threads per process")
    p.add_argument("--compile", action="store_true",
                   help="pool the M-ProbMix embedding with a torch.compile'd kernel (needs a C++ compiler on "
                        "CPU, Triton on CUDA; ~4x faster pooling, compiles once in ~10 s)")
    p.add_argument("--group-size", type=_positive_int, help="most runs trained together in one step")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: --jobs processes here; ray: groups as tasks of a Ray cluster (pip install pyro-probmix[ray])")
    p.add_argument("--address", help="--backend ray: the cluster's HOST:PORT or 'auto' (default: start Ray on this machine)")
    p.add_argument("--out", default="results", help="records, selection and report folder (default: results)")
    if experiment in ("uci", "stocks"):
        p.add_argument("--data-root", help="data folder (default: $PROBMIX_DATA / $PROBMIX_STOCKS, else "
                                           "../shared/data/{uci,stocks} next to the checkout)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    """The :class:`argparse.ArgumentParser` of the command line, one subcommand per experiment.

    >>> args = build_parser().parse_args(["uci", "--datasets", "yacht", "boston", "--epochs", "5"])
    >>> args.experiment, args.datasets, args.epochs, args.out, args.compile
    ('uci', ['yacht', 'boston'], 5, 'results', False)
    """
    parser = argparse.ArgumentParser(
        prog="python -m pyro_probmix.experiments",
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
    rep.add_argument("--out", default="results")
    rep.add_argument("--experiments", nargs="+", choices=list(TRAINING))
    rep.add_argument("--no-figures", action="store_true")
    rep.add_argument("--quiet", action="store_true")
    dl = sub.add_parser("download", help="fetch the UCI splits and the stock CSVs")
    dl.add_argument("--dest", help="destination folder (default: data/ in the checkout); writes uci/ and stocks/")
    dl.add_argument("--datasets", nargs="*", help="UCI datasets (default: all nine)")
    dl.add_argument("--tickers", nargs="*", help="stock tickers (default: GME GOOG NVDA RCL)")
    dl.add_argument("--base-url", default=None, help="mirror of https://raw.githubusercontent.com (same layout)")
    dl.add_argument("--verify", dest="verify", action="store_true", default=None, help="check sha256 sums")
    dl.add_argument("--no-verify", dest="verify", action="store_false")
    dl.add_argument("--force", action="store_true", help="fetch files that exist already")
    dl.add_argument("--timeout", type=float, default=60.0)
    dl.add_argument("--quiet", action="store_true")
    return parser


def _train(args):
    from .report import write_report
    from .suites import ALPHAS, BETAS
    from .sweep import SweepOptions, run_sweep

    splits = _splits(args.splits) if args.splits else None
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
        select_splits=args.select_splits,
        device=args.device,
        jobs=args.jobs,
        group_size=args.group_size,
        out=args.out,
        data_root=getattr(args, "data_root", None),
        quiet=args.quiet,
        threads=args.threads,
        compile=args.compile,
        backend=args.backend,
        address=args.address,
    )
    chosen = run_sweep(opts)
    if not args.quiet:
        for (dataset, arch), methods in chosen.items():
            picked = ", ".join(
                f"{m}({', '.join(f'{k}={v}' for k, v in hp.items() if k in ('alpha', 'beta'))})" if hp else m
                for m, hp in methods.items()
            )
            print(f"{args.experiment} {dataset}{'/' + arch if arch != 'mlp' else ''}: {picked}", file=sys.stderr)
    if not args.no_report:
        path = write_report(args.out, [args.experiment])
        if not args.quiet:
            print(f"report: {path}")
    return 0


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status: 0; 2
    for bad input (one ``error: ...`` line on stderr; argparse itself exits with 2 on bad flags);
    130 when interrupted.

    >>> main(["uci", "--methods", "nosuch", "--quiet"])  # error: unknown method 'nosuch'; ...
    2
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     main(["report", "--out", out, "--no-figures", "--quiet"])
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.experiment in TRAINING:
            return _train(args)
        if args.experiment == "report":
            from .report import write_report

            path = write_report(args.out, args.experiments, figures=not args.no_figures)
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
    except KeyboardInterrupt:
        print("interrupted: finished runs are recorded; rerun the same command to resume", file=sys.stderr)
        return 130
