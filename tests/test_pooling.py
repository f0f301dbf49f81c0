import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro import poutine
from torch.distributions import transforms as T

from pyro_probmix import probmix
from pyro_probmix.pooling import (
    LinearPool,
    linear_pool,
    log_linear_pool,
    normal_pool_params,
    check_poolable,
    register_pool,
    supported_families,
)

pytestmark = pytest.mark.usefixtures("float64")


def _unnormalised_log_pool(p, q, lam, y):
    return lam * p.log_prob(y) + (1 - lam) * q.log_prob(y)


# (p, q, grid) for one-dimensional continuous families: the pool must equal the product
# p^lam q^(1-lam) normalised by quadrature on the grid.
CONTINUOUS = {
    "Normal": lambda: (dist.Normal(0.3, 0.7), dist.Normal(-1.2, 1.9), torch.linspace(-15, 15, 60001)),
    "Exponential": lambda: (dist.Exponential(0.5), dist.Exponential(3.0), torch.linspace(1e-9, 80, 80001)),
    "Gamma": lambda: (dist.Gamma(2.5, 1.5), dist.Gamma(4.0, 0.7), torch.linspace(1e-9, 80, 80001)),
    "Beta": lambda: (dist.Beta(2.0, 3.0), dist.Beta(5.0, 1.5), torch.linspace(1e-7, 1 - 1e-7, 100001)),
    "HalfNormal": lambda: (dist.HalfNormal(0.6), dist.HalfNormal(2.5), torch.linspace(0, 20, 80001)),
    "Weibull": lambda: (dist.Weibull(1.5, 2.0), dist.Weibull(0.7, 2.0), torch.linspace(1e-9, 20, 80001)),
    # pooled through the base Normal (docs/theory.md): checked here against the density of Y itself
    "LogNormal": lambda: (dist.LogNormal(0.2, 0.5), dist.LogNormal(-0.4, 0.9), torch.linspace(1e-9, 60, 120001)),
    "TransformedDistribution": lambda: (
        dist.TransformedDistribution(dist.Normal(0.5, 0.4), [T.AffineTransform(-1.0, 2.0), T.ExpTransform()]),
        dist.TransformedDistribution(dist.Normal(-0.3, 0.7), [T.AffineTransform(-1.0, 2.0), T.ExpTransform()]),
        torch.linspace(1e-9, 80, 160001),
    ),
}


