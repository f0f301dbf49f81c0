"""
The probmix handler: batching paths, label fusion, composition with Pyro, and bad input.
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_probmix import embedding, probmix
from pyro_probmix.graphs import FullGraph, KNNGraph, WeightedGraph
from pyro_probmix.handler import NothingFusedWarning, ProbMixLikelihood
from pyro_probmix.labels import DiracKernel


pytestmark = pytest.mark.usefixtures("fresh_pyro")


def _no_guide(*args, **kwargs):
    pass


def regression_model(x, y=None, subsample_size=None):
    """Heteroscedastic Gaussian regression with fixed nonlinear features (no parameters)."""
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        loc, log_scale = torch.sin(3 * x[idx]), 0.3 * torch.cos(2 * x[idx])
        pyro.sample("y", dist.Normal(loc, log_scale.exp()), obs=None if y is None else y[idx])


def pair_loss(x, y, i, j, lam):
    """-log of the label-fused pooled likelihood of pair (i, j) (beta = 0, linear labels)."""
    loc, scale = torch.sin(3 * x), (0.3 * torch.cos(2 * x)).exp()
    precision = lam / scale[i] ** 2 + (1 - lam) / scale[j] ** 2
    mean = (lam * loc[i] / scale[i] ** 2 + (1 - lam) * loc[j] / scale[j] ** 2) / precision
    pooled = dist.Normal(mean, precision.rsqrt())
    return -(lam * pooled.log_prob(y[i]) + (1 - lam) * pooled.log_prob(y[j]))


def elbo_loss(model, *args, **kwargs):
    return Trace_ELBO().differentiable_loss(model, _no_guide, *args, **kwargs)


# ----------------------------------------------------------------------------- subsampling
@pytest.mark.parametrize(
    "graph_name, n",
    [("full", 30), ("knn", 30), ("knn", 160)],  # anchors drawn without / with replacement
)
def test_subsample_loss_is_unbiased_for_the_full_objective(graph_name, n):
    batch, lam, draws = 8, 0.3, 3000
    x = torch.linspace(-2, 2, n)
    y = torch.sin(3 * x) + 0.3 * torch.randn(n)
    if graph_name == "full":
        graph = FullGraph()
        weights = (1 - torch.eye(n)) / (n - 1)
    else:
        graph = KNNGraph(x, k=3)
        weights = torch.zeros(n, n).scatter_(1, graph.neighbors, 1.0 / 3)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    exact = (weights * pair_loss(x, y, i, j, torch.tensor(lam))).sum()
    with probmix(lam=lam, graph=graph, plate="data"):
        losses = torch.stack([elbo_loss(regression_model, x, y, batch) for _ in range(draws)])
    standard_error = losses.std() / math.sqrt(draws)
    assert abs(losses.mean() - exact) < 4 * standard_error
    # and the estimator is not trivially exact (it does vary from draw to draw)
    assert losses.std() > 0.05 * exact.abs()


def test_subsample_fills_anchors_then_partners_and_masks_partners():
    n, batch = 20, 6
    x = torch.randn(n)
    graph = KNNGraph(x, k=2)
    with probmix(lam=0.4, graph=graph, plate="data") as handler:
        trace = poutine.trace(regression_model).get_trace(x, x, batch)
    idx = trace.nodes["data"]["value"]
    anchors, partners = idx[:3], idx[3:]
    assert len(set(anchors.tolist())) == 3
    for a, p in zip(anchors.tolist(), partners.tolist()):
        assert p in graph.neighbors[a].tolist()
    site = trace.nodes["y"]
    assert site["mask"].tolist() == [True] * 3 + [False] * 3
    assert math.isclose(site["scale"], n / 3)
    assert handler.pairings["data"].lam.tolist() == pytest.approx([0.4] * 3 + [0.6] * 3)


def test_odd_subsample_size_leaves_one_spare_row_masked():
    x = torch.randn(20)
    with probmix(lam=0.4, plate="data"):
        trace = poutine.trace(regression_model).get_trace(x, x, 7)
    assert trace.nodes["y"]["mask"].tolist() == [True] * 3 + [False] * 4
    assert math.isclose(trace.nodes["y"]["scale"], 20 / 3)


def test_guide_and_model_share_the_pairs_of_a_step():
    n = 16
    x, y = torch.randn(n), torch.randn(n)

    def model(x, y):
        with pyro.plate("data", n, subsample_size=6) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(x[idx] + z, 1.0), obs=y[idx])

    def guide(x, y):
        loc = pyro.param("loc", torch.zeros(n))
        with pyro.plate("data", n, subsample_size=6) as idx:
            pyro.sample("z", dist.Normal(loc[idx], 1.0))

    with probmix(alpha=0.5, plate="data") as handler:
        guide_trace = poutine.trace(guide).get_trace(x, y)
        pairing = handler.pairings["data"]
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
        assert handler.pairings["data"] is pairing
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        assert math.isfinite(svi.step(x, y))
    assert model_trace.nodes["data"]["value"] is guide_trace.nodes["data"]["value"]


# ----------------------------------------------------------------------------- full batch
def test_full_batch_with_knn_graph_pairs_neighbours():
    x = torch.randn(25)
    graph = KNNGraph(x, k=4)
    with probmix(alpha=1.0, graph=graph) as handler:
        value = elbo_loss(regression_model, x, x)
    pairing = handler.pairings["data"]
    assert pairing.anchor_mask is None and pairing.scale == 1.0
    for i, j in enumerate(pairing.partner.tolist()):
        assert j in graph.neighbors[i].tolist()
    expected = pair_loss(x, x, torch.arange(25), pairing.partner, pairing.lam).sum()
    assert torch.allclose(value, expected)


def test_external_batches_pair_within_the_batch_with_full_graph_only():
    x = torch.randn(40)
    batch = x[:10]
    with probmix(alpha=1.0, graph=FullGraph()) as handler:
        elbo_loss(regression_model, batch, batch)
    assert handler.pairings["data"].partner.max() < 10
    with pytest.raises(ValueError, match="num_rows|10|40"):
        with probmix(alpha=1.0, graph=KNNGraph(x, k=3)):
            elbo_loss(regression_model, batch, batch)


def test_unnamed_subsampled_plate_of_the_graph_size_is_taken_over():
    x = torch.randn(40)
    with probmix(alpha=1.0, graph=KNNGraph(x, k=3)) as handler:
        trace = poutine.trace(regression_model).get_trace(x, x, 10)
    idx = trace.nodes["data"]["value"]
    assert handler.pairings["data"].scale == 2.0
    for a, p in zip(idx[:5].tolist(), idx[5:].tolist()):
        assert p in handler.graph.neighbors[a].tolist()


def test_two_subsampled_plates_of_the_graph_size_are_ambiguous():
    x = torch.randn(40)

    def model():
        regression_model(x, x, 10)
        with pyro.plate("other", 40, subsample_size=10):
            pass

    with pytest.raises(ValueError, match="'data' and 'other' both subsample.*plate="):
        with probmix(alpha=1.0, graph=KNNGraph(x, k=3)):
            elbo_loss(model)


def test_nothing_leaks_outside_the_with_block():
    x = torch.randn(10)
    plain = poutine.trace(regression_model).get_trace(x, x).log_prob_sum()
    with probmix(alpha=0.3):
        elbo_loss(regression_model, x, x)
    after = poutine.trace(regression_model).get_trace(x, x)
    assert not isinstance(after.nodes["y"]["fn"], ProbMixLikelihood)
    assert torch.equal(after.log_prob_sum(), plain)


def test_handler_wraps_a_callable():
    x = torch.randn(10)
    wrapped = probmix(alpha=0.3)(regression_model)
    trace = poutine.trace(wrapped).get_trace(x, x)
    assert isinstance(trace.nodes["y"]["fn"], ProbMixLikelihood)


# ----------------------------------------------------------------------------- labels
def test_gaussian_label_kernel_closed_form_matches_monte_carlo():
    # beta > 0: closed form for Normal against a Monte Carlo estimate of the same expectation
    x = torch.randn(8)
    with probmix(lam=0.3, beta=0.2) as handler:
        trace = poutine.trace(regression_model).get_trace(x, x)
    fn = trace.nodes["y"]["fn"]
    exact = fn.log_prob(x)
    pairing = handler.pairings["data"]
    lam, j = pairing.lam, pairing.partner
    noise = torch.randn(200000, 1) * math.sqrt(0.2)
    mc = lam * fn.base.log_prob(x + noise).mean(0) + (1 - lam) * fn.base.log_prob(x[j] + noise).mean(0)
    assert torch.allclose(exact, mc, atol=2e-3)


def test_classification_smoothing_kernel_is_an_exact_sum():
    logits = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def model(y):
        with pyro.plate("data", 6):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    beta = 0.05
    with probmix(lam=0.25, beta=beta) as handler:
        value = elbo_loss(model, y)
    j, lam = handler.pairings["data"].partner, 0.25
    log_p = torch.log_softmax(lam * logits + (1 - lam) * logits[j], -1)
    soft = lambda labels: (torch.nn.functional.one_hot(labels, 3) + beta) / (1 + 3 * beta)  # noqa: E731
    expected = -(lam * (soft(y) * log_p).sum(-1) + (1 - lam) * (soft(y[j]) * log_p).sum(-1)).sum()
    assert torch.allclose(value, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smoothing_kernel_of_a_mixture_pool_is_an_exact_sum_in_the_models_dtype(dtype):
    # fusion="linear" with beta > 0 on a Categorical was refused as "no label kernel for
    # LinearPool", and SmoothingKernel raised a bare NotImplementedError there; integer labels'
    # soft labels were float32 in a float64 model (off by 4e-8)
    logits = torch.randn(6, 3, dtype=dtype)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def model(y):
        with pyro.plate("data", 6):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    beta = 0.05
    with probmix(lam=0.25, beta=beta, fusion="linear") as handler:
        value = elbo_loss(model, y)
    j, lam = handler.pairings["data"].partner, 0.25
    log_p = torch.log(lam * logits.softmax(-1) + (1 - lam) * logits[j].softmax(-1))
    soft = lambda labels: (torch.nn.functional.one_hot(labels, 3).to(dtype) + beta) / (1 + 3 * beta)  # noqa: E731
    expected = -(lam * (soft(y) * log_p).sum(-1) + (1 - lam) * (soft(y[j]) * log_p).sum(-1)).sum()
    assert value.dtype == dtype
    torch.testing.assert_close(value, expected, rtol=1e-15 if dtype == torch.float64 else 1e-6, atol=0)


def test_appendix_b_criterion_is_log_of_expected_likelihood():
    x = torch.randn(8)
    with probmix(lam=0.3, beta=0.2, criterion="log_expected") as handler:
        trace = poutine.trace(regression_model).get_trace(x, x)
    fn = trace.nodes["y"]["fn"]
    j = handler.pairings["data"].partner
    widened = dist.Normal(fn.base.loc, (fn.base.scale**2 + 0.2).sqrt())
    expected = torch.logaddexp(math.log(0.3) + widened.log_prob(x), math.log(0.7) + widened.log_prob(x[j]))
    assert torch.allclose(fn.log_prob(x), expected)
    # Jensen: log E[p] >= E[log p] (Appendix B), the latter with its closed form
    base = fn.base
    expected_log = 0.3 * (base.log_prob(x) - 0.1 / base.scale**2) + 0.7 * (base.log_prob(x[j]) - 0.1 / base.scale**2)
    assert (fn.log_prob(x) > expected_log).all()


def test_monte_carlo_label_fusion_for_a_family_without_closed_form():
    y = torch.randn(5)

    def model(y):
        with pyro.plate("data", 5):
            pyro.sample("y", dist.StudentT(4.0, torch.zeros(5), torch.ones(5)), obs=y)

    with probmix(lam=0.5, beta=0.1, fusion="linear", num_samples=20000) as handler:
        trace = poutine.trace(model).get_trace(y)
    fn = trace.nodes["y"]["fn"]
    j = handler.pairings["data"].partner
    student = dist.StudentT(4.0, 0.0, 1.0)
    # the linear pool of two identical rows is the row itself: E over the label kernel only
    noise = torch.randn(400000, 1) * math.sqrt(0.1)
    reference = 0.5 * student.log_prob(y + noise).mean(0) + 0.5 * student.log_prob(y[j] + noise).mean(0)
    assert torch.allclose(fn.log_prob(y), reference, atol=0.01)


def test_linear_likelihood_fusion_is_a_mixture():
    x = torch.randn(8)
    with probmix(lam=0.3, fusion="linear") as handler:
        value = elbo_loss(regression_model, x, x)
    j = handler.pairings["data"].partner
    d = dist.Normal(torch.sin(3 * x), (0.3 * torch.cos(2 * x)).exp())
    dj = dist.Normal(d.loc[j], d.scale[j])
    log_mix = lambda v: torch.logaddexp(math.log(0.3) + d.log_prob(v), math.log(0.7) + dj.log_prob(v))  # noqa: E731
    assert torch.allclose(value, -(0.3 * log_mix(x) + 0.7 * log_mix(x[j])).sum())


# ----------------------------------------------------------------------------- composition
def bayesian_model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(w * x + b, 0.5), obs=y)


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO, TraceGraph_ELBO])
def test_svi_with_global_latents_and_autonormal(elbo):
    x = torch.linspace(-2, 2, 50)
    y = 1.5 * x - 0.5 + 0.3 * torch.randn(50)
    guide = AutoNormal(bayesian_model)
    svi = SVI(bayesian_model, guide, pyro.optim.Adam({"lr": 0.05}), elbo())
    with probmix(alpha=0.2, graph=KNNGraph(x, k=5)):
        for _ in range(400):
            loss = svi.step(x, y)
    assert math.isfinite(loss)
    medians = guide.median()
    # local mixup of a linear model keeps the line (Theorem 4.6)
    assert abs(medians["w"].item() - 1.5) < 0.15 and abs(medians["b"].item() + 0.5) < 0.15
    predictive = pyro.infer.Predictive(bayesian_model, guide=guide, num_samples=10)(x)
    assert predictive["y"].shape == (10, 50)


def test_repeatable_with_set_rng_seed():
    x = torch.linspace(-2, 2, 30)
    y = torch.sin(x)

    def run():
        pyro.clear_param_store()
        pyro.set_rng_seed(123)
        guide = AutoNormal(bayesian_model)
        svi = SVI(bayesian_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        with probmix(alpha=0.5, graph=KNNGraph(x, k=3)):
            return [svi.step(x, y) for _ in range(5)]

    assert run() == run()


def test_poutine_scale_mask_and_condition_compose():
    x = torch.randn(10)
    mask = torch.arange(10) % 3 != 0
    with probmix(lam=0.3) as handler:
        with poutine.scale(scale=2.0), poutine.mask(mask=mask):
            trace = poutine.trace(regression_model).get_trace(x, x)
        pairing = handler.pairings["data"]
    site = trace.nodes["y"]
    assert site["scale"] == 2.0
    # a pair is scored only where both rows are
    assert torch.equal(site["mask"], mask & mask[pairing.partner])
    # condition supplies the observation the handler fuses
    conditioned = poutine.condition(regression_model, data={"y": x})
    with probmix(lam=0.3):
        assert isinstance(poutine.trace(conditioned).get_trace(x).nodes["y"]["fn"], ProbMixLikelihood)


def test_nested_plates_pair_along_the_named_data_plate():
    x = torch.randn(8)
    y = torch.randn(3, 8)

    def model(x, y):
        with pyro.plate("members", 3, dim=-2):
            loc = torch.arange(3.0)[:, None] + x
            with pyro.plate("data", 8, dim=-1):
                pyro.sample("y", dist.Normal(loc, 1.0), obs=y)

    with pytest.raises(ValueError, match="several plates"):
        with probmix(lam=0.3):
            elbo_loss(model, x, y)
    with probmix(lam=0.3, plate="data") as handler:
        value = elbo_loss(model, x, y)
    j = handler.pairings["data"].partner
    loc = torch.arange(3.0)[:, None] + x
    pooled = dist.Normal(0.3 * loc + 0.7 * loc[:, j], 1.0)
    assert torch.allclose(value, -(0.3 * pooled.log_prob(y) + 0.7 * pooled.log_prob(y[:, j])).sum())


def test_embedding_outside_probmix_adds_nothing_to_the_elbo():
    x = torch.randn(6, 2)

    def model(x):
        with pyro.plate("data", 6):
            z = embedding("z", dist.Normal(x, 1.0).to_event(1))
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=torch.zeros(6))
        return z

    x.requires_grad_(True)
    pyro.set_rng_seed(3)
    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    assert torch.equal(trace.nodes["z"]["log_prob"], torch.zeros(6))
    # the draw is made after the site was recorded (no handler replaced it): the recorded value,
    # the returned value and the gradient are those of an ordinary reparameterised draw
    z = trace.nodes["z"]["value"]
    assert z is trace.nodes["_RETURN"]["value"]
    pyro.set_rng_seed(3)
    assert torch.equal(z, dist.Normal(x, 1.0).rsample())
    (grad,) = torch.autograd.grad(z.sum(), [x])
    assert torch.equal(grad, torch.ones(6, 2))
    x = x.detach()
    with probmix(lam=0.3) as handler:
        fused = poutine.trace(model).get_trace(x)
    j = handler.pairings["data"].partner
    # the downstream site fuses the labels only (the embedding is pooled already)
    fn = fused.nodes["y"]["fn"]
    assert isinstance(fn, ProbMixLikelihood) and type(fn.base) is dist.Normal
    z_dist = fused.nodes["z"]["fn"].base_dist
    assert torch.allclose(z_dist.mean, 0.3 * x + 0.7 * x[j])


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(alpha=0.0), ValueError, "alpha must be a finite number >= 1e-30"),
        (dict(alpha=-1.0), ValueError, "alpha must be"),
        # below 1e-30 Joehnk's log(1 - U) / alpha overflowed float32 and lambda came out NaN
        (dict(alpha=1e-38), ValueError, "alpha must be a finite number >= 1e-30"),
        (dict(alpha=torch.tensor(0.5)), TypeError, "alpha must be a number .int or float., got Tensor"),
        (dict(alpha=0.1, beta=torch.tensor(0.1)), TypeError, "beta must be a number"),
        (dict(alpha=0.1, num_samples=True), ValueError, "num_samples must be an int >= 1, got True"),
        (dict(alpha=0.1, sites=5), TypeError, "sites must be a site name"),
        (dict(alpha=0.1, fusion=["linear"]), ValueError, "fusion=\\['linear'\\] is not a pooling rule"),
        (dict(), ValueError, "exactly one of alpha"),
        (dict(alpha=0.1, lam=0.5), ValueError, "exactly one of alpha"),
        (dict(lam=1.5), ValueError, r"lie in \[0, 1\]"),
        (dict(lam=dist.Normal(0.0, 1.0)), ValueError, r"supported on \[0, 1\]"),
        (dict(alpha=0.1, beta=-0.1), ValueError, "beta must be"),
        (dict(alpha=0.1, graph="knn"), TypeError, "graph must be"),
        (dict(alpha=0.1, fusion="geometric"), ValueError, "fusion='geometric'"),
        (dict(alpha=0.1, label_fusion="mixup"), ValueError, "label_fusion='mixup'"),
        (dict(alpha=0.1, criterion="elbo"), ValueError, "criterion='elbo'"),
        (dict(alpha=0.1, num_samples=0), ValueError, "num_samples"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        probmix(**kwargs)


def test_uniform_lambda_distribution_is_accepted():
    lam = probmix(lam=dist.Uniform(0.2, 0.8)).lam_sampler.sample(1000, "cpu", torch.float32)
    assert 0.2 <= lam.min() and lam.max() <= 0.8 and lam.std() > 0.1


def test_plate_of_one_row():
    with pytest.raises(ValueError, match="one row"):
        with probmix(alpha=0.1):
            elbo_loss(regression_model, torch.randn(1), torch.randn(1))


def test_subsample_of_one_row():
    with pytest.raises(ValueError, match="subsample_size=1"):
        with probmix(alpha=0.1, plate="data"):
            elbo_loss(regression_model, torch.randn(10), torch.randn(10), 1)


def test_observed_site_outside_any_plate_is_left_alone_and_named_in_the_warning():
    def model():
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with pytest.warns(NothingFusedWarning, match="'y' \\(outside any plate\\)"):
        with probmix(alpha=0.1):
            loss = elbo_loss(model)
    assert torch.equal(loss, elbo_loss(model))


def test_observed_site_outside_the_named_plate_is_left_alone():
    def model(x):
        pyro.sample("prior_obs", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))
        regression_model(x, x)

    x = torch.randn(5)
    with probmix(alpha=0.1, plate="data"):
        trace = poutine.trace(model).get_trace(x)
    assert isinstance(trace.nodes["y"]["fn"], ProbMixLikelihood)
    assert type(trace.nodes["prior_obs"]["fn"]) is dist.Normal
    with pytest.raises(ValueError, match="'prior_obs' is named in sites= but is outside plate 'data'"):
        with probmix(alpha=0.1, plate="data", sites=["y", "prior_obs"]):
            elbo_loss(model, x)


def test_unsupported_family_names_the_site():
    def model(y):
        with pyro.plate("data", 4):
            pyro.sample("obs", dist.StudentT(3.0, torch.zeros(4), 1.0), obs=y)

    with pytest.raises(NotImplementedError, match="site 'obs'.*StudentT.*register_pool"):
        with probmix(alpha=0.1):
            elbo_loss(model, torch.zeros(4))


def test_label_kernel_missing_for_family():
    def model(y):
        with pyro.plate("data", 4):
            pyro.sample("counts", dist.Poisson(torch.ones(4)), obs=y)

    with pytest.raises(NotImplementedError, match="site 'counts'.*Poisson.*beta=0"):
        with probmix(alpha=0.1, beta=0.1):
            elbo_loss(model, torch.zeros(4))
    with probmix(alpha=0.1):
        assert torch.isfinite(elbo_loss(model, torch.zeros(4)))


def test_log_linear_label_fusion_of_discrete_labels_needs_beta():
    def model(y):
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Categorical(logits=torch.zeros(4, 3)), obs=y)

    with pytest.raises(ValueError, match="beta > 0"):
        with probmix(alpha=0.1, label_fusion="log_linear"):
            elbo_loss(model, torch.tensor([0, 1, 2, 0]))
    with probmix(alpha=0.1, beta=0.01, label_fusion="log_linear"):
        assert torch.isfinite(elbo_loss(model, torch.tensor([0, 1, 2, 0])))


def test_log_linear_label_fusion_refusals_name_a_fix_that_applies():
    def counts(y):
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Poisson(torch.ones(4)), obs=y)

    # beta > 0 has no kernel for counts, so it is not offered
    with pytest.raises(ValueError, match=r"undefined for Poisson labels with beta=0 \(disjoint kernels\); use label_fusion='linear'\n"):
        with probmix(alpha=0.1, label_fusion="log_linear"):
            elbo_loss(counts, torch.zeros(4))

    class Unpoolable(DiracKernel):
        pass

    with pytest.raises(ValueError, match=r"the label_kernel Unpoolable\(beta=0.0\) is not poolable.*use a poolable kernel"):
        with probmix(alpha=0.1, beta=0.5, label_fusion="log_linear", label_kernel=Unpoolable()):
            elbo_loss(regression_model, torch.zeros(4), torch.zeros(4))


def test_embedding_without_a_mean_is_drawn_before_the_site():
    # a TransformedDistribution has no mean to take the dtype from: the draw is made up front
    x = torch.randn(6, 2)
    fn = dist.TransformedDistribution(dist.Normal(x, 1.0), [dist.transforms.AffineTransform(1.0, 2.0)])

    def model():
        with pyro.plate("data", 6):
            return embedding("z", fn.to_event(1))

    pyro.set_rng_seed(5)
    z = poutine.trace(model).get_trace().nodes["z"]["value"]
    pyro.set_rng_seed(5)
    assert torch.equal(z, 1.0 + 2.0 * dist.Normal(x, 1.0).rsample())


def test_embedding_must_be_reparameterisable():
    with pytest.raises(ValueError, match="embedding site 'z'.*not reparameterisable"):
        embedding("z", dist.Poisson(torch.ones(3)))


def test_graph_size_must_match_the_plate():
    graph = KNNGraph(torch.randn(30), k=3)
    with pytest.raises(ValueError, match="plate 'data'"):
        with probmix(alpha=0.1, graph=graph):
            elbo_loss(regression_model, torch.randn(20), torch.randn(20))


def test_weighted_graph_gives_deterministic_pairs():
    n = 6
    perm = torch.tensor([3, 4, 5, 0, 1, 2])
    graph = WeightedGraph(torch.stack([torch.arange(n), perm]))
    x = torch.randn(n)
    with probmix(lam=0.5, graph=graph) as handler:
        elbo_loss(regression_model, x, x)
    assert torch.equal(handler.pairings["data"].partner, perm)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5, 1.0, 3.0])
def test_symmetric_beta_sampler_matches_the_beta_cdf(alpha):
    from scipy import stats

    from pyro_probmix.handler import sample_symmetric_beta

    torch.manual_seed(0)
    n = 200000
    lam = sample_symmetric_beta(alpha, n).double()
    assert ((lam >= 0) & (lam <= 1)).all()
    # the CDF at fixed points, including the tails where small alpha puts its mass (draws within
    # float32 rounding of 1 are 1.0, so a KS test over the sample points would see false ties)
    t = torch.tensor([1e-30, 1e-6, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 1e-6])
    empirical = (lam[:, None] <= t).double().mean(0)
    exact = torch.from_numpy(stats.beta(alpha, alpha).cdf(t.numpy()))
    assert (empirical - exact).abs().max() < 4 * 0.5 / n**0.5  # 4 binomial standard errors


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("subsample_size", [None, 16])
def test_svi_step_runs_where_the_data_lives(device, dtype, subsample_size):
    n = 64
    x = torch.randn(n, 3, device=device, dtype=dtype)
    y = x.sum(-1)
    net = torch.nn.Linear(3, 2).to(device=device, dtype=dtype)

    def model(x, y):
        pyro.module("net", net)
        with pyro.plate("data", n, subsample_size=subsample_size, device=device) as idx:
            h = embedding("h", dist.Normal(x[idx], 0.1).to_event(1))
            out = net(h)
            pyro.sample("y", dist.Normal(out[:, 0], out[:, 1].exp()), obs=y[idx])

    svi = SVI(model, _no_guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    with probmix(alpha=0.5, graph=KNNGraph(x, k=3), plate="data") as handler:
        loss = svi.step(x, y)
    pairing = handler.pairings["data"]
    assert math.isfinite(loss)
    assert pairing.partner.device.type == device and pairing.lam.device.type == device


def test_vectorized_particles_share_the_pairs_of_the_data_plate():
    x = torch.linspace(-2, 2, 20)
    y = 1.5 * x
    guide = AutoNormal(bayesian_model)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    with probmix(alpha=0.3) as handler:
        loss = elbo.differentiable_loss(bayesian_model, guide, x, y)
    assert torch.isfinite(loss)
    assert handler.pairings["data"].partner.shape == (20,)


def test_numpy_numbers_are_numbers_and_positional_mistakes_are_named():
    import numpy as np

    handler = probmix(alpha=np.float32(0.5), beta=np.float64(0.1), num_samples=np.int64(2))
    assert (handler.lam_sampler.alpha, handler.beta, handler.num_samples) == (0.5, 0.1, 2)
    with pytest.raises(TypeError, match="first argument is the model or alpha, got the graph"):
        probmix(FullGraph(), alpha=0.1)
    with pytest.raises(TypeError, match="probmix got alpha twice: 0.1 as its first argument and alpha=0.2"):
        probmix(0.1, alpha=0.2)


@pytest.mark.parametrize("alpha", [1e-30, 1e-6, 0.1, 2.0, 1e3, 3e38])
def test_lambda_is_a_finite_draw_of_beta_over_the_whole_range_of_alpha(alpha):
    """At the ends the draws came out NaN (alpha < 1e-38: log(1 - U) / alpha overflowed) or 0
    (alpha = 3.4e38: the sum of two Gamma draws overflowed); now mean 1/2 and variance
    1 / (4 (2 alpha + 1)) within 5 standard errors of 20,000 draws."""
    torch.manual_seed(0)
    lam = probmix(alpha=alpha).lam_sampler.sample(20_000, "cpu", torch.float32).double()
    assert bool(lam.isfinite().all()) and 0 <= lam.min() and lam.max() <= 1
    var = 1 / (4 * (2 * alpha + 1))
    assert abs(lam.mean() - 0.5) < 5 * (var / 20_000) ** 0.5 + 1e-7
    assert abs(lam.var() - var) < 5 * var * (2 / 20_000) ** 0.5 * 2 + 1e-12
