"""
Numerics of the pooling rules: a fuzz of the Normal rule against exact rational arithmetic,
lam at the ends of [0, 1], ill-conditioned MultivariateNormals in float32, impossible outcomes
of discrete families, and the dtype of lam.
"""
import math
from fractions import Fraction

import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_probmix.pooling import LinearPool, log_linear_pool, normal_pool_params

# deterministic in CI: the same examples on every run
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def _exact_normal_pool(loc_p, scale_p, loc_q, scale_q, lam):
    """(loc, variance, weight of loc_p) of the pool in exact rational arithmetic."""
    loc_p, scale_p, loc_q, scale_q, lam = map(Fraction, (loc_p, scale_p, loc_q, scale_q, lam))
    r_p, r_q = lam / scale_p**2, (1 - lam) / scale_q**2
    w = r_p / (r_p + r_q)
    return w * loc_p + (1 - w) * loc_q, 1 / (r_p + r_q), w


lams = st.one_of(st.sampled_from([0.0, 1.0, 1e-7, 1 - 1e-7, 0.5]), st.floats(0, 1))
magnitudes = st.floats(-6, 6).map(lambda e: 10.0**e)


@FUZZ
@given(
    dtype=st.sampled_from([torch.float32, torch.float64]),
    loc=st.tuples(st.floats(-1, 1), magnitudes, st.floats(-1, 1), magnitudes, st.booleans()),
    log10_scale_p=st.floats(-6, 6),
    log10_ratio=st.floats(-6, 6),  # precision ratios up to 1e12
    lam=lams,
)
def test_normal_pool_matches_exact_arithmetic(dtype, loc, log10_scale_p, log10_ratio, lam):
    # one mean may be exactly 0: then the pull of the other is all there is to the result
    loc_p, loc_q = (0.0 if loc[4] else loc[0] * loc[1]), loc[2] * loc[3]
    scale_q = 10.0 ** min(max(log10_scale_p + log10_ratio, -6), 6)
    args = [torch.tensor(v, dtype=dtype) for v in (loc_p, 10.0**log10_scale_p, loc_q, scale_q, lam)]
    ref_loc, ref_var, w = _exact_normal_pool(*map(float, args))
    loc, scale = normal_pool_params(*args)
    # componentwise relative error of the weighted sum, and relative error of the scale
    size = w * abs(Fraction(float(args[0]))) + (1 - w) * abs(Fraction(float(args[2])))
    loc_error = abs(Fraction(float(loc)) - ref_loc) / max(size, Fraction(torch.finfo(dtype).tiny))
    scale_error = abs(Fraction(float(scale)) ** 2 / ref_var - 1) / 2
    assert float(loc_error) <= TOLERANCE[dtype] and float(scale_error) <= TOLERANCE[dtype]


def test_a_dominated_mean_keeps_its_pull_in_float32():
    # p is 1e8 times more precise: the exact pull of q is 1e-8 * 1e6 = 0.01, 1e4 of p's scales
    f32 = dict(dtype=torch.float32)
    loc, scale = normal_pool_params(
        torch.tensor(0.0, **f32), torch.tensor(1e-6, **f32), torch.tensor(1e6, **f32), torch.tensor(1e-2, **f32), 0.5
    )
    ref_loc, _, _ = _exact_normal_pool(0.0, float(torch.tensor(1e-6, **f32)), 1e6, float(torch.tensor(1e-2, **f32)), 0.5)
    assert abs(float(loc) - float(ref_loc)) <= 1e-6 * float(ref_loc)


def _pairs(g):
    """(p, q, y): two distributions with batch_shape (4,) per family and a value."""
    n = 4
    pos = lambda: torch.rand(n, generator=g) + 0.5  # noqa: E731
    real = lambda *s: torch.randn((n,) + s, generator=g)  # noqa: E731
    a = torch.randn(n, 3, 3, generator=g)
    spd = a @ a.transpose(-1, -2) + 3 * torch.eye(3)
    return {
        "Normal": (dist.Normal(real(), pos() * 1e-3), dist.Normal(real() * 1e3, pos() * 1e3)),
        "HalfNormal": (dist.HalfNormal(pos()), dist.HalfNormal(pos() * 100)),
        "LogNormal": (dist.LogNormal(real(), pos()), dist.LogNormal(real(), pos() * 10)),
        "MultivariateNormal": (dist.MultivariateNormal(real(3), spd), dist.MultivariateNormal(real(3), spd * 1e4)),
        "Gamma": (dist.Gamma(pos(), pos()), dist.Gamma(pos(), pos())),
        "Beta": (dist.Beta(pos(), pos()), dist.Beta(pos(), pos())),
        "Exponential": (dist.Exponential(pos()), dist.Exponential(pos())),
        "Dirichlet": (dist.Dirichlet(pos()[:, None].expand(n, 3)), dist.Dirichlet(torch.rand(n, 3, generator=g) + 1)),
        "Poisson": (dist.Poisson(pos()), dist.Poisson(pos() * 7)),
        "Bernoulli": (dist.Bernoulli(logits=real()), dist.Bernoulli(logits=real())),
        "Binomial": (dist.Binomial(6, logits=real()), dist.Binomial(6, logits=real())),
        "Categorical": (dist.Categorical(logits=real(5)), dist.Categorical(logits=real(5))),
        "OneHotCategorical": (dist.OneHotCategorical(logits=real(5)), dist.OneHotCategorical(logits=real(5))),
    }


