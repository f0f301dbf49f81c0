# SPDX-License-Identifier: Apache-2.0
"""
Label kernels :math:`s_\\beta(\\tilde y \\mid y)` and the label-fused log-likelihood of §5 and
Assumption 4.2.

For a pair (i, j) with weight ``lam`` the latent label :math:`\\tilde y` follows
:math:`g^y_\\lambda(s_\\beta(\\cdot|y_i), s_\\beta(\\cdot|y_j))`: the mixture
``lam s(.|y_i) + (1 - lam) s(.|y_j)`` (``fusion="linear"``, Assumption 4.2) or the log-linear
pool of the two kernels (``fusion="log_linear"``). A site's loss is then

* ``criterion="expected_log"`` (Eq. 15): :math:`E_{\\tilde y}[\\log \\tilde p(\\tilde y)]`;
* ``criterion="log_expected"`` (Appendix B): :math:`\\log E_{\\tilde y}[\\tilde p(\\tilde y)]`.

Both are computed in closed form where one exists and by Monte Carlo with ``num_samples``
draws of :math:`\\tilde y` otherwise.
"""
from __future__ import annotations

import math
import numbers
from typing import Any  # a kernel's per-row representation (a tensor, a distribution...)

import torch
from pyro.distributions import Independent, MultivariateNormal, Normal
from torch.distributions import Distribution, constraints

from .pooling import _mix

__all__ = [
    "LabelKernel",
    "GaussianKernel",
    "SmoothingKernel",
    "DiracKernel",
    "default_label_kernel",
    "site_label_kernel",
    "fused_label_log_prob",
]

LABEL_FUSIONS = ("linear", "log_linear")
CRITERIA = ("expected_log", "log_expected")


def check_beta(beta: float) -> float:
    """``beta`` as a float, or a ValueError saying what is accepted."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a number (int or float), got {type(beta).__name__} {beta!r}")
    if not 0 <= beta < math.inf:
        raise ValueError(f"beta must be a finite number >= 0, got beta={beta!r}")
    return float(beta)


class LabelKernel:
    """
    Base class of label kernels. A kernel is represented per row by an object ``s`` (its
    "centre") built by :meth:`centre`; :meth:`pool` log-linearly pools two of them, and
    :meth:`expected_log_prob` / :meth:`log_expected_prob` integrate a distribution's
    log-density / density against it.

    A subclass for a kernel that perturbs nothing but scores labels with a fixed offset (the
    built-in kernels are :class:`GaussianKernel`, :class:`SmoothingKernel` and :class:`DiracKernel`):

    >>> import torch, pyro.distributions as dist
    >>> class Shifted(LabelKernel):
    ...     poolable = False
    ...     def centre(self, d, y):
    ...         return y + 1.0
    ...     def expected_log_prob(self, d, s, num_samples):
    ...         return d.log_prob(s)
    >>> d = dist.Normal(torch.zeros(2), 1.0)
    >>> s = Shifted().centre(d, torch.zeros(2))
    >>> bool(torch.allclose(Shifted().expected_log_prob(d, s, 1), d.log_prob(torch.ones(2))))
    True
    """

    #: whether :meth:`pool` (log-linear label fusion) is defined for this kernel
    poolable = True

    def centre(self, d: Distribution, y: torch.Tensor) -> Any:
        """The kernel :math:`s_\\beta(\\cdot|y)` in this kernel's representation, for a site of ``d``."""
        raise NotImplementedError

    def pool(self, s_i: Any, s_j: Any, lam: torch.Tensor, event_dim: int) -> Any:
        """The log-linear pool :math:`s_i^\\lambda s_j^{1-\\lambda}` of two centres."""
        raise NotImplementedError

    def expected_log_prob(self, d: Distribution, s: Any, num_samples: int) -> torch.Tensor:
        """:math:`E_{\\tilde y \\sim s}[\\log d(\\tilde y)]`, shape ``d.batch_shape``."""
        raise NotImplementedError

    def log_expected_prob(self, d: Distribution, s: Any, num_samples: int) -> torch.Tensor:
        """:math:`\\log E_{\\tilde y \\sim s}[d(\\tilde y)]` (Appendix B), shape ``d.batch_shape``."""
        raise NotImplementedError

    def mixed_expected_log_prob(
        self, d: Distribution, s_i: Any, s_j: Any, lam: torch.Tensor, num_samples: int
    ) -> torch.Tensor:
        """``lam E_i + (1 - lam) E_j``: the expected log-density under linear label fusion."""
        return _mix(
            self.expected_log_prob(d, s_i, num_samples),
            self.expected_log_prob(d, s_j, num_samples),
            lam,
        )

    def __repr__(self):
        return f"{type(self).__name__}(beta={getattr(self, 'beta', 0.0)})"


