"""
Overhead of the probmix handler: one SVI step under probmix against the plain SVI step of the
same model, measured side by side (interleaved) in one process.

Model: heteroscedastic MLP 8-128-32-2 on 6,500 synthetic rows (8 features). Settings: full batch
with FullGraph, full batch with KNNGraph(k=5), and pyro.plate(subsample_size=128) with KNNGraph.

    python benchmarks/bench_handler.py [--device cpu|cuda] [--steps 200] [--rows 6500] [--large]
                                       [--no-keep-freed-memory]

Prints the median step time of each and the ratio probmix / plain. ``--large`` adds N = 10^5 rows
with B in {128, 1024, 8192}, where the plain step is also timed with an O(B) subsample draw
(``subsample=randint``) instead of Pyro's O(N) permutation, since the handler draws its anchors
in O(B). Like the experiments, it keeps glibc from returning freed blocks to the OS
(``keep_freed_memory``): otherwise a full-batch step drifts with the allocator's state.
"""
import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_probmix import probmix
from pyro_probmix.experiments.train import keep_freed_memory
from pyro_probmix.graphs import FullGraph, KNNGraph


def make_model(net, subsample_size, o_of_b=False):
    def model(x, y):
        pyro.module("net", net)
        n = x.shape[0]
        subsample = torch.randint(n, (subsample_size,), device=x.device) if o_of_b else None
        with pyro.plate("data", n, subsample_size=subsample_size, subsample=subsample, device=x.device) as idx:
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
    parser.add_argument("--large", action="store_true", help="also N = 10^5 rows, B in {128, 1024, 8192}")
    parser.add_argument("--no-keep-freed-memory", action="store_true", help="leave glibc's malloc settings alone")
    args = parser.parse_args()
    if not args.no_keep_freed_memory:
        keep_freed_memory()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.rows, 8, device=device)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(args.rows, device=device)
    build_start = time.perf_counter()
    knn = KNNGraph(x, k=5)
    sync(device)
    print(f"KNNGraph(k=5) over {args.rows} rows built in {time.perf_counter() - build_start:.3f} s (once)")

    settings = [
        ("full batch, FullGraph", x, y, None, lambda: probmix(alpha=0.1, graph=FullGraph())),
        ("full batch, KNNGraph", x, y, None, lambda: probmix(alpha=0.1, graph=knn)),
        ("subsample 128, KNNGraph", x, y, 128, lambda: probmix(alpha=0.1, graph=knn, plate="data")),
    ]
    if args.large:
        x_large = torch.randn(10**5, 8, device=device)
        y_large = torch.sin(x_large.sum(-1)) + 0.1 * torch.randn(10**5, device=device)
        knn_large = KNNGraph(x_large, k=5)
        for batch in (128, 1024, 8192):
            settings.append((f"N=1e5, subsample {batch}, KNNGraph", x_large, y_large, batch,
                             lambda: probmix(alpha=0.1, graph=knn_large, plate="data")))
    print(f"device={device} rows={args.rows} steps={args.steps} torch={torch.__version__} pyro={pyro.__version__}")
    print("| setting | plain step (ms) | plain, O(B) subsample (ms) | probmix step (ms) | ratio | ratio to O(B) |")
    print("|---|---|---|---|---|---|")
    for label, x, y, subsample_size, make_handler in settings:
        pyro.clear_param_store()
        net = torch.nn.Sequential(
            torch.nn.Linear(8, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)
        ).to(device)
        optim = pyro.optim.Adam({"lr": 1e-3})
        svi = SVI(make_model(net, subsample_size), guide, optim, Trace_ELBO())
        svi_o_of_b = SVI(make_model(net, subsample_size, o_of_b=True), guide, optim, Trace_ELBO()) if subsample_size else None
        handler = make_handler()
        time_steps(svi, None, x, y, 10, device)  # warm-up
        time_steps(svi, handler, x, y, 10, device)
        plain, o_of_b, mixed = [], [], []
        per_round = max(1, args.steps // args.rounds)
        for _ in range(args.rounds):
            plain += time_steps(svi, None, x, y, per_round, device)
            if svi_o_of_b is not None:
                o_of_b += time_steps(svi_o_of_b, None, x, y, per_round, device)
            mixed += time_steps(svi, handler, x, y, per_round, device)
        p, m = statistics.median(plain), statistics.median(mixed)
        b = statistics.median(o_of_b) if o_of_b else None
        b_cells = (f"{1e3 * b:.2f}", f"{m / b:.2f}") if b else ("–", "–")
        print(f"| {label} | {1e3 * p:.2f} | {b_cells[0]} | {1e3 * m:.2f} | {m / p:.2f} | {b_cells[1]} |")


if __name__ == "__main__":
    main()
