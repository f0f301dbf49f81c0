# SPDX-License-Identifier: Apache-2.0
"""
What users hand the handler besides a training step: prediction passes inside a block, observed
values of other types and dtypes, models with more than one plate, and the other ELBOs,
scales and models without a data plate. Each either gives the
documented objective (checked against the same model with the input made plain) or is refused
with the site's name.
"""
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, RenyiELBO, ReweightedWakeSleep, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_probmix import embedding, probmix
from pyro_probmix.graphs import Graph, KNNGraph

X = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)


def _no_guide(*args, **kwargs):
    pass


def loss_of(model, *args, guide=_no_guide):
    return Trace_ELBO().differentiable_loss(model, guide, *args)


# ----------------------------------------------------------------------------- predictions
def embedding_model(x, y=None):
    w = pyro.param("W", torch.ones(1, 2, dtype=torch.float64))
    v = pyro.param("v", torch.ones(2, dtype=torch.float64))
    sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with pyro.plate("data", x.shape[0]):
        z = embedding("z", dist.Normal(x[:, None] @ w, 0.1).to_event(1), mean=True)
        return pyro.sample("obs", dist.Normal(z @ v, sigma), obs=y)


@pytest.mark.parametrize("parallel", [False, True])
def test_predictive_of_an_embedding_model_inside_a_block_is_refused(parallel):
    """Predictions from a pooled embedding predict neither row: refused, not returned."""
    pyro.clear_param_store()
    guide = AutoNormal(embedding_model)
    svi = SVI(embedding_model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    with probmix(lam=0.5):
        svi.step(X, 2 * X)  # training fuses obs after the pooled embedding: accepted
    predictive = Predictive(embedding_model, guide=guide, num_samples=4, parallel=parallel, return_sites=["z"])
    outside = predictive(X)["z"]
    assert torch.equal(outside[0], X[:, None] @ pyro.param("W").detach())  # the embedding's mean, unpooled
    with pytest.raises(ValueError, match=r"embedding site 'z' of plate 'data' was pooled in an execution of the "
                                         r"model that fused no observed site .* Run predictions outside the block"):
        with probmix(lam=0.5):
            predictive(X)


def plain_model(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal(w * x, 0.5), obs=y)


def test_parallel_predictive_with_observations_inside_a_block_is_left_alone():
    """Predictive's plate over samples is not a data plate: the observed site is Predictive's
    masked one, left alone, and the block says that it fused nothing."""
    pyro.clear_param_store()
    guide = AutoNormal(plain_model)
    SVI(plain_model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()).step(X, 2 * X)
    predictive = Predictive(plain_model, guide=guide, num_samples=5, parallel=True)
    pyro.set_rng_seed(1)
    outside = predictive(X, 2 * X)["obs"]
    with pytest.warns(UserWarning, match=r"fused no site .* 'obs' \(masked out\)"):
        with probmix(lam=0.5):
            pyro.set_rng_seed(1)
            inside = predictive(X, 2 * X)["obs"]
    assert torch.equal(inside, outside)


# ----------------------------------------------------------------------------- observed values
def test_an_observed_python_float_is_refused_with_the_site_name():
    def model():
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Normal(torch.zeros(4), 1.0), obs=1.5)

    with pytest.raises(TypeError, match=r"site 'y': the observed value is a float, not a torch.Tensor"):
        with probmix(lam=0.5):
            loss_of(model)


def regression(loc_dtype, family):
    def model(y):
        loc = (X * torch.arange(1.0, 7.0, dtype=torch.float64)).to(loc_dtype)
        with pyro.plate("data", 6):
            if family == "Normal":  # closed form
                d = dist.Normal(loc, 0.5 + loc.abs())
            else:  # the general path of log-linear pooling
                d = dist.Gamma(1.0 + loc.abs(), 2.0 + loc.square())
            pyro.sample("y", d, obs=y)

    return model


