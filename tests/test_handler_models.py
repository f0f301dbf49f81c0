"""
probmix on the shapes of model Pyro users write: masks, plates built outside the model, JIT
ELBOs, enumeration, row order, and the errors and warnings of what it cannot fuse. Each case is
either the documented objective (checked against a brute-force reference) or a clear refusal.
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import (
    SVI,
    Importance,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    config_enumerate,
)
from pyro.infer.autoguide import AutoDelta

from pyro_probmix import embedding, probmix
from pyro_probmix.graphs import FullGraph, KNNGraph
from pyro_probmix.handler import NothingFusedWarning, ProbMixLikelihood

pytestmark = pytest.mark.usefixtures("fresh_pyro")


def _no_guide(*args, **kwargs):
    pass


def loss_of(model, *args, guide=_no_guide, elbo=None, **kwargs):
    return (elbo or Trace_ELBO()).differentiable_loss(model, guide, *args, **kwargs)


def features(x):
    return torch.sin(3 * x), (0.3 * torch.cos(2 * x)).exp()


def pair_loss(x, y, i, j, lam):
    """-log of the label-fused pooled Gaussian likelihood of pair (i, j) (beta = 0)."""
    loc, scale = features(x)
    precision = lam / scale[i] ** 2 + (1 - lam) / scale[j] ** 2
    mean = (lam * loc[i] / scale[i] ** 2 + (1 - lam) * loc[j] / scale[j] ** 2) / precision
    pooled = dist.Normal(mean, precision.rsqrt())
    return -(lam * pooled.log_prob(y[i]) + (1 - lam) * pooled.log_prob(y[j]))


def plain_loss(x, y, i):
    loc, scale = features(x)
    return -dist.Normal(loc[i], scale[i]).log_prob(y[i])


def masked_model(x, y, mask, subsample_size=None):
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        loc, scale = features(x[idx])
        with poutine.mask(mask=mask[idx]):
            pyro.sample("y", dist.Normal(loc, scale), obs=y[idx])


def assert_mean_matches(draws, exact):
    draws = torch.stack(draws)
    standard_error = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - exact) < 4 * standard_error + 1e-6
    assert draws.std() > 0  # the pairs are drawn anew: the estimate varies


# ----------------------------------------------------------------------------- 1. masks
def test_row_mask_keeps_every_observed_row_and_pairs_it_with_an_observed_row():
    n, lam = 12, 0.3
    x, y = torch.linspace(-2, 2, n), torch.randn(n)
    mask = torch.arange(n) % 3 != 0  # 8 observed rows
    observed = mask.nonzero().squeeze(-1)
    exact = sum(
        torch.stack([pair_loss(x, y, i, j, torch.tensor(lam)) for j in observed if j != i]).mean()
        for i in observed
    )
    draws = []
    with probmix(lam=lam) as handler:
        for _ in range(400):
            trace = poutine.trace(masked_model).get_trace(x, y, mask)
            assert torch.equal(trace.nodes["y"]["mask"], mask)  # 8 scored cells, as in the model
            partner = handler.pairings["data"].partner
            assert mask[partner[mask]].all()
            draws.append(loss_of(masked_model, x, y, mask))
    assert_mean_matches(draws, exact)


def test_subsampled_plate_with_a_mask_counts_every_observed_row_with_its_weight():
    n, batch, lam = 10, 4, 0.4
    x, y = torch.linspace(-2, 2, n), torch.randn(n)
    mask = torch.arange(n) < 7
    graph = FullGraph()
    # anchors uniform, partners uniform over the other rows (masked or not, unknown when drawn);
    # a partner that is not observed leaves the anchor fused with itself
    exact = 0.0
    for i in mask.nonzero().squeeze(-1):
        terms = [pair_loss(x, y, i, j, torch.tensor(lam)) if mask[j] else plain_loss(x, y, i)
                 for j in range(n) if j != i]
        exact += torch.stack(terms).mean()
    with probmix(lam=lam, graph=graph, plate="data"):
        draws = [loss_of(masked_model, x, y, mask, batch) for _ in range(3000)]
    assert_mean_matches(draws, exact)


def test_cell_mask_of_padded_sequences_keeps_every_observed_cell():
    n, steps, lam = 6, 5, 0.5
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    mask = torch.arange(steps) < lengths[:, None]
    y = torch.randn(n, steps).masked_fill(~mask, float("nan"))  # padding is NaN
    loc = torch.randn(n, steps)

    def model():
        with pyro.plate("time", steps, dim=-1), pyro.plate("data", n, dim=-2):
            with poutine.mask(mask=mask):
                pyro.sample("y", dist.Normal(loc, 1.0), obs=torch.nan_to_num(y))

    with probmix(lam=lam, plate="data") as handler:
        trace = poutine.trace(model).get_trace()
    partner = handler.pairings["data"].partner
    assert torch.equal(trace.nodes["y"]["mask"], mask)
    # brute force: a cell whose partner cell is observed is fused, the others score themselves
    yy = torch.nan_to_num(y)
    expected = 0.0
    for i in range(n):
        j = partner[i]
        for t in range(lengths[i]):
            if mask[j, t]:
                m = lam * loc[i, t] + (1 - lam) * loc[j, t]  # equal scales: the pooled mean
                pooled = dist.Normal(m, 1.0)
                expected -= lam * pooled.log_prob(yy[i, t]) + (1 - lam) * pooled.log_prob(yy[j, t])
            else:
                expected -= dist.Normal(loc[i, t], 1.0).log_prob(yy[i, t])
    trace.compute_log_prob()
    assert torch.allclose(-trace.nodes["y"]["log_prob_sum"], expected, rtol=1e-5)


def test_obs_mask_and_masked_distribution_keep_every_observed_row():
    n = 10
    x, y = torch.linspace(-2, 2, n), torch.randn(n)
    mask = torch.arange(n) % 2 == 0

    def obs_mask_model():
        loc, scale = features(x)
        with pyro.plate("data", n):
            pyro.sample("y", dist.Normal(loc, scale), obs=y, obs_mask=mask)

    def masked_dist_model():
        loc, scale = features(x)
        with pyro.plate("data", n):
            pyro.sample("y", dist.Normal(loc, scale).mask(mask), obs=y)

    guide = AutoDelta(poutine.block(obs_mask_model, hide=["y_observed"]))
    with probmix(lam=0.3) as handler:
        loss_of(obs_mask_model, guide=guide)  # the unobserved half is a latent of the guide
        trace = poutine.trace(masked_dist_model).get_trace()
    assert torch.equal(trace.nodes["y"]["mask"], mask)
    assert mask[handler.pairings["data"].partner[mask]].all()


# ----------------------------------------------------------------------------- 2. plates
DATA_PLATE = pyro.plate("data", 8)


def make_plate():
    return pyro.plate("data", 8)


@pytest.mark.parametrize("style", ["in_model", "module_level", "factory", "argument", "two_sites"])
def test_pairs_are_drawn_anew_at_every_execution_however_the_plate_is_built(style):
    x, y = torch.linspace(-2, 2, 8), torch.randn(8)
    factory_plate = make_plate()

    def model(plate=None):
        loc, scale = features(x)
        plate = {"in_model": lambda: pyro.plate("data", 8), "module_level": lambda: DATA_PLATE,
                 "factory": lambda: factory_plate, "argument": lambda: plate,
                 "two_sites": lambda: DATA_PLATE}[style]()
        with plate:
            pyro.sample("y", dist.Normal(loc, scale), obs=y)
        if style == "two_sites":
            with plate:
                pyro.sample("y2", dist.Normal(loc, scale), obs=y)

    exact = sum(torch.stack([pair_loss(x, y, i, j, torch.tensor(0.3)) for j in range(8) if j != i]).mean()
                for i in range(8))
    draws, partners = [], set()
    with probmix(lam=0.3) as handler:
        for _ in range(300):
            trace = poutine.trace(model).get_trace(DATA_PLATE)
            trace.compute_log_prob()
            draws.append(-trace.nodes["y"]["log_prob_sum"])
            partners.add(tuple(handler.pairings["data"].partner.tolist()))
            if style == "two_sites":  # both sites of one execution share the pairs
                assert torch.equal(trace.nodes["y"]["fn"].partner_value, trace.nodes["y2"]["fn"].partner_value)
    assert len(partners) > 250
    assert_mean_matches(draws, exact)


def test_guide_and_model_of_one_step_share_the_subsample_of_a_plate_in_both():
    x, y = torch.linspace(-2, 2, 30), torch.randn(30)

    def model():
        with pyro.plate("data", 30, subsample_size=6) as idx:
            loc, scale = features(x[idx])
            pyro.sample("y", dist.Normal(loc, scale), obs=y[idx])

    def guide():
        with pyro.plate("data", 30, subsample_size=6):
            pass

    with probmix(lam=0.5, graph=KNNGraph(x, k=2), plate="data") as handler:
        guide_trace = poutine.trace(guide).get_trace()
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace()
    idx = model_trace.nodes["data"]["value"]
    assert idx is guide_trace.nodes["data"]["value"]
    for a, p in zip(idx[:3].tolist(), idx[3:].tolist()):
        assert p in handler.graph.neighbors[a].tolist()


# ----------------------------------------------------------------------------- 3. JIT
def _jit_model(x, y):
    w = pyro.param("w", torch.tensor(0.5))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


@pytest.mark.parametrize("elbo", [JitTrace_ELBO, JitTraceEnum_ELBO])
@pytest.mark.parametrize("compiled_first", [False, True])
def test_jit_elbos_are_refused_in_either_order(elbo, compiled_first):
    x, y = torch.randn(6), torch.randn(6)
    svi = SVI(_jit_model, _no_guide, pyro.optim.Adam({"lr": 0.01}), elbo(ignore_jit_warnings=True))
    if compiled_first:
        svi.step(x, y)  # compiled outside the handler: inside it would run the plain loss
    with pytest.raises(RuntimeError, match="JIT-compiled ELBO.*frozen"):
        with probmix(alpha=0.5):
            svi.step(x, y)


# ----------------------------------------------------------------------------- 4. enumeration
@config_enumerate
def mixture_model(y, subsample_size=None, seen=None):
    weights = torch.tensor([0.3, 0.7])
    locs = pyro.param("locs", torch.tensor([-1.0, 2.0]))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as idx:
        if seen is not None:
            seen.append(idx)
        k = pyro.sample("k", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[k], 1.0), obs=y[idx])


def mixture_brute_force(y, anchors, partners, lam, scale):
    """-scale * sum over anchors of log sum_k pi_k pool(N(locs_k), N(locs_k)) at (y_a, y_p):
    the partner is scored under the anchor's enumerated value."""
    weights, locs = torch.tensor([0.3, 0.7]), pyro.param("locs").detach()
    total = 0.0
    for a, p, l in zip(anchors, partners, lam):
        per_k = torch.stack([
            torch.log(weights[k]) + l * dist.Normal(locs[k], 1.0).log_prob(y[a])
            + (1 - l) * dist.Normal(locs[k], 1.0).log_prob(y[p]) for k in range(2)
        ])
        total -= scale * torch.logsumexp(per_k, 0)
    return total


