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

Rules are registered on the ``torch.distributions`` classes, so torch's own classes, Pyro's
wrappers of them and mixes of the two pool alike; the result is a Pyro distribution.
``lam`` is a float or a tensor broadcastable to the distributions' ``batch_shape``.
Linear pooling (a two-component mixture) works for every family: :func:`linear_pool`.

The modules: ``registry`` (dispatch, :func:`check_poolable`),
``gaussian`` (Normal, HalfNormal, MultivariateNormal), ``families`` (discrete and positive
families), ``wrappers`` (Independent, masked, expanded, transformed), ``linear``.
"""
from . import families, gaussian, wrappers  # noqa: F401  (register the rules)
from .gaussian import normal_pool_params
from .linear import LinearPool, get_pooler, linear_pool
from .registry import _mix, check_poolable, log_linear_pool, register_pool, supported_families

__all__ = [
    "LinearPool",
    "check_poolable",
    "get_pooler",
    "linear_pool",
    "log_linear_pool",
    "normal_pool_params",
    "register_pool",
    "supported_families",
]
