# SPDX-License-Identifier: Apache-2.0
"""
Closed forms of the fused likelihood of a site, which skip building the pooled distribution.

The general path pools the row's and the partner's distribution (:mod:`pyro_probmix.pooling`)
and scores the pool at both labels (:mod:`pyro_probmix.labels`): two dozen element-wise passes
forward and as many backward through autograd, the largest part of the handler's cost on a
Gaussian regression. A closed form computes the same value in one expression with a
hand-written backward. Rules are registered per family, like :func:`~pyro_probmix.pooling.register_pool`,
and are exact to the general path (``tests/test_closed_forms.py`` compares values and
gradients); a rule returns ``None`` for the settings it does not cover, and every other family
and setting keeps the general path::

    @register_closed_form(MyDist)
    def _my_dist(fn, partner, dim, lam, partner_value, kernel, label_fusion, criterion):
        return MyProbMixLikelihood(...) or None
"""
import math

import torch
from pyro.ops.provenance import ProvenanceTensor, detach_provenance, get_provenance, track_provenance
from torch.distributions import Normal

from .labels import GaussianKernel
from .likelihood import ProbMixLikelihood
from .pooling import normal_pool_params

__all__ = ["register_closed_form", "closed_form_likelihood", "NormalProbMixLikelihood"]

_RULES = {}


def register_closed_form(family):
    """
    Decorator registering the closed-form fused likelihood of a distribution ``family`` (a
    subclass matches too: the most specific registered class wins).

    >>> from pyro_probmix.closed_forms import _RULES
    >>> Normal in _RULES
    True
    """
    if not (isinstance(family, type) and issubclass(family, torch.distributions.Distribution)):
        raise TypeError(f"register_closed_form expects a Distribution subclass, got {family!r}")

    def decorator(rule):
        _RULES[family] = rule
        return rule

    return decorator


def closed_form_likelihood(fn, partner, dim, lam, partner_value, kernel, label_fusion, criterion):
    """
    The fused likelihood of ``fn`` with its rows ``partner`` along ``dim`` by a registered closed
    form, or ``None`` when no rule covers the family and settings (log-linear likelihood fusion
    is implied: only it has closed forms).
    """
    for family in type(fn).__mro__:
        rule = _RULES.get(family)
        if rule is not None:
            return rule(fn, partner, dim, lam, partner_value, kernel, label_fusion, criterion)
    return None


class NormalProbMixLikelihood(ProbMixLikelihood):
    """
    The fused likelihood of a Normal site with the Gaussian label kernel ``N(y, beta)`` and the
    expected-log criterion, in closed form. With the pooled precision
    ``P = lam / s_i^2 + (1 - lam) / s_j^2``, mean ``m`` and ``ybar = lam y_i + (1 - lam) y_j``::

        log_prob = -log(2 pi) / 2 + log(P) / 2 - P (( ybar - m)^2 + spread + beta) / 2

    where ``spread = lam (1 - lam) (y_i - y_j)^2`` for linear label fusion and 0 for log-linear
    label fusion (whose label is ``ybar``). Precisions are taken relative to
    the scale of the component of larger weighted precision, as in
    :func:`~pyro_probmix.pooling.normal_pool_params`.

    >>> import torch
    >>> d = NormalProbMixLikelihood(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]), torch.tensor([1, 0]),
    ...                             -1, torch.tensor([0.5, 0.5]), torch.tensor([2.0, 0.0]), 0.0, spread=True)
    >>> d.base.loc.tolist(), d.log_prob(torch.tensor([0.0, 2.0])).tolist() == d.log_prob(torch.tensor([0.0, 2.0])).tolist()
    ([1.0, 1.0], True)
    """

    def __init__(self, loc, scale, partner, dim, lam, partner_value, beta, spread):
        shape = loc.shape if loc.shape == scale.shape else torch.broadcast_shapes(loc.shape, scale.shape)
        self.loc_i, self.scale_i = loc.expand(shape), scale.expand(shape)
        self.loc_j = self.loc_i.index_select(dim, partner)
        self.scale_j = self.scale_i.index_select(dim, partner)
        self.lam = lam.expand(shape)
        self.partner_value = partner_value
        self.beta = beta
        self.spread = spread
        self._pooled = None
        torch.distributions.Distribution.__init__(self, shape, torch.Size(), validate_args=False)

    @property
    def base(self):
        """The pooled Normal (for sampling and inspection)."""
        if self._pooled is None:
            loc, scale = normal_pool_params(self.loc_i, self.scale_i, self.loc_j, self.scale_j, self.lam)
            self._pooled = Normal(loc, scale, validate_args=False)
        return self._pooled

    @property
    def support(self):
        return torch.distributions.constraints.real

    def log_prob(self, value):
        value = value.to(self.partner_value.dtype).expand(self.batch_shape)
        inputs = (self.loc_i, self.scale_i, self.loc_j, self.scale_j, self.lam, value, self.partner_value)
        if any(isinstance(t, ProvenanceTensor) for t in inputs):
            # TraceGraph_ELBO tracks which latents a site depends on in ProvenanceTensors, through
            # which a custom autograd.Function loses its gradient: apply it to the plain tensors
            # and give the result their provenance
            provenance = get_provenance(inputs)
            out = _FusedNormalLogProb.apply(*detach_provenance(inputs), self.beta, self.spread)
            return track_provenance(out, provenance)
        return _FusedNormalLogProb.apply(*inputs, self.beta, self.spread)