@pytest.mark.parametrize("subsample_size", [None, 6])
def test_enumerated_mixture_trains_the_fused_objective(subsample_size):
    y = torch.randn(20)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    seen = []
    with probmix(alpha=0.5, plate="data") as handler:
        loss = elbo.differentiable_loss(mixture_model, _no_guide, y, subsample_size, seen)
    pairing, idx = handler.pairings["data"], seen[-1]
    if subsample_size is None:
        anchors, partners, lam, scale = range(20), pairing.partner.tolist(), pairing.lam.tolist(), 1.0
    else:
        anchors, partners = idx[:3].tolist(), idx[3:].tolist()
        lam, scale = pairing.lam[:3].tolist(), 20 / 3
    assert torch.allclose(loss, mixture_brute_force(y, anchors, partners, lam, scale), rtol=1e-5)


def test_infer_discrete_on_mini_batches_is_refused_inside_a_block_and_works_outside():
    # it raised KeyError('mask'): the trace infer_discrete replays has nodes without a mask
    from pyro.infer import infer_discrete

    x, y = torch.linspace(-2, 2, 8), torch.linspace(-3, 3, 8).flip(0)

    @config_enumerate
    def model():
        with pyro.plate("data", 8, subsample_size=4) as idx:
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.7])))
            pyro.sample("y", dist.Normal(x[idx] + torch.tensor([-1.0, 1.5])[c], 1.0), obs=y[idx])

    decode = infer_discrete(model, first_available_dim=-2, temperature=0)
    with pytest.raises(NotImplementedError, match=r"site 'c': infer_discrete inside a probmix block on the "
                       r"subsampled data plate 'data' is not supported.*Decode outside the block"):
        with probmix(lam=0.3, plate="data"):
            poutine.trace(decode).get_trace()
    assert poutine.trace(decode).get_trace().nodes["c"]["value"].shape == (4,)


