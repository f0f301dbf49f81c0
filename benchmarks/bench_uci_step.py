# SPDX-License-Identifier: Apache-2.0
"""
Time of one full-batch training step and of one validation check, per method, on split 0 of a
UCI data set (the pieces of an epoch of the sweep; ``bench_uci_protocol.py`` projects whole runs).

Usage::

    python benchmarks/bench_uci_step.py [--dataset power-plant] [--methods ERM M-ProbMix ...]
                                        [--compile] [--repeats 40]

Prints the median step and validation times in ms, one torch thread. Results are written down in
``benchmarks/README.md`` and ``docs/experiments.md``.
"""
import argparse
import statistics
import time

import torch

from pyro_probmix.experiments.blocks import make_graph
from pyro_probmix.experiments.methods import METHOD_NAMES, resolve_method
from pyro_probmix.experiments.models import make_net
from pyro_probmix.experiments.streams import RunStreams
from pyro_probmix.experiments.suites import get_suite
from pyro_probmix.experiments.train import TrainConfig, _val_nll, keep_freed_memory, objective


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="power-plant")
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    keep_freed_memory()
    suite = get_suite("uci")
    data = suite.load(suite.resolve_datasets([args.dataset])[0], 0)
    x, y = torch.tensor(data.x_train)[None], torch.tensor(data.y_train)[None]
    x_val, y_val = torch.tensor(data.x_val)[None], torch.tensor(data.y_val)[None]
    val_samples = TrainConfig().val_samples
    print(f"{args.dataset}: {x.shape[1]} training rows, {x_val.shape[1]} validation rows")
    for name in args.methods:
        method = resolve_method(name, alpha=0.1, beta=0.01)
        net = make_net(method, "mlp", [0], x.shape[2:], 2, suite.hidden, compile_pool=args.compile)
        streams = RunStreams([0], x.shape[1])
        graph = make_graph(method, x, streams) if method.uses_handler else None
        optim = torch.optim.Adam(net.parameters(), lr=suite.lr)

        def step():
            loss = objective(method, "regression", net, x, y, graph, streams=streams)[0]
            optim.zero_grad()
            loss.backward()
            optim.step()

        def check():
            with torch.no_grad():
                _val_nll(net, method, "regression", x_val, y_val, [0], val_samples)

        for _ in range(5):  # warm-up (and compilation)
            step()
        steps, checks = [], []
        for _ in range(args.repeats):
            for fn, times in ((step, steps), (check, checks)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        print(f"{method.name:20s} step {1e3 * statistics.median(steps):6.1f} ms   "
              f"validation {1e3 * statistics.median(checks):6.1f} ms", flush=True)


if __name__ == "__main__":
    main()
