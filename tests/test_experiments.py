# SPDX-License-Identifier: Apache-2.0
"""
The experiment layer: method registry, each method's objective against a hand-written reference
(same lambda and pairs, read from ``handler.pairings``), block graphs, networks and training.
"""
import math
import platform
import shutil

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyro_probmix.experiments.blocks import BlockFullGraph, BlockKNNGraph, make_graph
from pyro_probmix.experiments.streams import RunStreams
from pyro_probmix.experiments.methods import (
    METHOD_NAMES,
    UnknownMethodError,
    canonical_name,
    resolve_method,
)
from pyro_probmix.experiments.models import MIN_SCALE, Net, make_net, sample_outputs
from pyro_probmix.experiments.train import TrainConfig, objective, predict, train_group
from pyro_probmix.graphs import KNNGraph

R, N, D = 2, 10, 3


pytestmark = pytest.mark.usefixtures("fresh_pyro")


# ----------------------------------------------------------------------------- registry
def test_every_method_resolves_case_insensitively():
    for name in METHOD_NAMES:
        for spelling in (name, name.lower(), name.upper()):
            assert canonical_name(spelling) == name
    assert canonical_name("m-probmix*") == "M-ProbMix-star"
    assert canonical_name("LocKM-ProbMix⋆") == "LocKM-ProbMix-star"
    assert len(METHOD_NAMES) == 13 and METHOD_NAMES[-2:] == ("M-ERM", "M-ERM-star")
    assert canonical_name("m-erm*") == "M-ERM-star"


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownMethodError) as err:
        canonical_name("SuperMix")
    for name in METHOD_NAMES:
        assert name in str(err.value)


def test_resolution_to_handler_settings():
    assert resolve_method("ERM", alpha=0.3).hparams() == {}
    assert not resolve_method("ERM").uses_handler
    mix = resolve_method("mix", alpha=0.3)
    assert mix.label_fusion_for("regression") == "log_linear"  # mixed labels
    assert mix.label_fusion_for("classification") == "linear"  # one-hot mixing
    assert resolve_method("probmix").label_fusion_for("regression") == "linear"
    assert resolve_method("LocKM-ProbMix").hparams() == {"alpha": 0.1, "beta": 0.0, "k": 5, "predict": "mean"}
    star = resolve_method("M-ProbMix-star")
    assert star.prediction_mode() == "mc" and star.spec.separate_variance
    with pytest.raises(ValueError, match="alpha"):
        resolve_method("Mix", alpha=0.0)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        resolve_method("Mix", gamma=1.0)


# ----------------------------------------------------------------------------- objectives
def _data(task, runs=R, n=N):
    x = torch.randn(runs, n, D)
    y = torch.randint(3, (runs, n)) if task == "classification" else torch.randn(runs, n)
    return x, y


def _net(method, task, runs=R):
    return make_net(method, "mlp", list(range(runs)), (D,), 3 if task == "classification" else 2, (8, 5))


def _head(out):
    return out[..., 0], F.softplus(out[..., 1]) + MIN_SCALE


def _step(name, task, **hp):
    method = resolve_method(name, **hp)
    net = _net(method, task)
    x, y = _data(task)
    loss, handler, trace = objective(method, task, net, x, y)
    pairing = handler.pairings["data"] if handler is not None else None
    return method, net, x, y, loss, pairing, trace


def _pairs(pairing):
    """Partner (flattened index) and lambda as (R, N) tensors."""
    return pairing.partner.reshape(R, N), pairing.lam.reshape(R, N)


def _take(t, partner):
    """Rows of ``t`` ((R, N, ...)) at flattened partner indices."""
    flat = t.reshape((R * N,) + t.shape[2:])
    return flat[partner.reshape(-1)].reshape(t.shape)


def _assert_partners_within_run(partner):
    run_of_partner = partner // N
    assert torch.equal(run_of_partner, torch.arange(R)[:, None].expand(R, N))