def test_enumerated_mixture_trains_with_svi_on_mini_batches():
    y = torch.cat([torch.randn(30) - 1, torch.randn(70) + 2])
    svi = SVI(mixture_model, _no_guide, pyro.optim.Adam({"lr": 0.05}), TraceEnum_ELBO(max_plate_nesting=1))
    with probmix(alpha=0.5, plate="data"):
        losses = [svi.step(y, 20) for _ in range(50)]
    assert all(math.isfinite(v) for v in losses)


# ----------------------------------------------------------------------------- 6. no-ops
def test_unknown_site_names_raise_at_the_end_of_the_block():
    x = torch.randn(5)
    with pytest.raises(ValueError, match=r"no site named \['yy'\] was fused.*fused: \['y'\]"):
        with probmix(alpha=0.5, sites=["y", "yy"]):
            loss_of(lambda: masked_model(x, x, torch.ones(5, dtype=torch.bool)))


def test_a_model_behind_block_warns_that_nothing_was_fused():
    x = torch.randn(5)
    with pytest.warns(NothingFusedWarning, match="saw no sample site in this block, so no model ran .* poutine.block"):
        with probmix(alpha=0.5):
            loss_of(poutine.block(lambda: masked_model(x, x, torch.ones(5, dtype=torch.bool))))
    with pytest.warns(NothingFusedWarning, match="saw no sample site"):
        with probmix(alpha=0.5):
            Importance(lambda: masked_model(x, x, torch.ones(5, dtype=torch.bool)), num_samples=3).run()