@pytest.mark.parametrize("family", ["Normal", "Gamma"])
@pytest.mark.parametrize("fusion", ["log_linear", "linear"])
@pytest.mark.parametrize("model_dtype, obs_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_an_observation_of_another_float_dtype_is_scored_in_the_model_dtype(family, fusion, model_dtype, obs_dtype):
    model = regression(model_dtype, family)
    y = torch.tensor([0.3, 1.1, 0.7, 2.5, 0.2, 1.9], dtype=obs_dtype)
    losses = []
    for value in (y, y.to(model_dtype)):
        pyro.set_rng_seed(0)
        with probmix(lam=0.3, fusion=fusion):
            losses.append(loss_of(model, value))
    assert losses[0].dtype == model_dtype
    assert losses[0].item() == losses[1].item()


# ----------------------------------------------------------------------------- plates
def test_a_graph_over_one_plate_names_the_fix_when_another_plate_comes_first():
    users = torch.randn(5, 2)

    def model():
        with pyro.plate("items", 3):
            pyro.sample("yi", dist.Normal(torch.zeros(3), 1.0), obs=torch.zeros(3))
        with pyro.plate("users", 5):
            pyro.sample("yu", dist.Normal(torch.zeros(5), 1.0), obs=torch.ones(5))

    with pytest.raises(ValueError, match=r"plate 'items' holds 3 of 3 rows .* The plate has 3 rows and the graph 5 "
                                         r"nodes: build the graph from the features of this plate's rows, or, if "
                                         r"another plate holds the 5 training rows, name it with probmix\(\.\.\., plate=\.\.\.\)"):
        with probmix(lam=0.5, graph=KNNGraph(users, k=2)):
            loss_of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with probmix(lam=0.5, graph=KNNGraph(users, k=2), plate="users") as handler:
            loss_of(model)
    assert set(handler.pairings) == {"users"}


# ----------------------------------------------------------------------------- ELBOs, scales, GPs
class ShiftGraph(Graph):
    """Row i is paired with row i + 1 (mod N): known pairs for exact references."""

    def _sample(self, anchors, num_rows):
        return (anchors + 1) % num_rows


SCALE = torch.tensor([0.5, 1.0, 1.5, 0.7, 2.0], dtype=torch.float64)
XS = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
YS = torch.tensor([0.3, -1.2, 0.8, 2.0, -0.4], dtype=torch.float64)
LAM = 0.3


def fused_normal_log_lik(loc, y, lam=LAM):
    """Brute force: the log-linear pool of row i's and row i + 1's Normal, scored at both labels
    with weights lam and 1 - lam (beta = 0), summed over the rows."""
    partner = (torch.arange(loc.shape[-1]) + 1) % loc.shape[-1]
    loc_j, scale_j, y_j = loc[..., partner], SCALE[partner], y[partner]
    precision = lam / SCALE**2 + (1 - lam) / scale_j**2
    mean = (lam * loc / SCALE**2 + (1 - lam) * loc_j / scale_j**2) / precision
    pool = dist.Normal(mean, precision.rsqrt())
    return (lam * pool.log_prob(y) + (1 - lam) * pool.log_prob(y_j)).sum(-1)


def latent_model(x, y):
    w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(w * x, SCALE), obs=y)


def recording_guide(draws):
    def guide(x, y):
        q = dist.Normal(pyro.param("q_loc", torch.tensor(0.3, dtype=torch.float64)),
                        pyro.param("q_scale", torch.tensor(0.8, dtype=torch.float64)))
        draws.append(pyro.sample("w", q).detach())

    return guide


@pytest.mark.parametrize("num_particles, vectorize", [(1, False), (2, True)])
def test_renyi_elbo_bounds_the_fused_likelihood(num_particles, vectorize):
    pyro.clear_param_store()
    draws = []
    elbo = RenyiELBO(alpha=0.5, num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=1)
    with probmix(lam=LAM, graph=ShiftGraph()):
        loss = elbo.loss(latent_model, recording_guide(draws), XS, YS)
    w = torch.cat([d.reshape(-1) for d in draws])
    q = dist.Normal(pyro.param("q_loc"), pyro.param("q_scale"))
    log_w = dist.Normal(0.0, 1.0).log_prob(w) + fused_normal_log_lik(w[:, None] * XS, YS) - q.log_prob(w)
    reference = -(torch.logsumexp(0.5 * log_w, 0) - math.log(len(w))) / 0.5
    assert len(w) == num_particles
    assert loss == pytest.approx(reference.item(), abs=1e-10)


def _two_row_model(y):
    w = pyro.param("w", torch.tensor(0.5))
    with pyro.plate("data", 2):
        pyro.sample("y", dist.Normal(w * torch.tensor([-1.0, 1.0]), 1.0), obs=y)


@pytest.mark.parametrize(
    "elbo",
    [RenyiELBO(0.5, num_particles=3), RenyiELBO(0.0, num_particles=2),
     ReweightedWakeSleep(num_particles=3, vectorize_particles=False)],
    ids=["renyi", "renyi-alpha0", "rws"],
)
def test_elbos_that_log_mean_exp_sequential_particles_are_refused(elbo):
    # each sequential particle draws new pairs, and the log-mean-exp would pool them too
    with pytest.raises(ValueError, match=r"site 'y': (RenyiELBO|ReweightedWakeSleep)\(num_particles=\d\) "
                       r"runs the model once per particle.*vectorize_particles=True"):
        with probmix(alpha=0.5):
            elbo.loss(_two_row_model, _no_guide, torch.tensor([0.2, 1.5]))


