# SPDX-License-Identifier: Apache-2.0
"""
Sweeps: hyper-parameter selection, then the final runs, each run recorded once.

Protocol (the same for every method and experiment):

1. **Selection.** Every mixing method is trained with each ``(alpha, beta)`` of the grid, and
   ERM and the controls M-ERM, M-ERM-star with as many weight decays
   (:func:`~pyro_probmix.experiments.methods.selection_grid`), on the first ``select_splits`` (3)
   units of the dataset. The configuration with the lowest mean
   validation NLL (original scale) over those units is chosen (ties: first in grid order) and
   written to ``<out>/selection/<experiment>/<arch>/<dataset>.json``. Test data are never looked at.
   Toy experiments (``ablation``) train the grid on *every* requested unit, for the ablation box
   plots, and select the same way.
2. **Final runs.** Every method with its chosen hyper-parameters on every requested unit. Runs
   already recorded (e.g. selection runs of the chosen configuration) are not repeated.

Runs that differ only by unit are trained together as one group
(:func:`~pyro_probmix.experiments.group.run_group`); ``--jobs N`` trains ``N`` groups at a time
in worker processes (:mod:`~pyro_probmix.experiments.executor`). A run's result depends only on
its key (per-run random streams, :mod:`~pyro_probmix.experiments.streams`), so neither the
grouping nor an interruption changes it.

Records are reused only when they are readable and carry the current fingerprint (code and data
files, :func:`~pyro_probmix.experiments.records.fingerprint`); unreadable and stale records are
named on stderr and retrained (``reuse_stale=True``, the CLI's ``--reuse-stale``, keeps stale
ones). A group's training state is checkpointed every ``checkpoint_every`` seconds under
``<out>/checkpoints/``, so a sweep killed every few seconds still makes progress.
"""
import json
import math
from collections import OrderedDict
from itertools import product
from pathlib import Path

import numpy as np

from .data import ExperimentError
from .methods import canonical_name, resolve_method, selection_grid
from .executor import _say, execute
from .fingerprint import fingerprint
from .records import RecordError, RecordStore, RunSpec, atomic_write_bytes
from .suites import ALPHAS, BETAS, get_suite
from .train import TrainConfig, check_compile_support, resolve_device

__all__ = ["SweepOptions", "run_sweep", "select_hparams", "load_selection"]


