# SPDX-License-Identifier: Apache-2.0
"""
One group: the runs of equal group keys
(:meth:`~pyro_probmix.experiments.records.RunSpec.group_key`), trained together by :func:`run_group`, which writes one record per run. Each run's initial
weights come from :func:`~pyro_probmix.experiments.suites.init_seed` of its experiment, dataset,
architecture, split and seed; its random streams from :meth:`RunSpec.noise_seed` (its whole key),
so its record does not depend on the group (:mod:`~pyro_probmix.experiments.streams`).
"""
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from .methods import resolve_method
from .fingerprint import code_fingerprint, fingerprint
from .records import Checkpoint, RecordStore, RunSpec, library_versions  # noqa: F401 (RunSpec: doctest)
from .scoring import classification_scores, pit_values, regression_scores
from .streams import derive_seed
from .suites import get_suite, init_seed
from .train import TrainConfig, predict, resolve_device, train_group

__all__ = ["run_group"]


def _stack(datas, name):
    return np.stack([getattr(d, name) for d in datas])


def _regression_pred(pred, r, data):
    """Run ``r`` of a standardised predictive, on the original scale."""
    kind = pred[0]
    if kind == "gaussian":
        return ("gaussian", pred[1][r] * data.y_std + data.y_mean, pred[2][r] * data.y_std)
    # contiguous: reductions over a strided slice may add in another order than alone (R = 1)
    return ("mixture", pred[1][:, r].contiguous() * data.y_std + data.y_mean, pred[2][:, r].contiguous() * data.y_std)


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


def run_group(experiment, specs, out, device="cpu", data_root=None, progress=None, hidden=None, compile=False,
              checkpoint_every=10.0, code=None):
    """Train the runs ``specs`` (equal group keys) together and write one record per run;
    ``compile`` as in :class:`~pyro_probmix.experiments.train.TrainConfig` (a speed option: not
    part of a run's key). The training state is checkpointed every ``checkpoint_every`` seconds
    (``None``: never) and resumed from a checkpoint of the same runs and code. ``code``: the code
    fingerprint the sweep started with; a worker whose package differs (edited during the sweep,
    or another version on a Ray node) refuses to train. Returns the paths of the records.

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
    if code is not None and code != code_fingerprint():
        raise RuntimeError(
            f"the sweep started with pyro_probmix at code {code}, but this worker imports code "
            f"{code_fingerprint()} (the package was edited while the sweep ran, or another version "
            f"is installed where this worker runs): its records would mix two versions. Rerun the "
            f"sweep once the code is settled (finished records are kept), or run sweeps from a "
            f"checkout that is not edited (scripts/results_sweep.sh uses a worktree of one commit)"
        )
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
            paths += run_group(experiment, subset, out, device, data_root, progress, hidden, compile, checkpoint_every, code)
        return paths
    seeds = [init_seed(experiment, s.dataset, s.arch, s.split, s.seed) for s in specs]
    noise = [s.noise_seed() for s in specs]
    task = suite.task
    hidden = hidden or suite.hidden
    checkpoint = None
    if checkpoint_every is not None:
        members = hashlib.sha256(" ".join([code_fingerprint(), str(hidden)] + [s.digest() for s in specs]).encode())
        checkpoint = Checkpoint(Path(out, "checkpoints", experiment, members.hexdigest()[:20] + ".pt"), checkpoint_every)
    result = train_group(
        method, task, first.arch,
        _stack(datas, "x_train"), _stack(datas, "y_train"), _stack(datas, "x_val"), _stack(datas, "y_val"),
        seeds, config, hidden=hidden, noise_seeds=noise, progress=progress, checkpoint=checkpoint,
    )
    dev = resolve_device(device)
    test_seeds = [derive_seed(s, "test") for s in noise]
    pred_test = predict(result.net, method, task, torch.as_tensor(_stack(datas, "x_test")).to(dev), test_seeds)
    pred_val = predict(result.net, method, task, torch.as_tensor(_stack(datas, "x_val")).to(dev), test_seeds)
    pred_test = tuple(t.cpu() if torch.is_tensor(t) else t for t in pred_test)
    pred_val = tuple(t.cpu() if torch.is_tensor(t) else t for t in pred_val)
    pred_grid = None
    if "x_grid" in datas[0].extras:
        grid = torch.as_tensor(np.stack([d.extras["x_grid"] for d in datas])).to(dev)
        pred_grid = predict(result.net, method, task, grid, test_seeds)
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
            "noise_seed": noise[r],
            "fingerprint": fingerprint(suite.data_files(spec.dataset, spec.split, data_root), suite.root(data_root)),
            "metrics": {"test": test, "val": val},
            "best_epoch": result.best_epoch[r],
            "wall_time_s": result.seconds / R,
            "group": {"size": R, "seconds": result.seconds, "steps": result.steps, "final_loss": result.final_train_loss},
            "versions": versions,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        paths.append(str(store.write(spec, record, {k: np.asarray(v) for k, v in arrays.items()})))
    if checkpoint is not None:
        checkpoint.remove()
    return paths