def test_erm_objective_is_the_gaussian_nll():
    method, net, x, y, loss, _, _ = _step("ERM", "regression")
    loc, scale = _head(net.decode(net.embed(net.encode(x))))
    assert torch.allclose(loss, -dist.Normal(loc, scale).log_prob(y).sum() / N)


def test_mix_objective_is_input_mixup_with_mixed_labels():
    method, net, x, y, loss, pairing, _ = _step("Mix", "regression", alpha=0.4)
    partner, lam = _pairs(pairing)
    _assert_partners_within_run(partner)
    x_mix = lam[..., None] * x + (1 - lam[..., None]) * _take(x, partner)
    y_mix = lam * y + (1 - lam) * _take(y, partner)
    loc, scale = _head(net.decode(net.embed(net.encode(x_mix))))
    reference = -dist.Normal(loc, scale).log_prob(y_mix).sum() / N
    assert torch.allclose(loss, reference, rtol=1e-10, atol=1e-10)
    g = torch.autograd.grad(loss, list(net.parameters()))
    g_ref = torch.autograd.grad(reference, list(net.parameters()))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g, g_ref))


def test_mix_classification_mixes_one_hot_labels():
    method, net, x, y, loss, pairing, _ = _step("Mix", "classification", alpha=0.4)
    partner, lam = _pairs(pairing)
    x_mix = lam[..., None] * x + (1 - lam[..., None]) * _take(x, partner)
    log_p = torch.log_softmax(net.decode(net.embed(net.encode(x_mix))), -1)
    y_j = _take(y, partner)
    ce = lam * log_p.gather(-1, y[..., None])[..., 0] + (1 - lam) * log_p.gather(-1, y_j[..., None])[..., 0]
    assert torch.allclose(loss, -ce.sum() / N, rtol=1e-10, atol=1e-10)


def test_m_mix_objective_is_manifold_mixup_at_the_first_hidden_layer():
    method, net, x, y, loss, pairing, _ = _step("M-Mix", "regression", alpha=0.4)
    partner, lam = _pairs(pairing)
    h = net.embed(net.encode(x))
    assert h.shape[-1] == 8  # the first hidden layer
    h_mix = lam[..., None] * h + (1 - lam[..., None]) * _take(h, partner)
    loc, scale = _head(net.decode(h_mix))
    reference = -dist.Normal(loc, scale).log_prob(lam * y + (1 - lam) * _take(y, partner)).sum() / N
    assert torch.allclose(loss, reference, rtol=1e-10, atol=1e-10)


def test_lock_m_mix_pairs_k_nearest_neighbours_within_each_run():
    method, net, x, y, loss, pairing, _ = _step("LocKM-Mix", "regression", alpha=0.4, k=3)
    partner, lam = _pairs(pairing)
    _assert_partners_within_run(partner)
    for r in range(R):
        neighbours = KNNGraph(x[r], k=3).neighbors
        local = partner[r] - r * N
        assert all(local[i] in neighbours[i] for i in range(N))


def test_probmix_objective_is_the_pooled_heteroscedastic_likelihood():
    method, net, x, y, loss, pairing, _ = _step("ProbMix", "regression", alpha=0.4, beta=0.01)
    partner, lam = _pairs(pairing)
    mu, sigma = _head(net.decode(net.embed(net.encode(x))))
    var, var_j, mu_j = sigma**2, _take(sigma, partner) ** 2, _take(mu, partner)
    precision = lam / var + (1 - lam) / var_j
    mean = (lam * mu / var + (1 - lam) * mu_j / var_j) / precision
    pooled = dist.Normal(mean, precision.rsqrt())
    # linear label fusion with a N(y, beta) kernel: E[log p] = log p(y) - beta / (2 var)
    expected = lam * pooled.log_prob(y) + (1 - lam) * pooled.log_prob(_take(y, partner)) - 0.01 * precision / 2
    assert torch.allclose(loss, -expected.sum() / N, rtol=1e-10, atol=1e-10)


