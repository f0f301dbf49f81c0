"""
What probmix does on the model shapes of issue 9, one line per case: the figure that shows
whether the objective is the documented one, or the error or warning raised. Run it on two
code versions to compare them (it uses only the public API of every version):

    python benchmarks/model_cases.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/model_cases.py
"""
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Importance, JitTrace_ELBO, Trace_ELBO, TraceEnum_ELBO, config_enumerate

from pyro_probmix import probmix
from pyro_probmix.graphs import KNNGraph

N = 40
X = torch.linspace(-2, 2, N)
Y = torch.sin(3 * X) + 0.1 * torch.randn(N)


def no_guide(*args, **kwargs):
    pass


def loss(model, *args):
    return Trace_ELBO().differentiable_loss(model, no_guide, *args)


def regression(mask=None, plate=None, subsample_size=None, subsample=None, y=Y):
    plate = plate or pyro.plate("data", N, subsample_size=subsample_size, subsample=subsample)
    with plate as idx:
        with poutine.mask(mask=True if mask is None else mask[idx]):
            pyro.sample("y", dist.Normal(torch.sin(3 * X[idx]), 0.5), obs=y[idx])


def scored_cells(model, *args):
    """Cells with a non-zero weight in the trace of one execution under probmix."""
    trace = poutine.trace(model).get_trace(*args)
    site = trace.nodes["y"]
    mask = site["mask"]
    return int(site["fn"].batch_shape.numel() if mask is None else mask.sum())


def case_mask():
    mask = torch.arange(N) % 2 == 0
    with probmix(alpha=1.0):
        fused = sum(scored_cells(regression, mask) for _ in range(50)) / 50
    return f"observed cells scored per step: {fused:.1f} of {int(mask.sum())}"


MODULE_PLATE = pyro.plate("data", N)


def case_module_plate():
    with probmix(alpha=1.0) as handler:
        partners = set()
        for _ in range(20):
            loss(regression, None, MODULE_PLATE)
            partners.add(tuple(handler.pairings["data"].partner.tolist()))
    return f"distinct pairings in 20 steps: {len(partners)}"


def case_jit_inside():
    svi = SVI(lambda: regression(), no_guide, pyro.optim.Adam({"lr": 0.01}), JitTrace_ELBO())
    with probmix(alpha=1.0):
        svi.step()
    return "trained, no error"


def case_jit_compiled_first():
    def model():
        w = pyro.param("w", torch.tensor(0.0))
        with pyro.plate("data", N):
            pyro.sample("y", dist.Normal(w * X, 1.0), obs=Y)

    svi = SVI(model, no_guide, pyro.optim.Adam({"lr": 0.01}), JitTrace_ELBO())
    plain = svi.evaluate_loss()
    svi.step()
    with probmix(alpha=1.0):
        inside = svi.step()
    return f"loss inside probmix {inside:.3f} vs plain {plain:.3f}"


@config_enumerate
def mixture(subsample_size):
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
    with pyro.plate("data", N, subsample_size=subsample_size) as idx:
        k = pyro.sample("k", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("y", dist.Normal(locs[k], 1.0), obs=Y[idx])


def case_enum_minibatch():
    with probmix(alpha=1.0, plate="data"):
        value = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(mixture, no_guide, 10)
    return f"loss {float(value):.3f}"


def case_sites_typo():
    with probmix(alpha=1.0, sites=["yy"]):
        loss(regression)
    return "no error"


def case_importance():
    with probmix(alpha=1.0):
        Importance(lambda: regression(), num_samples=2).run()
    return "no error"


def case_condition_global():
    def model():
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", N):
            pyro.sample("y", dist.Normal(w * X, 1.0), obs=Y)

    with probmix(alpha=1.0):
        loss(poutine.condition(model, {"w": torch.tensor(1.0)}))
    return "trained"


def case_sequential():
    def model():
        for i in pyro.plate("data", 4):
            pyro.sample(f"y_{i}", dist.Normal(0.0, 1.0), obs=Y[i])

    with probmix(alpha=1.0):
        loss(model)
    return "trained"


def case_nested():
    with probmix(alpha=1.0), probmix(alpha=1.0):
        loss(regression)
    return "trained"


def case_wrong_shape():
    with probmix(alpha=1.0):
        value = loss(lambda: regression(y=torch.randn(N, 2)))
    return f"loss {float(value):.3f}"


def case_nan():
    y = Y.clone()
    y[3] = float("nan")
    with probmix(alpha=1.0):
        value = loss(lambda: regression(y=y))
    return f"loss {float(value):.3f}"


def case_label_out_of_range():
    def model():
        with pyro.plate("data", 4):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(4, 3)), obs=torch.tensor([0, 1, 5, 2]))

    with probmix(alpha=1.0, beta=0.1):
        value = loss(model)
    return f"loss {float(value):.3f}"


def case_shuffled_full_batch():
    graph = KNNGraph(X, k=3)
    order = torch.randperm(N)
    hits = 0
    with probmix(alpha=1.0, graph=graph) as handler:
        for _ in range(20):
            loss(regression, None, None, None, order)
            partner = handler.pairings["data"].partner
            hits += sum(order[partner[r]].item() in graph.neighbors[order[r]].tolist() for r in range(N))
    return f"partners that are graph neighbours: {hits / (20 * N):.0%}"


def case_unnamed_minibatch():
    with probmix(alpha=1.0, graph=KNNGraph(X, k=3)):
        loss(regression, None, None, 10)
    return "trained"


CASES = [
    ("1 poutine.mask, half the rows observed", case_mask),
    ("2 plate built at module level", case_module_plate),
    ("3 JitTrace_ELBO compiled inside probmix", case_jit_inside),
    ("3 JitTrace_ELBO compiled before probmix", case_jit_compiled_first),
    ("4 TraceEnum_ELBO, enumerated mixture, mini-batch", case_enum_minibatch),
    ("6 sites= name that matches no site", case_sites_typo),
    ("6 Importance.run (model behind poutine.block)", case_importance),
    ("7 poutine.condition on a global latent", case_condition_global),
    ("7 sequential plate", case_sequential),
    ("7 nested probmix", case_nested),
    ("7 observation of the wrong shape", case_wrong_shape),
    ("7 NaN observation", case_nan),
    ("7 class label out of range, beta > 0", case_label_out_of_range),
    ("8 full batch in shuffled order (subsample=order), KNN", case_shuffled_full_batch),
    ("9 subsampled plate without plate=, KNN over its rows", case_unnamed_minibatch),
]


def main():
    pyro.set_rng_seed(0)
    print("| case | outcome |\n|---|---|")
    for name, case in CASES:
        pyro.clear_param_store()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome = case()
            except Exception as e:  # the outcome of a case is its error
                outcome = f"{type(e).__name__}: {str(e).splitlines()[0][:110]}"
        fused_none = [w for w in caught if "fused no site" in str(w.message)]
        if fused_none:
            outcome += " + warning: fused no site"
        print(f"| {name} | {outcome} |")


if __name__ == "__main__":
    main()
