# SPDX-License-Identifier: Apache-2.0
"""
Projected wall time of the full UCI protocol (Tables 1 and 3) on this machine.

For every dataset and method, times the set-up and a few full-batch epochs (training step + validation check,
as in the sweep) of one group of the size the sweep uses (``ROWS_PER_GROUP`` training rows), once
for the selection groups (3 splits) and once for the final groups (all splits), and projects:

* selection: every method x 10 configurations ((alpha, beta), or weight decays for ERM and the
  controls M-ERM, M-ERM-star) x 3 splits;
* final runs: every method x all splits, less the 3 selection runs of the chosen configuration
  (recorded already).

Usage::

    python benchmarks/bench_uci_protocol.py [--epochs-timed 30] [--compile] [--datasets ...]

Prints one line per dataset and method and the totals for one process and for ``--jobs 2``
(half, when two cores are free). Results are written down in ``benchmarks/README.md``.
"""
import argparse
import math
import time

import numpy as np
import torch

from pyro_probmix.experiments.methods import METHOD_NAMES, resolve_method
from pyro_probmix.experiments.suites import ALPHAS, BETAS, get_suite
from pyro_probmix.experiments.executor import ROWS_PER_GROUP
from pyro_probmix.experiments.train import TrainConfig, train_group

SELECT_SPLITS = 3


def group_seconds(suite, dataset, method_name, runs, epochs, compile_pool):
    """``(fixed, per_epoch)`` seconds of one group of ``runs`` splits: the set-up of a group
    (network, sampling graph, first validation) and one epoch (step + validation check), from
    two timed trainings of 2 and ``2 + epochs`` epochs after a warm-up (which compiles)."""
    datas = [suite.load(dataset, s) for s in range(runs)]
    n = min(len(d.x_train) for d in datas)
    n_val = min(len(d.x_val) for d in datas)
    stack = lambda name, rows: np.stack([getattr(d, name)[:rows] for d in datas])  # noqa: E731
    args = (stack("x_train", n), stack("y_train", n), stack("x_val", n_val), stack("y_val", n_val))
    method = resolve_method(method_name, alpha=0.1, beta=0.01)
    times = []
    for count in (2, 2, 2 + epochs):  # the first is the warm-up
        config = TrainConfig(epochs=count, lr=suite.lr, compile=compile_pool)
        start = time.perf_counter()
        train_group(method, "regression", "mlp", *args, list(range(runs)), config, hidden=suite.hidden)
        times.append(time.perf_counter() - start)
    per_epoch = (times[2] - times[1]) / epochs
    return max(times[1] - 2 * per_epoch, 0.0), per_epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    parser.add_argument("--epochs-timed", type=int, default=30)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite = get_suite("uci")
    datasets = suite.resolve_datasets(args.datasets)
    configs = len(ALPHAS) * len(BETAS)
    total, by_method = 0.0, {}
    for dataset in datasets:
        splits = suite.num_units(dataset)
        rows = len(suite.load(dataset, 0).x_train)
        cap = max(1, ROWS_PER_GROUP // rows)
        for name in args.methods:
            seconds = 0.0
            plan = [(min(splits, cap), splits - SELECT_SPLITS, "final"),
                    (min(SELECT_SPLITS, cap), configs * SELECT_SPLITS, "selection")]
            for group, count, _ in plan:
                fixed, per_epoch = group_seconds(suite, dataset, name, group, args.epochs_timed, args.compile)
                seconds += math.ceil(count / group) * (fixed + per_epoch * suite.epochs)
            total += seconds
            by_method[name] = by_method.get(name, 0.0) + seconds
            print(f"{dataset:28s} {name:20s} rows {rows:6d} group<= {cap:3d}  {seconds / 60:7.1f} min", flush=True)
    print("per method (h):", {k: round(v / 3600, 2) for k, v in by_method.items()})
    print(f"total: {total / 3600:.2f} h in one process, {total / 7200:.2f} h with --jobs 2")


if __name__ == "__main__":
    main()
