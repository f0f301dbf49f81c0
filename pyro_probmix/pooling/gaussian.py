# SPDX-License-Identifier: Apache-2.0
"""
Gaussian pooling rules: precisions mix, the mean is precision-weighted (Appendix C.1).
"""
import torch
import torch.distributions as td
from pyro.distributions import HalfNormal, MultivariateNormal, Normal
from pyro.distributions.util import broadcast_shape

from .registry import as_weight, endpoints, register_pool

__all__ = ["normal_pool_params"]


def _relative_precisions(scale_p, scale_q, lam):
    """
    ``(c, r_p, r_q)`` with ``r = weight * (c / scale)**2`` the weighted precisions relative to
    ``c``, the scale of the component of larger weighted precision: ``r`` lies in [0, 1] (no
    overflow of ``1/scale**2`` for tiny scales), the larger one is exactly ``lam`` or
    ``1 - lam``, so lam in {0, 1} gives ``r = (1, 0)`` or ``(0, 1)`` and the weighted component
    back bit for bit. ``c`` cancels out of the pool, so it is detached (its gradient is zero).
    """
    p_dominates = lam.sqrt() * scale_q >= (1 - lam).sqrt() * scale_p
    c = torch.where(p_dominates, scale_p, scale_q).detach()
    return c, lam * (c / scale_p).square(), (1 - lam) * (c / scale_q).square()


def normal_pool_params(loc_p, scale_p, loc_q, scale_q, lam):
    """
    ``(loc, scale)`` of the log-linear pool of ``Normal(loc_p, scale_p)`` (weight ``lam``) and
    ``Normal(loc_q, scale_q)``: precisions mix, ``1/s^2 = lam/s_p^2 + (1-lam)/s_q^2``, and the
    mean is precision-weighted (Appendix C.1). A pure tensor function, so it can be handed to
    :func:`torch.compile` (see :ref:`the experiments <compile-pooling>`).

    Both weights ``lam r_p / r`` and ``(1-lam) r_q / r`` are formed from relative precisions
    in [0, 1], so neither is rounded away when the other dominates (a pull of 1e-9 of the
    other mean survives in float32) and ``lam`` in {0, 1} returns the weighted component's
    ``loc`` and ``scale`` exactly. Relative error (componentwise, measured against exact
    rational arithmetic by ``tests/test_pooling_numerics.py``): a few units in the last place
    for scales and scale ratios within ``1/sqrt(tiny)`` (1e19 in float32).

    >>> import torch
    >>> loc, scale = normal_pool_params(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(2.0), torch.tensor(1.0), 0.5)
    >>> float(loc), float(scale)
    (1.0, 1.0)
    """
    lam = torch.as_tensor(lam, dtype=loc_p.dtype, device=loc_p.device)
    c, r_p, r_q = _relative_precisions(scale_p, scale_q, lam)
    r = r_p + r_q
    return (r_p * loc_p + r_q * loc_q) / r, c * r.rsqrt()


@register_pool(td.Normal, td.Normal)
def _pool_normal(p, q, lam):
    # parameters derived from validated ones need no second validation (it costs a host sync)
    return Normal(*normal_pool_params(p.loc, p.scale, q.loc, q.scale, lam), validate_args=False)


@register_pool(td.HalfNormal, td.HalfNormal)
def _pool_half_normal(p, q, lam):
    # 2 N(y; 0, s^2) on y > 0: an exponential family in -1/(2 s^2), precisions mix
    c, r_p, r_q = _relative_precisions(p.scale, q.scale, as_weight(lam, p.scale))
    return HalfNormal(c * (r_p + r_q).rsqrt(), validate_args=False)


@register_pool(td.MultivariateNormal, td.MultivariateNormal)
def _pool_mvn(p, q, lam):
    # The pool minimises lam |L_p^-1 (y - mu_p)|^2 + (1-lam) |L_q^-1 (y - mu_q)|^2: a least-squares
    # problem with the stacked whitening rows A = [sqrt(lam) L_p^-1; sqrt(1-lam) L_q^-1], whose
    # precision is A^T A. A QR factorisation of A gives its Cholesky factor without forming
    # A^T A (which squares the condition number): no inverse of an ill-conditioned precision.
    lam = as_weight(lam, p.loc)
    n = p.event_shape[-1]
    batch = broadcast_shape(p.batch_shape, q.batch_shape, lam.shape)
    lam = lam.expand(batch)
    tril_p = p._unbroadcasted_scale_tril.expand(batch + (n, n))
    tril_q = q._unbroadcasted_scale_tril.expand(batch + (n, n))
    loc_p, loc_q = p.loc.expand(batch + (n,)), q.loc.expand(batch + (n,))
    eye = torch.eye(n, dtype=loc_p.dtype, device=loc_p.device).expand(batch + (n, n))
    sqrt_p, sqrt_q = lam.sqrt()[..., None, None], (1 - lam).sqrt()[..., None, None]
    rows = torch.cat(
        [sqrt_p * torch.linalg.solve_triangular(tril_p, eye, upper=False),
         sqrt_q * torch.linalg.solve_triangular(tril_q, eye, upper=False)], -2
    )
    targets = torch.cat(
        [sqrt_p * torch.linalg.solve_triangular(tril_p, loc_p[..., None], upper=False),
         sqrt_q * torch.linalg.solve_triangular(tril_q, loc_q[..., None], upper=False)], -2
    )
    # QR of the column-reversed rows: A J = Q R, so A^T A = K^T K with K = J R J lower triangular,
    # and the pooled covariance (A^T A)^-1 has the lower Cholesky factor K^-1
    q_factor, r_factor = torch.linalg.qr(rows.flip(-1))
    k = r_factor.flip(-1, -2)
    k = k * torch.sign(k.diagonal(dim1=-2, dim2=-1))[..., None]  # positive diagonal
    scale_tril = torch.linalg.solve_triangular(k, eye, upper=False)
    coeffs = torch.linalg.solve_triangular(r_factor, q_factor.transpose(-1, -2) @ targets, upper=True)
    loc = coeffs.squeeze(-1).flip(-1)
    if not (torch.isfinite(scale_tril).all() and torch.isfinite(loc).all()):
        raise ValueError(
            "log-linear pool of MultivariateNormal: the pooled precision is singular to "
            f"{loc.dtype} precision (a scale_tril with a zero or denormal diagonal); use float64"
        )
    lam_ = lam[..., None]
    loc = endpoints(lam_, loc_p, loc_q, loc)
    scale_tril = endpoints(lam_[..., None], tril_p, tril_q, scale_tril)
    return MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)