# ----------------------------------------------------------------------------- 7. errors
def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


def test_conditioned_global_latents_and_predictive_are_left_alone():
    x, y = torch.randn(8), torch.randn(8)
    guide = AutoDelta(regression)
    svi = SVI(regression, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    conditioned = poutine.condition(regression, {"w": torch.tensor(0.5)})
    with probmix(alpha=0.5):
        svi.step(x, y)
        samples = Predictive(regression, guide=guide, num_samples=3)(x)
        trace = poutine.trace(conditioned).get_trace(x, y)
    assert samples["y"].shape == (3, 8)
    assert type(trace.nodes["w"]["fn"]) is dist.Normal and isinstance(trace.nodes["y"]["fn"], ProbMixLikelihood)


def test_sequential_plate_is_refused_with_the_vectorized_form():
    def model(y):
        for i in pyro.plate("data", len(y)):
            pyro.sample(f"y_{i}", dist.Normal(0.0, 1.0), obs=y[i])

    with pytest.raises(ValueError, match="'y_0' is inside the sequential plate 'data'.*with pyro.plate"):
        with probmix(alpha=0.5):
            loss_of(model, torch.randn(4))


def test_nested_handlers_are_refused():
    with pytest.raises(RuntimeError, match="cannot be nested"):
        with probmix(alpha=0.5), probmix(alpha=0.5):
            pass


def test_observations_plain_pyro_refuses_are_refused_with_the_site_name():
    x = torch.randn(6)
    with probmix(alpha=0.5):
        with pytest.raises(ValueError, match="site 'y': the observed value has shape \\(6, 2\\)"):
            loss_of(regression, x, torch.randn(6, 2))
        for bad in (float("nan"), float("inf")):
            y = torch.randn(6)
            y[2] = bad
            with pytest.raises(ValueError, match="site 'y': observed values outside the support.*not finite"):
                loss_of(regression, x, y)

    def classifier(labels):
        with pyro.plate("data", len(labels)):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(len(labels), 3)), obs=labels)

    with pytest.raises(ValueError, match="site 'c': observed values outside the support"):
        with probmix(alpha=0.5, beta=0.1):
            loss_of(classifier, torch.tensor([0, 1, 3, 2]))


