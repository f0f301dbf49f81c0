# SPDX-License-Identifier: Apache-2.0
"""
Pooling of two distributions of the same family.

Log-linear pooling :math:`\\tilde p \\propto p^{\\lambda} q^{1-\\lambda}` keeps an exponential
family closed: the natural parameters mix linearly (Theorem C.1 of the paper). Each family has a
closed-form rule in a registry that dispatches on the pair of types, exactly like
:func:`torch.distributions.kl.register_kl`::

    @register_pool(MyDist, MyDist)
    def _pool_mydist(p, q, lam):
        return MyDist(lam * p.theta + (1 - lam) * q.theta)

``lam`` is a float or a tensor broadcastable to the distributions' ``batch_shape``.
Linear pooling (a two-component mixture) works for every family: :func:`linear_pool`.
"""
import functools

import torch
from pyro.distributions import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Dirichlet,
    Exponential,
    Gamma,
    Independent,
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    Poisson,
    TorchDistribution,
)
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import broadcast_shape
from torch.distributions import constraints

__all__ = ["LinearPool", "log_linear_pool", "linear_pool", "normal_pool_params", "register_pool", "supported_families"]

_POOL_REGISTRY = {}


def register_pool(type_p, type_q):
    """
    Decorator registering the log-linear pooling rule of a pair of distribution types, with the
    dispatch of :func:`torch.distributions.kl.register_kl` (the most specific match of the two
    types' class hierarchies wins).

    The rule receives ``(p, q, lam)`` and returns the distribution proportional to
    ``p ** lam * q ** (1 - lam)``; ``lam`` is a float or a tensor broadcastable to the batch shape.

    >>> import torch
    >>> from torch.distributions import Distribution
    >>> class Geometric2(torch.distributions.Geometric):
    ...     pass
    >>> @register_pool(Geometric2, Geometric2)
    ... def _pool_geometric(p, q, lam):
    ...     # natural parameter log(1 - probs) mixes linearly
    ...     log_fail = lam * torch.log1p(-p.probs) + (1 - lam) * torch.log1p(-q.probs)
    ...     return Geometric2(probs=-torch.expm1(log_fail))
    >>> log_linear_pool(Geometric2(0.5), Geometric2(0.5), 0.3).probs
    tensor(0.5000)
    """
    if not (isinstance(type_p, type) and issubclass(type_p, torch.distributions.Distribution)):
        raise TypeError(f"register_pool expects Distribution subclasses, got type_p={type_p!r}")
    if not (isinstance(type_q, type) and issubclass(type_q, torch.distributions.Distribution)):
        raise TypeError(f"register_pool expects Distribution subclasses, got type_q={type_q!r}")

    def decorator(fun):
        _POOL_REGISTRY[type_p, type_q] = fun
        _dispatch_pool.cache_clear()
        return fun

    return decorator


@functools.total_ordering
class _Match:
    # Same ordering as torch.distributions.kl._Match: more specific (deeper) types first.
    def __init__(self, *types):
        self.types = types

    def __eq__(self, other):
        return self.types == other.types

    def __le__(self, other):
        for x, y in zip(self.types, other.types):
            if not issubclass(x, y):
                return False
            if x is not y:
                break
        return True


@functools.lru_cache(maxsize=None)
def _dispatch_pool(type_p, type_q):
    matches = [
        (super_p, super_q)
        for super_p, super_q in _POOL_REGISTRY
        if issubclass(type_p, super_p) and issubclass(type_q, super_q)
    ]
    if not matches:
        return None
    left_p, left_q = min(_Match(*m) for m in matches).types
    right_q, right_p = min(_Match(*reversed(m)) for m in matches).types
    left_fun = _POOL_REGISTRY[left_p, left_q]
    if left_fun is not _POOL_REGISTRY[right_p, right_q]:
        raise NotImplementedError(
            f"Ambiguous log_linear_pool({type_p.__name__}, {type_q.__name__}): "
            f"register_pool({left_p.__name__}, {right_q.__name__}) to resolve it"
        )
    return left_fun


