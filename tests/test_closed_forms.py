"""
The closed forms of the fused likelihood equal the general path (pool, then label-fused
log-likelihood) in value and gradient.
"""
import pyro.distributions as dist
import pytest
import torch

from pyro_probmix.closed_forms import NormalProbMixLikelihood, closed_form_likelihood
from pyro_probmix.labels import DiracKernel, GaussianKernel, SmoothingKernel, fused_label_log_prob
from pyro_probmix.pooling import log_linear_pool
from pyro_probmix.rows import take_rows


def general_path(loc, scale, partner, lam, y, beta, label_fusion):
    fn = dist.Normal(loc, scale)
    base = log_linear_pool(fn, take_rows(fn, partner, -1), lam)
    return fused_label_log_prob(base, y, y[partner], lam, GaussianKernel(beta), label_fusion)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("label_fusion", ["linear", "log_linear"])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_normal_closed_form_equals_the_general_path_in_value_and_gradient(dtype, label_fusion, beta):
    """Against the general path in float64: equal to 1e-11 in float64; in float32 the closed form
    is the more accurate of the two (the general path's loc gradients err by up to 3e-2 here)."""
    torch.manual_seed(0)
    n = 64
    loc64 = torch.randn(n, dtype=torch.float64)
    scale64 = (torch.randn(n, dtype=torch.float64) * 2.3).exp()  # ratios from 1e-3 to 1e3
    lam64 = torch.rand(n, dtype=torch.float64)
    lam64[:4] = torch.tensor([0.0, 1.0, 0.0, 1.0])  # both ends
    partner = torch.randperm(n)
    y64, weights = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)

    loc, scale = loc64.to(dtype).requires_grad_(), scale64.to(dtype).requires_grad_()
    lam, y = lam64.to(dtype), y64.to(dtype)
    fused = closed_form_likelihood(dist.Normal(loc, scale), partner, -1, lam, y[partner], GaussianKernel(beta),
                                   label_fusion, "expected_log")
    assert isinstance(fused, NormalProbMixLikelihood)
    fast = fused.log_prob(y)
    fast_grads = torch.autograd.grad((fast * weights.to(dtype)).sum(), (loc, scale))

    loc64.requires_grad_(), scale64.requires_grad_()
    slow = general_path(loc64, scale64, partner, lam64, y64, beta, label_fusion)
    slow_grads = torch.autograd.grad((slow * weights).sum(), (loc64, scale64))
    rtol = 1e-5 if dtype == torch.float32 else 1e-11
    assert torch.allclose(fast.double(), slow, rtol=rtol, atol=rtol)
    for f, s in zip(fast_grads, slow_grads):
        assert torch.allclose(f.double(), s, rtol=10 * rtol, atol=10 * rtol)
    pooled = fused.base
    reference = log_linear_pool(dist.Normal(loc, scale), dist.Normal(loc[partner], scale[partner]), lam)
    assert torch.equal(pooled.loc, reference.loc) and torch.equal(pooled.scale, reference.scale)


# scale ratios up to 1e19 (1 / sqrt(tiny)), the documented range of the Normal pool in float32
@pytest.mark.parametrize("scales", [(1e9, 1e-10), (1e9, 1e-9), (1e18, 1.0)])
def test_normal_closed_form_at_lambda_one_is_the_rows_own_log_density_in_float32(scales):
    # precisions were taken relative to the smaller scale: at lam = 1 the row's own relative
    # precision (1e-38 at scales 1e9 and 1e-10) left float32's normal range (-21.849 against
    # -21.887; scale gradients 40 % off at 1e9 and 1e-9, 0 at 1e18 and 1)
    loc = torch.tensor([1e8, -1e8])
    scale = torch.tensor(scales).requires_grad_()
    y, partner, lam = torch.tensor([1e8 + 7e9, 0.0]), torch.tensor([1, 0]), torch.tensor([1.0, 0.0])
    fused = closed_form_likelihood(dist.Normal(loc, scale), partner, -1, lam, y[partner], GaussianKernel(0.0),
                                   "linear", "expected_log")
    value = fused.log_prob(y)[0]
    (grad,) = torch.autograd.grad(value, scale)
    scale64 = scale.detach().double().requires_grad_()
    plain = dist.Normal(loc.double()[0], scale64[0]).log_prob(y.double()[0])
    (plain_grad,) = torch.autograd.grad(plain, scale64)
    torch.testing.assert_close(value.double(), plain, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad.double(), plain_grad, rtol=1e-5, atol=0)


