# SPDX-License-Identifier: Apache-2.0
"""
The executor of a sweep: cuts runs into groups and trains the groups that lack a record, in
this process, in ``--jobs N`` worker processes, or on Ray
(:mod:`~pyro_probmix.experiments.ray_backend`). :mod:`~pyro_probmix.experiments.sweep` decides
which runs; this module only trains them, each group by
:func:`~pyro_probmix.experiments.group.run_group`.
"""
import concurrent.futures as cf
import multiprocessing
import sys
from collections import OrderedDict

import torch

from .fingerprint import code_fingerprint
from .group import run_group
from .progress import Progress
from .records import RecordStore

__all__ = ["ROWS_PER_GROUP", "execute", "run_groups"]

#: default cap on the training rows of one group (runs x rows per run); larger groups of large
#: datasets are memory bound and slower per run on CPU (measured on naval, R=17 vs R=3)
ROWS_PER_GROUP = 8192


def _worker_init(threads):
    torch.set_num_threads(threads)


def _worker(args):
    experiment, specs, out, device, data_root, compile, checkpoint_every, code = args
    run_group(experiment, specs, out, device, data_root, compile=compile, checkpoint_every=checkpoint_every, code=code)
    return len(specs)


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

        run_group(opts.experiment, group, opts.out, opts.device, opts.data_root, progress=tick, compile=opts.compile,
                  checkpoint_every=opts.checkpoint_every, code=code_fingerprint())
        bar.update(size - done[0])


def _run_pool(opts, groups, bar, workers):
    ctx = multiprocessing.get_context("spawn")
    init = (opts.threads or 1,)
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=init) as pool:
        # the code the sweep started with: a worker that imports another (an edit) refuses
        args = (opts.experiment, str(opts.out), opts.device, opts.data_root, opts.compile, opts.checkpoint_every,
                code_fingerprint())
        futures = [pool.submit(_worker, (args[0], g, *args[1:])) for g in groups]
        try:
            for fut in cf.as_completed(futures):
                bar.update(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def run_groups(opts, groups, bar):
    """The executor: train ``groups`` (lists of :class:`RunSpec` of equal group keys) and write
    their records, in this process (``opts.jobs == 1``) or ``opts.jobs`` worker processes;
    ``bar.update(n)`` counts finished runs. Records depend only on the runs' keys, so any executor
    that calls :func:`run_group` on each group, in any order or place, writes the same records."""
    if opts.backend == "ray":
        from .ray_backend import run_groups as run_ray_groups  # Ray is an optional extra

        run_ray_groups(opts, groups, bar)
    elif opts.jobs == 1:
        _run_inline(opts, groups, bar)
    else:
        _run_pool(opts, groups, bar, opts.jobs)


def _say(opts, text, always=False):
    if always or not opts.quiet:
        print(text, file=sys.stderr)


def _pending(opts, specs, desc):
    """The specs to train: no record, an unreadable one, or a stale one (unless
    ``opts.reuse_stale``); says on stderr what is reused and why each other one is retrained."""
    store = RecordStore(opts.out)
    pending, reused, bad = [], 0, {"unreadable": [], "stale": []}
    for spec in specs:
        state, why = store.status(spec, opts.fingerprint(spec))
        if state in bad:
            bad[state].append((spec, why))
        if state == "ok" or (state == "stale" and opts.reuse_stale):
            reused += 1
        else:
            pending.append(spec)
    for state, found in bad.items():
        if found:
            listed = "; ".join(f"{store.path(s).relative_to(opts.out)}: {why}" for s, why in found[:3])
            more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
            if state == "stale" and opts.reuse_stale:
                action = "keeping"
                hint = " (--reuse-stale)"
            else:
                action = "retraining"
                hint = " (--reuse-stale keeps them)" if state == "stale" else ""
            _say(opts, f"{desc}: {action} {len(found)} {state} record(s){hint}: {listed}{more}", always=True)
    if reused:
        _say(opts, f"{desc}: reusing {reused} of {len(specs)} records in {opts.out}")
    return pending


def execute(opts, specs, desc):
    """Train the groups of ``specs`` that hold a run with no usable record yet; returns the
    number of runs trained.

    Groups are cut from all of ``specs``, not from the pending runs only, and retrained whole: a
    resumed sweep trains exactly the groups of an uninterrupted one, so its records are the same
    bit for bit (per-run streams make a run's result independent of its group up to the last
    bits of a few elementwise functions, which torch's CPU kernels compute by another code path
    at the tail of a tensor)."""
    specs = list(OrderedDict.fromkeys(specs))
    pending = set(_pending(opts, specs, desc))
    groups = [g for g in _groups(specs, opts.group_size, opts.rows) if pending.intersection(g)]
    total = sum(len(g) for g in groups)
    if not total:
        return 0
    with Progress(total, desc, opts.quiet) as bar:
        run_groups(opts, groups, bar)
    return total