class GaussianKernel(LabelKernel):
    """
    Regression kernel :math:`s_\\beta(\\tilde y|y) = N(\\tilde y | y, \\beta I)` for real-valued
    labels. Its log-linear pool is :math:`N(\\lambda y_i + (1-\\lambda) y_j, \\beta I)`, so with
    ``beta=0`` log-linear label fusion is the mixup label.

    Closed forms for ``Normal``, ``Independent(Normal)`` and ``MultivariateNormal``:
    :math:`E[\\log N(\\tilde y|m,\\sigma^2)] = \\log N(y|m,\\sigma^2) - \\beta / (2\\sigma^2)` and
    :math:`\\log E[N(\\tilde y|m,\\sigma^2)] = \\log N(y|m,\\sigma^2+\\beta)`; Monte Carlo otherwise.

    >>> import torch, pyro.distributions as dist
    >>> k = GaussianKernel(0.5)
    >>> d = dist.Normal(torch.tensor(0.0), torch.tensor(1.0))
    >>> float(k.expected_log_prob(d, torch.tensor(0.0), 1))  # log N(0|0,1) - 0.5/2
    -1.1689385175704956
    """

    def __init__(self, beta: float) -> None:
        self.beta = check_beta(beta)

    def centre(self, d, y):
        return y

    def pool(self, s_i, s_j, lam, event_dim):
        lam = lam.reshape(lam.shape + (1,) * event_dim) if isinstance(lam, torch.Tensor) else lam
        return lam * s_i + (1 - lam) * s_j

    def _samples(self, s, num_samples):
        noise = torch.randn((num_samples,) + s.shape, dtype=s.dtype, device=s.device)
        return s + self.beta**0.5 * noise

    def expected_log_prob(self, d, s, num_samples):
        if self.beta == 0:
            return d.log_prob(s)
        exact = _gaussian_trace_precision(d)
        if exact is not None:
            return d.log_prob(s) - 0.5 * self.beta * exact
        return d.log_prob(self._samples(s, num_samples)).mean(0)

    def mixed_expected_log_prob(self, d, s_i, s_j, lam, num_samples):
        if type(d) is not Normal:
            return super().mixed_expected_log_prob(d, s_i, s_j, lam, num_samples)
        # lam (y_i - m)^2 + (1 - lam) (y_j - m)^2 = (ybar - m)^2 + lam (1 - lam) (y_i - y_j)^2
        # (the identity behind Theorem 4.4): one density evaluation instead of two
        spread = lam * (1 - lam) * (s_i - s_j).pow(2) + self.beta
        return d.log_prob(torch.lerp(s_j, s_i, lam)) - spread / (2 * d.scale.pow(2))

    def log_expected_prob(self, d, s, num_samples):
        widened = _gaussian_widen(d, self.beta)
        if widened is not None:
            return widened.log_prob(s)
        log_p = d.log_prob(self._samples(s, num_samples))
        return torch.logsumexp(log_p, 0) - torch.log(torch.tensor(float(num_samples)))


def _gaussian_trace_precision(d):
    """tr(Sigma^-1) summed over the event for Gaussian families (None for other families)."""
    if type(d) is Normal:
        return d.scale.pow(-2)
    if type(d) is Independent and type(d.base_dist) is Normal:
        return d.base_dist.scale.pow(-2).flatten(-d.reinterpreted_batch_ndims).sum(-1)
    if type(d) is MultivariateNormal:
        return d.precision_matrix.diagonal(dim1=-2, dim2=-1).sum(-1)
    return None


def _gaussian_widen(d, beta):
    """The Gaussian d convolved with N(0, beta I), or None for non-Gaussian families."""
    if type(d) is Normal:
        return Normal(d.loc, (d.scale.pow(2) + beta).sqrt())
    if type(d) is Independent and type(d.base_dist) is Normal:
        return Independent(_gaussian_widen(d.base_dist, beta), d.reinterpreted_batch_ndims)
    if type(d) is MultivariateNormal:
        eye = torch.eye(d.event_shape[0], dtype=d.loc.dtype, device=d.loc.device)
        return MultivariateNormal(d.loc, covariance_matrix=d.covariance_matrix + beta * eye)
    return None


