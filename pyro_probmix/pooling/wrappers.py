# SPDX-License-Identifier: Apache-2.0
"""
Pooling rules of the wrappers: ``Independent``, masked and expanded distributions pool the
distribution they wrap; a transformed distribution ``Y = T(X)`` pools through its base when
both share the transforms, since the Jacobian factor cancels (``docs/theory.md``).
"""
import torch.distributions as td
from pyro.distributions import Independent, LogNormal, TransformedDistribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

from .registry import _WRAPPERS, _dispatch_pool, check_poolable, log_linear_pool, register_check, register_pool, unsqueeze_right

__all__ = []


@register_pool(td.Independent, td.Independent)
def _pool_independent(p, q, lam):
    n = p.reinterpreted_batch_ndims
    if q.reinterpreted_batch_ndims != n:
        raise ValueError(
            f"cannot pool Independent distributions with reinterpreted_batch_ndims {n} and "
            f"{q.reinterpreted_batch_ndims}"
        )
    return Independent(log_linear_pool(p.base_dist, q.base_dist, unsqueeze_right(lam, n)), n)


@register_pool(MaskedDistribution, MaskedDistribution)
def _pool_masked(p, q, lam):
    # a pooled row is scored only where both of its rows are
    return MaskedDistribution(log_linear_pool(p.base_dist, q.base_dist, lam), p._mask & q._mask)


@register_pool(ExpandedDistribution, ExpandedDistribution)
def _pool_expanded(p, q, lam):
    return log_linear_pool(p.base_dist.expand(p.batch_shape), q.base_dist.expand(q.batch_shape), lam)


def _shared_transforms(p, q):
    """The transforms of ``p``, if ``q`` has the same ones and each is a bijection."""
    if len(p.transforms) != len(q.transforms):
        raise NotImplementedError(
            f"log-linear pool of {type(p).__name__} and {type(q).__name__} with "
            f"{len(p.transforms)} and {len(q.transforms)} transforms: the pool of densities through "
            f"two different maps is not the image of a pool of the bases; use fusion='linear'"
        )
    differ = [_name(a) for a, b in zip(p.transforms, q.transforms) if not a == b]
    if differ:
        raise NotImplementedError(
            f"log-linear pool of {type(p).__name__} and {type(q).__name__} whose "
            f"{', '.join(differ)} differ (their parameters vary by row): the pool of densities "
            f"through two different maps is not the image of a pool of the bases; write the site "
            f"in a family with its own rule (an affine map of a Normal is a Normal), register one "
            f"with register_pool({type(p).__name__}, {type(q).__name__}), or use fusion='linear'"
        )
    for t in p.transforms:
        if not t.bijective:
            raise NotImplementedError(
                f"log-linear pool of {type(p).__name__}: {t} is not bijective (several points "
                f"map to one value), so the pool is not the image of a pool of the bases; "
                f"register a rule with register_pool({type(p).__name__}, {type(q).__name__}) or "
                f"use fusion='linear'"
            )
    return p.transforms


def _name(t):
    return f"{_name(t.inv)}.inv" if isinstance(t, td.transforms._InverseTransform) else type(t).__name__


def _pool_bases(p, q, lam):
    try:
        return log_linear_pool(p.base_dist, q.base_dist, lam)
    except NotImplementedError as e:
        raise NotImplementedError(f"log-linear pool of {type(p).__name__} through its base: {e}") from e


@register_pool(td.TransformedDistribution, td.TransformedDistribution)
def _pool_transformed(p, q, lam):
    # p_Y(y) = p_X(T^-1 y) |det J(y)| with the same J for both: p_Y^lam q_Y^(1-lam) is
    # |det J| (p_X^lam q_X^(1-lam))(T^-1 y), the image of the pool of the bases
    transforms = _shared_transforms(p, q)
    return TransformedDistribution(_pool_bases(p, q, lam), transforms, validate_args=False)


@register_pool(td.LogNormal, td.LogNormal)
def _pool_log_normal(p, q, lam):
    # both exp(Normal): the pool is exp of the pool of the Normals, kept a LogNormal
    base = _pool_bases(p, q, lam)
    return LogNormal(base.loc, base.scale, validate_args=False)


_WRAPPERS.update({td.Independent, MaskedDistribution, ExpandedDistribution, td.TransformedDistribution})


@register_check(td.Independent)
@register_check(MaskedDistribution)
@register_check(ExpandedDistribution)
def _check_base(d):
    check_poolable(d.base_dist)


@register_check(td.TransformedDistribution)
def _check_transformed(d):
    if _dispatch_pool(type(d), type(d)) is _pool_transformed:  # not a family with its own rule
        _shared_transforms(d, d)
    try:
        check_poolable(d.base_dist)
    except NotImplementedError as e:
        # name the family the user wrote, not only the base it is built on
        raise NotImplementedError(
            f"{type(d).__name__} is pooled through its base distribution "
            f"{type(d.base_dist).__name__}, which has no rule: {e} A rule for {type(d).__name__} "
            f"itself works too: register_pool({type(d).__name__}, {type(d).__name__})"
        ) from None