def test_mean_field_elbo_with_vectorized_particles_shares_one_pairing():
    pyro.clear_param_store()
    draws = []
    elbo = TraceMeanField_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    with probmix(lam=LAM, graph=ShiftGraph()):
        loss = elbo.loss(latent_model, recording_guide(draws), XS, YS)
    w = draws[0].reshape(-1)
    kl = torch.distributions.kl_divergence(dist.Normal(pyro.param("q_loc"), pyro.param("q_scale")), dist.Normal(0.0, 1.0))
    reference = -fused_normal_log_lik(w[:, None] * XS, YS).mean() + kl
    assert len(w) == 3 and loss == pytest.approx(reference.item(), abs=1e-10)


@pytest.mark.parametrize("where", ["model", "outside the wrapped model"])
def test_poutine_scale_multiplies_the_fused_objective(where):
    def model(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(2.0 * x, SCALE), obs=y)

    handler = probmix(lam=LAM, graph=ShiftGraph())
    scaled = poutine.scale(handler(model), 0.1) if where != "model" else handler(poutine.scale(model, 0.1))
    loss = Trace_ELBO().loss(scaled, _no_guide, XS, YS)
    assert loss == pytest.approx(-0.1 * fused_normal_log_lik(2.0 * XS, YS).item(), abs=1e-12)


def test_a_gaussian_process_has_no_data_plate_and_the_block_says_so():
    gp = pytest.importorskip("pyro.contrib.gp")
    pyro.clear_param_store()
    model = gp.models.GPRegression(XS, YS, gp.kernels.RBF(input_dim=1), noise=torch.tensor(0.1, dtype=torch.float64))
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    plain = svi.evaluate_loss()
    with pytest.warns(UserWarning, match=r"fused no site .* 'y' \(outside any plate\)"):
        with probmix(alpha=0.5):
            inside = svi.evaluate_loss()
    assert inside == plain


# ----------------------------------------------------------------------------- factors, flows
def factor_model(x, y):
    pyro.factor("prior_term", torch.tensor(-0.5, dtype=torch.float64))  # outside the plate: kept
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(2.0 * x, SCALE), obs=y)
        pyro.factor("row_term", -(y - x).square())


def test_a_factor_inside_the_data_plate_of_a_trained_model_is_refused():
    svi = SVI(factor_model, _no_guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    with pytest.raises(ValueError, match=r"site 'row_term' is a pyro.factor inside data plate 'data': .* "
                                         r"probmix cannot pool .* sites=\[\.\.\.\]\) leaving it out"):
        with probmix(lam=LAM, graph=ShiftGraph()):
            svi.step(XS, YS)
    with probmix(lam=LAM, graph=ShiftGraph(), sites=["y"]):  # the fix the message names
        loss = Trace_ELBO().loss(factor_model, _no_guide, XS, YS)
    reference = -(fused_normal_log_lik(2.0 * XS, YS) - 0.5 - (YS - XS).square().sum())
    assert loss == pytest.approx(reference.item(), abs=1e-12)


def test_a_factor_outside_an_elbo_is_left_alone_and_named():
    def only_factor(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.factor("row_term", -(y - x).square())

    with pytest.warns(UserWarning, match=r"fused no site .* 'row_term' \(a pyro.factor, which probmix cannot pool\)"):
        with probmix(lam=LAM):
            poutine.trace(only_factor).get_trace(XS, YS)


def test_a_conditional_flow_is_refused_since_its_rows_cannot_be_selected():
    """Its parameters come from the context x inside a functools.partial: passing the transform
    on unchanged would pool each row's flow with itself."""
    flow = pyro.distributions.transforms.conditional_affine_coupling(2, context_dim=1).double()
    context, y = XS[:4, None], torch.stack([YS[:4], -YS[:4]], -1)

    def model():
        with pyro.plate("data", 4):
            base = dist.Normal(torch.zeros(4, 2, dtype=torch.float64), 1.0).to_event(1)
            pyro.sample("y", dist.ConditionalTransformedDistribution(base, [flow]).condition(context), obs=y)

    for fusion in ("log_linear", "linear"):
        with pytest.raises(TypeError, match=r"site 'y': cannot select rows .* AffineCoupling computes its "
                                            r"parameters from tensors captured in \['nn'\]"):
            with probmix(lam=LAM, graph=ShiftGraph(), fusion=fusion):
                loss_of(model)


# ----------------------------------------------------------------------------- autoguides on mini-batches
def test_auto_normal_with_local_latents_on_mini_batches_gives_the_documented_estimate():
    """AutoNormal(create_plates=...) indexes its local parameters by the subsample the handler
    drew: the loss is -(log p(w) - log q(w) + N / A * sum over the A anchors of [fused
    log-likelihood + log p(z) - log q(z)])."""
    n, batch, anchors = 6, 4, 2
    f64 = torch.float64
    x = torch.linspace(-1.0, 1.0, n, dtype=f64)
    y = torch.tensor([0.3, -1.2, 0.8, 2.0, -0.4, 1.1], dtype=f64)
    s = torch.tensor([0.5, 1.0, 1.5, 0.7, 2.0, 0.9], dtype=f64)

    class Shift(ShiftGraph):
        num_nodes = n

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=f64), 1.0))
        with pyro.plate("data", n, subsample_size=batch) as idx:
            z = pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=f64), 1.0))
            pyro.sample("y", dist.Normal(w * x[idx] + z, s[idx]), obs=y[idx])

    pyro.clear_param_store()
    guide = AutoNormal(model, create_plates=lambda x, y: pyro.plate("data", n, subsample_size=batch))
    elbo = Trace_ELBO()
    with probmix(lam=LAM, graph=Shift()):
        SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo).step(x, y)
        for seed in range(3):
            pyro.set_rng_seed(seed)
            loss = elbo.loss(model, guide, x, y)
            pyro.set_rng_seed(seed)
            guide_trace = poutine.trace(guide).get_trace(x, y)
            poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
            idx = guide_trace.nodes["data"]["value"]
            a, j = idx[:anchors], idx[anchors:]
            assert torch.equal(j, (a + 1) % n)  # partners follow the anchors in the guide's subsample
            w, z = guide_trace.nodes["w"]["value"], guide_trace.nodes["z"]["value"]
            loc_i, loc_j = w * x[a] + z[:anchors], w * x[j] + z[anchors:]
            precision = LAM / s[a] ** 2 + (1 - LAM) / s[j] ** 2
            pool = dist.Normal((LAM * loc_i / s[a] ** 2 + (1 - LAM) * loc_j / s[j] ** 2) / precision, precision.rsqrt())
            fused = LAM * pool.log_prob(y[a]) + (1 - LAM) * pool.log_prob(y[j])
            q_z = dist.Normal(pyro.param("AutoNormal.locs.z")[a], pyro.param("AutoNormal.scales.z")[a])
            q_w = dist.Normal(pyro.param("AutoNormal.locs.w"), pyro.param("AutoNormal.scales.w"))
            local = fused + dist.Normal(0.0, 1.0).log_prob(z[:anchors]) - q_z.log_prob(z[:anchors])
            reference = -(dist.Normal(0.0, 1.0).log_prob(w) - q_w.log_prob(w) + n / anchors * local.sum())
            assert loss == pytest.approx(reference.item(), abs=1e-10)