def test_m_probmix_samples_the_pooled_gaussian_embedding():
    method, net, x, y, loss, pairing, trace = _step("M-ProbMix", "regression", alpha=0.4)
    partner, lam = _pairs(pairing)
    f = net.encode(x)
    h, s = net.embed(f), net.embed_scale(x, f)
    site = trace.nodes["z"]
    pooled = site["fn"].base_dist.base_dist  # masked (no ELBO term), Independent over the layer
    prec = lam[..., None] / s**2 + (1 - lam[..., None]) / _take(s, partner) ** 2
    mean = (lam[..., None] * h / s**2 + (1 - lam[..., None]) * _take(h, partner) / _take(s, partner) ** 2) / prec
    assert torch.allclose(pooled.loc.reshape(R, N, -1), mean)
    assert torch.allclose(pooled.scale.reshape(R, N, -1), prec.rsqrt())
    z = site["value"].reshape(R, N, -1)
    assert not torch.allclose(z, mean)  # sampled in training
    loc, scale = _head(net.decode(z))
    d = dist.Normal(loc, scale)
    reference = -(lam * d.log_prob(y) + (1 - lam) * d.log_prob(_take(y, partner))).sum() / N
    assert torch.allclose(loss, reference, rtol=1e-10, atol=1e-10)
    # prediction propagates the mean
    kind, p_loc, p_scale = predict(net, method, "regression", x)
    loc0, scale0 = _head(net.decode(h))
    assert kind == "gaussian" and torch.allclose(p_loc, loc0) and torch.allclose(p_scale, scale0)


def test_m_erm_loss_is_the_plain_likelihood_with_the_embedding_drawn():
    """Brute force: z = h(x) + sigma(x) * eps with eps drawn by hand from each run's own stream
    (seeds 0, ..., R - 1: the default RunStreams of objective), no partner."""
    method = resolve_method("M-ERM", alpha=0.4)  # alpha is ignored: no mixing
    net = _net(method, "regression")
    x, y = _data("regression")
    pyro.set_rng_seed(7)
    loss, handler, trace = objective(method, "regression", net, x, y)
    assert handler is None and method.hparams() == {"predict": "mean"}
    eps = torch.stack([torch.randn((N, 8), generator=torch.Generator().manual_seed(r)) for r in range(R)])
    w, b = net.mixing.weight, net.mixing.bias
    v, c = net.scale_layer.weight, net.scale_layer.bias
    h = torch.relu(torch.baddbmm(b, x, w))
    sigma = F.softplus(torch.baddbmm(c, x, v)) + MIN_SCALE  # the head sharing the (identity) encoder
    z = h + sigma * eps
    assert torch.equal(trace.nodes["z"]["value"].reshape(R, N, 8), z)
    assert float(trace.nodes["z"]["fn"].log_prob(trace.nodes["z"]["value"]).sum()) == 0.0  # no ELBO term
    loc, scale = _head(net.decode(z))
    reference = -dist.Normal(loc, scale).log_prob(y).sum() / N
    assert torch.allclose(loss, reference, rtol=1e-12, atol=1e-12)
    loc_mean, scale_mean = _head(net.decode(h))  # the drawn embedding, not its mean
    assert not torch.allclose(loss, -dist.Normal(loc_mean, scale_mean).log_prob(y).sum() / N)
    g = torch.autograd.grad(loss, [v])[0]  # the scale is trained through the draw
    assert torch.allclose(g, torch.autograd.grad(reference, [v])[0]) and bool(g.abs().sum() > 0)


def test_m_erm_star_is_the_star_network_without_a_handler():
    method = resolve_method("M-ERM-star", mc_samples=4)
    net = _net(method, "regression")
    assert net.width == 4 and net.scale_head == "separate" and method.prediction_mode() == "mc"
    x, y = _data("regression")
    loss, handler, trace = objective(method, "regression", net, x, y)
    assert handler is None and trace.nodes["z"]["value"].shape == (R * N, 4)
    assert torch.autograd.grad(loss, [net.scale_net[0].weight])[0].abs().sum() > 0
    assert predict(net, method, "regression", x)[0] == "mixture"


