"""
Toy regression of the paper (§6.1): y = x^3 + eps, eps ~ N(0, 9), 100 training points with
x ~ U(-4, 4), test points x ~ U(4, 6) out of the training range. A heteroscedastic MLP
(128-64) is trained full batch for 500 epochs (Adam, lr 0.01) with ERM and with ProbMix,
LocKProbMix, M-ProbMix and LocKM-ProbMix; the script prints the test MSE and NLL (mean ± std
over runs), writes the same table as Markdown and the predictive mean ± 2 sigma of each method
to a PNG.

    python examples/toy_regression.py [--runs 3] [--epochs 500] [--alpha 0.1] [--beta 0.0]
                                      [--out out/toy_regression.png] [--table out/toy_regression.md]
                                      [--device cpu]

The README quotes the table of the default settings from examples/toy_regression.md; after a
change that moves the numbers, regenerate it with `bash run.sh demo --table examples/toy_regression.md`
and paste it into the README (tests/test_readme.py checks that the two agree).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO

from pyro_probmix import embedding, probmix
from pyro_probmix.experiments.plots import plot_regression_bands
from pyro_probmix.graphs import FullGraph, KNNGraph
from pyro_probmix.metrics import rmse

# method -> (graph, whether the first hidden layer is a stochastic embedding)
METHODS = {
    "ERM": (None, False),
    "ProbMix": ("full", False),
    "LocKProbMix": ("knn", False),
    "M-ProbMix": ("full", True),
    "LocKM-ProbMix": ("knn", True),
}


def make_data(n_train=100, n_test=100, generator=None):
    x = torch.empty(n_train).uniform_(-4, 4, generator=generator)
    x_test = torch.empty(n_test).uniform_(4, 6, generator=generator)
    noise = 3.0 * torch.randn(n_train + n_test, generator=generator)
    return x, x**3 + noise[:n_train], x_test, x_test**3 + noise[n_train:]


class Net(torch.nn.Module):
    """MLP 1-128-64-2: the first layer gives the mean (and for M-ProbMix the scale) of z."""

    def __init__(self, stochastic_embedding):
        super().__init__()
        self.stochastic_embedding = stochastic_embedding
        self.encoder = torch.nn.Linear(1, 256 if stochastic_embedding else 128)
        self.decoder = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))

    def forward(self, x):
        h = self.encoder(x[:, None])
        if self.stochastic_embedding:
            # z ~ N(relu(a), softplus(b)): the variance head shares the input layer (§5)
            a, b = h.chunk(2, -1)
            z = embedding("z", dist.Normal(F.relu(a), F.softplus(b) + 1e-3).to_event(1))
        else:
            z = F.relu(h)
        loc, scale = self.decoder(z).unbind(-1)
        return loc, F.softplus(scale) + 1e-3


def model(net, x, y=None):
    pyro.module("net", net)
    with pyro.plate("data", x.shape[0]):
        loc, scale = net(x)
        return pyro.sample("y", dist.Normal(loc, scale), obs=y)


def no_guide(net, x, y=None):
    pass


def predict(net, x, num_samples):
    """Predictive mean and std; a stochastic embedding is averaged over ``num_samples`` draws."""
    with torch.no_grad():
        draws = [net(x) for _ in range(num_samples if net.stochastic_embedding else 1)]
    locs, scales = torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])
    mean = locs.mean(0)
    variance = (scales**2 + locs**2).mean(0) - mean**2  # moments of the mixture
    return mean, variance.sqrt(), (locs, scales)


def mixture_nll(locs, scales, y):
    """Mean NLL of the equally weighted mixture of Gaussians over the first dim."""
    log_p = dist.Normal(locs, scales).log_prob(y)
    return -(torch.logsumexp(log_p, 0) - math.log(locs.shape[0])).mean().item()


def train(method, x, y, args, seed):
    graph_kind, stochastic = METHODS[method]
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    net = Net(stochastic).to(args.device)
    svi = SVI(model, no_guide, pyro.optim.Adam({"lr": args.lr}), Trace_ELBO())
    if graph_kind is None:
        for _ in range(args.epochs):
            svi.step(net, x, y)
        return net
    graph = FullGraph() if graph_kind == "full" else KNNGraph(x, k=5)
    with probmix(alpha=args.alpha, graph=graph, beta=args.beta):
        for _ in range(args.epochs):
            svi.step(net, x, y)
    return net


def _spread(values):
    """``mean ± std`` over runs (one decimal), or the value of a single run."""
    t = torch.tensor(values)
    return f"{t.mean():.1f} ± {t.std():.1f}" if len(t) > 1 else f"{t.mean():.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--samples", type=int, default=64, help="embedding draws at prediction")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", default="out/toy_regression.png", help="the figure (PNG)")
    parser.add_argument("--table", default="out/toy_regression.md", help="the printed table, as a Markdown file")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    scores = {method: {"MSE": [], "NLL": []} for method in args.methods}
    bands = {}
    start = time.perf_counter()
    for run in range(args.runs):
        x, y, x_test, y_test = (t.to(args.device) for t in make_data(generator=torch.Generator().manual_seed(run)))
        # standardise with training statistics; report on the original scale
        x_mu, x_sd, y_mu, y_sd = x.mean(), x.std(), y.mean(), y.std()
        for method in args.methods:
            net = train(method, (x - x_mu) / x_sd, (y - y_mu) / y_sd, args, seed=run)
            _, _, (locs, scales) = predict(net, (x_test - x_mu) / x_sd, args.samples)
            locs, scales = locs * y_sd + y_mu, scales * y_sd
            mean = locs.mean(0)
            scores[method]["MSE"].append(rmse(mean, y_test) ** 2)
            scores[method]["NLL"].append(mixture_nll(locs, scales, y_test))
            print(f"run {run + 1}/{args.runs}: {method} trained ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
            if run == 0:
                grid = torch.linspace(-6, 6, 300, device=args.device)
                mean_g, std_g, _ = predict(net, (grid - x_mu) / x_sd, args.samples)
                bands[method] = (mean_g * y_sd + y_mu, std_g * y_sd)
                if method == args.methods[0]:
                    data_run0 = (x, y, grid, x_test, y_test)

    print(f"toy regression, test x ~ U(4, 6): {args.runs} runs, {args.epochs} epochs, "
          f"alpha={args.alpha}, beta={args.beta} ({time.perf_counter() - start:.0f} s)")
    table = "\n".join(["| method | test MSE | test NLL |", "|---|---|---|"] + [
        f"| {method} | {_spread(s['MSE'])} | {_spread(s['NLL'])} |" for method, s in scores.items()
    ]) + "\n"
    print(table, end="")
    table_path = Path(args.table)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(table)
    print(f"table: {table_path}")
    x, y, grid, x_test, y_test = data_run0
    path = plot_regression_bands(x, y, grid, bands, args.out, x_test=x_test, y_test=y_test, truth=grid**3)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