# ----------------------------------------------------------------------------- a block that fuses nothing
def unplated_model(x, y):
    w = pyro.param("w", torch.tensor(0.0, dtype=torch.float64))
    pyro.sample("y", dist.Normal(w * x, 1.0).to_event(1), obs=y)  # forgot the pyro.plate


def test_a_training_loop_that_fuses_nothing_is_told_after_its_first_step():
    svi = SVI(unplated_model, _no_guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with probmix(alpha=0.5):
            svi.step(XS, YS)
            assert caught == []  # one execution: it may still fuse something
            svi.step(XS, YS)
            assert [str(w.message)[:86] for w in caught] == [
                "probmix has fused no site in this block so far: the model ran again (site 'y' a second"
            ]
            svi.step(XS, YS)
    assert len(caught) == 1 and "'y' (outside any plate)" in str(caught[0].message)  # once, not again at the end


def test_a_predictive_in_a_block_is_told_it_ran_the_plain_model_at_the_users_line():
    def model(y=None):
        with pyro.plate("data", 3):
            return pyro.sample("y", dist.Normal(torch.zeros(3), 1.0), obs=y)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with probmix(alpha=0.5):
            Predictive(model, num_samples=2)()
    assert len(caught) == 1 and str(caught[0].message).startswith(
        "probmix fused no site in this block: every run of the model inside it was the plain model "
        "(a training step trained the plain objective; a Predictive or a pass without observations "
        "has nothing to fuse)"
    )
    assert caught[0].filename == __file__  # the with statement, not the handler's __exit__


def test_a_block_around_the_svi_construction_only_says_no_model_ran():
    with pytest.warns(UserWarning, match=r"saw no sample site .* call svi.step\(\.\.\.\) inside `with probmix"):
        with probmix(alpha=0.5):
            svi = SVI(plain_model, _no_guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    assert svi is not None


def test_a_misspelled_plate_is_an_error_naming_the_plates_of_the_model():
    svi = SVI(plain_model, AutoNormal(plain_model), pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    with pytest.raises(ValueError, match=r"probmix\(plate='dta'\): no site of this block is in a plate of that "
                                         r"name, so nothing was fused; the plates of its sites: \['data'\]"):
        with probmix(alpha=0.5, plate="dta"):
            svi.step(X, 2 * X)


def test_alpha_may_come_first_with_the_graph_positional_or_by_keyword():
    graph = ShiftGraph()
    for handler in (probmix(0.1, graph), probmix(0.1, graph=graph)):
        assert handler.lam_sampler.alpha == 0.1 and handler.graph is graph
    with pytest.raises(TypeError, match=r"got a first argument 0.1 that is not callable \(so it is alpha\), and "
                                        r"also alpha=0.2 and graph="):
        probmix(0.1, 0.2, graph)


# ----------------------------------------------------------------------------- reparameterisation
def test_a_reparam_outside_the_block_trains_what_it_trains_inside():
    """``poutine.reparam`` puts a masked-off value in place of the latent it decenters: that value
    is never scored, so the handler leaves it alone wherever the reparam is applied (it was refused
    as 'observed by a handler outside probmix'). The fused loss is the same either way and equals
    the objective written out with the guide's draw."""
    from pyro.infer.reparam import LocScaleReparam

    y = torch.tensor([0.3, -1.2, 0.8, 2.0, -0.4, 1.1], dtype=torch.float64)

    def model(x, y):
        with pyro.plate("data", 6):
            z = pyro.sample("z", dist.Normal(x, 0.8))
            pyro.sample("y", dist.Normal(z, 0.5), obs=y)

    config = {"z": LocScaleReparam(0.0)}
    pyro.clear_param_store()
    guide = AutoNormal(poutine.reparam(model, config))
    guide(X, y)
    losses = []
    for outside in (False, True):
        pyro.set_rng_seed(3)
        if outside:
            with poutine.reparam(config=config), probmix(lam=0.3) as handler:
                losses.append(loss_of(model, X, y, guide=guide))
        else:
            with probmix(lam=0.3) as handler:
                losses.append(loss_of(poutine.reparam(model, config), X, y, guide=guide))
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace(X, y)
    u = guide_trace.nodes["z_decentered"]["value"]
    log_q = sum(site["fn"].log_prob(site["value"]).sum() for name, site in guide_trace.nodes.items()
                if site["type"] == "sample" and name.endswith("_unconstrained"))
    partner = handler.pairings["data"].partner
    z = X + 0.8 * u
    precision = 0.3 / 0.25 + 0.7 / 0.25
    pooled = dist.Normal(0.3 * z + 0.7 * z[partner], precision**-0.5)
    log_lik = (0.3 * pooled.log_prob(y) + 0.7 * pooled.log_prob(y[partner])).sum()
    written_out = -(dist.Normal(0.0, 1.0).log_prob(u).sum() + log_lik - log_q)
    assert torch.allclose(losses[0], losses[1]) and torch.allclose(losses[1], written_out)


def _split_model(x, y):
    with pyro.plate("data", 4):
        z = pyro.sample("z", dist.Normal(x[:4, None].expand(4, 4), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(z, 0.5).to_event(1), obs=y)


@pytest.mark.parametrize("fusion", ["log_linear", "linear"])
@pytest.mark.parametrize("reparam", ["split", "haar"])
def test_a_reparam_that_leaves_an_observed_delta_is_refused_and_sites_leaves_it_alone(reparam, fusion):
    """SplitReparam and HaarReparam (the UnitJacobianReparams) put an observed, unmasked Delta in
    place of the latent, carrying its density: with fusion='linear' the latent's prior was pooled
    across rows, silently (a probe: the site's row log-densities -12.17, -4.73, -4.59, -12.16
    became -7.48, -10.54, -10.51, -7.48). Refused; sites= fuses the observation alone."""
    from pyro.infer.reparam import HaarReparam, SplitReparam

    config = {"z": SplitReparam([2, 2], -1) if reparam == "split" else HaarReparam(dim=-1)}
    model = poutine.reparam(_split_model, config)
    y = torch.randn(4, 4, dtype=torch.float64)
    pyro.clear_param_store()
    guide = AutoNormal(model)
    guide(X, y)

    def model_trace():
        return poutine.trace(poutine.replay(model, poutine.trace(guide).get_trace(X, y))).get_trace(X, y)

    with pytest.raises(ValueError, match=r"site 'z' is an observed Delta in the data plate, as "
                       r"poutine.reparam writes.*probmix\(\.\.\., sites=\[\.\.\.\]\)"):
        with probmix(lam=0.3, fusion=fusion):
            model_trace()
    with probmix(lam=0.3, fusion=fusion, sites=["y"]):
        trace = model_trace()
    z = trace.nodes["z"]
    plain = dist.Normal(X[:4, None].expand(4, 4), 1.0).to_event(1).log_prob(z["value"])
    assert torch.equal(z["fn"].log_prob(z["value"]), plain if reparam == "split" else torch.zeros(4, dtype=torch.float64))
    assert type(trace.nodes["y"]["fn"]).__name__.endswith("ProbMixLikelihood")


def test_an_observed_value_that_depends_on_parameters_is_refused():
    """A residual obs=data - prediction under zero-mean noise is plain Pyro's likelihood, but its
    pool is that of the noises scored at the residuals, not of the rows' likelihoods at their
    labels (the probe of a Forecaster model: -16.03 against the objective's -14.76)."""
    def model(x, y):
        w = pyro.param("w", torch.tensor(0.5, dtype=torch.float64))
        with pyro.plate("data", 6):
            pyro.sample("residual", dist.Normal(0.0, 0.8), obs=y - w * x)

    with pytest.raises(ValueError, match=r"site 'residual': the observed value depends on parameters.*"
                       r"dist.Normal\(prediction, scale\), obs=data"):
        with probmix(alpha=0.5):
            loss_of(model, X, torch.zeros(6, dtype=torch.float64))


def test_a_do_intervention_around_the_block_is_refused_with_the_inside_form():
    """``poutine.do`` outside the block turns the latent into an observed, scored copy
    (``z__CF``) after probmix saw it as a latent: refused, naming both inside forms."""
    def model(x):
        with pyro.plate("data", 6):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(x + z, 0.5), obs=torch.zeros(6, dtype=torch.float64))

    with pytest.raises(ValueError, match=r"site 'z__CF' is observed by a handler outside probmix.*poutine\.do"):
        with poutine.do(data={"z": torch.zeros(6, dtype=torch.float64)}), probmix(lam=0.3):
            poutine.trace(model).get_trace(X)


# ----------------------------------------------------------------------------- wrapped families
@pytest.mark.parametrize("family", [dist.Gamma, dist.Normal])
def test_an_explicit_expanded_distribution_fuses_as_its_family(family):
    """``ExpandedDistribution(d, shape)`` written out (not ``d.expand``): its partner row is
    expanded too, so both pool by the family's rule (the partner came back unwrapped and no rule
    matched the pair)."""
    from pyro.distributions.torch_distribution import ExpandedDistribution

    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    y = torch.tensor([0.5, 1.5, 1.0, 2.5], dtype=torch.float64)

    def model(expanded):
        with pyro.plate("data", 4):
            d = family(a, b)
            pyro.sample("y", ExpandedDistribution(d, torch.Size([4])) if expanded else d, obs=y)

    scores = []
    for expanded in (True, False):
        pyro.set_rng_seed(0)
        with probmix(lam=0.3):
            trace = poutine.trace(model).get_trace(expanded)
        scores.append(trace.nodes["y"]["fn"].log_prob(y))
    # (the bare Normal takes the closed form, the expanded one the general path: rounding apart)
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-12, atol=0)


def test_a_transformed_family_without_a_rule_is_refused_under_its_own_name():
    def model():
        with pyro.plate("data", 3):
            pyro.sample("y", dist.RelaxedBernoulli(torch.tensor(0.5), probs=torch.tensor([0.2, 0.5, 0.7])),
                        obs=torch.tensor([0.1, 0.5, 0.9]))

    with pytest.raises(NotImplementedError, match=r"site 'y': RelaxedBernoulli is pooled through its base "
                                                  r"distribution LogitRelaxedBernoulli.*"
                                                  r"register_pool\(RelaxedBernoulli, RelaxedBernoulli\)"):
        with probmix(lam=0.3):
            poutine.trace(model).get_trace()


def test_tracegraph_elbo_gives_model_parameters_their_gradient_through_a_fused_normal():
    """TraceGraph_ELBO tracks the latents a site depends on in ProvenanceTensors; through them
    the closed form's autograd.Function lost its gradient (``a.grad`` was None, 3.704 by
    Trace_ELBO). Both ELBOs now give the gradient of the fused likelihood at the guide's draw."""
    from pyro.infer import TraceGraph_ELBO

    x = torch.tensor([0.5, -1.0, 1.5, 2.0])
    y = torch.tensor([1.0, -0.3, 0.2, 2.5])

    def model():
        a = pyro.param("a", torch.tensor(0.7))
        s = pyro.sample("s", dist.Bernoulli(0.5))  # not reparameterised: provenance-tracked by TraceGraph
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Normal(a * x * (1 + s), 1.0), obs=y)

    def guide():
        pyro.sample("s", dist.Bernoulli(torch.sigmoid(pyro.param("phi", torch.tensor(0.2)))))

    grads = []
    for elbo in (Trace_ELBO(), TraceGraph_ELBO()):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        with probmix(lam=0.3) as handler:
            elbo.loss_and_grads(model, guide)
        grads.append(pyro.param("a").unconstrained().grad)
    pyro.set_rng_seed(0)
    s = poutine.trace(guide).get_trace().nodes["s"]["value"]
    a = torch.tensor(0.7, requires_grad=True)
    partner = handler.pairings["data"].partner
    loc = a * x * (1 + s)
    pooled = dist.Normal(0.3 * loc + 0.7 * loc[partner], 1.0)  # equal scales: the means mix
    (expected,) = torch.autograd.grad(-(0.3 * pooled.log_prob(y) + 0.7 * pooled.log_prob(y[partner])).sum(), a)
    assert grads[1] is not None
    torch.testing.assert_close(grads[0], expected)
    torch.testing.assert_close(grads[1], expected)


# ----------------------------------------------------------------------------- one fusion per row
def test_a_second_embedding_in_one_execution_is_refused():
    """Pooling a later layer with the same pairs again mixes in the partner's partner: row 0
    (partner 1) came to depend on rows 0, 1 and 2, neither of its two labels' rows."""
    def model(x, y):
        with pyro.plate("data", 6):
            z1 = embedding("z1", dist.Normal(x[:, None], 0.1).to_event(1))
            z2 = embedding("z2", dist.Normal(2 * z1, 0.1).to_event(1))
            pyro.sample("y", dist.Normal(z2[:, 0], 1.0), obs=y)

    with pytest.raises(ValueError, match="embedding site 'z2': a second embedding\\(\\) pooled in plate 'data'"):
        with probmix(lam=0.3):
            poutine.trace(model).get_trace(X, X)
    with probmix(lam=0.3, sites=["z1", "y"]):  # the fix the message names
        poutine.trace(model).get_trace(X, X)


def _model_with_an_auxiliary_head(aux_from_z):
    x = torch.tensor([[0.5, -1.0], [2.0, 1.0]], dtype=torch.float64)

    def model():
        encoder = pyro.param("encoder", torch.tensor(1.0, dtype=torch.float64))
        with pyro.plate("data", 2):
            z = embedding("z", dist.Normal(encoder * x, 1.0).to_event(1), mean=True)
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=torch.tensor([0.3, -0.7], dtype=torch.float64))
            head = z[:, 0] if aux_from_z else torch.tensor([-3.0, 5.0], dtype=torch.float64) * encoder
            pyro.sample("aux", dist.Normal(head, 1.0), obs=torch.tensor([1.0, -1.0], dtype=torch.float64))

    return model