class SweepOptions:
    """Options of a sweep (the CLI's flags, see :mod:`~pyro_probmix.experiments.cli`).

    ``None`` means the suite's default (methods, datasets, units, architectures, epochs, learning
    rate). The constructor checks everything, the data of every requested unit included, before
    any training: bad input raises :class:`~pyro_probmix.experiments.data.ExperimentError`.

    >>> opts = SweepOptions("toy-regression", methods=["erm", "probmix"], splits=[0, 1], epochs=2,
    ...                     alphas=[0.1, 1.0], betas=[0.0])
    >>> opts.methods, opts.units, opts.rows
    (['ERM', 'ProbMix'], {'cubic': [0, 1]}, {'cubic': 80})
    >>> opts.grid()
    [{'alpha': 0.1, 'beta': 0.0}, {'alpha': 1.0, 'beta': 0.0}]
    >>> opts.grid("ERM")  # a budget of the same size: two weight decays
    [{'weight_decay': 0.0}, {'weight_decay': 0.0001}]
    >>> opts.train_config().as_dict()
    {'epochs': 2, 'lr': 0.01, 'batch_size': None, 'eval_every': 1}
    >>> try:
    ...     SweepOptions("toy-regression", methods=["SuperMix"])
    ... except ExperimentError as e:
    ...     print(str(e).split(";")[0])
    unknown method 'SuperMix'
    """

    def __init__(
        self,
        experiment,
        methods=None,
        datasets=None,
        splits=None,
        archs=None,
        epochs=None,
        lr=None,
        batch_size=None,
        eval_every=1,
        alphas=ALPHAS,
        betas=BETAS,
        weight_decays=None,
        select_splits=3,
        device="cpu",
        jobs=1,
        group_size=None,
        out="results",
        data_root=None,
        quiet=False,
        threads=None,
        compile=False,
        reuse_stale=False,
        checkpoint_every=10.0,
        backend="local",
        address=None,
    ):
        self.suite = get_suite(experiment)
        self.experiment = experiment
        try:
            self.methods = [canonical_name(m) for m in (methods or self.suite.default_methods)]
        except ValueError as e:
            raise ExperimentError(str(e)) from None
        self.methods = list(dict.fromkeys(self.methods))
        self.data_root = data_root
        self.datasets = self.suite.resolve_datasets(datasets, data_root)
        self.splits = None if splits is None else [int(s) for s in splits]
        self.archs = list(archs or self.suite.archs)
        for arch in self.archs:
            if arch not in self.suite.archs:
                raise ExperimentError(f"unknown architecture {arch!r} for {experiment}; valid: {', '.join(self.suite.archs)}")
        self.epochs = int(epochs or self.suite.epochs)
        self.lr = float(self.suite.lr if lr is None else lr)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ExperimentError(f"--lr must be a finite number > 0, got {lr}")
        if self.epochs < 1:
            raise ExperimentError(f"--epochs must be >= 1, got {self.epochs}")
        if batch_size is not None and batch_size < 2 and any(resolve_method(m).uses_handler for m in self.methods):
            pairing = [m for m in self.methods if resolve_method(m).uses_handler]
            raise ExperimentError(
                f"--batch-size {batch_size}: {', '.join(pairing)} draw(s) each row's partner from its minibatch, "
                f"so a minibatch needs >= 2 rows"
            )
        self.batch_size = batch_size
        self.eval_every = int(eval_every)
        self.alphas = tuple(float(a) for a in alphas)
        self.betas = tuple(float(b) for b in betas)
        for a in self.alphas:
            if not (math.isfinite(a) and a > 0):
                raise ExperimentError(f"alpha must be > 0, got {a}")
        for b in self.betas:
            if not (math.isfinite(b) and b >= 0):
                raise ExperimentError(f"beta must be >= 0, got {b}")
        self.weight_decays = None if weight_decays is None else tuple(float(w) for w in weight_decays)
        for w in self.weight_decays or ():
            if not (math.isfinite(w) and w >= 0):
                raise ExperimentError(f"weight decay must be >= 0, got {w}")
        self.select_splits = int(select_splits)
        try:
            resolve_device(device)
            if compile:
                check_compile_support(device)
        except RuntimeError as e:
            raise ExperimentError(str(e)) from None
        self.device = device
        self.jobs = max(1, int(jobs))
        self.group_size = group_size
        self.out = Path(out)
        self.quiet = quiet
        self.threads = threads
        self.compile = bool(compile)
        self.reuse_stale = bool(reuse_stale)
        self.checkpoint_every = float(checkpoint_every)
        if backend not in ("local", "ray"):
            raise ExperimentError(f"--backend must be 'local' or 'ray', got {backend!r}")
        self.backend, self.address = backend, address  # ray: experiments/ray_backend.py
        # check every requested unit now, before any training
        self.units, self.rows = {}, {}
        for dataset in self.datasets:
            units = self.splits if self.splits is not None else self.suite.default_unit_list(dataset, data_root)
            self.suite.check_units(dataset, units, data_root)
            self.units[dataset] = units
            if not units:
                raise ExperimentError(f"no unit to run for {dataset}: --splits selects none")
            for unit in units:  # reads and checks the data of every unit (overlaps, ranges)
                data = self.suite.load(dataset, unit, data_root)
            self.rows[dataset] = len(data.x_train)

    def train_config(self):
        """The :class:`~pyro_probmix.experiments.train.TrainConfig` of every run."""
        return TrainConfig(self.epochs, self.lr, self.batch_size, self.eval_every, self.device, compile=self.compile)

    def grid(self, method="ProbMix"):
        """The selection grid of ``method`` as a list of hyper-parameter dicts: ``(alpha, beta)``,
        or weight decays for the methods without mixing (``weight_decays``; default: as many as
        the ``(alpha, beta)`` grid has points)."""
        return selection_grid(method, self.alphas, self.betas, self.weight_decays)

    def fingerprint(self, spec):
        """The fingerprint a record of ``spec`` must carry to be reused."""
        files = self.suite.data_files(spec.dataset, spec.split, self.data_root)
        return fingerprint(files, self.suite.root(self.data_root))

    def selection_units(self, dataset):
        """The units whose validation NLL selects the hyper-parameters: the first
        ``select_splits``."""
        n = self.suite.num_units(dataset, self.data_root)
        count = self.select_splits if n is None else min(self.select_splits, n)
        return list(range(count))


def _spec(opts, dataset, arch, method, split):
    return RunSpec.make(
        opts.experiment, dataset, method.name, split, opts.suite.seed_of(split), arch,
        method.hparams(), opts.train_config().as_dict(),
    )




# ----------------------------------------------------------------------------- selection
def _val_nll(store, spec):
    if not store.exists(spec):
        return math.nan
    value = store.read(spec)["metrics"]["val"]["nll"]
    return value if value is not None and math.isfinite(value) else math.inf


def select_hparams(opts, dataset, arch, method_name):
    """``(chosen hparams, {config: mean val NLL})`` for one method, over its grid
    (:meth:`SweepOptions.grid`).

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> opts = SweepOptions("toy-regression", methods=["ProbMix"], splits=[0], epochs=1, alphas=[0.1, 1.0],
    ...                     betas=[0.0], select_splits=1, out=tmp.name, quiet=True)
    >>> _ = run_sweep(opts)  # trains both configurations on unit 0
    >>> hparams, scores = select_hparams(opts, "cubic", "mlp", "ProbMix")
    >>> list(scores)
    ['{"alpha": 0.1, "beta": 0.0}', '{"alpha": 1.0, "beta": 0.0}']
    >>> json.dumps(hparams, sort_keys=True) == min(scores, key=scores.get)
    True
    >>> tmp.cleanup()
    """
    store = RecordStore(opts.out)
    units = opts.selection_units(dataset)
    scores = OrderedDict()
    best, best_score = None, math.inf
    for hp in opts.grid(method_name):
        method = resolve_method(method_name, **hp)
        vals = [_val_nll(store, _spec(opts, dataset, arch, method, u)) for u in units]
        score = float(np.mean(vals)) if vals else math.inf
        scores[json.dumps(method.hparams(), sort_keys=True)] = score
        if best is None or score < best_score:
            best, best_score = method, score
    return best.hparams(), scores