@pytest.mark.parametrize("lam", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("family", sorted(CONTINUOUS))
def test_continuous_pool_matches_normalised_product(family, lam):
    p, q, grid = CONTINUOUS[family]()
    log_unnorm = _unnormalised_log_pool(p, q, lam, grid)
    log_z = torch.log(torch.trapezoid(torch.exp(log_unnorm), grid))
    pooled = log_linear_pool(p, q, lam)
    assert type(pooled) is type(p)
    inner = grid[100:-100:997]
    expected = _unnormalised_log_pool(p, q, lam, inner) - log_z
    assert torch.allclose(pooled.log_prob(inner), expected, atol=1e-6)


# discrete families: exact normalisation by enumeration
DISCRETE = {
    "Categorical": lambda: (dist.Categorical(torch.tensor([0.2, 0.5, 0.3])), dist.Categorical(torch.tensor([0.6, 0.1, 0.3]))),
    "OneHotCategorical": lambda: (
        dist.OneHotCategorical(torch.tensor([0.2, 0.5, 0.3])),
        dist.OneHotCategorical(torch.tensor([0.6, 0.1, 0.3])),
    ),
    "Bernoulli": lambda: (dist.Bernoulli(0.2), dist.Bernoulli(0.9)),
    "Binomial": lambda: (dist.Binomial(7, torch.tensor(0.2)), dist.Binomial(7, torch.tensor(0.65))),
}


@pytest.mark.parametrize("lam", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("family", sorted(DISCRETE))
def test_discrete_pool_matches_normalised_product(family, lam):
    p, q = DISCRETE[family]()
    support = p.enumerate_support()
    log_unnorm = _unnormalised_log_pool(p, q, lam, support)
    expected = log_unnorm - torch.logsumexp(log_unnorm, 0)
    pooled = log_linear_pool(p, q, lam)
    assert type(pooled) is type(p)
    assert torch.allclose(pooled.log_prob(support), expected, atol=1e-12)


@pytest.mark.parametrize("lam", [0.3, 0.8])
def test_poisson_pool_matches_normalised_product(lam):
    p, q = dist.Poisson(2.0), dist.Poisson(9.0)
    support = torch.arange(0.0, 200.0)
    log_unnorm = _unnormalised_log_pool(p, q, lam, support)
    expected = log_unnorm - torch.logsumexp(log_unnorm, 0)
    assert torch.allclose(log_linear_pool(p, q, lam).log_prob(support), expected, atol=1e-12)
    # the rate is the weighted geometric mean
    assert math.isclose(log_linear_pool(p, q, lam).rate.item(), 2.0**lam * 9.0 ** (1 - lam))


def _random_spd(n, generator):
    a = torch.randn(n, n, generator=generator)
    return a @ a.T + n * torch.eye(n)


MULTIVARIATE = {
    "MultivariateNormal": lambda g: (
        dist.MultivariateNormal(torch.randn(3, generator=g), _random_spd(3, g)),
        dist.MultivariateNormal(torch.randn(3, generator=g), _random_spd(3, g)),
        torch.randn(50, 3, generator=g) * 3,
    ),
    "Independent(Normal)": lambda g: (
        dist.Normal(torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.2).to_event(1),
        dist.Normal(torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.2).to_event(1),
        torch.randn(50, 4, generator=g) * 3,
    ),
    "Dirichlet": lambda g: (
        dist.Dirichlet(torch.rand(3, generator=g) * 4 + 0.5),
        dist.Dirichlet(torch.rand(3, generator=g) * 4 + 0.5),
        dist.Dirichlet(torch.ones(3)).sample((50,)),
    ),
}


@pytest.mark.parametrize("lam", [0.25, 0.6])
@pytest.mark.parametrize("family", sorted(MULTIVARIATE))
def test_multivariate_pool_is_proportional_to_product(family, lam):
    # a normalised density proportional to p^lam q^(1-lam) is the pool: the log-ratio is constant
    p, q, points = MULTIVARIATE[family](torch.Generator().manual_seed(0))
    pooled = log_linear_pool(p, q, lam)
    assert type(pooled) is type(p)
    log_ratio = pooled.log_prob(points) - _unnormalised_log_pool(p, q, lam, points)
    assert torch.allclose(log_ratio, log_ratio[0].expand_as(log_ratio), atol=1e-9)


def test_mvn_pool_is_normalised_by_quadrature():
    g = torch.Generator().manual_seed(1)
    p = dist.MultivariateNormal(torch.tensor([0.5, -0.5]), _random_spd(2, g) / 4)
    q = dist.MultivariateNormal(torch.tensor([-1.0, 1.0]), _random_spd(2, g) / 4)
    axis = torch.linspace(-8, 8, 801)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)
    density = torch.exp(_unnormalised_log_pool(p, q, 0.4, grid))
    log_z = torch.log(torch.trapezoid(torch.trapezoid(density, axis), axis))
    y = torch.tensor([0.1, 0.2])
    expected = _unnormalised_log_pool(p, q, 0.4, y) - log_z
    assert torch.allclose(log_linear_pool(p, q, 0.4).log_prob(y), expected, atol=1e-6)


def test_normal_pool_closed_form():
    # Appendix C.1: precision-weighted mean and variance
    p, q, lam = dist.Normal(1.0, 0.5), dist.Normal(3.0, 2.0), 0.3
    precision = lam / 0.25 + (1 - lam) / 4.0
    pooled = log_linear_pool(p, q, lam)
    assert math.isclose(pooled.scale.item() ** -2, precision, rel_tol=1e-12)
    assert math.isclose(pooled.loc.item(), (lam * 1.0 / 0.25 + (1 - lam) * 3.0 / 4.0) / precision, rel_tol=1e-12)


def test_homoscedastic_normal_pool_mixes_means():
    # the identity behind Theorems 4.4, 4.6 and 4.7
    loc_p, loc_q = torch.randn(5), torch.randn(5)
    lam = torch.rand(5)
    pooled = log_linear_pool(dist.Normal(loc_p, 0.7), dist.Normal(loc_q, 0.7), lam)
    assert torch.allclose(pooled.loc, lam * loc_p + (1 - lam) * loc_q)
    assert torch.allclose(pooled.scale, torch.full((5,), 0.7))


def test_categorical_pool_mixes_logits():
    # Appendix C.2 / Theorem 4.3: the pool is softmax of the mixed logits
    logits_p, logits_q = torch.randn(4, 6), torch.randn(4, 6)
    lam = torch.rand(4)
    pooled = log_linear_pool(dist.Categorical(logits=logits_p), dist.Categorical(logits=logits_q), lam)
    mixed = lam[:, None] * logits_p + (1 - lam[:, None]) * logits_q
    assert torch.allclose(pooled.probs, torch.softmax(mixed, -1))


def test_diagonal_mvn_equals_independent_normal():
    g = torch.Generator().manual_seed(2)
    loc_p, loc_q = torch.randn(3, generator=g), torch.randn(3, generator=g)
    var_p, var_q = torch.rand(3, generator=g) + 0.1, torch.rand(3, generator=g) + 0.1
    mvn = log_linear_pool(
        dist.MultivariateNormal(loc_p, torch.diag(var_p)), dist.MultivariateNormal(loc_q, torch.diag(var_q)), 0.35
    )
    ind = log_linear_pool(
        dist.Normal(loc_p, var_p.sqrt()).to_event(1), dist.Normal(loc_q, var_q.sqrt()).to_event(1), 0.35
    )
    y = torch.randn(10, 3, generator=g)
    assert torch.allclose(mvn.log_prob(y), ind.log_prob(y))


def _sample_pair(family, batch, g):
    if family in CONTINUOUS or family in DISCRETE:
        p, q = (CONTINUOUS.get(family) or DISCRETE[family])()[:2]
        return p.expand(batch), q.expand(batch), p.sample(batch)
    p, q, points = MULTIVARIATE[family](g)
    return p.expand(batch), q.expand(batch), points[: batch[0]]


ALL_FAMILIES = sorted(CONTINUOUS) + sorted(DISCRETE) + sorted(MULTIVARIATE)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_endpoints_and_swap_symmetry(family):
    p, q, y = _sample_pair(family, torch.Size([5]), torch.Generator().manual_seed(3))
    assert torch.allclose(log_linear_pool(p, q, 1.0).log_prob(y), p.log_prob(y))
    assert torch.allclose(log_linear_pool(p, q, 0.0).log_prob(y), q.log_prob(y))
    lam = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0])
    assert torch.allclose(log_linear_pool(p, q, lam).log_prob(y), log_linear_pool(q, p, 1 - lam).log_prob(y))