def test_an_observed_site_after_an_embedding_not_computed_from_it_is_refused():
    """After an embedding only labels are fused; a head computed from the inputs alone scored its
    own row's prediction at the partner's label, silently (a probe: 21.60 against 12.64 fused and
    32.80 plain)."""
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"site 'aux' is observed after embedding 'z' in its data plate but is "
                       r"not computed from it.*sites=\[\.\.\.\]"):
        with probmix(lam=0.3):
            loss_of(_model_with_an_auxiliary_head(aux_from_z=False))
    with probmix(lam=0.3):
        assert torch.isfinite(loss_of(_model_with_an_auxiliary_head(aux_from_z=True)))


@pytest.mark.parametrize("mean", [False, True])
def test_an_embedding_pool_without_rsample_names_mean_true_as_the_fix(mean):
    # fusion="linear" pools a Laplace embedding into a mixture, which has no rsample (it failed
    # with an empty NotImplementedError); its mean is fine
    def model():
        loc = pyro.param("loc", torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64))
        with pyro.plate("data", 2):
            z = embedding("z", dist.Laplace(loc, 1.0).to_event(1), mean=mean)
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=torch.zeros(2, dtype=torch.float64))

    pyro.clear_param_store()
    with probmix(lam=0.3, fusion="linear"):
        if mean:
            assert torch.isfinite(loss_of(model))
        else:
            with pytest.raises(NotImplementedError, match=r"embedding site 'z': the pool of its Laplace rows, a "
                               r"LinearPool, has no reparameterised sample.*embedding\(\.\.\., mean=True\)"):
                loss_of(model)


