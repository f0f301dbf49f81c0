# SPDX-License-Identifier: Apache-2.0
"""
Pooling rules of the discrete and the positive exponential families: natural parameters mix
linearly (Theorem C.1).

An outcome impossible under either component is impossible in the pool (for ``lam`` in
(0, 1)): the log-probabilities of a distribution built from ``probs`` are taken as
``log(probs)``, ``-inf`` at a zero, not torch's ``log(max(probs, eps))``. A pool under which no
outcome is possible (disjoint supports) raises ``ValueError``. A certain binary pool (Bernoulli,
Binomial: infinite logits) scores its certain outcome 0 and the others ``-inf``, where torch's
formula gives NaN; plain Pyro scores a row of ``probs`` 1 at ``log(1 - eps)`` instead (torch clamps
the logits of ``probs``), about ``-1.2e-7`` in float32.
"""
import torch
import torch.distributions as td
import torch.nn.functional as F
from pyro.distributions import Bernoulli, Beta, Binomial, Categorical, Dirichlet, Exponential, Gamma
from pyro.distributions import NegativeBinomial, OneHotCategorical, Poisson, Weibull

from .registry import _mix, as_weight, endpoints, register_check, register_pool, unsqueeze_right

__all__ = []


def _log(x):
    """``log(x)``, ``-inf`` at 0, with a zero gradient there (not ``0 * inf``)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1).log(), -torch.inf)


def _built_from_probs(d):
    # torch keeps the constructor's parameter as d._param; the other one is derived lazily
    # (from probs: log(max(probs, eps)), which loses the zeros)
    return d._param is vars(d).get("probs")


def _class_log_probs(d):
    d = getattr(d, "_categorical", d)  # OneHotCategorical keeps a Categorical
    return _log(d.probs) if _built_from_probs(d) else d.logits


def _binary_logits(d):
    if _built_from_probs(d):
        return _log(d.probs) - _log(1 - d.probs)  # -inf at probs 0, +inf at probs 1
    return d.logits


def _disjoint_support_error(family):
    return ValueError(
        f"log-linear pool of two {family} distributions with disjoint supports: no outcome is "
        f"possible under both, so p^lam q^(1-lam) is zero everywhere and has no normalisation; "
        f"use fusion='linear' (a mixture), or keep probabilities away from 0"
    )


def _pool_classes(p, q, lam, family):
    log_p = _class_log_probs(p)
    lam = unsqueeze_right(as_weight(lam, log_p), 1)
    logits = _mix(log_p, _class_log_probs(q), lam)
    if bool((logits == -torch.inf).all(-1).any()):
        raise _disjoint_support_error(family.__name__)
    return family(logits=logits, validate_args=False)


@register_pool(td.Categorical, td.Categorical)
def _pool_categorical(p, q, lam):
    # Appendix C.2: mix the log-probabilities
    return _pool_classes(p, q, lam, Categorical)


@register_pool(td.OneHotCategorical, td.OneHotCategorical)
def _pool_one_hot(p, q, lam):
    return _pool_classes(p, q, lam, OneHotCategorical)


def _pool_binary_logits(p, q, lam, family):
    logits_p = _binary_logits(p)
    logits = _mix(logits_p, _binary_logits(q), as_weight(lam, logits_p))
    if bool(logits.isnan().any()):  # +inf (certain success) against -inf (certain failure)
        raise _disjoint_support_error(family)
    return logits


def _certain_log_prob(logits, successes, failures):
    """``successes log sigmoid(l) + failures log sigmoid(-l)`` at infinite logits ``l`` (a certain
    pool), where torch's formula is ``inf - inf``: 0 for the certain outcome, ``-inf`` for the
    others (a count of zero contributes nothing, not ``0 * inf``)."""
    log_success, log_failure = -F.softplus(-logits), -F.softplus(logits)
    return (torch.where(successes == 0, 0.0, successes * log_success)
            + torch.where(failures == 0, 0.0, failures * log_failure))


class _PooledBernoulli(Bernoulli):
    """A pooled Bernoulli with infinite logits where the pool is certain (a component built from
    probs 0 or 1), which torch's ``log_prob`` scores as NaN; a pool without them is a Bernoulli."""

    def log_prob(self, value):
        value = value.to(self.logits.dtype)
        return torch.where(self.logits.isinf(), _certain_log_prob(self.logits, value, 1 - value),
                           super().log_prob(value))


class _PooledBinomial(Binomial):
    """A pooled Binomial, with :class:`_PooledBernoulli`'s care for infinite logits."""

    def log_prob(self, value):
        value = value.to(self.logits.dtype)
        n = self.total_count
        log_choose = torch.lgamma(n + 1) - torch.lgamma(value + 1) - torch.lgamma(n - value + 1)
        certain = log_choose + _certain_log_prob(self.logits, value, n - value)
        return torch.where(self.logits.isinf(), certain, super().log_prob(value))


@register_pool(td.Bernoulli, td.Bernoulli)
def _pool_bernoulli(p, q, lam):
    logits = _pool_binary_logits(p, q, lam, "Bernoulli")
    family = _PooledBernoulli if bool(logits.isinf().any()) else Bernoulli
    return family(logits=logits, validate_args=False)