def test_weight_decay_reaches_adam(monkeypatch):
    adams = []
    real = torch.optim.Adam

    def recording(params, **kwargs):
        adams.append(kwargs)
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", recording)
    torch.set_default_dtype(torch.float32)  # the training loop's dtype (the fixture restores it)
    x, y = _data("regression", runs=1)
    for wd in (0.0, 3e-4):
        train_group(resolve_method("M-ERM", weight_decay=wd), "regression", "mlp", x, y, x, y, [0],
                    TrainConfig(epochs=1), hidden=(8, 5))
    assert [a["weight_decay"] for a in adams] == [0.0, 3e-4]
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        resolve_method("ERM", weight_decay=-1e-3)


def test_no_mixing_methods_get_a_selection_budget_of_the_mixup_grids_size():
    from pyro_probmix.experiments.methods import WEIGHT_DECAYS, control_of, selection_grid
    from pyro_probmix.experiments.suites import ALPHAS, BETAS

    sizes = {name: len(selection_grid(name, ALPHAS, BETAS)) for name in METHOD_NAMES}
    assert set(sizes.values()) == {10}
    assert selection_grid("ERM", ALPHAS, BETAS) == [{"weight_decay": wd} for wd in WEIGHT_DECAYS]
    assert WEIGHT_DECAYS[0] == 0.0 and WEIGHT_DECAYS[1] == 1e-6 and WEIGHT_DECAYS[-1] == 1e-2
    assert all(b / a == pytest.approx(10**0.5, rel=1e-2) for a, b in zip(WEIGHT_DECAYS[1:], WEIGHT_DECAYS[2:]))
    assert len(selection_grid("M-ERM-star", (0.1, 1.0), (0.0, 0.01, 0.1))) == 6  # follows the mixup grid
    assert [control_of(m) for m in ("ProbMix", "LocKProbMix", "M-ProbMix", "LocKM-ProbMix",
                                    "M-ProbMix-star", "LocKM-ProbMix-star")] == [
        "ERM", "ERM", "M-ERM", "M-ERM", "M-ERM-star", "M-ERM-star"]


def test_selection_picks_the_best_validation_nll_among_the_weight_decays(tmp_path):
    from pyro_probmix.experiments.records import RecordStore
    from pyro_probmix.experiments.sweep import SweepOptions, _spec, select_hparams

    opts = SweepOptions("toy-regression", methods=["ERM"], splits=[0, 1, 2], epochs=1, out=tmp_path, quiet=True)
    grid = opts.grid("ERM")
    assert len(grid) == len(opts.grid("ProbMix")) == 10
    store = RecordStore(tmp_path)
    val = {0.001: (0.9, 1.1, 1.0), 0.0: (0.5, 2.0, 2.0)}  # mean 1.0 beats mean 1.5 (and split 0 alone)
    for hp in grid:
        method = resolve_method("ERM", **hp)
        for unit, nll in enumerate(val.get(hp["weight_decay"], (3.0, 3.0, 3.0))):
            store.write(_spec(opts, "cubic", "mlp", method, unit), {"metrics": {"val": {"nll": nll}}})
    hparams, scores = select_hparams(opts, "cubic", "mlp", "ERM")
    assert hparams == {"weight_decay": 0.001} and len(scores) == 10
    assert scores['{"weight_decay": 0.001}'] == pytest.approx(1.0) and scores["{}"] == pytest.approx(1.5)