def test_integer_labels_at_a_continuous_site_score_as_reals():
    x, y = torch.randn(6), torch.randint(-2, 3, (6,))
    pyro.set_rng_seed(0)
    with probmix(lam=0.3):
        as_int = loss_of(regression, x, y, guide=lambda x, y: pyro.sample("w", dist.Delta(torch.tensor(0.2))))
    pyro.set_rng_seed(0)
    with probmix(lam=0.3):
        as_float = loss_of(regression, x, y.float(), guide=lambda x, y: pyro.sample("w", dist.Delta(torch.tensor(0.2))))
    assert torch.allclose(as_int, as_float, rtol=1e-6)


# ----------------------------------------------------------------------------- 8. row order
def test_full_batch_in_another_order_follows_the_subsample_indices():
    n = 20
    x = torch.randn(n)
    graph = KNNGraph(x, k=2)
    order = torch.randperm(n)

    def model():
        with pyro.plate("data", n, subsample=order) as idx:
            pyro.sample("y", dist.Normal(x[idx], 1.0), obs=x[idx])

    with probmix(lam=0.5, graph=graph) as handler:
        poutine.trace(model).get_trace()
    partner = handler.pairings["data"].partner
    for r in range(n):
        assert order[partner[r]].item() in graph.neighbors[order[r]].tolist()


def test_a_batch_chosen_outside_probmix_is_refused_for_a_graph_over_training_rows():
    x = torch.randn(40)
    idx = torch.arange(10)

    def model():
        with pyro.plate("data", 40, subsample=idx):
            pyro.sample("y", dist.Normal(x[idx], 1.0), obs=x[idx])

    with pytest.raises(ValueError, match="holds 10 of 40 rows chosen outside probmix"):
        with probmix(alpha=0.5, graph=KNNGraph(x, k=3)):
            loss_of(model)


