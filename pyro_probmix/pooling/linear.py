# SPDX-License-Identifier: Apache-2.0
"""
Linear pooling (a two-component mixture), valid for every family whose rows can be selected
(:func:`~pyro_probmix.rows.take_rows`), and the choice of rule.
"""
import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.util import broadcast_shape
from torch.distributions import constraints

from .registry import log_linear_pool, unsqueeze_right

__all__ = ["LinearPool", "get_pooler", "linear_pool"]


class LinearPool(TorchDistribution):
    """
    Linear pool (two-component mixture) ``lam * p + (1 - lam) * q`` of two distributions with
    equal shapes. Works for every family: it needs only their ``log_prob``; sampling picks a
    component with probability ``lam``. A float ``lam`` is kept in float64 and used in the
    dtype of the log-densities, so ``lam=0.3`` is 0.3 in a float64 model.

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
        self.lam = lam if isinstance(lam, torch.Tensor) else torch.tensor(float(lam), dtype=torch.float64)
        batch_shape = broadcast_shape(p.batch_shape, q.batch_shape, self.lam.shape)
        self.has_rsample = False
        super().__init__(batch_shape, p.event_shape, validate_args=validate_args)

    @property
    def support(self):
        return self.p.support

    def expand(self, batch_shape, _instance=None):
        return LinearPool(self.p.expand(batch_shape), self.q.expand(batch_shape), self.lam.expand(batch_shape))

    @property
    def has_enumerate_support(self):
        return self.p.has_enumerate_support and self.q.has_enumerate_support

    def enumerate_support(self, expand=True):
        # the label kernels of finite discrete sites sum over the support (SmoothingKernel)
        values = self.p.enumerate_support(expand=False)
        other = self.q.enumerate_support(expand=False)
        if values.shape != other.shape or not torch.equal(values, other):
            raise NotImplementedError(
                f"LinearPool of {type(self.p).__name__} rows with different supports cannot enumerate "
                f"one support for both"
            )
        return values.expand((-1,) + self.batch_shape + self.event_shape) if expand else values

    def log_prob(self, value):
        log_p, log_q = _log_prob_in_support(self.p, value), _log_prob_in_support(self.q, value)
        lam = self.lam.to(dtype=log_p.dtype, device=log_p.device)
        # lam in {0, 1}: logaddexp(x, -inf) = x, exactly the weighted component
        return torch.logaddexp(torch.log(lam) + log_p, torch.log1p(-lam) + log_q)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        pick_p = torch.rand(sample_shape + self.batch_shape, device=self.lam.device) < self.lam
        pick_p = pick_p.reshape(pick_p.shape + (1,) * len(self.event_shape))
        return torch.where(pick_p, self.p.sample(sample_shape).expand(shape), self.q.sample(sample_shape).expand(shape))

    @property
    def mean(self):
        mean_p = self.p.mean
        lam = unsqueeze_right(self.lam.to(dtype=mean_p.dtype, device=mean_p.device), len(self.event_shape))
        return lam * mean_p + (1 - lam) * self.q.mean


def _log_prob_in_support(d, value):
    """``d.log_prob(value)``, ``-inf`` where ``value`` lies outside the support of ``d``: a row is
    scored at its partner's label too, which may lie outside the row's support when it varies by
    row (a Binomial's ``total_count``, a Uniform's bounds). Such values are scored at a point of
    the support (the value clamped to its bounds), then set to ``-inf``, so that a validating
    distribution does not raise."""
    try:
        inside = d.support.check(value)
    except NotImplementedError:  # a family that states no support: scored as it is
        return d.log_prob(value)
    if bool(inside.all()):
        return d.log_prob(value)
    support = getattr(d.support, "base_constraint", d.support)  # an Independent's, elementwise
    lower, upper = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
    placed = value if lower is None else torch.maximum(value, torch.as_tensor(lower, dtype=value.dtype))
    placed = placed if upper is None else torch.minimum(placed, torch.as_tensor(upper, dtype=value.dtype))
    if not bool(d.support.check(placed).all()):
        raise ValueError(
            f"linear pool: a label lies outside the support {d.support} of {type(d).__name__}, which "
            f"varies by row, and no point of the support to score it at is known; a mixture "
            f"component gives such a label probability 0, so make the support the same for every row"
        )
    return torch.where(inside, d.log_prob(placed), -torch.inf)


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
    """
    The pooling function named ``fusion``: ``"log_linear"`` or ``"linear"``.

    >>> get_pooler("linear") is linear_pool
    True
    """
    try:
        return _POOLERS[fusion]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        raise ValueError(f"fusion={fusion!r} is not a pooling rule; expected one of {sorted(_POOLERS)}") from None