def supported_families():
    """
    Names of the distribution families with a registered log-linear pooling rule (the wrappers
    ``Independent``, masked and expanded distributions pool whatever family they wrap).

    >>> "Normal" in supported_families(), "Independent" in supported_families()
    (True, False)
    """
    return sorted({p.__name__ for p, q in _POOL_REGISTRY if p is q and p not in _WRAPPERS})


def log_linear_pool(p, q, lam):
    """
    Log-linear pool :math:`\\tilde p(y) \\propto p(y)^{\\lambda} q(y)^{1-\\lambda}` of two
    distributions of the same family, returned as a distribution of that family.

    :param p: first distribution (weight ``lam``).
    :param q: second distribution (weight ``1 - lam``), same type and shapes as ``p``.
    :param lam: float in [0, 1] or tensor broadcastable to ``p.batch_shape``.
    :raises NotImplementedError: when no rule is registered for ``(type(p), type(q))``.

    >>> import torch, pyro.distributions as dist
    >>> d = log_linear_pool(dist.Normal(0.0, 1.0), dist.Normal(2.0, 1.0), 0.5)
    >>> float(d.loc), float(d.scale)
    (1.0, 1.0)
    """
    fun = _dispatch_pool(type(p), type(q))
    if fun is None:
        raise NotImplementedError(
            f"No log-linear pooling rule for ({type(p).__name__}, {type(q).__name__}). "
            f"Supported families: {', '.join(supported_families())}. Register one with "
            f"@pyro_probmix.pooling.register_pool({type(p).__name__}, {type(q).__name__}), "
            f"or use fusion='linear' (a two-component mixture, valid for every family)."
        )
    return fun(p, q, lam)


def _mix(a, b, lam):
    """``lam * a + (1 - lam) * b`` with ``0 * inf = 0``, so that lam in {0, 1} returns an input."""
    mixed = lam * a + (1 - lam) * b
    if isinstance(lam, torch.Tensor):
        return torch.where(lam == 1, a, torch.where(lam == 0, b, mixed))
    return a if lam == 1 else b if lam == 0 else mixed


def _log_weights(lam, like):
    # log(lam), log(1 - lam) as tensors (-inf at the ends) for log-space mixing.
    lam = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
    return torch.log(lam), torch.log1p(-lam)


def normal_pool_params(loc_p, scale_p, loc_q, scale_q, lam):
    """
    ``(loc, scale)`` of the log-linear pool of ``Normal(loc_p, scale_p)`` (weight ``lam``) and
    ``Normal(loc_q, scale_q)``: precisions mix, ``1/s^2 = lam/s_p^2 + (1-lam)/s_q^2``, and the
    mean is precision-weighted (Appendix C.1). A pure tensor function, so it can be handed to
    :func:`torch.compile` (see :ref:`the experiments <compile-pooling>`).

    Precisions are taken relative to ``c = min(s_p, s_q)``, so they lie in [0, 1] and do not
    overflow for tiny scales; ``c`` cancels out of the result, so it is detached (its gradient
    is zero). Exact except where ``lam`` is 0 or 1 to within the dtype's ``tiny`` *and* the
    scales differ by more than ``1/sqrt(tiny)`` (1e19 in float32): there the scale is clamped.

    >>> import torch
    >>> loc, scale = normal_pool_params(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(2.0), torch.tensor(1.0), 0.5)
    >>> float(loc), float(scale)
    (1.0, 1.0)
    """
    lam = torch.as_tensor(lam, dtype=loc_p.dtype, device=loc_p.device)
    c = torch.minimum(scale_p, scale_q).detach()
    prec_p = lam * (c / scale_p).square()
    prec = (prec_p + (1 - lam) * (c / scale_q).square()).clamp_min(torch.finfo(prec_p.dtype).tiny)
    return torch.lerp(loc_q, loc_p, prec_p / prec), c * prec.rsqrt()