def _normal_terms(loc_i, scale_i, loc_j, scale_j, lam, y_i, y_j, beta, spread):
    """The pieces of the fused Normal log-density: ``c, a, b, p, m, d, q, 1 / c^2``."""
    # c: the scale of the component of larger weighted precision (as normal_pool_params takes
    # it; the smaller scale would put 1e-40 in a relative precision at lam = 1 and a scale ratio
    # of 1e20, below float32's normal range); the result does not depend on c
    i_dominates = lam.sqrt() * scale_j >= (1 - lam).sqrt() * scale_i
    c = torch.where(i_dominates, scale_i, scale_j)
    a = lam * (c / scale_i).square()  # relative precisions, in [0, 1]
    b = (1 - lam) * (c / scale_j).square()
    p = (a + b).clamp_min(torch.finfo(a.dtype).tiny)
    m = torch.lerp(loc_j, loc_i, a / p)
    d = torch.lerp(y_j, y_i, lam) - m
    q = d.square() + beta
    if spread:
        q = q + lam * (1 - lam) * (y_i - y_j).square()
    return c, a, b, p, m, d, q, c.square().reciprocal()


class _FusedNormalLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loc_i, scale_i, loc_j, scale_j, lam, y_i, y_j, beta, spread):
        c, *terms = _normal_terms(loc_i, scale_i, loc_j, scale_j, lam, y_i, y_j, beta, spread)
        a, b, p, m, d, q, inv_c2 = terms
        ctx.beta, ctx.spread = beta, spread
        ctx.save_for_backward(loc_i, scale_i, loc_j, scale_j, lam, y_i, y_j, *terms)
        return 0.5 * (p.log() - q * p * inv_c2 - math.log(2 * math.pi)) - c.log()

    @staticmethod
    def backward(ctx, grad):
        loc_i, scale_i, loc_j, scale_j, lam, y_i, y_j, *terms = ctx.saved_tensors
        if torch.is_grad_enabled():
            # a backward that is differentiated in turn (create_graph=True: Hessians, Laplace
            # approximations, gradient penalties): the pieces again, as functions of the inputs,
            # so that autograd sees how this gradient depends on them
            terms = _normal_terms(loc_i, scale_i, loc_j, scale_j, lam, y_i, y_j, ctx.beta, ctx.spread)[1:]
        a, b, p, m, d, q, inv_c2 = terms
        g_d = grad * d * inv_c2
        grad_loc_i, grad_loc_j = g_d * a, g_d * b
        common = p.reciprocal() - q * inv_c2
        g_2d = 2 * g_d
        grad_scale_i = -grad * a / scale_i * common - g_2d * (loc_i - m) * a / scale_i
        grad_scale_j = -grad * b / scale_j * common - g_2d * (loc_j - m) * b / scale_j
        # the labels enter through d = lam y_i + (1 - lam) y_j - m and the spread of the pair
        g_y = -g_d * p
        spread = -grad * p * inv_c2 * lam * (1 - lam) * (y_i - y_j) if ctx.spread else 0
        grad_y_i = g_y * lam + spread if ctx.needs_input_grad[5] else None
        grad_y_j = g_y * (1 - lam) - spread if ctx.needs_input_grad[6] else None
        return grad_loc_i, grad_scale_i, grad_loc_j, grad_scale_j, None, grad_y_i, grad_y_j, None, None


@register_closed_form(Normal)
def _normal(fn, partner, dim, lam, partner_value, kernel, label_fusion, criterion):
    if type(kernel) is not GaussianKernel or criterion != "expected_log":
        return None
    if lam.requires_grad:
        return None  # the hand-written backward covers the distribution's parameters and the labels
    return NormalProbMixLikelihood(
        fn.loc, fn.scale, partner, dim, lam, partner_value, kernel.beta, spread=label_fusion == "linear"
    )
