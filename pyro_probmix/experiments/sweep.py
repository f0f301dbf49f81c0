# SPDX-License-Identifier: Apache-2.0
"""
Sweeps: hyper-parameter selection, then the final runs, each run recorded once.

Protocol (the same for every method and experiment):

1. **Selection.** Every method but ERM is trained with each ``(alpha, beta)`` of the grid on the
   first ``select_splits`` (3) units of the dataset. The configuration with the lowest mean
   validation NLL (original scale) over those units is chosen (ties: first in grid order) and
   written to ``<out>/selection/<experiment>/<arch>/<dataset>.json``. Test data are never looked at.
   Toy experiments (``ablation``) train the grid on *every* requested unit, for the ablation box
   plots, and select the same way.
2. **Final runs.** Every method with its chosen hyper-parameters on every requested unit. Runs
   already recorded (e.g. selection runs of the chosen configuration) are not repeated.

Runs that differ only by unit are trained together as one group (:func:`run_group`);
``--jobs N`` trains ``N`` groups at a time in worker processes.
"""
import concurrent.futures as cf
import json
import math
import multiprocessing
import time
from collections import OrderedDict
from itertools import product
from pathlib import Path

import numpy as np
import torch

from .data import ExperimentError
from .methods import canonical_name, resolve_method
from .progress import Progress
from .records import RecordStore, RunSpec, atomic_write_bytes, library_versions
from .scoring import classification_scores, pit_values, regression_scores
from .suites import ALPHAS, BETAS, get_suite, init_seed
from .train import TrainConfig, check_compile_support, predict, resolve_device, train_group

__all__ = ["SweepOptions", "run_sweep", "run_group", "select_hparams", "load_selection", "ROWS_PER_GROUP"]

#: default cap on the training rows of one group (runs x rows per run); larger groups of large
#: datasets are memory bound and slower per run on CPU (measured on naval, R=17 vs R=3)
ROWS_PER_GROUP = 8192


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
        select_splits=3,
        device="cpu",
        jobs=1,
        group_size=None,
        out="results",
        data_root=None,
        quiet=False,
        threads=None,
        compile=False,
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
        self.lr = float(lr or self.suite.lr)
        if self.epochs < 1:
            raise ExperimentError(f"--epochs must be >= 1, got {self.epochs}")
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
        if backend not in ("local", "ray"):
            raise ExperimentError(f"--backend must be 'local' or 'ray', got {backend!r}")
        self.backend, self.address = backend, address  # ray: experiments/ray_backend.py
        # check every requested unit now, before any training
        self.units, self.rows = {}, {}
        for dataset in self.datasets:
            units = self.splits if self.splits is not None else self.suite.default_unit_list(dataset, data_root)
            self.suite.check_units(dataset, units, data_root)
            self.units[dataset] = units
            data = self.suite.load(dataset, units[0] if units else 0, data_root)  # reads and checks the data
            self.rows[dataset] = len(data.x_train)

    def train_config(self):
        """The :class:`~pyro_probmix.experiments.train.TrainConfig` of every run."""
        return TrainConfig(self.epochs, self.lr, self.batch_size, self.eval_every, self.device, compile=self.compile)

    def grid(self):
        """The ``(alpha, beta)`` grid as a list of hyper-parameter dicts."""
        return [{"alpha": a, "beta": b} for a, b in product(self.alphas, self.betas)]

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


# ----------------------------------------------------------------------------- one group
def _stack(datas, name):
    return np.stack([getattr(d, name) for d in datas])


def _regression_pred(pred, r, data):
    """Run ``r`` of a standardised predictive, on the original scale."""
    kind = pred[0]
    if kind == "gaussian":
        return ("gaussian", pred[1][r] * data.y_std + data.y_mean, pred[2][r] * data.y_std)
    return ("mixture", pred[1][:, r] * data.y_std + data.y_mean, pred[2][:, r] * data.y_std)


def _moments(pred):
    if pred[0] == "gaussian":
        return pred[1], pred[2]
    mean = pred[1].mean(0)
    var = (pred[2] ** 2 + pred[1] ** 2).mean(0) - mean**2
    return mean, var.clamp_min(0).sqrt()


def _scores(task, pred, r, data, y):
    if task == "regression":
        p = _regression_pred(pred, r, data)
        y = torch.as_tensor(y, dtype=torch.float64) * data.y_std + data.y_mean
        return regression_scores(p, y), p
    return classification_scores(pred[1][r].cpu(), torch.as_tensor(y)), pred


