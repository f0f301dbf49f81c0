import pyro.distributions as dist
import pytest
import torch
import torch.distributions as td
from torch.distributions import transforms as T

from pyro_probmix.pooling import linear_pool
from pyro_probmix.rows import register_rows, take_rows

pytestmark = pytest.mark.usefixtures("float64")

SHAPE = (3, 5)


def _pos(g, *shape):
    return torch.rand(SHAPE + shape, generator=g) + 0.5


def _real(g, *shape):
    return torch.randn(SHAPE + shape, generator=g)


def _simplex(g, k=4):
    return torch.softmax(_real(g, k), -1)


def _spd(g, n=3):
    a = torch.randn(SHAPE + (n, n), generator=g)
    return a @ a.transpose(-1, -2) + n * torch.eye(n)


# every family with batch dims, built with batch_shape (3, 5)
FAMILIES = {
    "Normal": lambda g: dist.Normal(_real(g), _pos(g)),
    "torch.Normal": lambda g: td.Normal(_real(g), _pos(g)),
    "LogNormal": lambda g: dist.LogNormal(_real(g), _pos(g)),
    "torch.LogNormal": lambda g: td.LogNormal(_real(g), _pos(g)),
    "HalfNormal": lambda g: dist.HalfNormal(_pos(g)),
    "HalfCauchy": lambda g: dist.HalfCauchy(_pos(g)),
    "StudentT": lambda g: dist.StudentT(_pos(g) + 2, _real(g), _pos(g)),
    "Cauchy": lambda g: dist.Cauchy(_real(g), _pos(g)),
    "Laplace": lambda g: dist.Laplace(_real(g), _pos(g)),
    "Logistic": lambda g: dist.Logistic(_real(g), _pos(g)),
    "Gumbel": lambda g: dist.Gumbel(_real(g), _pos(g)),
    "Uniform": lambda g: dist.Uniform(-_pos(g), _pos(g)),
    "Exponential": lambda g: dist.Exponential(_pos(g)),
    "Gamma": lambda g: dist.Gamma(_pos(g), _pos(g)),
    "InverseGamma": lambda g: dist.InverseGamma(_pos(g), _pos(g)),
    "Chi2": lambda g: dist.Chi2(_pos(g)),
    "Beta": lambda g: dist.Beta(_pos(g), _pos(g)),
    "Kumaraswamy": lambda g: dist.Kumaraswamy(_pos(g), _pos(g)),
    "Weibull": lambda g: dist.Weibull(_pos(g), _pos(g)),
    "Pareto": lambda g: dist.Pareto(_pos(g), _pos(g)),
    "VonMises": lambda g: dist.VonMises(_real(g), _pos(g)),
    "AsymmetricLaplace": lambda g: dist.AsymmetricLaplace(_real(g), _pos(g), _pos(g)),
    "Poisson": lambda g: dist.Poisson(_pos(g)),
    "GammaPoisson": lambda g: dist.GammaPoisson(_pos(g), _pos(g)),
    "NegativeBinomial": lambda g: dist.NegativeBinomial(_pos(g), logits=_real(g)),
    "Geometric": lambda g: dist.Geometric(torch.sigmoid(_real(g))),
    "Bernoulli": lambda g: dist.Bernoulli(logits=_real(g)),
    "torch.Bernoulli": lambda g: td.Bernoulli(probs=torch.sigmoid(_real(g))),
    "Binomial": lambda g: dist.Binomial(torch.randint(3, 9, SHAPE, generator=g).double(), logits=_real(g)),
    "BetaBinomial": lambda g: dist.BetaBinomial(_pos(g), _pos(g), total_count=7),
    "ZeroInflatedPoisson": lambda g: dist.ZeroInflatedPoisson(_pos(g), gate=torch.sigmoid(_real(g))),
    "Categorical": lambda g: dist.Categorical(_simplex(g)),
    "OneHotCategorical": lambda g: dist.OneHotCategorical(logits=_real(g, 4)),
    "Multinomial": lambda g: dist.Multinomial(6, _simplex(g)),
    "DirichletMultinomial": lambda g: dist.DirichletMultinomial(_pos(g, 4), total_count=6),
    "Dirichlet": lambda g: dist.Dirichlet(_pos(g, 4)),
    "MultivariateNormal": lambda g: dist.MultivariateNormal(_real(g, 3), _spd(g)),
    "torch.MultivariateNormal": lambda g: td.MultivariateNormal(_real(g, 3), precision_matrix=_spd(g)),
    "LowRankMultivariateNormal": lambda g: dist.LowRankMultivariateNormal(_real(g, 3), _real(g, 3, 2), _pos(g, 3)),
    "MultivariateStudentT": lambda g: dist.MultivariateStudentT(_pos(g) + 2, _real(g, 3), torch.linalg.cholesky(_spd(g))),
    "Wishart": lambda g: dist.Wishart(_pos(g) + 8, _spd(g)),
    "LKJCholesky": lambda g: dist.LKJCholesky(3, _pos(g)),
    "FoldedDistribution": lambda g: dist.FoldedDistribution(dist.Normal(_real(g), _pos(g))),
    "Stable": lambda g: dist.Stable(torch.rand(SHAPE, generator=g) + 0.5, torch.rand(SHAPE, generator=g) - 0.5, _pos(g)),
    "ZeroInflatedNegativeBinomial": lambda g: dist.ZeroInflatedNegativeBinomial(_pos(g), logits=_real(g), gate_logits=_real(g)),
    "ProjectedNormal": lambda g: dist.ProjectedNormal(_real(g, 3)),
    "RelaxedBernoulli": lambda g: dist.RelaxedBernoulli(torch.tensor(0.5), logits=_real(g)),
    "RelaxedOneHotCategorical": lambda g: dist.RelaxedOneHotCategorical(torch.tensor(0.5), logits=_real(g, 4)),
    "LogisticNormal": lambda g: dist.LogisticNormal(_real(g, 3), _pos(g, 3)),
    "MixtureOfDiagNormals": lambda g: dist.MixtureOfDiagNormals(_real(g, 2, 3), _pos(g, 2, 3), _real(g, 2)),
    "ImproperUniform": lambda g: dist.ImproperUniform(torch.distributions.constraints.real, SHAPE, ()),
    "Delta": lambda g: dist.Delta(_real(g, 2), _real(g), event_dim=1),
    "Independent(Normal)": lambda g: dist.Normal(_real(g, 4), _pos(g, 4)).to_event(1),
    "Masked(Normal)": lambda g: dist.Normal(_real(g), _pos(g)).mask(torch.rand(SHAPE, generator=g) < 0.5),
    "Expanded(Normal)": lambda g: dist.Normal(_real(g)[:1], 1.0).expand(SHAPE),
    "MaskedMixture": lambda g: dist.MaskedMixture(
        torch.rand(SHAPE, generator=g) < 0.5, dist.Normal(_real(g), _pos(g)), dist.Normal(_real(g)[:1], 2.0)
    ),
    "MixtureSameFamily": lambda g: dist.MixtureSameFamily(
        dist.Categorical(_simplex(g, 2)), dist.Normal(_real(g, 2), _pos(g, 2))
    ),
    "Transformed(Normal, Affine with batch params, Exp)": lambda g: dist.TransformedDistribution(
        dist.Normal(_real(g), _pos(g)), [T.AffineTransform(_real(g), _pos(g)), T.ExpTransform()]
    ),
    "Transformed(scalar base, Affine with batch params)": lambda g: td.TransformedDistribution(
        td.Normal(0.0, 1.0), T.ComposeTransform([T.AffineTransform(_real(g), _pos(g)), T.SigmoidTransform()])
    ),
    "Transformed(MVN, Independent(Affine))": lambda g: dist.TransformedDistribution(
        dist.MultivariateNormal(_real(g, 3), _spd(g)), T.IndependentTransform(T.AffineTransform(_real(g, 3), 2.0), 1)
    ),
    "Transformed(Dirichlet, StickBreaking.inv)": lambda g: dist.TransformedDistribution(
        dist.Dirichlet(_pos(g, 4)), T.StickBreakingTransform().inv
    ),
    # the parameters of an inverse sit in the transform it inverts, a CDF's in its distribution
    "Transformed(Normal, Affine.inv with batch params)": lambda g: dist.TransformedDistribution(
        dist.Normal(_real(g), _pos(g)), T.AffineTransform(_real(g), _pos(g)).inv
    ),
    "Transformed(Normal, CDF of a Normal with batch params)": lambda g: dist.TransformedDistribution(
        dist.Normal(_real(g), _pos(g)), T.CumulativeDistributionTransform(td.Normal(_real(g), _pos(g)))
    ),
    "Transformed(Normal, CDF of a Normal shared by all rows)": lambda g: dist.TransformedDistribution(
        dist.Normal(_real(g), _pos(g)), T.CumulativeDistributionTransform(td.Normal(0.0, 2.0))
    ),
}