@settings(max_examples=200, deadline=None, derandomize=True)  # the same examples in every run
@given(
    loc=st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
    log_scale=st.tuples(st.floats(-40, 10), st.floats(-40, 10)),
    lam=st.floats(0, 1),
)
def test_normal_pool_properties(loc, log_scale, lam):
    p = dist.Normal(torch.tensor(loc[0]), torch.tensor(log_scale[0]).exp())
    q = dist.Normal(torch.tensor(loc[1]), torch.tensor(log_scale[1]).exp())
    pooled = log_linear_pool(p, q, lam)
    assert torch.isfinite(pooled.loc) and torch.isfinite(pooled.scale) and pooled.scale > 0
    # the pooled mean lies between the two means and the precision is the weighted sum
    assert min(loc) - 1e-9 <= pooled.loc <= max(loc) + 1e-9
    log_prec = torch.logsumexp(
        torch.stack([math.log(lam or 1e-300) - 2 * torch.tensor(log_scale[0]), math.log(1 - lam or 1e-300) - 2 * torch.tensor(log_scale[1])]), 0
    )
    assert torch.isclose(-2 * pooled.scale.log(), log_prec, rtol=1e-9, atol=1e-9)


def test_normal_pool_tiny_scales_float32_has_no_nan():
    # 1 / scale^2 overflows float32 here; the pool must not
    f32 = dict(dtype=torch.float32)
    p = dist.Normal(torch.tensor([1.0, 0.0], **f32), torch.tensor([1e-30, 1e-20], **f32))
    q = dist.Normal(torch.tensor([2.0, 1.0], **f32), torch.tensor([1e-25, 1.0], **f32))
    pooled = log_linear_pool(p, q, torch.tensor([0.5, 0.5], **f32))
    assert pooled.loc.dtype == torch.float32
    assert torch.isfinite(pooled.loc).all() and (pooled.scale > 0).all()
    # the much sharper component wins
    assert torch.allclose(pooled.loc, torch.tensor([1.0, 0.0], **f32), atol=1e-4)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_normal_pool_gradients_match_finite_differences(lam):
    # the relative-precision trick detaches c = min(s_p, s_q): the gradients must still be exact,
    # also where the two scales tie (c switches sides there)
    g = torch.Generator().manual_seed(0)
    loc_p, loc_q = torch.randn(5, generator=g), torch.randn(5, generator=g)
    scale_p = torch.rand(5, generator=g) + 0.1
    scale_q = torch.cat([scale_p[:2], torch.rand(3, generator=g) + 0.1])  # two ties
    inputs = [t.clone().requires_grad_() for t in (loc_p, scale_p, loc_q, scale_q)]
    assert torch.autograd.gradcheck(lambda *a: normal_pool_params(*a, lam), inputs)
    # and they are those of the textbook form with unscaled precisions
    loc, scale = normal_pool_params(*inputs, lam)
    prec = lam / inputs[1] ** 2 + (1 - lam) / inputs[3] ** 2
    ref_loc = (lam * inputs[0] / inputs[1] ** 2 + (1 - lam) * inputs[2] / inputs[3] ** 2) / prec
    ref_scale = prec.rsqrt()
    weights = torch.randn(2, 5, generator=g)
    ours = torch.autograd.grad((weights[0] * loc + weights[1] * scale).sum(), inputs)
    ref = torch.autograd.grad((weights[0] * ref_loc + weights[1] * ref_scale).sum(), inputs)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_categorical_zero_probability_has_no_nan():
    p = dist.Categorical(torch.tensor([0.0, 0.4, 0.6]))
    q = dist.Categorical(torch.tensor([0.5, 0.5, 0.0]))
    for lam in (0.0, 0.5, 1.0):
        pooled = log_linear_pool(p, q, lam)
        assert not torch.isnan(pooled.probs).any()
    # torch clamps zero probabilities to eps before taking logs
    assert torch.allclose(log_linear_pool(p, q, 0.5).probs, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(log_linear_pool(p, q, 1.0).probs, p.probs)


def test_gradients_are_finite_at_the_endpoints():
    logits = torch.tensor([[-1.0, 0.0, 2.0], [0.5, 0.5, 0.0]], requires_grad=True)
    p = dist.Categorical(logits=logits[0])
    q = dist.Categorical(logits=logits[1])
    log_linear_pool(p, q, torch.tensor(1.0)).log_prob(torch.tensor(2)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1].abs().sum() == 0


def test_binomial_needs_equal_total_count():
    with pytest.raises(ValueError, match="same total_count in a row and its partner, got 5 and 6"):
        log_linear_pool(dist.Binomial(5, torch.tensor(0.3)), dist.Binomial(6, torch.tensor(0.3)), 0.5)


def test_unsupported_family_error_names_family_and_remedy():
    with pytest.raises(NotImplementedError) as info:
        log_linear_pool(dist.StudentT(3.0), dist.StudentT(3.0), 0.5)
    message = str(info.value)
    assert "StudentT" in message and "Normal" in message and "register_pool" in message
    assert "fusion='linear'" in message


def test_register_pool_for_a_new_family_and_subclass_dispatch():
    class Laplace2(dist.Laplace):
        pass

    @register_pool(dist.Laplace, dist.Laplace)
    def _pool_laplace(p, q, lam):  # not an exponential family: a user's approximation
        return dist.Laplace(lam * p.loc + (1 - lam) * q.loc, lam * p.scale + (1 - lam) * q.scale)

    try:
        pooled = log_linear_pool(Laplace2(0.0, 1.0), Laplace2(2.0, 3.0), 0.5)
        assert pooled.loc.item() == 1.0 and pooled.scale.item() == 2.0
        assert "Laplace" in supported_families()
    finally:
        from pyro_probmix.pooling import registry

        del registry._POOL_REGISTRY[dist.Laplace, dist.Laplace]
        registry._dispatch_pool.cache_clear()


def test_register_pool_rejects_non_distributions():
    with pytest.raises(TypeError, match="Distribution subclasses"):
        register_pool(int, dist.Normal)


def test_linear_pool_is_a_mixture():
    p, q = dist.Normal(-1.0, 0.5), dist.Normal(2.0, 1.0)
    mix = linear_pool(p, q, 0.3)
    assert isinstance(mix, LinearPool)
    y = torch.linspace(-3, 4, 11)
    expected = torch.log(0.3 * p.log_prob(y).exp() + 0.7 * q.log_prob(y).exp())
    assert torch.allclose(mix.log_prob(y), expected)
    torch.manual_seed(0)
    samples = mix.sample((200000,))
    assert abs(samples.mean().item() - (0.3 * -1.0 + 0.7 * 2.0)) < 0.02
    assert math.isclose(mix.mean.item(), 0.3 * -1.0 + 0.7 * 2.0)


def test_linear_pool_endpoints_for_any_family():
    p, q = dist.StudentT(3.0, 0.0, 1.0), dist.StudentT(3.0, 5.0, 1.0)
    y = torch.linspace(-2, 7, 5)
    assert torch.allclose(linear_pool(p, q, 1.0).log_prob(y), p.log_prob(y))
    assert torch.allclose(linear_pool(p, q, 0.0).log_prob(y), q.log_prob(y))


def test_log_normal_pools_as_its_normal():
    p, q = dist.LogNormal(torch.tensor([0.2, 1.0]), 0.5), dist.LogNormal(torch.tensor([-0.4, 3.0]), 0.9)
    pooled = log_linear_pool(p, q, torch.tensor([0.3, 0.8]))
    normal = log_linear_pool(p.base_dist, q.base_dist, torch.tensor([0.3, 0.8]))
    assert type(pooled) is dist.LogNormal
    assert torch.equal(pooled.loc, normal.loc) and torch.equal(pooled.scale, normal.scale)


def test_different_transforms_are_refused_with_the_reason():
    p = dist.TransformedDistribution(dist.Normal(0.0, 1.0), T.AffineTransform(0.0, 2.0))
    q = dist.TransformedDistribution(dist.Normal(0.0, 1.0), T.AffineTransform(0.0, 3.0))
    with pytest.raises(NotImplementedError, match=r"whose AffineTransform differ \(their parameters vary by row\)"):
        log_linear_pool(p, q, 0.5)
    with pytest.raises(NotImplementedError, match="with 1 and 2 transforms"):
        log_linear_pool(p, dist.TransformedDistribution(dist.Normal(0.0, 1.0), [T.AffineTransform(0.0, 2.0)] * 2), 0.5)
    folded = dist.TransformedDistribution(dist.Normal(1.0, 1.0), T.AbsTransform())
    with pytest.raises(NotImplementedError, match="AbsTransform.* is not bijective"):
        log_linear_pool(folded, folded, 0.5)


def test_row_varying_inverse_and_cdf_transforms_of_a_site_are_refused_by_name():
    # their parameters sit in the inverted transform or in the CDF's distribution; the partner
    # rows used to keep the row's own transform, and the pool passed as shared
    loc = torch.arange(3.0)
    transforms = {
        "AffineTransform.inv": T.AffineTransform(loc, 2.0).inv,
        "CumulativeDistributionTransform": T.CumulativeDistributionTransform(dist.Normal(loc, 1.0)),
    }
    for name, transform in transforms.items():
        def model():
            with pyro.plate("data", 3):
                d = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0), transform)
                pyro.sample("y", d, obs=torch.full((3,), 0.25))

        with pytest.raises(NotImplementedError, match=rf"site 'y': .*whose {name} differ \(their parameters vary by row\)"):
            with probmix(lam=0.3):
                poutine.trace(model).get_trace()