def run_group(experiment, specs, out, device="cpu", data_root=None, progress=None, hidden=None, compile=False):
    """Train the runs ``specs`` (equal group keys) together and write one record per run;
    ``compile`` as in :class:`~pyro_probmix.experiments.train.TrainConfig` (a speed option: not
    part of a run's key). Returns the paths of the records.

    Units 0 and 1 of the toy regression, trained together for one epoch:

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> train = {"epochs": 1, "lr": 0.01, "batch_size": None, "eval_every": 1}
    >>> specs = [RunSpec.make("toy-regression", "cubic", "ERM", unit, unit, train=train) for unit in (0, 1)]
    >>> paths = run_group("toy-regression", specs, tmp.name, hidden=(8, 4))
    >>> [Path(p).name.split("-")[0] for p in paths]
    ['split0', 'split1']
    >>> record = RecordStore(tmp.name).read(specs[1])
    >>> record["group"]["size"], sorted(record["metrics"]["test"])
    (2, ['coverage', 'crps', 'mean_scale', 'mse', 'nll', 'pit_hist', 'rmse'])
    >>> tmp.cleanup()
    """
    suite = get_suite(experiment)
    first = specs[0]
    method = resolve_method(first.method, **dict(first.hparams))
    train = dict(first.train)
    config = TrainConfig(train["epochs"], train["lr"], train["batch_size"], train["eval_every"], device, compile=compile)
    datas = [suite.load(s.dataset, s.split, data_root) for s in specs]
    shapes = [(d.x_train.shape, d.x_val.shape, d.x_test.shape) for d in datas]
    if len(set(shapes)) > 1:  # splits of unequal sizes (any UCI-layout folder): one group per shape
        paths = []
        for shape in dict.fromkeys(shapes):
            subset = [s for s, sh in zip(specs, shapes) if sh == shape]
            paths += run_group(experiment, subset, out, device, data_root, progress, hidden, compile)
        return paths
    seeds = [init_seed(experiment, s.dataset, s.arch, s.split, s.seed) for s in specs]
    rng_seed = init_seed(experiment, *first.group_key(), *[(s.split, s.seed) for s in specs])
    task = suite.task
    hidden = hidden or suite.hidden
    result = train_group(
        method, task, first.arch,
        _stack(datas, "x_train"), _stack(datas, "y_train"), _stack(datas, "x_val"), _stack(datas, "y_val"),
        seeds, config, hidden=hidden, rng_seed=rng_seed, progress=progress,
    )
    dev = resolve_device(device)
    pred_test = predict(result.net, method, task, torch.as_tensor(_stack(datas, "x_test")).to(dev), seed=rng_seed)
    pred_val = predict(result.net, method, task, torch.as_tensor(_stack(datas, "x_val")).to(dev), seed=rng_seed)
    pred_test = tuple(t.cpu() if torch.is_tensor(t) else t for t in pred_test)
    pred_val = tuple(t.cpu() if torch.is_tensor(t) else t for t in pred_val)
    pred_grid = None
    if "x_grid" in datas[0].extras:
        grid = torch.as_tensor(np.stack([d.extras["x_grid"] for d in datas])).to(dev)
        pred_grid = predict(result.net, method, task, grid, seed=rng_seed)
        pred_grid = tuple(t.cpu() if torch.is_tensor(t) else t for t in pred_grid)
    versions = library_versions()
    store = RecordStore(out)
    R = len(specs)
    paths = []
    for r, (spec, data) in enumerate(zip(specs, datas)):
        test, p_test = _scores(task, pred_test, r, data, data.y_test)
        val, _ = _scores(task, pred_val, r, data, data.y_val)
        if task == "regression":
            test["mse"] = test["rmse"] ** 2
        arrays = {}
        if task == "regression":
            mean, std = _moments(p_test)
            y_orig = torch.as_tensor(data.y_test, dtype=torch.float64) * data.y_std + data.y_mean
            arrays.update(test_mean=mean.float(), test_std=std.float(), y_test=y_orig.float(),
                          test_pit=pit_values(p_test, y_orig).float())
        if pred_grid is not None:
            if task == "regression":
                g_mean, g_std = _moments(_regression_pred(pred_grid, r, data))
                arrays.update(grid_mean=g_mean.float(), grid_std=g_std.float())
            elif spec.split == 0:
                arrays["grid_probs"] = pred_grid[1][r].float()
            for k in ("x_grid_raw", "x_train_raw", "y_train_raw", "x_test_raw", "y_test_raw", "grid_xx", "grid_yy"):
                if k in data.extras and (task == "regression" or spec.split == 0):
                    arrays[k] = data.extras[k]
        record = {
            "config": {
                "task": task, "arch": spec.arch, "hidden": list(hidden), "method": method.name,
                "method_spec": {k: getattr(method.spec, k) for k in ("mixing", "embedding", "local", "separate_variance")},
                "hparams": method.hparams(), "label_fusion": method.label_fusion_for(task) if method.uses_handler else None,
                "prediction": method.prediction_mode(), "train": dict(spec.train), "device": str(device),
                "data": data.info, "y_mean": data.y_mean, "y_std": data.y_std,
            },
            "split": spec.split,
            "seed": spec.seed,
            "init_seed": seeds[r],
            "metrics": {"test": test, "val": val},
            "best_epoch": result.best_epoch[r],
            "wall_time_s": result.seconds / R,
            "group": {"size": R, "seconds": result.seconds, "steps": result.steps, "final_loss": result.final_train_loss},
            "versions": versions,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        paths.append(str(store.write(spec, record, {k: np.asarray(v) for k, v in arrays.items()})))
    return paths


def _worker_init(threads):
    torch.set_num_threads(threads)


def _worker(args):
    experiment, specs, out, device, data_root, compile = args
    run_group(experiment, specs, out, device, data_root, compile=compile)
    return len(specs)


# ----------------------------------------------------------------------------- execution
def _groups(specs, group_size, rows=None):
    """Runs with equal group keys, in groups of at most ``group_size`` runs (default: as many as
    fit in :data:`ROWS_PER_GROUP` training rows, ``rows[dataset]`` rows per run)."""
    by_key = OrderedDict()
    for s in specs:
        by_key.setdefault(s.group_key(), []).append(s)
    out = []
    for members in by_key.values():
        size = group_size
        if size is None:
            per_run = (rows or {}).get(members[0].dataset)
            size = max(1, ROWS_PER_GROUP // per_run) if per_run else len(members)
        if dict(members[0].train).get("batch_size"):
            size = 1
        out.extend(members[i : i + size] for i in range(0, len(members), size))
    return out


def _run_inline(opts, groups, bar):
    torch.set_num_threads(opts.threads or 1)
    for group in groups:
        size = len(group)
        done = [0.0]

        def tick(frac, size=size, done=done):
            done[0] += frac * size
            bar.update(frac * size)

        run_group(opts.experiment, group, opts.out, opts.device, opts.data_root, progress=tick, compile=opts.compile)
        bar.update(size - done[0])


def _run_pool(opts, groups, bar, workers):
    """Groups in ``workers`` spawned processes of ``--threads`` (default 1) torch threads each."""
    ctx = multiprocessing.get_context("spawn")
    init = (opts.threads or 1,)
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=init) as pool:
        futures = [pool.submit(_worker, (opts.experiment, g, str(opts.out), opts.device, opts.data_root, opts.compile))
                   for g in groups]
        try:
            for fut in cf.as_completed(futures):
                bar.update(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def execute(opts, specs, desc):
    """Train the specs that have no record yet; returns the number trained."""
    store = RecordStore(opts.out)
    pending = list(OrderedDict.fromkeys(s for s in specs if not store.exists(s)))
    if not pending:
        return 0
    groups = _groups(pending, opts.group_size, opts.rows)
    with Progress(len(pending), desc, opts.quiet) as bar:
        if opts.backend == "ray":
            from .ray_backend import run_groups

            run_groups(opts, groups, bar)
        elif opts.jobs == 1:
            _run_inline(opts, groups, bar)
        else:
            _run_pool(opts, groups, bar, opts.jobs)
    return len(pending)


# ----------------------------------------------------------------------------- selection
def _val_nll(store, spec):
    if not store.exists(spec):
        return math.nan
    value = store.read(spec)["metrics"]["val"]["nll"]
    return value if value is not None and math.isfinite(value) else math.inf


def select_hparams(opts, dataset, arch, method_name):
    """``(chosen hparams, {config: mean val NLL})`` for one method (ERM: no hyper-parameters).

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
    for hp in opts.grid():
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
    return json.loads(path.read_text()) if path.is_file() else {}


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
    grid = opts.grid()
    select_specs, chosen = [], {}
    for dataset, arch in product(opts.datasets, opts.archs):
        sel_units = opts.selection_units(dataset)
        grid_units = sorted(set(sel_units) | set(opts.units[dataset])) if opts.suite.ablation else sel_units
        for name in opts.methods:
            if name == "ERM" or len(grid) < 2:
                continue
            for hp in grid:
                method = resolve_method(name, **hp)
                select_specs += [_spec(opts, dataset, arch, method, u) for u in grid_units]
    trained = execute(opts, select_specs, "selection")
    final_specs = []
    for dataset, arch in product(opts.datasets, opts.archs):
        selection = load_selection(opts.out, opts.experiment, arch, dataset)
        for name in opts.methods:
            if name == "ERM":
                hparams, scores = {}, {}
            elif len(grid) < 2:
                hparams, scores = resolve_method(name, **grid[0]).hparams(), {}
            else:
                hparams, scores = select_hparams(opts, dataset, arch, name)
            selection[name] = {
                "hparams": hparams,
                "val_nll": scores,
                "units": opts.selection_units(dataset),
                "grid": {"alpha": list(opts.alphas), "beta": list(opts.betas)},
                "train": opts.train_config().as_dict(),
            }
            chosen.setdefault((dataset, arch), {})[name] = hparams
            method = resolve_method(name, **hparams)
            final_specs += [_spec(opts, dataset, arch, method, u) for u in opts.units[dataset]]
        path = selection_path(opts.out, opts.experiment, arch, dataset)
        atomic_write_bytes(path, (json.dumps(selection, indent=1) + "\n").encode())
    trained += execute(opts, final_specs, "final runs")
    return chosen