class SmoothingKernel(LabelKernel):
    """
    Classification kernel :math:`P(\\tilde y = k | y) \\propto 1[y = k] + \\beta` over the finite
    support of a discrete family (Categorical, OneHotCategorical, Bernoulli, Binomial, or any
    family with ``enumerate_support``). The centre is a soft label: a probability vector over
    the support, first dimension indexing ``d.enumerate_support()``. Expectations are exact sums.

    >>> import torch, pyro.distributions as dist
    >>> k = SmoothingKernel(0.1)
    >>> d = dist.Categorical(logits=torch.zeros(3))
    >>> k.centre(d, torch.tensor(2))
    tensor([0.0769, 0.0769, 0.8462])
    """

    def __init__(self, beta: float) -> None:
        self.beta = check_beta(beta)

    @property
    def poolable(self) -> bool:
        # with beta = 0 two different labels have disjoint kernels: their pool is undefined
        return self.beta > 0

    @staticmethod
    def _support(d):
        values = d.enumerate_support(expand=False)  # (K,) + (1,) * batch_dims + event_shape
        return values, values.shape[0]

    def centre(self, d, y):
        values, num_values = self._support(d)
        event_dims = len(d.event_shape)
        hit = values == y
        if event_dims:
            hit = hit.flatten(-event_dims).all(-1)
        hit = hit.to(y.dtype if torch.is_floating_point(y) else _float_dtype(d))
        return (hit + self.beta) / (1 + num_values * self.beta)

    def pool(self, s_i, s_j, lam, event_dim):
        # lam broadcasts against the batch dims, which follow the support dim
        return torch.softmax(_mix(torch.log(s_i), torch.log(s_j), lam), dim=0)

    def _log_probs(self, d):
        values, _ = self._support(d)
        return d.log_prob(values)  # (K,) + batch_shape

    def expected_log_prob(self, d, s, num_samples):
        log_p = self._log_probs(d)
        # 0 * log 0 = 0: a label of zero weight contributes nothing even where p = 0
        return torch.where(s > 0, s * log_p, torch.zeros_like(log_p)).sum(0)

    def log_expected_prob(self, d, s, num_samples):
        return torch.logsumexp(torch.log(s) + self._log_probs(d), 0)


def _float_dtype(d, depth=3):
    """The dtype of the first floating tensor a distribution holds (its parameters, or those of
    the distributions it wraps), else torch's default: the dtype of soft labels of integer labels."""
    for item in vars(d).values():
        if isinstance(item, torch.Tensor) and torch.is_floating_point(item):
            return item.dtype
        if isinstance(item, Distribution) and depth:
            dtype = _float_dtype(item, depth - 1)
            if dtype is not None:
                return dtype
    return torch.get_default_dtype() if depth == 3 else None


class DiracKernel(LabelKernel):
    """
    No label perturbation (``beta = 0``) for any family: :math:`E[\\log \\tilde p] = \\log \\tilde p(y)`.
    Log-linear fusion of two Dirac kernels at different labels is undefined, so it is not poolable.

    >>> import torch, pyro.distributions as dist
    >>> d, y = dist.Normal(torch.zeros(3), 2.0), torch.tensor([0.0, 1.0, -1.0])
    >>> k = DiracKernel()
    >>> bool(torch.equal(k.expected_log_prob(d, k.centre(d, y), 1), d.log_prob(y))), k.poolable
    (True, False)
    """

    poolable = False
    beta = 0.0

    def centre(self, d, y):
        return y

    def expected_log_prob(self, d, s, num_samples):
        return d.log_prob(s)

    log_expected_prob = expected_log_prob


def _is_real(support):
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real or support is constraints.real_vector


def default_label_kernel(d: Distribution, beta: float) -> LabelKernel:
    """
    The paper's kernel for the family of ``d`` (§5): :class:`GaussianKernel` for real-valued
    labels (with ``beta = 0`` too: its log-linear pool is the mixup label), otherwise
    :class:`DiracKernel` when ``beta == 0`` and :class:`SmoothingKernel` for finite discrete
    labels.

    :raises NotImplementedError: for ``beta > 0`` on a family with neither support.

    >>> import pyro.distributions as dist
    >>> default_label_kernel(dist.Bernoulli(0.3), 0.01)
    SmoothingKernel(beta=0.01)
    """
    beta = check_beta(beta)
    if _is_real(d.support):
        return GaussianKernel(beta)
    if beta == 0:
        return DiracKernel()
    if d.support.is_discrete and d.has_enumerate_support:
        return SmoothingKernel(beta)
    events = (
        " For several discrete labels per row (d.to_event(n)), score each label in a plate of its "
        "own instead of the event: the smoothing kernel then applies to each."
        if d.support.is_discrete and d.event_shape else ""
    )
    raise NotImplementedError(
        f"no label kernel for {type(d).__name__} with support {d.support} and beta={beta}: "
        f"the built-in kernels cover real-valued labels (Gaussian) and finite discrete labels "
        f"(smoothing); use beta=0 or pass label_kernel=<a LabelKernel subclass>.{events}"
    )