def test_a_base_without_a_rule_is_named():
    with pytest.raises(NotImplementedError, match=r"Gumbel through its base: No log-linear pooling rule for \(Uniform, Uniform\)"):
        log_linear_pool(dist.Gumbel(0.0, 1.0), dist.Gumbel(0.0, 1.0), 0.5)


@pytest.mark.parametrize(
    "p, q",
    [
        (torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(2.0, 1.0)),
        (torch.distributions.Normal(0.0, 1.0), dist.Normal(2.0, 1.0)),
        (dist.Normal(0.0, 1.0), torch.distributions.Normal(2.0, 1.0)),
    ],
)
def test_torch_classes_pool_like_pyro_classes_and_return_pyro_ones(p, q):
    pooled = log_linear_pool(p, q, 0.5)
    assert type(pooled) is dist.Normal and pooled.loc == 1.0 and pooled.scale == 1.0
    assert pooled.mask(False).log_prob(torch.tensor(0.0)) == 0  # a Pyro distribution


def test_torch_wrappers_and_families_dispatch():
    td = torch.distributions
    logits = torch.randn(3, 4)
    pooled = log_linear_pool(td.Categorical(logits=logits), td.Categorical(logits=logits), 0.3)
    assert type(pooled) is dist.Categorical and torch.allclose(pooled.logits, td.Categorical(logits=logits).logits)
    ind = td.Independent(td.Normal(torch.zeros(3), 1.0), 1)
    assert type(log_linear_pool(ind, ind, 0.5)) is dist.Independent
    assert type(log_linear_pool(td.LogNormal(0.0, 1.0), td.LogNormal(1.0, 1.0), 0.5)) is dist.LogNormal