def test_closed_forms_cover_only_their_settings():
    d = dist.Normal(torch.zeros(3), 1.0)
    args = torch.tensor([1, 2, 0]), -1, torch.full((3,), 0.5), torch.zeros(3)
    assert closed_form_likelihood(d, *args, DiracKernel(), "linear", "expected_log") is None
    assert closed_form_likelihood(d, *args, GaussianKernel(0.0), "linear", "log_expected") is None
    bern = dist.Bernoulli(torch.full((3,), 0.5))
    assert closed_form_likelihood(bern, *args, SmoothingKernel(0.1), "linear", "expected_log") is None
    assert closed_form_likelihood(torch.distributions.Normal(torch.zeros(3), 1.0), *args, GaussianKernel(0.0),
                                  "linear", "expected_log") is not None


@pytest.mark.parametrize("label_fusion", ["linear", "log_linear"])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_normal_closed_form_has_exact_first_and_second_derivatives_in_every_input(label_fusion, beta):
    """Against finite differences (gradcheck, gradgradcheck in float64): the parameters and both
    labels, to first and second order, so that Hessians (Laplace approximations, Newton steps,
    gradient penalties) through a fused Normal site are right."""
    torch.manual_seed(1)
    n = 6
    partner = torch.tensor([3, 2, 1, 0, 5, 4])
    lam = torch.rand(n, dtype=torch.float64)
    loc, y = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    scale = (0.5 * torch.randn(n, dtype=torch.float64)).exp()

    def log_prob(loc, scale, y, y_partner):
        fused = closed_form_likelihood(dist.Normal(loc, scale), partner, -1, lam, y_partner, GaussianKernel(beta),
                                       label_fusion, "expected_log")
        assert isinstance(fused, NormalProbMixLikelihood)
        return fused.log_prob(y)

    inputs = tuple(t.clone().requires_grad_() for t in (loc, scale, y, y[partner]))
    assert torch.autograd.gradcheck(log_prob, inputs)
    assert torch.autograd.gradgradcheck(log_prob, inputs)


def test_hessian_through_a_fused_normal_site_equals_the_brute_force_hessian():
    """The probe that found second derivatives silently zero: (w, b, log sigma) of a linear
    regression, the handler's Hessian against the Hessian of the fused objective written out."""
    from pyro import plate, poutine, sample
    from pyro.ops.hessian import hessian

    from pyro_probmix import probmix

    torch.manual_seed(0)
    x = torch.randn(6)
    y = 2 * x + 0.3 * torch.randn(6)
    theta = torch.tensor([0.5, 0.0, -0.5], requires_grad=True)

    def model():
        with plate("data", 6):
            sample("y", dist.Normal(theta[0] * x + theta[1], theta[2].exp()), obs=y)

    with probmix(lam=0.3) as handler:
        fused = poutine.trace(model).get_trace().log_prob_sum()
    partner, lam = handler.pairings["data"].partner, handler.pairings["data"].lam
    loc, scale = theta[0] * x + theta[1], theta[2].exp().expand(6)
    precision = lam / scale**2 + (1 - lam) / scale[partner] ** 2
    mean = (lam * loc / scale**2 + (1 - lam) * loc[partner] / scale[partner] ** 2) / precision
    pooled = dist.Normal(mean, precision.rsqrt())
    written_out = (lam * pooled.log_prob(y) + (1 - lam) * pooled.log_prob(y[partner])).sum()
    assert torch.allclose(fused, written_out, rtol=1e-6)
    assert torch.allclose(hessian(fused, theta), hessian(written_out, theta), rtol=1e-4, atol=1e-4)
