# SPDX-License-Identifier: Apache-2.0
"""
The Gaussian embedding pool of M-ProbMix as two fused kernels (``--compile``).

:class:`CompiledPoolNormal` is a :class:`~pyro.distributions.Normal` whose log-linear pool
(registered with the library's public :func:`~pyro_probmix.pooling.register_pool`) is the
library's :func:`~pyro_probmix.pooling.normal_pool_params` compiled by :func:`torch.compile`, with
a hand-written backward compiled the same way. Both kernels run without autograd, so neither stores
a boolean: compiling the rule under autograd made inductor save the rule's comparison (which
component dominates) as a ``bool`` tensor for the backward, and inductor's CPU store of a
``bool`` vector costs ~10 ms per ``6889 x 128`` layer on this machine, 15 times torch's eager ``>=``
(``benchmarks/README.md``, "Gaussian pooling of an embedding layer").

The backward of ``loc = w_p loc_p + w_q loc_q``, ``scale**-2 = lam scale_p**-2 + (1 - lam)
scale_q**-2`` with the weights ``w_p = lam (scale / scale_p)**2`` and ``w_q = (1 - lam) (scale /
scale_q)**2`` (which sum to 1)::

    d loc / d loc_p = w_p                   d loc / d scale_p = -2 (loc_p - loc_q) w_p w_q / scale_p
    d scale / d scale_p = scale w_p / scale_p

and symmetrically for ``q``. ``lam`` gets no gradient (it is drawn, never learnt); a ``lam`` that
requires one is refused, and so is a second derivative (the training loop of the experiments takes
none; the library's eager rule has them).
"""
import functools

import pyro.distributions as dist
import torch
from torch.autograd.function import once_differentiable

from pyro_probmix.pooling import normal_pool_params, register_pool

__all__ = ["CompiledPoolNormal", "compiled_normal_pool_params"]


def _pool_backward(grad_loc, grad_scale, loc_p, scale_p, loc_q, scale_q, lam, scale):
    w_p = lam * (scale / scale_p).square()
    w_q = (1 - lam) * (scale / scale_q).square()
    pull = 2 * grad_loc * (loc_p - loc_q)
    grad_scale = grad_scale * scale
    return (grad_loc * w_p, (grad_scale - pull * w_q) * w_p / scale_p,
            grad_loc * w_q, (grad_scale + pull * w_p) * w_q / scale_q)


@functools.lru_cache(maxsize=None)
def _kernels():
    # compiled on first call (~10 s on this CPU, then cached on disk); dynamic: any row count
    return torch.compile(normal_pool_params, dynamic=True), torch.compile(_pool_backward, dynamic=True)


class _NormalPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loc_p, scale_p, loc_q, scale_q, lam):
        loc, scale = _kernels()[0](loc_p, scale_p, loc_q, scale_q, lam)
        ctx.save_for_backward(loc_p, scale_p, loc_q, scale_q, lam, scale)
        return loc, scale

    @staticmethod
    @once_differentiable  # a second derivative raises instead of coming out wrong
    def backward(ctx, grad_loc, grad_scale):
        loc_p, scale_p, loc_q, scale_q, lam, scale = ctx.saved_tensors
        return _kernels()[1](grad_loc, grad_scale, loc_p, scale_p, loc_q, scale_q, lam, scale) + (None,)


def compiled_normal_pool_params(loc_p, scale_p, loc_q, scale_q, lam):
    """:func:`~pyro_probmix.pooling.normal_pool_params` by the two compiled kernels: the same
    ``(loc, scale)`` to float32 rounding, with gradients for the four parameters (broadcast to
    one shape first; ``lam`` broadcasts inside the kernels). Compared with the eager rule and its
    autograd gradients in ``tests/test_experiments.py``."""
    lam = torch.as_tensor(lam, dtype=loc_p.dtype, device=loc_p.device)
    if lam.requires_grad:
        raise NotImplementedError("compiled_normal_pool_params: lam requires a gradient; the compiled pool of "
                                  "--compile gives none (pool with pyro_probmix.pooling.normal_pool_params instead)")
    loc_p, scale_p, loc_q, scale_q = torch.broadcast_tensors(loc_p, scale_p, loc_q, scale_q)
    return _NormalPool.apply(loc_p, scale_p, loc_q, scale_q, lam)


class CompiledPoolNormal(dist.Normal):
    """A :class:`~pyro.distributions.Normal` whose log-linear pool with another one is
    :func:`compiled_normal_pool_params`. The M-ProbMix embedding uses it with ``--compile``: the
    eager rule makes ~10 passes over a ``rows x width`` layer forward and twice that backward, each
    memory bound on CPU (see ``docs/experiments.md``).

    Nothing is compiled until two of them are pooled:

    >>> d = CompiledPoolNormal(torch.zeros(3), torch.ones(3))
    >>> isinstance(d, dist.Normal), d.batch_shape
    (True, torch.Size([3]))
    """


@register_pool(CompiledPoolNormal, CompiledPoolNormal)
def _pool_compiled_normal(p, q, lam):
    return CompiledPoolNormal(*compiled_normal_pool_params(p.loc, p.scale, q.loc, q.scale, lam), validate_args=False)