def test_check_poolable_refuses_a_total_count_that_varies_by_row():
    check_poolable(dist.Binomial(torch.full((4,), 7.0), logits=torch.zeros(4)))
    varying = dist.Binomial(torch.tensor([7.0, 7.0, 9.0, 7.0]), logits=torch.zeros(4))
    for d in (varying, varying.to_event(1), varying.mask(torch.ones(4, dtype=torch.bool))):
        with pytest.raises(ValueError, match=r"Binomial total_count differs across rows \(from 7 to 9\).*fusion='linear'"):
            check_poolable(d)
    with pytest.raises(NotImplementedError, match=r"No log-linear pooling rule for \(StudentT, StudentT\)"):
        check_poolable(dist.StudentT(3.0))
    with pytest.raises(NotImplementedError, match="is not bijective"):
        check_poolable(dist.TransformedDistribution(dist.Normal(1.0, 1.0), T.AbsTransform()))
    check_poolable(dist.HalfNormal(1.0))  # Abs of a centred Normal: a family of its own
    check_poolable(dist.LogNormal(torch.zeros(3), 1.0).to_event(1))


class _SkewNormal(dist.Normal):
    """2 N(y; loc, scale) Phi(4 (y - loc) / scale): a Normal subclass with a density of its own."""

    def log_prob(self, value):
        return math.log(2) + super().log_prob(value) + torch.special.log_ndtr(4 * (value - self.loc) / self.scale)