def test_star_variant_has_a_separate_variance_network_and_predicts_a_mixture():
    method = resolve_method("LocKM-ProbMix-star", alpha=0.4, k=3, mc_samples=4)
    net = make_net(method, "mlp", [0, 1], (D,), 2, (8, 5))
    assert net.width == 4 and net.scale_head == "separate"  # first layer halved
    x, y = _data("regression")
    loss, handler, _ = objective(method, "regression", net, x, y)
    grads = torch.autograd.grad(loss, [net.scale_net[0].weight])
    assert grads[0].abs().sum() > 0  # the variance network is trained by the same objective
    kind, locs, scales = predict(net, method, "regression", x)
    assert kind == "mixture" and locs.shape == (4, R, N)


def test_mixture_predictive_decodes_each_draw_of_each_run_separately():
    # sample_outputs pushes the S draws of all R runs through the decoder at once; each entry must
    # be the decoder of run r applied to its own draw h + sigma * eps
    method = resolve_method("M-ProbMix-star", mc_samples=3)
    net = make_net(method, "mlp", [0, 1], (D,), 2, (8, 5))
    x, _ = _data("regression")
    out = sample_outputs(net, x, 3, [torch.Generator().manual_seed(7 + r) for r in range(R)])
    eps = torch.stack([torch.randn((3, N, net.width), generator=torch.Generator().manual_seed(7 + r)) for r in range(R)], 1)
    f = net.encode(x)
    z = net.embed(f) + net.embed_scale(x, f) * eps
    for r in range(R):
        alone = Net("mlp", [r], (D,), 2, (8, 5), scale_head="separate", halve=True)
        alone.load_state_dict({k: v[r : r + 1] for k, v in net.state_dict().items()})
        for s in range(3):
            assert torch.allclose(out[s, r], alone.decode(z[s, r][None])[0], atol=1e-6)
    kind, locs, scales = predict(net, method, "regression", x, seeds=[7 + r for r in range(R)])
    assert torch.allclose(locs, out[..., 0]) and torch.allclose(scales, F.softplus(out[..., 1]) + MIN_SCALE)


def test_erm_and_mix_share_initial_weights_and_init_does_not_depend_on_the_group():
    a = Net("mlp", [11, 22], (D,), 2, (8, 5))
    b = Net("mlp", [22], (D,), 2, (8, 5))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa[1], pb[0]), name


def test_runs_of_a_group_do_not_interact():
    method = resolve_method("LocKProbMix", alpha=0.4, k=3)
    net = _net(method, "regression")
    x, y = _data("regression")
    grads = []
    for y1 in (y[1], y[1] + 100.0):
        pyro.set_rng_seed(3)
        loss, _, _ = objective(method, "regression", net, x, torch.stack([y[0], y1]))
        grads.append(torch.autograd.grad(loss, [net.mixing.weight])[0])
    assert torch.allclose(grads[0][0], grads[1][0])  # run 0 ignores run 1's data
    assert not torch.allclose(grads[0][1], grads[1][1])