@register_pool(Normal, Normal)
def _pool_normal(p, q, lam):
    # no logarithms or exponentials: a log-space form of the same rule cost 1.2x as much
    # (benchmarks/README.md); parameters derived from validated ones need no second validation
    # (it costs a host sync)
    return Normal(*normal_pool_params(p.loc, p.scale, q.loc, q.scale, lam), validate_args=False)


@register_pool(MultivariateNormal, MultivariateNormal)
def _pool_mvn(p, q, lam):
    # precisions add: P = lam P1 + (1-lam) P2, P mu = lam P1 mu1 + (1-lam) P2 mu2
    lam_ = torch.as_tensor(lam, dtype=p.loc.dtype, device=p.loc.device)[..., None, None]
    precision = lam_ * p.precision_matrix + (1 - lam_) * q.precision_matrix
    eta = (lam_ * p.precision_matrix @ p.loc[..., None]).squeeze(-1) + (
        (1 - lam_) * q.precision_matrix @ q.loc[..., None]
    ).squeeze(-1)
    chol = torch.linalg.cholesky(precision)
    loc = torch.cholesky_solve(eta[..., None], chol).squeeze(-1)
    return MultivariateNormal(loc, precision_matrix=precision)


@register_pool(Categorical, Categorical)
def _pool_categorical(p, q, lam):
    # Appendix C.2: mix the log-probabilities; zero probabilities stay zero.
    lam = _unsqueeze_right(lam, 1)
    return Categorical(logits=_mix(p.logits, q.logits, lam))


@register_pool(OneHotCategorical, OneHotCategorical)
def _pool_one_hot(p, q, lam):
    lam = _unsqueeze_right(lam, 1)
    return OneHotCategorical(logits=_mix(p.logits, q.logits, lam))


@register_pool(Bernoulli, Bernoulli)
def _pool_bernoulli(p, q, lam):
    return Bernoulli(logits=_mix(p.logits, q.logits, lam))


@register_pool(Binomial, Binomial)
def _pool_binomial(p, q, lam):
    # same base measure C(n, y) only for equal total_count
    if not torch.equal(*torch.broadcast_tensors(p.total_count, q.total_count)):
        raise ValueError(
            "log-linear pooling of Binomial needs equal total_count in both distributions "
            "(a different count is a different family member)"
        )
    return Binomial(p.total_count, logits=_mix(p.logits, q.logits, lam))


@register_pool(Poisson, Poisson)
def _pool_poisson(p, q, lam):
    # natural parameter log(rate): a weighted geometric mean of the rates
    return Poisson(torch.exp(_mix(torch.log(p.rate), torch.log(q.rate), lam)))


@register_pool(Exponential, Exponential)
def _pool_exponential(p, q, lam):
    return Exponential(_mix(p.rate, q.rate, lam))


@register_pool(Gamma, Gamma)
def _pool_gamma(p, q, lam):
    # natural parameters (concentration - 1, -rate) mix linearly
    return Gamma(_mix(p.concentration, q.concentration, lam), _mix(p.rate, q.rate, lam))


@register_pool(Beta, Beta)
def _pool_beta(p, q, lam):
    return Beta(
        _mix(p.concentration1, q.concentration1, lam),
        _mix(p.concentration0, q.concentration0, lam),
    )


@register_pool(Dirichlet, Dirichlet)
def _pool_dirichlet(p, q, lam):
    return Dirichlet(_mix(p.concentration, q.concentration, _unsqueeze_right(lam, 1)))


@register_pool(Independent, Independent)
def _pool_independent(p, q, lam):
    n = p.reinterpreted_batch_ndims
    if q.reinterpreted_batch_ndims != n:
        raise ValueError(
            f"cannot pool Independent distributions with reinterpreted_batch_ndims {n} and "
            f"{q.reinterpreted_batch_ndims}"
        )
    return Independent(log_linear_pool(p.base_dist, q.base_dist, _unsqueeze_right(lam, n)), n)