class _RenamedNormal(dist.Normal):
    pass


def test_a_subclass_with_its_own_density_is_refused_not_pooled_as_its_parent():
    # the Normal rule (and the Normal closed form in the handler) pooled it as a plain Normal,
    # silently: a probe's 5-row skew-normal site scored -28.54 against the true pool's -268.05
    with pytest.raises(NotImplementedError, match=r"_SkewNormal subclasses Normal but _SkewNormal defines its own "
                       r"log_prob: the Normal rule would pool it as a plain Normal.*register_pool\(_SkewNormal, _SkewNormal\)"):
        log_linear_pool(_SkewNormal(0.0, 1.0), _SkewNormal(1.0, 2.0), 0.3)

    def model(y):
        with pyro.plate("data", 3):
            pyro.sample("y", _SkewNormal(torch.zeros(3), 1.0), obs=y)

    with pytest.raises(NotImplementedError, match=r"site 'y': _SkewNormal subclasses Normal"):
        with probmix(lam=0.3):
            poutine.trace(model).get_trace(torch.zeros(3))


def test_a_subclass_that_keeps_the_density_is_pooled_by_its_parents_rule():
    pooled = log_linear_pool(_RenamedNormal(0.0, 1.0), _RenamedNormal(2.0, 1.0), 0.25)
    assert float(pooled.loc) == pytest.approx(1.5) and float(pooled.scale) == pytest.approx(1.0)