def _sample(family, d):
    # ImproperUniform has no sampler: any real value has density 1
    return torch.randn(SHAPE) if family == "ImproperUniform" else d.sample()


# torch's Wishart sampler warns when it redraws a singular sample
@pytest.mark.filterwarnings("ignore:Singular sample detected")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_selected_rows_score_like_the_original_rows(family):
    g = torch.Generator().manual_seed(0)
    d = FAMILIES[family](g)
    assert d.batch_shape == SHAPE, family
    torch.manual_seed(0)
    value = _sample(family, d)
    event_dim = len(d.event_shape)
    for dim, index in ((-1, torch.tensor([4, 0, 0, 3, 1, 2])), (-2, torch.tensor([2, 0, 2, 1]))):
        rows = take_rows(d, index, dim)
        expected_shape = list(SHAPE)
        expected_shape[dim] = len(index)
        assert rows.batch_shape == torch.Size(expected_shape) and rows.event_shape == d.event_shape
        selected = rows.log_prob(value.index_select(dim - event_dim, index))
        # equal to rounding: torch's vectorised and scalar loops round transcendental functions
        # differently, so the same entry of tensors of two shapes may differ in the last bit
        expected = d.log_prob(value).index_select(dim, index)
        torch.testing.assert_close(selected, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.filterwarnings("ignore:Singular sample detected")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_linear_pool_with_partner_rows_works_for_every_family(family):
    # fusion="linear" needs nothing but take_rows and log_prob
    g = torch.Generator().manual_seed(1)
    d = FAMILIES[family](g)
    partner = take_rows(d, torch.tensor([4, 3, 2, 1, 0]), -1)
    lam = torch.rand(SHAPE, generator=g)
    torch.manual_seed(1)
    value = _sample(family, d)
    # a value outside a component's support (a Pareto's scale varies by row) has density 0 there
    density = lambda c: torch.where(c.support.check(value), c.log_prob(value).exp(), 0.0)  # noqa: E731
    expected = torch.log(lam * density(d) + (1 - lam) * density(partner))
    torch.testing.assert_close(linear_pool(d, partner, lam).log_prob(value), expected, rtol=1e-12, atol=1e-12)


def test_torch_classes_stay_torch_classes_and_pyro_stay_pyro():
    g = torch.Generator().manual_seed(1)
    assert type(take_rows(td.Normal(_real(g), 1.0), torch.tensor([0]), -1)) is td.Normal
    assert type(take_rows(dist.Normal(_real(g), 1.0), torch.tensor([0]), -1)) is dist.Normal
    assert type(take_rows(dist.LogNormal(_real(g), 1.0), torch.tensor([0]), -1)) is dist.LogNormal


def test_parameters_shared_by_all_rows_stay_shared():
    d = dist.TransformedDistribution(dist.Normal(torch.zeros(5), 1.0), T.AffineTransform(2.0, torch.tensor([3.0])))
    t = take_rows(d, torch.tensor([4, 4]), -1).transforms[0]
    assert t.loc == 2.0 and torch.equal(t.scale, torch.tensor([3.0]))


def test_a_transform_with_unknown_tensors_is_refused_by_name():
    class Shift(T.Transform):
        domain = codomain = torch.distributions.constraints.real
        bijective = True

        def __init__(self, shift):
            super().__init__()
            self.shift = shift

        def _call(self, x):
            return x + self.shift

        def _inverse(self, y):
            return y - self.shift

        def log_abs_det_jacobian(self, x, y):
            return torch.zeros_like(x)

    d = dist.TransformedDistribution(dist.Normal(torch.zeros(5), 1.0), Shift(torch.arange(5.0)))
    with pytest.raises(TypeError, match=r"its Shift carries tensors \['shift'\].*register_rows"):
        take_rows(d, torch.tensor([0]), -1)


def test_a_transform_holding_a_distribution_with_row_parameters_is_refused_by_name():
    class QuantileShift(T.Transform):
        domain = codomain = torch.distributions.constraints.real
        bijective = True

        def __init__(self, reference):
            super().__init__()
            self.reference = reference

        def _call(self, x):
            return x + self.reference.mean

        def _inverse(self, y):
            return y - self.reference.mean

        def log_abs_det_jacobian(self, x, y):
            return torch.zeros_like(x)

    shifted = dist.TransformedDistribution(dist.Normal(torch.zeros(5), 1.0), QuantileShift(td.Normal(torch.arange(5.0), 1.0)))
    with pytest.raises(TypeError, match=r"its QuantileShift carries tensors \['reference'\].*register_rows"):
        take_rows(shifted, torch.tensor([0]), -1)
    shared = dist.TransformedDistribution(dist.Normal(torch.zeros(5), 1.0), QuantileShift(td.Normal(1.0, 1.0)))
    assert take_rows(shared, torch.tensor([0, 0]), -1).transforms[0] is shared.transforms[0]


class ScaledPoisson(td.Poisson):
    """A user's subclass whose constructor changes its argument before storing it."""

    def __init__(self, rate, validate_args=None):
        super().__init__(2 * rate, validate_args=validate_args)


class NamedPoisson(td.Poisson):
    """A user's subclass whose constructor stores its argument as given."""

    def __init__(self, rate, name="counts", validate_args=None):
        self.name = name
        super().__init__(rate, validate_args=validate_args)


def test_a_subclass_whose_constructor_transforms_its_arguments_is_refused():
    # rebuilding the partner as ScaledPoisson(rate=d.rate) would double its rate again
    with pytest.raises(TypeError, match=r"cannot select rows of ScaledPoisson: rebuilt from its own parameters "
                       r"\['rate'\], it stores other values of \['rate'\].*register_rows\(ScaledPoisson\)"):
        take_rows(ScaledPoisson(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([2, 0]), -1)
    rows = take_rows(NamedPoisson(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([2, 0]), -1)
    assert type(rows) is NamedPoisson and rows.rate.tolist() == [3.0, 1.0]


def test_a_family_without_readable_parameters_names_the_class_and_the_registry():
    class Opaque(td.Distribution):
        arg_constraints = {"theta": torch.distributions.constraints.real}

        def __init__(self, theta):
            self._theta = theta
            super().__init__(theta.shape, validate_args=False)

    with pytest.raises(TypeError, match=r"cannot select rows of Opaque.*register_rows\(Opaque\)"):
        take_rows(Opaque(torch.zeros(3)), torch.tensor([0]), -1)


def test_a_family_whose_expand_wraps_itself_is_refused_when_expanded_not_recursed():
    # MaskedMixture.expand returns an ExpandedDistribution of itself (it recursed until
    # RecursionError); its rows at its own shape come from its rule, an expansion is refused
    mixture = dist.MaskedMixture(torch.tensor([True]), dist.Normal(0.0, 1.0), dist.Normal(1.0, 2.0))
    expanded = mixture.expand((4,))
    with pytest.raises(TypeError, match=r"cannot select rows of MaskedMixture expanded to batch_shape \(4,\).*"
                       r"register_rows\(MaskedMixture\)"):
        take_rows(expanded, torch.tensor([0, 2]), -1)


def test_register_rows_rejects_non_distributions():
    with pytest.raises(TypeError, match="Distribution subclass"):
        register_rows(int)


def test_dim_must_be_a_negative_batch_dim():
    with pytest.raises(ValueError, match=r"dim -2 of Normal with batch_shape \(5,\)"):
        take_rows(dist.Normal(torch.zeros(5), 1.0), torch.tensor([0]), -2)
