"""
The paper's equivalence theorems (§4, Appendix D) as exact identities: the ProbMix objective the
handler builds equals hand-written mixup / manifold mixup with the same lambda and pairs, in
value (up to the stated constant) and in gradient.
"""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_probmix import embedding, probmix

N, D, C = 12, 3, 4


pytestmark = pytest.mark.usefixtures("fresh_pyro")


def _no_guide(*args, **kwargs):
    pass


def probmix_loss(model, params, *args, **handler_kwargs):
    """-ELBO of ``model`` under probmix, its gradient w.r.t. ``params``, and the pairing used."""
    handler = probmix(lam=dist.Uniform(0.0, 1.0), **handler_kwargs)
    with handler:
        loss = Trace_ELBO().differentiable_loss(model, _no_guide, *args)
        pairing = handler.pairings["data"]
    grads = torch.autograd.grad(loss, params)
    return loss, grads, pairing.partner, pairing.lam


def reference_loss(loss, params):
    return loss, torch.autograd.grad(loss, params)


def assert_equal_up_to(value, grads, ref_value, ref_grads, constant=0.0):
    assert torch.allclose(value, ref_value + constant, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-10)


def _data(classification):
    x = torch.randn(N, D)
    y = torch.randint(C, (N,)) if classification else torch.randn(N)
    return x, y


def test_theorem_4_3_probmix_is_mixup_of_logits():
    x, y = _data(True)
    w1, w2 = torch.randn(D, 8, requires_grad=True), torch.randn(8, C, requires_grad=True)

    def logits_of(x):
        return torch.tanh(x @ w1) @ w2

    def model(x, y):
        with pyro.plate("data", N):
            pyro.sample("y", dist.Categorical(logits=logits_of(x)), obs=y)

    loss, grads, j, lam = probmix_loss(model, (w1, w2), x, y)
    logits = logits_of(x)
    mixed = torch.log_softmax(lam[:, None] * logits + (1 - lam[:, None]) * logits[j], -1)
    mix = -(lam * mixed.gather(-1, y[:, None])[:, 0] + (1 - lam) * mixed.gather(-1, y[j][:, None])[:, 0]).sum()
    assert_equal_up_to(loss, grads, *reference_loss(mix, (w1, w2)))


def _mlp_regression():
    w1, w2 = torch.randn(D, 8, requires_grad=True), torch.randn(8, requires_grad=True)
    return (w1, w2), lambda x: torch.tanh(x @ w1) @ w2


@pytest.mark.parametrize("label_fusion", ["linear", "log_linear"])
def test_theorem_4_4_probmix_is_mixup_of_means(label_fusion):
    x, y = _data(False)
    sigma = 0.7
    params, mean_of = _mlp_regression()

    def model(x, y):
        with pyro.plate("data", N):
            pyro.sample("y", dist.Normal(mean_of(x), sigma), obs=y)

    loss, grads, j, lam = probmix_loss(model, params, x, y, label_fusion=label_fusion)
    m = lam * mean_of(x) + (1 - lam) * mean_of(x)[j]
    mixup = -dist.Normal(m, sigma).log_prob(lam * y + (1 - lam) * y[j]).sum()
    # linear label fusion differs from mixed labels by a constant in theta:
    # lam (y_i - m)^2 + (1 - lam) (y_j - m)^2 = (ybar - m)^2 + lam (1 - lam) (y_i - y_j)^2
    constant = (lam * (1 - lam) * (y - y[j]) ** 2).sum() / (2 * sigma**2) if label_fusion == "linear" else 0.0
    assert_equal_up_to(loss, grads, *reference_loss(mixup, params), constant=constant)


def test_theorem_4_5_logistic_regression_probmix_is_input_mixup():
    x, y = _data(True)
    a, b = torch.randn(D, C, requires_grad=True), torch.randn(C, requires_grad=True)

    def model(x, y):
        with pyro.plate("data", N):
            pyro.sample("y", dist.Categorical(logits=x @ a + b), obs=y)

    loss, grads, j, lam = probmix_loss(model, (a, b), x, y)
    x_mix = lam[:, None] * x + (1 - lam[:, None]) * x[j]
    log_p = torch.log_softmax(x_mix @ a + b, -1)
    mixup = -(lam * log_p.gather(-1, y[:, None])[:, 0] + (1 - lam) * log_p.gather(-1, y[j][:, None])[:, 0]).sum()
    assert_equal_up_to(loss, grads, *reference_loss(mixup, (a, b)))


@pytest.mark.parametrize("label_fusion", ["linear", "log_linear"])
def test_theorem_4_6_linear_regression_probmix_is_input_mixup(label_fusion):
    x, y = _data(False)
    a, b, sigma = torch.randn(D, requires_grad=True), torch.randn((), requires_grad=True), 1.3

    def model(x, y):
        with pyro.plate("data", N):
            pyro.sample("y", dist.Normal(x @ a + b, sigma), obs=y)

    loss, grads, j, lam = probmix_loss(model, (a, b), x, y, label_fusion=label_fusion)
    x_mix = lam[:, None] * x + (1 - lam[:, None]) * x[j]
    mixup = -dist.Normal(x_mix @ a + b, sigma).log_prob(lam * y + (1 - lam) * y[j]).sum()
    constant = (lam * (1 - lam) * (y - y[j]) ** 2).sum() / (2 * sigma**2) if label_fusion == "linear" else 0.0
    assert_equal_up_to(loss, grads, *reference_loss(mixup, (a, b)), constant=constant)


def test_theorem_4_7_mprobmix_with_mean_propagation_is_manifold_mixup():
    x, y = _data(False)
    enc, dec = torch.randn(D, 5, requires_grad=True), torch.randn(5, requires_grad=True)
    log_s = torch.tensor(-0.3, requires_grad=True)

    def model(x, y):
        with pyro.plate("data", N):
            h = torch.tanh(x @ enc)
            z = embedding("z", dist.Normal(h, 0.5).to_event(1), mean=True)  # homoscedastic
            pyro.sample("y", dist.Normal(torch.sin(z) @ dec, log_s.exp()), obs=y)

    params = (enc, dec, log_s)
    loss, grads, j, lam = probmix_loss(model, params, x, y)
    h = torch.tanh(x @ enc)
    z_mix = lam[:, None] * h + (1 - lam[:, None]) * h[j]
    likelihood = dist.Normal(torch.sin(z_mix) @ dec, log_s.exp())
    manifold_mixup = -(lam * likelihood.log_prob(y) + (1 - lam) * likelihood.log_prob(y[j])).sum()
    assert_equal_up_to(loss, grads, *reference_loss(manifold_mixup, params))


def test_theorem_c1_heteroscedastic_probmix_objective():
    # the general objective: precision-weighted pool of heteroscedastic Gaussians (Appendix C.1)
    x, y = _data(False)
    w = torch.randn(D, 2, requires_grad=True)

    def model(x, y):
        out = x @ w
        with pyro.plate("data", N):
            pyro.sample("y", dist.Normal(out[:, 0], out[:, 1].exp()), obs=y)

    loss, grads, j, lam = probmix_loss(model, (w,), x, y)
    out = x @ w
    mu, var = out[:, 0], out[:, 1].exp() ** 2
    precision = lam / var + (1 - lam) / var[j]
    mean = (lam * mu / var + (1 - lam) * mu[j] / var[j]) / precision
    pooled = dist.Normal(mean, precision.rsqrt())
    expected = -(lam * pooled.log_prob(y) + (1 - lam) * pooled.log_prob(y[j])).sum()
    assert_equal_up_to(loss, grads, *reference_loss(expected, (w,)))