@pytest.mark.parametrize("lam", [0.3, 0.8])
def test_negative_binomial_pool_with_a_shared_total_count_matches_normalised_product(lam):
    p = dist.NegativeBinomial(3.0, probs=torch.tensor(0.35))
    q = dist.NegativeBinomial(3.0, logits=torch.tensor(0.4))
    support = torch.arange(0.0, 400.0)
    log_unnorm = _unnormalised_log_pool(p, q, lam, support)
    expected = log_unnorm - torch.logsumexp(log_unnorm, 0)
    pooled = log_linear_pool(p, q, lam)
    assert type(pooled) is dist.NegativeBinomial
    assert torch.allclose(pooled.log_prob(support), expected, atol=1e-10)
    assert torch.equal(log_linear_pool(p, q, 1.0).logits, p.logits)  # an endpoint returns the row


def test_negative_binomial_needs_one_total_count():
    with pytest.raises(ValueError, match=r"NegativeBinomial needs the same total_count.*C\(y \+ r - 1, y\)"):
        log_linear_pool(dist.NegativeBinomial(2.0, logits=torch.tensor(0.0)), dist.NegativeBinomial(3.0, logits=torch.tensor(0.0)), 0.5)
    with pytest.raises(ValueError, match=r"NegativeBinomial total_count differs across rows \(from 2 to 3\)"):
        check_poolable(dist.NegativeBinomial(torch.tensor([2.0, 3.0]), logits=torch.zeros(2)))


def test_weibull_needs_one_concentration():
    with pytest.raises(ValueError, match=r"Weibull needs the same concentration"):
        log_linear_pool(dist.Weibull(1.0, 2.0), dist.Weibull(1.0, 3.0), 0.5)
    with pytest.raises(ValueError, match=r"Weibull concentration differs across rows \(from 1 to 2\)"):
        check_poolable(dist.Weibull(torch.ones(2), torch.tensor([1.0, 2.0])))