def site_label_kernel(
    site: str, d: Distribution, label_kernel: LabelKernel | None, beta: float, label_fusion: str
) -> LabelKernel:
    """
    The label kernel of observed ``site`` with distribution ``d``: ``label_kernel`` if given,
    else :func:`default_label_kernel`, checked against ``label_fusion``.

    :raises NotImplementedError: naming the site, when ``d``'s family has no default kernel.
    :raises ValueError: for ``label_fusion="log_linear"`` with a kernel that cannot be pooled.

    >>> import pyro.distributions as dist
    >>> site_label_kernel("y", dist.Normal(0.0, 1.0), None, 0.0, "linear")
    GaussianKernel(beta=0.0)
    """
    try:
        kernel = label_kernel or default_label_kernel(d, beta)
    except NotImplementedError as e:
        raise NotImplementedError(f"site {site!r}: {e}") from e
    if label_fusion == "log_linear" and not kernel.poolable:
        if label_kernel is not None:
            why, fix = f"the label_kernel {kernel!r} is not poolable (poolable=False)", "a poolable kernel"
        else:
            why = f"undefined for {type(d).__name__} labels with beta=0 (disjoint kernels)"
            smoothable = _is_real(d.support) or (d.support.is_discrete and d.has_enumerate_support)
            fix = "beta > 0" if smoothable else None
        fix = f"use {fix} or label_fusion='linear'" if fix else "use label_fusion='linear'"
        raise ValueError(
            f"site {site!r}: label_fusion='log_linear' pools the label kernels "
            f"s(.|y_i)^lam s(.|y_j)^(1-lam), which is {why}; {fix}"
        )
    return kernel


def fused_label_log_prob(
    d: Distribution,
    y_i: torch.Tensor,
    y_j: torch.Tensor,
    lam: torch.Tensor,
    kernel: LabelKernel,
    fusion: str = "linear",
    criterion: str = "expected_log",
    num_samples: int = 1,
) -> torch.Tensor:
    """
    Label-fused log-likelihood of a (pooled) distribution ``d``: the site loss of §3.2 for the
    pair of labels ``(y_i, y_j)`` with weight ``lam``.

    :param d: the fused likelihood :math:`\\tilde p(\\cdot|x_i, x_j, \\lambda)`.
    :param y_i: label of the first row (weight ``lam``), shape ``batch_shape + event_shape``.
    :param y_j: label of the second row (weight ``1 - lam``), same shape.
    :param lam: tensor broadcastable to ``d.batch_shape``.
    :param kernel: a :class:`LabelKernel`.
    :param fusion: ``"linear"`` (Assumption 4.2) or ``"log_linear"``.
    :param criterion: ``"expected_log"`` (Eq. 15) or ``"log_expected"`` (Appendix B).
    :param num_samples: Monte Carlo draws of the label, where no closed form exists.

    >>> import torch, pyro.distributions as dist
    >>> d = dist.Normal(torch.zeros(2), torch.ones(2))
    >>> y_i, y_j, lam = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.25, 1.0])
    >>> lp = fused_label_log_prob(d, y_i, y_j, lam, GaussianKernel(0.0))
    >>> bool(torch.allclose(lp, lam * d.log_prob(y_i) + (1 - lam) * d.log_prob(y_j)))
    True
    """
    s_i, s_j = kernel.centre(d, y_i), kernel.centre(d, y_j)
    if fusion == "log_linear":
        s = kernel.pool(s_i, s_j, lam, len(d.event_shape))
        if criterion == "expected_log":
            return kernel.expected_log_prob(d, s, num_samples)
        return kernel.log_expected_prob(d, s, num_samples)
    if criterion == "expected_log":
        return kernel.mixed_expected_log_prob(d, s_i, s_j, lam, num_samples)
    log_lam = torch.log(torch.as_tensor(lam))
    return torch.logaddexp(
        log_lam + kernel.log_expected_prob(d, s_i, num_samples),
        torch.log1p(-torch.as_tensor(lam)) + kernel.log_expected_prob(d, s_j, num_samples),
    )

