"""
CPU time of the pieces the handler adds to one mini-batch step (B = 128 rows of N = 6,500,
KNNGraph(k=5), a Normal likelihood), each called alone in a loop, one torch thread:

    python benchmarks/bench_step_pieces.py [--calls 3000]

Prints microseconds per call (``time.process_time``, so a process running beside it inflates the
figures less than a wall clock would). The plain Normal's forward + backward is the reference: it
is the part of the plain step that the fused likelihood replaces.
"""
import argparse
import time

import pyro.distributions as dist
import torch

from pyro_probmix.closed_forms import NormalProbMixLikelihood
from pyro_probmix.graphs import KNNGraph
from pyro_probmix.likelihood import _check_value
from pyro_probmix.pairing import LambdaSampler, draw_subsample, sample_symmetric_beta


def cpu_us(fn, calls):
    for _ in range(calls // 10):
        fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    calls = parser.parse_args().calls
    torch.set_num_threads(1)
    torch.manual_seed(0)
    graph = KNNGraph(torch.randn(6500, 8), k=5)
    lam_sampler = LambdaSampler(0.1, None)
    loc = torch.randn(128, requires_grad=True)
    scale = torch.rand(128) + 0.5
    value = torch.randn(128)
    partner, lam = torch.randperm(128), torch.rand(128)

    def fused_step():
        fused = NormalProbMixLikelihood(loc, scale, partner, -1, lam, value[partner], 0.0, True)
        fused.log_prob(value).sum().backward()

    def plain_step():
        dist.Normal(loc, scale).log_prob(value).sum().backward()

    pieces = {
        "lambda draw, 64 x Beta(0.1, 0.1)": lambda: sample_symmetric_beta(0.1, 64),
        "KNNGraph.sample, 64 anchors": lambda: graph.sample(torch.randint(6500, (64,)), 6500),
        "draw_subsample (anchors, partners, lambdas)": lambda: draw_subsample(
            graph, lam_sampler, "data", 6500, 128, "cpu", torch.float32, {}
        ),
        "observed value check": lambda: _check_value("y", dist.Normal(loc, scale), value),
        "Normal closed form: construction": lambda: NormalProbMixLikelihood(
            loc, scale, partner, -1, lam, value[partner], 0.0, True
        ),
        "Normal closed form: forward + backward": fused_step,
        "plain Normal: forward + backward": plain_step,
    }
    print("| piece | us per call |\n|---|---|")
    for name, fn in pieces.items():
        print(f"| {name} | {cpu_us(fn, calls):.1f} |")


if __name__ == "__main__":
    main()
