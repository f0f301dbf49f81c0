"""
Overhead of the probmix handler: one SVI step under probmix against the plain SVI step of the
same model, measured side by side (interleaved) in one process.

Model: heteroscedastic MLP 8-128-32-2 on 6,500 synthetic rows (8 features). Settings: full batch
with FullGraph, full batch with KNNGraph(k=5), and pyro.plate(subsample_size=128) with KNNGraph.

    python benchmarks/bench_handler.py [--device cpu|cuda] [--steps 200] [--rows 6500]

Prints the median step time of each and the ratio probmix / plain (target: <= 1.3).
"""
import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_probmix import probmix
from pyro_probmix.graphs import FullGraph, KNNGraph


def make_model(net, subsample_size):
    def model(x, y):
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            out = net(x[idx])
            pyro.sample("y", dist.Normal(out[:, 0], torch.nn.functional.softplus(out[:, 1]) + 1e-3), obs=y[idx])

    return model


def guide(x, y):
    pass


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(svi, handler, x, y, steps, device):
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        if handler is None:
            svi.step(x, y)
        else:
            with handler:
                svi.step(x, y)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rows", type=int, default=6500)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --steps/rounds steps")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.rows, 8, device=device)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(args.rows, device=device)
    build_start = time.perf_counter()
    knn = KNNGraph(x, k=5)
    sync(device)
    print(f"KNNGraph(k=5) over {args.rows} rows built in {time.perf_counter() - build_start:.3f} s (once)")

    settings = [
        ("full batch, FullGraph", None, lambda: probmix(alpha=0.1, graph=FullGraph())),
        ("full batch, KNNGraph", None, lambda: probmix(alpha=0.1, graph=knn)),
        ("subsample 128, KNNGraph", 128, lambda: probmix(alpha=0.1, graph=knn, plate="data")),
    ]
    print(f"device={device} rows={args.rows} steps={args.steps} torch={torch.__version__} pyro={pyro.__version__}")
    print(f"| setting | plain step (ms) | probmix step (ms) | ratio |")
    print(f"|---|---|---|---|")
    for label, subsample_size, make_handler in settings:
        pyro.clear_param_store()
        net = torch.nn.Sequential(
            torch.nn.Linear(8, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)
        ).to(device)
        svi = SVI(make_model(net, subsample_size), guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        handler = make_handler()
        time_steps(svi, None, x, y, 10, device)  # warm-up
        time_steps(svi, handler, x, y, 10, device)
        plain, mixed = [], []
        per_round = max(1, args.steps // args.rounds)
        for _ in range(args.rounds):
            plain += time_steps(svi, None, x, y, per_round, device)
            mixed += time_steps(svi, handler, x, y, per_round, device)
        p, m = statistics.median(plain), statistics.median(mixed)
        print(f"| {label} | {1e3 * p:.2f} | {1e3 * m:.2f} | {m / p:.2f} |")


if __name__ == "__main__":
    main()
