# SPDX-License-Identifier: Apache-2.0
"""
``--backend ray [--address HOST:PORT]``: the run groups of a sweep as Ray tasks.

The same groups as ``--jobs N`` (:func:`~pyro_probmix.experiments.executor.execute` makes them),
each trained by :func:`~pyro_probmix.experiments.group.run_group` in a Ray task of ``--threads``
CPUs (one GPU too with ``--device cuda``), which writes its records with the
:class:`~pyro_probmix.experiments.records.RecordStore` exactly as a local worker does: one file
per run, atomically. Ray retries a task whose worker died (:data:`MAX_RETRIES` times); the retry
first drops the runs its earlier try recorded, so no record is written twice. A killed driver
loses only the groups in flight: rerunning the command trains what has no record yet.

``--address``: none starts a Ray instance on this machine; ``auto`` or ``HOST:PORT`` (the head's
GCS address, printed by ``ray start --head``) joins a running cluster. Every node then needs
pyro-probmix installed and ``--out`` (and ``--data-root``) on a file system they share, at the
same path (docs/experiments.md).

Ray is an optional extra: ``pip install "ray[default]"`` (or ``pip install ".[ray]"`` in a checkout).

>>> import tempfile
>>> from pyro_probmix.experiments.records import RunSpec
>>> tmp = tempfile.TemporaryDirectory()
>>> train = {"epochs": 1, "lr": 0.01, "batch_size": None, "eval_every": 1}
>>> specs = [RunSpec.make("toy-regression", "cubic", "ERM", unit, unit, train=train) for unit in (0, 1)]
>>> train_unrecorded("toy-regression", specs, tmp.name, "cpu", None, False, 1)  # what a task runs
2
>>> train_unrecorded("toy-regression", specs, tmp.name, "cpu", None, False, 1)  # a retry: all recorded
0
>>> tmp.cleanup()
"""
from pathlib import Path

import torch

from .fingerprint import code_fingerprint
from .group import run_group
from .records import RecordStore

__all__ = ["MAX_RETRIES", "run_groups", "train_unrecorded"]

#: times Ray reruns a group whose worker process or node died
MAX_RETRIES = 3


def _import_ray():
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            '--backend ray needs Ray, an optional extra: pip install "ray[default]" '
            '(or, in a checkout of pyro-probmix, pip install ".[ray]")'
        ) from error
    return ray


def train_unrecorded(experiment, specs, out, device, data_root, compile, threads, code=None):
    """Train, as one group, the runs of ``specs`` that have no record under ``out`` yet, and
    return their number (the body of a Ray task; a retry skips what an earlier try wrote).
    ``code``: the driver's code fingerprint, which the worker's package must have."""
    torch.set_num_threads(threads)
    store = RecordStore(out)
    todo = [spec for spec in specs if not store.exists(spec)]
    if todo:
        run_group(experiment, todo, out, device, data_root, compile=compile, code=code)
    return len(todo)


def run_groups(opts, groups, bar):
    """Train ``groups`` (lists of run specs) as Ray tasks, updating the progress ``bar`` by the
    size of each group as it finishes; a failed group raises once the others are cancelled."""
    ray = _import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=not opts.quiet)
    threads = opts.threads or 1
    task = ray.remote(
        num_cpus=threads, num_gpus=1 if str(opts.device).startswith("cuda") else 0, max_retries=MAX_RETRIES,
    )(train_unrecorded)
    # absolute paths: a task runs in its worker's own working directory
    out = str(Path(opts.out).resolve())
    code = code_fingerprint()  # a node with another version of the package refuses its tasks
    data_root = None if opts.data_root is None else str(Path(opts.data_root).resolve())
    sizes = {
        task.remote(opts.experiment, group, out, opts.device, data_root, opts.compile, threads, code): len(group)
        for group in groups
    }
    pending = list(sizes)
    try:
        while pending:
            (done,), pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            bar.update(sizes[done])
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if connected_here:
            ray.shutdown()
