# SPDX-License-Identifier: Apache-2.0
"""
Forward and forward + backward of the Gaussian pool of an M-ProbMix embedding layer, three ways:
the library's eager rule (:func:`~pyro_probmix.pooling.normal_pool_params` under autograd), the
same function compiled by ``torch.compile`` under autograd (the ``--compile`` kernel before
2026-12-02), and :func:`~pyro_probmix.experiments.compiled_pool.compiled_normal_pool_params` (two
kernels compiled without autograd, the ``--compile`` kernel now).

Usage::

    python benchmarks/bench_embedding_pool.py [--rows 6889] [--width 128] [--repeats 20]

Prints median times in ms, one torch thread (the default shape is power-plant's training part at
the mixing layer's width). Results are written down in ``benchmarks/README.md``.
"""
import argparse
import statistics
import time

import torch

from pyro_probmix.experiments.compiled_pool import compiled_normal_pool_params
from pyro_probmix.experiments.train import keep_freed_memory
from pyro_probmix.pooling import normal_pool_params


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6889)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    g = torch.Generator().manual_seed(0)
    shape = (args.rows, args.width)
    loc_p, loc_q = (torch.randn(shape, generator=g).requires_grad_() for _ in range(2))
    scale_p, scale_q = ((torch.rand(shape, generator=g) + 0.1).requires_grad_() for _ in range(2))
    lam = torch.rand(args.rows, 1, generator=g)
    rules = {
        "eager rule": normal_pool_params,
        "rule compiled under autograd": torch.compile(normal_pool_params, dynamic=True),
        "two kernels compiled without autograd": compiled_normal_pool_params,
    }

    def median_ms(rule, backward):
        def once():
            loc, scale = rule(loc_p, scale_p, loc_q, scale_q, lam)
            if backward:
                torch.autograd.grad((loc.sum() + scale.sum()), (loc_p, scale_p, loc_q, scale_q))

        for _ in range(3):  # warm-up (and compilation)
            once()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            once()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    print(f"pool of two Normals of shape {shape}, one torch thread, median of {args.repeats}")
    print("| rule | forward (ms) | forward + backward (ms) |\n|---|---|---|")
    for name, rule in rules.items():
        print(f"| {name} | {median_ms(rule, False):.2f} | {median_ms(rule, True):.2f} |")


if __name__ == "__main__":
    main()
