# SPDX-License-Identifier: Apache-2.0
"""The CUDA path against the CPU path: same values where the computation is deterministic,
tables and draws on the data's device. Skipped without CUDA; `benchmarks/gpu_check.sh` runs
these with the other cases parametrised over ``device="cuda"`` (``pytest -k cuda``)."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_probmix import probmix
from pyro_probmix.graphs import KNNGraph, LabelKernelGraph
from pyro_probmix.pooling import log_linear_pool

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

FAMILIES = {
    "normal": lambda a, b: dist.Normal(a, b.exp()),
    "mvn": lambda a, b: dist.MultivariateNormal(a.unsqueeze(-1).expand(-1, 3), scale_tril=torch.diag_embed(b.exp().unsqueeze(-1).expand(-1, 3))),
    "categorical": lambda a, b: dist.Categorical(logits=torch.stack([a, b, a * b], -1)),
    "bernoulli": lambda a, b: dist.Bernoulli(logits=a - b),
    "poisson": lambda a, b: dist.Poisson(a.exp()),
    "gamma": lambda a, b: dist.Gamma(a.exp(), b.exp()),
    "beta": lambda a, b: dist.Beta(a.exp(), b.exp()),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pooling_on_cuda_matches_cpu(family):
    torch.manual_seed(0)
    params = torch.randn(4, 50, dtype=torch.float64)
    lam = torch.rand(50, dtype=torch.float64)
    results = {}
    for device in ("cpu", "cuda"):
        a_p, b_p, a_q, b_q = params.to(device).clone().requires_grad_().unbind(0)
        leaves = (a_p, b_p, a_q, b_q)
        pooled = log_linear_pool(FAMILIES[family](a_p, b_p), FAMILIES[family](a_q, b_q), lam.to(device))
        value = pooled.sample() if device == "cpu" else results["cpu"][0].to(device)
        log_prob = pooled.log_prob(value).sum()
        grads = torch.autograd.grad(log_prob, [t for t in leaves], allow_unused=True)
        assert pooled.mean.device.type == device
        results[device] = (value, log_prob.detach().cpu(), [g if g is None else g.cpu() for g in grads])
    assert torch.allclose(results["cuda"][1], results["cpu"][1], rtol=1e-10)
    for g_cpu, g_cuda in zip(results["cpu"][2], results["cuda"][2]):
        assert (g_cpu is None) == (g_cuda is None)
        assert g_cpu is None or torch.allclose(g_cuda, g_cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "hnsw"])
def test_knn_graph_of_cuda_features_lives_on_cuda(method):
    if method == "hnsw":
        pytest.importorskip("faiss")
    torch.manual_seed(1)
    x = torch.randn(2000, 5, dtype=torch.float64)
    on_cpu, on_cuda = KNNGraph(x, k=5, method=method), KNNGraph(x.cuda(), k=5, method=method)
    assert on_cuda.neighbors.device.type == "cuda" and on_cuda.recall == on_cpu.recall
    if method == "exact":  # float64 distances: the same sets on both devices
        assert torch.equal(on_cuda.neighbors.sort(1).values.cpu(), on_cpu.neighbors.sort(1).values)
    anchors = torch.randint(2000, (4096,), device="cuda")
    partners = on_cuda.sample(anchors, 2000)
    assert partners.device == anchors.device
    assert (partners.unsqueeze(1) == on_cuda.neighbors[anchors]).any(1).all()
    assert on_cuda._tables_on(anchors.device)[0].data_ptr() == on_cuda.neighbors.data_ptr()  # no copy


def test_label_kernel_edges_on_cuda_match_cpu():
    torch.manual_seed(2)
    y = torch.randn(500, dtype=torch.float64)
    on_cpu, on_cuda = LabelKernelGraph(y, bandwidth=0.2), LabelKernelGraph(y.cuda(), bandwidth=0.2)
    assert torch.equal(on_cuda.edges.cpu(), on_cpu.edges)
    assert torch.allclose(on_cuda.weights.cpu(), on_cpu.weights, rtol=1e-12, atol=0)


@pytest.mark.parametrize("subsample_size", [None, 128])
def test_handler_step_on_cuda(subsample_size):
    n = 1024
    torch.manual_seed(3)
    x = torch.randn(n, 4, device="cuda")
    y = torch.sin(x.sum(-1))
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)).cuda()

    def model(x, y):
        pyro.module("net", net)
        with pyro.plate("data", n, subsample_size=subsample_size, device=x.device) as idx:
            out = net(x[idx])
            pyro.sample("y", dist.Normal(out[:, 0], torch.nn.functional.softplus(out[:, 1]) + 1e-3), obs=y[idx])

    pyro.clear_param_store()
    svi = SVI(model, lambda x, y: None, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    graph = KNNGraph(x, k=5)
    losses = []
    with probmix(alpha=0.5, graph=graph, plate="data") as handler:
        for _ in range(50):
            losses.append(svi.step(x, y))
    pairing = handler.pairings["data"]
    assert all(math.isfinite(loss) for loss in losses)
    assert pairing.partner.device.type == "cuda" and pairing.lam.device.type == "cuda"
    assert sum(losses[-10:]) < sum(losses[:10])  # it trains