def test_block_graphs_pair_within_blocks():
    g = BlockFullGraph(RunStreams([0, 1, 2], rows=5))
    anchors = torch.arange(15).repeat(20)
    partners = g.sample(anchors, 15)
    assert torch.equal(partners // 5, anchors // 5) and not (partners == anchors).any()
    feats = torch.randn(3, 6, 2)
    knn = BlockKNNGraph(feats, RunStreams([0, 1, 2], rows=6), k=2)
    for r in range(3):
        assert torch.equal(knn.neighbors[r * 6 : (r + 1) * 6] - r * 6, KNNGraph(feats[r], k=2).neighbors)
    one = RunStreams([0], rows=6)
    assert isinstance(make_graph(resolve_method("Mix"), torch.randn(1, 6, 2), one), BlockFullGraph)
    assert isinstance(make_graph(resolve_method("LocKMix"), torch.randn(1, 6, 2), one), BlockKNNGraph)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_sequence_networks_compress_to_a_64_dim_embedding(arch):
    method = resolve_method("LocKM-ProbMix", alpha=0.4, k=2)
    net = make_net(method, arch, [0, 1], (7, 4), 2)
    x, y = torch.randn(2, 6, 7, 4), torch.randn(2, 6)
    h = net.embed(net.encode(x))
    assert h.shape == (2, 6, 64)
    loss, handler, trace = objective(method, "regression", net, x, y)
    assert torch.isfinite(loss) and handler.pairings["data"].embedded
    mix = resolve_method("Mix", alpha=0.4)
    loss, handler, trace = objective(mix, "regression", make_net(mix, arch, [0, 1], (7, 4), 2), x, y)
    assert trace.nodes["x"]["value"].shape == (12, 7, 4)  # the input windows are mixed


def test_train_group_keeps_the_best_validation_state_per_run():
    torch.set_default_dtype(torch.float32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, D, generator=gen)
    y = x.sum(-1) + 0.1 * torch.randn(2, 40, generator=gen)
    xv = torch.randn(2, 10, D, generator=gen)
    yv = xv.sum(-1)
    for name in ("ERM", "LocKMix", "M-ProbMix-star"):
        method = resolve_method(name, alpha=0.5, k=3, mc_samples=3)
        res = train_group(method, "regression", "mlp", x, y, xv, yv, [0, 1], TrainConfig(epochs=15, lr=0.01),
                          hidden=(8, 4))
        assert res.steps == 15 and len(res.best_epoch) == 2
        kind, *pred = predict(res.net, method, "regression", xv)
        loc = pred[0] if kind == "gaussian" else pred[0].mean(0)
        assert loc.shape == (2, 10)
    # minibatches: one run, the handler chooses anchors and partners
    res = train_group(resolve_method("LocKProbMix", k=3), "regression", "mlp", x[:1], y[:1], xv[:1], yv[:1], [0],
                      TrainConfig(epochs=2, lr=0.01, batch_size=8), hidden=(8, 4))
    assert res.steps == 2 * math.ceil(40 / 8)


def test_classification_training_runs():
    torch.set_default_dtype(torch.float32)
    from pyro_probmix.experiments.data import toy_rings

    d = toy_rings(0)
    for name in ("ProbMix", "LocKM-ProbMix"):
        method = resolve_method(name, alpha=0.5, beta=0.01)
        res = train_group(method, "classification", "mlp", d.x_train[None], d.y_train[None], d.x_val[None],
                          d.y_val[None], [0], TrainConfig(epochs=5, lr=0.01), hidden=(16, 8))
        kind, probs = predict(res.net, method, "classification", torch.as_tensor(d.x_test[None]))
        assert probs.shape == (1, 1000, 3) and np.allclose(probs.sum(-1).numpy(), 1, atol=1e-5)


def test_homoscedastic_pool_is_the_librarys_gaussian_rule_with_equal_scales():
    from pyro_probmix.experiments.models import HomoscedasticNormal
    from pyro_probmix.pooling import log_linear_pool

    loc_p, loc_q, lam = torch.randn(6, 4), torch.randn(6, 4), torch.rand(6, 1)
    fast = log_linear_pool(HomoscedasticNormal(loc_p, 1.0).to_event(1), HomoscedasticNormal(loc_q, 1.0).to_event(1),
                           lam[:, 0])
    general = log_linear_pool(dist.Normal(loc_p, 1.0).to_event(1), dist.Normal(loc_q, 1.0).to_event(1), lam[:, 0])
    assert isinstance(fast.base_dist, HomoscedasticNormal)
    assert torch.allclose(fast.mean, general.mean) and torch.allclose(fast.base_dist.scale, general.base_dist.scale)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_embedding_pool_matches_the_eager_rule():
    from pyro_probmix.experiments.models import CompiledPoolNormal
    from pyro_probmix.pooling import log_linear_pool

    torch.set_default_dtype(torch.float32)  # the experiments train in float32
    g = torch.Generator().manual_seed(1)
    loc_p, loc_q = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    scale_p, scale_q = torch.rand(7, 5, generator=g) + 0.05, torch.rand(7, 5, generator=g) + 0.05
    lam = torch.tensor([0.0, 1e-30, 0.2, 0.5, 0.8, 1 - 1e-7, 1.0])[:, None]
    results = []
    for cls in (dist.Normal, CompiledPoolNormal):
        params = [t.clone().requires_grad_() for t in (loc_p, scale_p, loc_q, scale_q)]
        pooled = log_linear_pool(cls(*params[:2]).to_event(1), cls(*params[2:]).to_event(1), lam[:, 0])
        assert type(pooled.base_dist) is cls
        out = (pooled.base_dist.loc, pooled.base_dist.scale)
        grads = torch.autograd.grad((out[0] * 1.3 + out[1] * 0.7).sum(), params)
        results.append(out + grads)
    for eager, compiled in zip(*results):
        assert torch.allclose(eager, compiled, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_pool_backward_is_the_gradient_of_the_rule_in_float64():
    from pyro_probmix.experiments.compiled_pool import compiled_normal_pool_params
    from pyro_probmix.pooling import normal_pool_params

    g = torch.Generator().manual_seed(2)
    loc_p, loc_q = torch.randn(2, 6, 3, generator=g, dtype=torch.float64).unbind()
    scale_p, scale_q = (torch.rand(2, 6, 3, generator=g, dtype=torch.float64) * 3 + 0.01).unbind()
    lam = torch.tensor([0.0, 1e-12, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)[:, None]
    weights = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    results = []
    for rule in (normal_pool_params, compiled_normal_pool_params):
        params = [t.clone().requires_grad_() for t in (loc_p, scale_p, loc_q, scale_q)]
        loc, scale = rule(*params, lam)
        grads = torch.autograd.grad((loc * weights[0] + scale * weights[1]).sum(), params)
        results.append((loc, scale) + grads)
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-14)
    with pytest.raises(NotImplementedError, match="lam requires a gradient"):
        compiled_normal_pool_params(loc_p, scale_p, loc_q, scale_q, lam.clone().requires_grad_())
    # no second derivative: refused rather than wrong
    params = [t.clone().requires_grad_() for t in (loc_p, scale_p, loc_q, scale_q)]
    loc, _ = compiled_normal_pool_params(*params, lam)
    (grad,) = torch.autograd.grad(loc.square().sum(), params[0], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_train_config_compile_pools_the_embedding_with_the_compiled_rule():
    from pyro_probmix.experiments.models import CompiledPoolNormal

    torch.set_default_dtype(torch.float32)
    method = resolve_method("M-ProbMix", alpha=0.4)
    x, y = (t.float() for t in _data("regression"))
    for compile_pool, cls in ((False, dist.Normal), (True, CompiledPoolNormal)):
        res = train_group(method, "regression", "mlp", x, y, x, y, [0, 1], TrainConfig(epochs=2, compile=compile_pool),
                          (8, 5))
        assert res.steps == 2 and all(math.isfinite(v) for v in res.best_val_nll)
        trace = objective(method, "regression", res.net, x, y)[2]
        assert type(trace.nodes["z"]["fn"].base_dist.base_dist) is cls


def test_freed_memory_is_kept_for_reuse_on_glibc():
    from pyro_probmix.experiments.train import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected


def test_groups_fill_a_row_budget():
    from pyro_probmix.experiments.records import RunSpec
    from pyro_probmix.experiments.executor import ROWS_PER_GROUP, _groups

    specs = [RunSpec.make("uci", ds, "ERM", s, 0, "mlp", {}, {"epochs": 1}) for ds in ("small", "big") for s in range(20)]
    groups = _groups(specs, None, {"small": 300, "big": ROWS_PER_GROUP})
    sizes = {(g[0].dataset, len(g)) for g in groups}
    assert ("small", 20) in sizes and ("big", 1) in sizes
    assert all(len(g) <= 2 for g in _groups(specs, 2, {"small": 300, "big": 10}))