def _embedding_model():
    x = torch.tensor([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]], dtype=torch.float64)

    def model():
        with pyro.plate("data", 3):
            z = embedding("z", dist.Normal(x, 0.5).to_event(1), mean=True)
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=torch.zeros(3, dtype=torch.float64))
        return z

    return model


def test_an_embedding_given_a_value_by_a_handler_is_refused_inside_and_outside_the_block():
    # the pool used to overrule a pyro.condition inside the block silently (the layer took the
    # pooled mean, not the conditioned zeros), and a condition outside overruled the pool while
    # the sites after it fused their labels
    model, zeros = _embedding_model(), {"z": torch.zeros(3, 2, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"embedding site 'z' is given a value by a handler \(inside the probmix "
                       r"block: pyro.condition.*sites=\[\.\.\.\]"):
        with probmix(lam=0.3):
            poutine.trace(pyro.condition(model, data=zeros)).get_trace()
    with pytest.raises(ValueError, match=r"embedding site 'z' is given a value by a handler \(outside"):
        poutine.trace(pyro.condition(probmix(model, lam=0.3), data=zeros)).get_trace()
    with pytest.raises(ValueError, match=r"embedding site 'z' is given a value by a handler \(outside"):
        poutine.trace(poutine.do(probmix(model, lam=0.3), data=zeros)).get_trace()
    # left out with sites=, it keeps the value given and the observation is fused as ProbMix
    with probmix(lam=0.3, sites=["y"]):
        trace = poutine.trace(pyro.condition(model, data=zeros)).get_trace()
    assert torch.equal(trace.nodes["z"]["value"], zeros["z"])


@pytest.mark.parametrize("guide_site", ["z_guide", "z"])
def test_an_embedding_in_the_guide_beside_the_models_is_refused_as_a_guide_embedding(guide_site):
    # it was refused as "a second embedding" (another name) or as "a prediction pass" (the same)
    model = _embedding_model()

    def guide():
        with pyro.plate("data", 3):
            embedding(guide_site, dist.Normal(torch.zeros(3, 2, dtype=torch.float64), 0.5).to_event(1), mean=True)

    with pytest.raises(RuntimeError, match=rf"embedding site '{guide_site}' is in the guide.*Move the embedding into the model"):
        with probmix(lam=0.3):
            loss_of(model, guide=guide)


def test_an_embedding_without_a_mean_names_the_site_and_mean_false():
    # torch raised a bare NotImplementedError for the mean of a TransformedDistribution
    base = dist.Normal(torch.zeros(3, 2), 1.0)
    layer = dist.TransformedDistribution(base, torch.distributions.transforms.AffineTransform(1.0, 2.0)).to_event(1)
    with pytest.raises(NotImplementedError, match=r"embedding site 'z': TransformedDistribution has no mean.*"
                       r"embedding\(\.\.\., mean=False\)"):
        with pyro.plate("data", 3):
            embedding("z", layer, mean=True)
    with pyro.plate("data", 3):
        assert embedding("z", layer).shape == (3, 2)


def test_an_embedding_family_without_a_rule_says_that_mean_false_needs_one():
    def model():
        with pyro.plate("data", 3):
            z = embedding("z", dist.Laplace(torch.zeros(3, 2), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=torch.zeros(3))

    with pytest.raises(NotImplementedError, match=r"embedding site 'z': No log-linear pooling rule for \(Laplace, Laplace\).*"
                       r"with mean=False the pool is drawn from.*fusion='linear' gives a mixture, which has no rsample"):
        with probmix(lam=0.3):
            poutine.trace(model).get_trace()


def test_log_expected_is_refused_where_another_plate_splits_the_rows_into_cells():
    """log(lam p(y_i) + (1 - lam) p(y_j)) of whole rows is not the sum over cells of the mixture
    of each cell (a probe: -26.4884 against -27.8473 for the same Normal model with a feature
    plate); the event form is fused, the cell form refused, and expected_log is the same for both."""
    y = torch.arange(12, dtype=torch.float64).reshape(6, 2) / 6

    def model(features_as_plate):
        loc = X[:, None] * torch.tensor([1.0, -1.0], dtype=torch.float64)
        with pyro.plate("data", 6, dim=-2 if features_as_plate else -1):
            if features_as_plate:
                with pyro.plate("features", 2, dim=-1):
                    pyro.sample("y", dist.Normal(loc, 1.0), obs=y)
            else:
                pyro.sample("y", dist.Normal(loc, 1.0).to_event(1), obs=y)

    with probmix(lam=0.3, criterion="log_expected", plate="data"):
        poutine.trace(model).get_trace(False)
    with pytest.raises(NotImplementedError, match="site 'y': criterion='log_expected' mixes the labels.*"
                                                  "plate\\(s\\) \\['features'\\].*to_event"):
        with probmix(lam=0.3, criterion="log_expected", plate="data"):
            poutine.trace(model).get_trace(True)
    totals = []
    for features_as_plate in (False, True):
        pyro.set_rng_seed(0)
        with probmix(lam=0.3, plate="data"):
            trace = poutine.trace(model).get_trace(features_as_plate)
        totals.append(trace.log_prob_sum())
    torch.testing.assert_close(totals[0], totals[1])


def test_embedding_arguments_are_checked_by_name():
    fn = dist.Normal(torch.zeros(3, 2), 1.0).to_event(1)
    with pytest.raises(TypeError, match="embedding site 'z': mean must be True or False, got 'no'"):
        embedding("z", fn, mean="no")  # a truthy string took the mean
    with pytest.raises(TypeError, match="embedding: the site name must be a str, got None"):
        embedding(None, fn)