def selection_path(out, experiment, arch, dataset):
    return Path(out) / "selection" / experiment / arch / f"{dataset}.json"


def load_selection(out, experiment, arch, dataset):
    """The selection file of a dataset written by :func:`run_sweep` (``{method: {"hparams": ...,
    "val_nll": ..., ...}}``), or ``{}`` when there is none.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> load_selection(tmp.name, "uci", "mlp", "yacht")
    {}
    >>> path = selection_path(tmp.name, "uci", "mlp", "yacht")
    >>> atomic_write_bytes(path, json.dumps({"ProbMix": {"hparams": {"alpha": 0.5, "beta": 0.0}}}).encode())
    >>> load_selection(tmp.name, "uci", "mlp", "yacht")["ProbMix"]["hparams"]
    {'alpha': 0.5, 'beta': 0.0}
    >>> tmp.cleanup()
    """
    path = selection_path(out, experiment, arch, dataset)
    if not path.is_file():
        return {}
    try:
        selection = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        selection = e
    if not isinstance(selection, dict):
        raise RecordError(f"selection file {path} is unreadable ({selection!r:.80}); delete it: the sweep writes it again")
    return selection


# ----------------------------------------------------------------------------- sweep
def run_sweep(opts):
    """Run the protocol (module docstring); returns ``{(dataset, arch): {method: hparams}}``.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> opts = SweepOptions("toy-regression", methods=["ERM", "ProbMix"], splits=[0], epochs=1,
    ...                     alphas=[0.1], betas=[0.0], out=tmp.name, quiet=True)
    >>> run_sweep(opts)  # a one-point grid: nothing to select
    {('cubic', 'mlp'): {'ERM': {}, 'ProbMix': {'alpha': 0.1, 'beta': 0.0}}}
    >>> len(RecordStore(tmp.name).all("toy-regression"))  # one record per final run
    2
    >>> sorted(load_selection(tmp.name, "toy-regression", "mlp", "cubic"))
    ['ERM', 'ProbMix']
    >>> tmp.cleanup()
    """
    select_specs, chosen = [], {}
    for dataset, arch in product(opts.datasets, opts.archs):
        sel_units = opts.selection_units(dataset)
        grid_units = sorted(set(sel_units) | set(opts.units[dataset])) if opts.suite.ablation else sel_units
        for name in opts.methods:
            grid = opts.grid(name)
            if len(grid) < 2:
                continue
            for hp in grid:
                method = resolve_method(name, **hp)
                select_specs += [_spec(opts, dataset, arch, method, u) for u in grid_units]
    select_specs = list(OrderedDict.fromkeys(select_specs))
    finals = len(opts.methods) * len(opts.archs) * sum(len(opts.units[d]) for d in opts.datasets)
    selecting = [m for m in opts.methods if len(opts.grid(m)) > 1]
    if selecting:
        sizes = ", ".join(f"{m} {len(opts.grid(m))}" for m in selecting)
        _say(opts, f"{opts.experiment}: {len(select_specs)} selection runs (configurations per method: {sizes}; "
                   f"x their units; --alphas/--betas set the mixup grid, --weight-decays that of the methods "
                   f"without mixing), then {finals} final runs, some of them selection runs already")
    else:
        _say(opts, f"{opts.experiment}: {finals} runs (no grid to select from)")
    trained = execute(opts, select_specs, "selection")
    final_specs = []
    for dataset, arch in product(opts.datasets, opts.archs):
        selection = load_selection(opts.out, opts.experiment, arch, dataset)
        for name in opts.methods:
            grid = opts.grid(name)
            if len(grid) < 2:
                hparams, scores = resolve_method(name, **grid[0]).hparams(), {}
            else:
                hparams, scores = select_hparams(opts, dataset, arch, name)
            selection[name] = {
                "hparams": hparams,
                "val_nll": scores,
                "units": opts.selection_units(dataset),
                "grid": {k: list(dict.fromkeys(hp[k] for hp in grid)) for k in grid[0]},  # the axes
                "train": opts.train_config().as_dict(),
            }
            chosen.setdefault((dataset, arch), {})[name] = hparams
            method = resolve_method(name, **hparams)
            final_specs += [_spec(opts, dataset, arch, method, u) for u in opts.units[dataset]]
        path = selection_path(opts.out, opts.experiment, arch, dataset)
        atomic_write_bytes(path, (json.dumps(selection, indent=1) + "\n").encode())
    trained += execute(opts, final_specs, "final runs")
    return chosen