def _params(d):
    if isinstance(d, dist.TransformedDistribution):
        return _params(d.base_dist)
    if isinstance(d, dist.MultivariateNormal):
        return d.loc, d.scale_tril
    if isinstance(d, (dist.Categorical, dist.OneHotCategorical, dist.Bernoulli, dist.Binomial)):
        return (d.logits,)
    return tuple(getattr(d, name) for name in d.arg_constraints)


@pytest.mark.parametrize("family", sorted(_pairs(torch.Generator())))
def test_lam_zero_or_one_returns_the_weighted_component_exactly(family, float64):
    p, q = _pairs(torch.Generator().manual_seed(0))[family]
    lam = torch.tensor([1.0, 0.0, 1.0, 0.0])
    pooled = log_linear_pool(p, q, lam)
    for got, from_p, from_q in zip(_params(pooled), _params(p), _params(q)):
        expected = torch.where(lam.reshape((4,) + (1,) * (got.dim() - 1)) == 1, from_p, from_q)
        if family in ("Categorical", "OneHotCategorical"):
            # the pooled distribution normalises its logits again: equal to rounding
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
        else:
            assert torch.equal(got, expected), family
    for lam in (0.0, 1.0):
        weighted = p if lam == 1.0 else q
        for got, expected in zip(_params(log_linear_pool(p, q, lam)), _params(weighted)):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-15 if "Categorical" in family else 0)


def _random_cov(n, log10_cond, shift, g):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = 10 ** (torch.rand(n, generator=g, dtype=torch.float64) * log10_cond - log10_cond / 2 + shift)
    return (q * eig) @ q.T


def test_ill_conditioned_mvn_pools_in_float32_are_finite_and_accurate():
    # condition numbers 1e6..1e12 (what a float32 Cholesky still accepts), scales 1e-3..1e3
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for trial in range(20):
        n = 2 + trial % 4
        cov_p, cov_q = (_random_cov(n, 6 + trial % 7, (trial % 5 - 2) * 1.5, g) for _ in range(2))
        loc_p, loc_q = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
        lam = [0.5, 1e-6, 1 - 1e-6, 0.1, 0.9][trial % 5]
        p = dist.MultivariateNormal(loc_p.float(), scale_tril=torch.linalg.cholesky(cov_p).float())
        q = dist.MultivariateNormal(loc_q.float(), scale_tril=torch.linalg.cholesky(cov_q).float())
        pooled = log_linear_pool(p, q, lam)
        assert torch.isfinite(pooled.loc).all() and torch.isfinite(pooled.scale_tril).all()
        assert torch.isfinite(pooled.log_prob(pooled.loc + 0.1)).all()
        # against the float64 pool of the same float32 inputs, in Mahalanobis units of the pool
        p64 = dist.MultivariateNormal(p.loc.double(), scale_tril=p.scale_tril.double())
        q64 = dist.MultivariateNormal(q.loc.double(), scale_tril=q.scale_tril.double())
        ref = log_linear_pool(p64, q64, lam)
        z = torch.linalg.solve_triangular(ref.scale_tril, (pooled.loc.double() - ref.loc)[:, None], upper=False)
        worst = max(worst, float(z.norm()))
    assert worst < 1e-2


def test_an_impossible_class_stays_impossible(float64):
    p = dist.Categorical(torch.tensor([0.0, 0.4, 0.6, 0.0]))
    q = dist.Categorical(torch.tensor([0.5, 0.2, 0.3, 0.0]))
    for lam in (1e-9, 0.5, 1 - 1e-9):
        probs = log_linear_pool(p, q, lam).probs
        assert probs[0] == 0 and probs[3] == 0 and torch.isclose(probs.sum(), torch.tensor(1.0))
    # exact: the pool renormalises p^lam q^(1-lam) over the classes possible under both
    unnorm = torch.tensor([0.0, 0.4**0.3 * 0.2**0.7, 0.6**0.3 * 0.3**0.7, 0.0])
    torch.testing.assert_close(log_linear_pool(p, q, 0.3).probs, unnorm / unnorm.sum(), rtol=1e-14, atol=0)
    one_hot = log_linear_pool(dist.OneHotCategorical(p.probs), dist.OneHotCategorical(q.probs), 0.5)
    assert one_hot.probs[0] == 0