# the base measures C(n, y) of Binomial and C(y + r - 1, y) of NegativeBinomial are one only
# for one total_count: a row and its partner must share it
_BASE_MEASURES = {"Binomial": "C(n, y)", "NegativeBinomial": "C(y + r - 1, y)"}


def _shared_total_count(p, q, family):
    n_p, n_q = torch.broadcast_tensors(p.total_count, q.total_count)
    if not torch.equal(n_p, n_q):
        differ = n_p != n_q
        raise ValueError(
            f"log-linear pooling of {family} needs the same total_count in a row and its partner, "
            f"got {n_p[differ][0]:g} and {n_q[differ][0]:g} ({int(differ.sum())} pairs differ): the "
            f"base measure {_BASE_MEASURES[family]} differs, so the pool is no {family}; use "
            f"fusion='linear'"
        )
    return n_p


def _check_total_count_shared(d):
    n, family = d.total_count, type(d).__name__
    if isinstance(n, torch.Tensor) and n.numel() > 1 and not bool((n == n.reshape(-1)[0]).all()):
        raise ValueError(
            f"{family} total_count differs across rows (from {n.min():g} to {n.max():g}): a row "
            f"and its partner must share it for log-linear pooling (Theorem C.1 needs one base "
            f"measure {_BASE_MEASURES.get(family, _BASE_MEASURES['Binomial'])}); use fusion='linear', "
            f"which pools any two rows"
        )


@register_pool(td.Binomial, td.Binomial)
def _pool_binomial(p, q, lam):
    n = _shared_total_count(p, q, "Binomial")
    logits = _pool_binary_logits(p, q, lam, "Binomial")
    family = _PooledBinomial if bool(logits.isinf().any()) else Binomial
    return family(n, logits=logits, validate_args=False)


@register_pool(td.NegativeBinomial, td.NegativeBinomial)
def _pool_negative_binomial(p, q, lam):
    # natural parameter log(probs) (probs of a success, y successes before r failures)
    r = _shared_total_count(p, q, "NegativeBinomial")
    lam = as_weight(lam, p.logits)
    log_probs = lam * F.logsigmoid(p.logits) + (1 - lam) * F.logsigmoid(q.logits)
    logits = log_probs - torch.log(-torch.expm1(log_probs))
    return NegativeBinomial(r, logits=endpoints(lam, p.logits, q.logits, logits), validate_args=False)


register_check(td.Binomial)(_check_total_count_shared)
register_check(td.NegativeBinomial)(_check_total_count_shared)


@register_pool(td.Poisson, td.Poisson)
def _pool_poisson(p, q, lam):
    # natural parameter log(rate): a weighted geometric mean of the rates
    lam = as_weight(lam, p.rate)
    mixed = torch.exp(lam * _log(p.rate) + (1 - lam) * _log(q.rate))
    return Poisson(endpoints(lam, p.rate, q.rate, mixed), validate_args=False)


@register_pool(td.Weibull, td.Weibull)
def _pool_weibull(p, q, lam):
    # for one shape k, an exponential family in y^k with natural parameter -scale^(-k)
    k_p, k_q = torch.broadcast_tensors(p.concentration, q.concentration)
    if not torch.equal(k_p, k_q):
        raise ValueError(
            "log-linear pooling of Weibull needs the same concentration (shape) in a row and its "
            "partner: the base measure y^(k - 1) differs otherwise, so the pool is no Weibull; use "
            "fusion='linear'"
        )
    lam = as_weight(lam, p.scale)
    rate = _mix(p.scale.pow(-k_p), q.scale.pow(-k_p), lam)
    return Weibull(endpoints(lam, p.scale, q.scale, rate.pow(-1 / k_p)), k_p, validate_args=False)


@register_check(td.Weibull)
def _check_weibull(d):
    k = d.concentration
    if k.numel() > 1 and not bool((k == k.reshape(-1)[0]).all()):
        raise ValueError(
            f"Weibull concentration differs across rows (from {k.min():g} to {k.max():g}): a row and "
            f"its partner must share it for log-linear pooling; use fusion='linear', which pools "
            f"any two rows"
        )


@register_pool(td.Exponential, td.Exponential)
def _pool_exponential(p, q, lam):
    return Exponential(_mix(p.rate, q.rate, as_weight(lam, p.rate)), validate_args=False)


@register_pool(td.Gamma, td.Gamma)
def _pool_gamma(p, q, lam):
    # natural parameters (concentration - 1, -rate) mix linearly
    lam = as_weight(lam, p.rate)
    return Gamma(_mix(p.concentration, q.concentration, lam), _mix(p.rate, q.rate, lam), validate_args=False)


@register_pool(td.Beta, td.Beta)
def _pool_beta(p, q, lam):
    lam = as_weight(lam, p.concentration1)
    return Beta(
        _mix(p.concentration1, q.concentration1, lam),
        _mix(p.concentration0, q.concentration0, lam),
        validate_args=False,
    )


@register_pool(td.Dirichlet, td.Dirichlet)
def _pool_dirichlet(p, q, lam):
    lam = unsqueeze_right(as_weight(lam, p.concentration), 1)
    return Dirichlet(_mix(p.concentration, q.concentration, lam), validate_args=False)