def test_a_graph_over_training_rows_checks_the_plate_size_and_takes_any_integer_indices():
    x, y = torch.randn(20, 2), torch.randn(40)
    graph = KNNGraph(x, k=3)

    def model(size, idx):
        with pyro.plate("data", size, subsample=idx) as rows:
            pyro.sample("y", dist.Normal(torch.zeros(len(rows)), 1.0), obs=y[torch.as_tensor(rows).long()])

    # all 20 nodes of the graph, but in a plate of 40 rows: accepted before, with Pyro's scale 2,
    # node r taken as plate row r although the graph may be over other rows
    with pytest.raises(ValueError, match=r"holds 20 of 40 rows chosen outside probmix.*The plate has 40 rows and the graph 20 nodes"):
        with probmix(lam=0.3, graph=graph):
            poutine.trace(model).get_trace(40, torch.arange(20))
    repeated = torch.cat([torch.arange(19), torch.tensor([0])])
    with pytest.raises(ValueError, match=r"holds 20 indices that are not each of the 20 rows once \(a row repeats or is missing\)"):
        with probmix(lam=0.3, graph=graph):
            poutine.trace(model).get_trace(20, repeated)
    # a list (an AttributeError before) and int32 indices (refused as "anchors") are rows too
    order = torch.randperm(20)
    partners = []
    for idx in (order.tolist(), order.int(), order):
        pyro.set_rng_seed(0)
        with probmix(lam=0.3, graph=graph) as handler:
            poutine.trace(model).get_trace(20, idx)
        partners.append(handler.pairings["data"].partner)
    assert torch.equal(partners[0], partners[2]) and torch.equal(partners[1], partners[2])
    neighbours = graph.neighbors
    assert all(int(order[partners[2][r]]) in neighbours[order[r]].tolist() for r in range(20))


# ----------------------------------------------------------------------------- dtypes
def test_lambda_is_drawn_in_the_dtype_of_the_model():
    def model():
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Normal(torch.zeros(4, dtype=torch.float64), 1.0), obs=torch.ones(4, dtype=torch.float64))

    with probmix(lam=0.3) as handler:
        poutine.trace(model).get_trace()
    assert handler.pairings["data"].lam.dtype == torch.float64
    assert handler.pairings["data"].lam[0].item() == 0.3


def test_embedding_in_the_data_plate_is_fused_with_the_pairs_of_the_observation():
    x = torch.randn(6, 2)

    def model():
        with pyro.plate("data", 6):
            z = embedding("z", dist.Normal(x, 1.0).to_event(1), mean=True)
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=torch.zeros(6))

    with probmix(lam=0.25) as handler:
        trace = poutine.trace(model).get_trace()
    partner = handler.pairings["data"].partner
    assert torch.allclose(trace.nodes["z"]["value"], 0.25 * x + 0.75 * x[partner])


def test_a_site_in_several_plates_is_refused_with_the_plate_paired_before_it():
    x, w = torch.randn(6, 2), torch.randn(2, 3)

    def model():
        with pyro.plate("data", 6, dim=-1):
            z = embedding("z", dist.Normal(x, 1.0).to_event(1), mean=True)
            with pyro.plate("features", 3, dim=-2):
                pyro.sample("y", dist.Normal((z @ w).T, 1.0), obs=torch.zeros(3, 6))

    # the embedding was pooled along "data": the hint names it, not the feature plate
    with pytest.raises(ValueError, match=r"site 'y' is in several plates \['data', 'features'\].*"
                       r"Name it with probmix\(\.\.\., plate='data'\), the plate whose rows the sites before it"):
        with probmix(lam=0.25):
            poutine.trace(model).get_trace()
    with probmix(lam=0.25, plate="data") as handler:
        trace = poutine.trace(model).get_trace()
    partner = handler.pairings["data"].partner
    assert torch.allclose(trace.nodes["z"]["value"], 0.25 * x + 0.75 * x[partner])


def test_embedding_in_a_guide_is_refused_with_the_fix():
    x = torch.randn(6, 2)

    def model():
        with pyro.plate("data", 6):
            z = pyro.sample("z", dist.Normal(torch.zeros(6, 2), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=torch.zeros(6))

    def guide():
        with pyro.plate("data", 6):
            embedding("z", dist.Normal(x, 1.0).to_event(1))

    with pytest.raises(RuntimeError, match="embedding site 'z' is in the guide.*Move the embedding into the model"):
        with probmix(alpha=0.5):
            loss_of(model, guide=guide)