@pytest.mark.parametrize("family", [dist.Bernoulli, lambda probs: dist.Binomial(4, probs)])
def test_a_certain_binary_outcome_stays_certain(family, float64):
    """Certain in its probabilities and in its log-probabilities: 0 at the certain outcome,
    -inf at the others, for lam inside (0, 1) and at its ends (torch's formula gave NaN there: a
    probe found a NaN loss from a row of probs 1)."""
    certain = family(torch.tensor([0.0, 1.0]))
    for lam in (0.5, 1.0):
        pooled = log_linear_pool(certain, family(torch.tensor([0.3, 0.8])), lam)
        assert torch.equal(pooled.probs, torch.tensor([0.0, 1.0]))
        n = certain.mean.max()  # 1, or the 4 trials of the Binomial
        assert pooled.log_prob(torch.tensor([0.0, 1.0]) * n).tolist() == [0.0, 0.0]
        assert pooled.log_prob(torch.tensor([1.0, 0.0]) * n).tolist() == [-math.inf, -math.inf]
    # the gradient of a row's probs through a certain partner is finite
    probs = torch.tensor([0.3, 0.8], requires_grad=True)
    log_linear_pool(certain, family(probs), 0.5).log_prob(torch.tensor([0.0, 1.0]) * n).sum().backward()
    assert probs.grad.tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "p, q",
    [
        (dist.Categorical(torch.tensor([0.5, 0.5, 0.0])), dist.Categorical(torch.tensor([0.0, 0.0, 1.0]))),
        (dist.OneHotCategorical(torch.tensor([1.0, 0.0])), dist.OneHotCategorical(torch.tensor([0.0, 1.0]))),
        (dist.Bernoulli(torch.tensor([0.5, 0.0])), dist.Bernoulli(torch.tensor([0.5, 1.0]))),
        (dist.Binomial(3, torch.tensor(1.0)), dist.Binomial(3, torch.tensor(0.0))),
    ],
)
def test_disjoint_supports_raise(p, q):
    with pytest.raises(ValueError, match=f"two {type(p).__name__} distributions with disjoint supports"):
        log_linear_pool(p, q, 0.5)
    # at the ends there is no product to normalise: the weighted component is the pool
    assert torch.allclose(log_linear_pool(p, q, 0.0).probs, q.probs)


def test_lam_is_taken_in_the_dtype_of_the_model():
    f64 = dict(dtype=torch.float64)
    pooled = log_linear_pool(dist.Normal(torch.tensor(1.0, **f64), 1.0), dist.Normal(torch.tensor(0.0, **f64), 1.0), 0.3)
    assert pooled.loc.dtype == torch.float64 and pooled.loc.item() == 0.3
    # a float32 lam pools float64 parameters in float64, float32 parameters stay float32
    lam32 = torch.tensor([0.25], dtype=torch.float32)
    logits = torch.tensor([[0.1, 0.2]], **f64)
    assert log_linear_pool(dist.Categorical(logits=logits), dist.Categorical(logits=logits), lam32).logits.dtype == torch.float64
    gamma = dist.Gamma(torch.ones(1), torch.ones(1))
    assert log_linear_pool(gamma, gamma, lam32.double()).rate.dtype == torch.float32
    # the linear pool weighs the log-densities with lam in their dtype
    p, q = dist.Normal(torch.tensor(0.0, **f64), 1.0), dist.Normal(torch.tensor(1.0, **f64), 1.0)
    y = torch.tensor(0.4, **f64)
    expected = torch.logaddexp(torch.log(torch.tensor(0.3, **f64)) + p.log_prob(y), torch.log(torch.tensor(0.7, **f64)) + q.log_prob(y))
    assert LinearPool(p, q, 0.3).log_prob(y) == expected


def test_a_linear_pool_scores_a_label_outside_a_rows_support_as_impossible_there():
    """A row is also scored at its partner's label; where the support varies by row (the
    Binomial ``total_count`` the log-linear refusal sends to ``fusion='linear'``, a Uniform's
    bounds), that label has probability 0 under the row, instead of a validation error."""
    binomial_p, binomial_q = dist.Binomial(2.0, probs=torch.tensor(0.5)), dist.Binomial(9.0, probs=torch.tensor(0.5))
    y = torch.tensor(8.0)
    expected = torch.log(torch.tensor(0.7)) + binomial_q.log_prob(y)  # p(8) = 0 under Binomial(2)
    torch.testing.assert_close(LinearPool(binomial_p, binomial_q, 0.3).log_prob(y), expected)
    uniform_p, uniform_q = dist.Uniform(0.0, 1.0), dist.Uniform(1.0, 2.0)
    for value, weight in ((0.5, 0.3), (1.5, 0.7)):
        torch.testing.assert_close(LinearPool(uniform_p, uniform_q, 0.3).log_prob(torch.tensor(value)),
                                   torch.log(torch.tensor(weight)))
    assert LinearPool(binomial_p, binomial_p, 0.3).log_prob(y) == -torch.inf