@register_pool(MaskedDistribution, MaskedDistribution)
def _pool_masked(p, q, lam):
    # a pooled row is scored only where both of its rows are
    return MaskedDistribution(log_linear_pool(p.base_dist, q.base_dist, lam), p._mask & q._mask)


@register_pool(ExpandedDistribution, ExpandedDistribution)
def _pool_expanded(p, q, lam):
    return log_linear_pool(
        p.base_dist.expand(p.batch_shape), q.base_dist.expand(q.batch_shape), lam
    )


_WRAPPERS = (Independent, MaskedDistribution, ExpandedDistribution)


def _unsqueeze_right(lam, n):
    """Add ``n`` trailing singleton dims to a tensor ``lam`` so it broadcasts over event dims."""
    if isinstance(lam, torch.Tensor):
        return lam.reshape(lam.shape + (1,) * n)
    return lam


class LinearPool(TorchDistribution):
    """
    Linear pool (two-component mixture) ``lam * p + (1 - lam) * q`` of two distributions with
    equal shapes. Works for every family; sampling picks a component with probability ``lam``.

    >>> import torch, pyro.distributions as dist
    >>> d = LinearPool(dist.Normal(0.0, 1.0), dist.Normal(0.0, 1.0), torch.tensor(0.3))
    >>> bool(torch.isclose(d.log_prob(torch.tensor(0.5)), dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.5))))
    True
    """

    arg_constraints = {"lam": constraints.unit_interval}

    def __init__(self, p, q, lam, validate_args=None):
        if p.event_shape != q.event_shape:
            raise ValueError(
                f"LinearPool needs equal event shapes, got {tuple(p.event_shape)} and "
                f"{tuple(q.event_shape)}"
            )
        self.p, self.q = p, q
        self.lam = lam if isinstance(lam, torch.Tensor) else torch.tensor(float(lam))
        batch_shape = broadcast_shape(p.batch_shape, q.batch_shape, self.lam.shape)
        self.has_rsample = False
        super().__init__(batch_shape, p.event_shape, validate_args=validate_args)

    @property
    def support(self):
        return self.p.support

    def expand(self, batch_shape, _instance=None):
        return LinearPool(
            self.p.expand(batch_shape), self.q.expand(batch_shape), self.lam.expand(batch_shape)
        )

    def log_prob(self, value):
        log_lam, log_1m_lam = _log_weights(self.lam, self.lam)
        return torch.logaddexp(log_lam + self.p.log_prob(value), log_1m_lam + self.q.log_prob(value))

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        pick_p = torch.rand(sample_shape + self.batch_shape, device=self.lam.device) < self.lam
        pick_p = pick_p.reshape(pick_p.shape + (1,) * len(self.event_shape))
        return torch.where(pick_p, self.p.sample(sample_shape).expand(shape), self.q.sample(sample_shape).expand(shape))

    @property
    def mean(self):
        lam = _unsqueeze_right(self.lam, len(self.event_shape))
        return lam * self.p.mean + (1 - lam) * self.q.mean


def linear_pool(p, q, lam):
    """
    Linear pool (mixture) ``lam * p + (1 - lam) * q``; see :class:`LinearPool`.

    >>> import pyro.distributions as dist
    >>> linear_pool(dist.Poisson(1.0), dist.Poisson(3.0), 0.5).mean
    tensor(2.)
    """
    return LinearPool(p, q, lam)


_POOLERS = {"log_linear": log_linear_pool, "linear": linear_pool}


def get_pooler(fusion):
    """The pooling function named ``fusion``: ``"log_linear"`` or ``"linear"``."""
    try:
        return _POOLERS[fusion]
    except KeyError:
        raise ValueError(
            f"fusion={fusion!r} is not a pooling rule; expected one of {sorted(_POOLERS)}"
        ) from None

