# SPDX-License-Identifier: Apache-2.0
"""
The fused likelihood of an observed site: the pool of a row's and its partner's distribution,
scored at both rows' labels (:class:`ProbMixLikelihood`), and :func:`fuse_observed_site`, which
builds it from a site's distribution, value and mask.

Masks. A cell that the model scores (its mask is true) is scored by the fused likelihood, with
the weight it has in the model: the site keeps the row's own mask, never the pair's. Where the
partner's cell is not scored (masked out, padding, a missing label), the cell is fused with
itself: lambda is 1 there, so the pool is the row's own distribution and the label its own.
"""
import torch
from pyro.distributions import Delta, Independent, TorchDistribution, Unit
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import constraints

from .labels import fused_label_log_prob
from .rows import take_rows

__all__ = [
    "ProbMixLikelihood", "check_observation_is_data", "fuse_observed_site", "innermost", "is_factor",
    "is_observed_delta",
]


class ProbMixLikelihood(TorchDistribution):
    """
    The likelihood of a fused observed site: ``log_prob(y)`` is the label-fused log-likelihood
    :func:`~pyro_probmix.labels.fused_label_log_prob` of the pooled distribution ``base`` for the
    labels ``(y, partner_value)`` with weights ``lam``. Sampling draws from ``base``.

    With the Dirac kernel (``beta = 0``) and linear label fusion, ``log_prob(y)`` is
    ``lam log base(y) + (1 - lam) log base(partner_value)``:

    >>> import torch, pyro.distributions as dist
    >>> from pyro_probmix.labels import DiracKernel
    >>> base = dist.Normal(torch.zeros(2), 1.0)
    >>> d = ProbMixLikelihood(base, torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0]), DiracKernel(),
    ...                       "linear", "expected_log", 1)
    >>> expected = 0.5 * base.log_prob(torch.zeros(2)) + 0.5 * base.log_prob(torch.tensor([1.0, 2.0]))
    >>> bool(torch.isclose(d.log_prob(torch.zeros(2))[0], expected[0]))
    True
    >>> bool(torch.isclose(d.log_prob(torch.zeros(2))[1], base.log_prob(torch.zeros(2))[1]))
    True
    """

    arg_constraints = {}

    def __init__(self, base, partner_value, lam, kernel, fusion, criterion, num_samples):
        self.base = base
        self.partner_value = partner_value
        self.lam = lam
        self.kernel = kernel
        self.fusion = fusion
        self.criterion = criterion
        self.num_samples = num_samples
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def log_prob(self, value):
        # a continuous family scores integer observations as reals, as plain Pyro does
        value = value.to(self.partner_value.dtype)
        return fused_label_log_prob(
            self.base, value, self.partner_value, self.lam, self.kernel,
            self.fusion, self.criterion, self.num_samples,
        )


def unmask(fn, mask):
    """``(fn, mask)`` with the masks of top-level :class:`MaskedDistribution` wrappers moved into
    ``mask`` (``None``, a bool or a bool tensor), so that they are handled like ``poutine.mask``.
    A mask under ``Independent`` that is constant across the event (``d.mask(m).to_event(1)``
    with ``m`` of size 1 in the event dims, as padding masks are) is a mask of batch cells too."""
    while True:
        if isinstance(fn, MaskedDistribution):
            mask = mask_and(mask, fn._mask)
            fn = fn.base_dist
            continue
        if isinstance(fn, Independent) and isinstance(fn.base_dist, MaskedDistribution):
            inner, n = fn.base_dist, fn.reinterpreted_batch_ndims
            inner_mask = inner._mask
            if isinstance(inner_mask, torch.Tensor):
                if inner_mask.dim() < n or any(size != 1 for size in inner_mask.shape[inner_mask.dim() - n :]):
                    return fn, mask  # varies within the event: refused by the caller
                inner_mask = inner_mask.reshape(inner_mask.shape[: inner_mask.dim() - n])
            mask = mask_and(mask, inner_mask)
            fn = Independent(inner.base_dist, n)
            continue
        return fn, mask


def mask_and(a, b):
    """The conjunction of two Pyro masks (``None``, a bool or a bool tensor)."""
    if a is None or a is True:
        return b
    if b is None or b is True:
        return a
    if a is False or b is False:
        return False
    return a & b


def _check_no_inner_mask(name, fn):
    d = fn
    while isinstance(d, (Independent, ExpandedDistribution)):
        d = d.base_dist
        if isinstance(d, MaskedDistribution):
            raise NotImplementedError(
                f"site {name!r}: its distribution masks cells inside the event "
                f"({type(fn).__name__} of a masked {type(d.base_dist).__name__}); probmix "
                f"needs the mask over batch cells to keep every scored cell: write "
                f"d.to_event(n).mask(m), or use poutine.mask(mask=m), with m over the batch dims"
            )


def _check_value(name, fn, value):
    """The observed value in the distribution's dtype, after the checks plain Pyro makes."""
    expected = fn.batch_shape + fn.event_shape
    # equal shapes first: torch.broadcast_shapes is Python code costing ~25-40 us a call, a
    # tenth of the handler's cost per step at subsample_size=128
    fits = value.shape == expected
    if not fits:
        try:
            fits = torch.broadcast_shapes(value.shape, expected) == expected
        except RuntimeError:
            fits = False
    if not fits:
        raise ValueError(
            f"site {name!r}: the observed value has shape {tuple(value.shape)}, which does not "
            f"broadcast to the distribution's batch_shape + event_shape {tuple(expected)}; "
            f"probmix pairs the rows of the distribution, so its shape must cover the value's"
        )
    if getattr(fn, "_validate_args", False):
        support = fn.support
        if support is constraints.real:
            inside = torch.isfinite(value)  # the common case in one pass: NaN fails it too
        else:
            inside = support.check(value)
            if not support.is_discrete:
                finite = torch.isfinite(value)
                if support.event_dim:
                    finite = finite.flatten(-support.event_dim).all(-1)
                inside = inside & finite
        if not bool(inside.all()):
            raise ValueError(
                f"site {name!r}: observed values outside the support {support} of "
                f"{type(fn).__name__}"
                + ("" if support.is_discrete else " or not finite")
                + f" (first at index {tuple(int(i) for i in (~inside).nonzero()[0])}); a fused "
                f"pair scores both rows' values, so every value must be valid. Leave missing "
                f"values unscored with a mask (poutine.mask(mask=m), d.mask(m)) and a valid "
                f"placeholder value in those cells"
            )
    if not support_is_discrete(fn):
        dtype = scoring_dtype(fn, value)
        if value.dtype != dtype:
            value = value.to(dtype)
    return value


def scoring_dtype(fn, value):
    """
    The floating dtype a site of distribution ``fn`` and observed ``value`` is fused in (its
    lambdas' too): a continuous family's own, so that it scores integer values as reals, as plain
    Pyro does, and values of another floating dtype in its dtype (the pooled rules, e.g.
    ``torch.lerp``, take one dtype: a float64 observation of a float32 model is scored in
    float32); else the values' floating dtype; else the family's, or torch's default.

    >>> scoring_dtype(torch.distributions.Normal(0.0, 1.0), torch.tensor(1.0, dtype=torch.float64))
    torch.float32
    """
    if not support_is_discrete(fn):
        dtype = _param_dtype(fn)
        if dtype is not None:
            return dtype
    if torch.is_floating_point(value):
        return value.dtype
    return _param_dtype(fn) or torch.get_default_dtype()


def innermost(d):
    """The distribution under the Independent, Expanded and Masked wrappers of ``d``."""
    while isinstance(d, (Independent, ExpandedDistribution, MaskedDistribution)):
        d = d.base_dist
    return d


def is_factor(msg):
    """Whether an observed site is a ``pyro.factor`` (an auxiliary site of a ``Unit``)."""
    return bool(msg["infer"].get("is_auxiliary")) and isinstance(innermost(msg["fn"]), Unit)


def is_observed_delta(fn):
    """Whether an observed site's distribution is a ``Delta``: what ``poutine.reparam`` puts in
    place of the site it reparameterises, carrying that site's density."""
    return isinstance(innermost(fn), Delta)


def check_observation_is_data(msg, fn):
    """
    Refuses an observed site in the data plate whose value is not data: a ``Delta`` that
    ``poutine.reparam`` put in place of a site (its density is the reparameterised site's, which
    the Delta hides, so there is nothing to pool), or a value that depends on parameters (a
    residual ``obs=data - prediction``, as ``pyro.contrib.forecast``'s ``predict`` writes: the
    pool of the noise distributions scored at the residuals is not the pool of the rows'
    likelihoods scored at their labels).
    """
    name = msg["name"]
    if is_observed_delta(fn):
        raise ValueError(
            f"site {name!r} is an observed Delta in the data plate, as poutine.reparam writes in "
            f"place of the site it reparameterises (SplitReparam, HaarReparam, "
            f"DiscreteCosineReparam, NeuTraReparam, ConjugateReparam, ...): probmix cannot pool "
            f"the density it carries. If {name!r} is a reparameterised latent, name the observed "
            f"sites to fuse with probmix(..., sites=[...]) leaving it out; if it is an "
            f"observation, do not reparameterise it"
        )
    if msg["value"].requires_grad:
        raise ValueError(
            f"site {name!r}: the observed value depends on parameters (it requires grad), e.g. a "
            f"residual obs=data - prediction (pyro.contrib.forecast's predict writes one). probmix "
            f"pools the rows' distributions and scores the pool at both rows' labels, so the "
            f"labels must be data: write the prediction into the distribution, "
            f"pyro.sample(name, dist.Normal(prediction, scale), obs=data), or pass obs=value.detach() "
            f"if the value is data that merely carries a graph"
        )


def never_scored(msg):
    """Whether a site's log-density never counts: masked off by ``poutine.mask(mask=False)`` or
    ``fn.mask(False)`` (as ``poutine.reparam`` writes the value it puts in place of a latent)."""
    if msg["mask"] is False:
        return True
    d = msg["fn"]
    while isinstance(d, (Independent, ExpandedDistribution, MaskedDistribution)):
        if isinstance(d, MaskedDistribution) and d._mask is False:
            return True
        d = d.base_dist
    return False


def support_is_discrete(fn):
    try:
        return fn.support.is_discrete
    except NotImplementedError:
        return False


def _param_dtype(fn):
    """The dtype of a distribution's parameters (that of its mean), or None if it has no mean."""
    try:
        return fn.mean.dtype
    except NotImplementedError:
        return None


def fuse_observed_site(
    msg, dim, pairing, pool, kernel_of, label_fusion, criterion, num_samples, closed_form=None
):
    """
    Replaces the distribution of an observed site (``msg``) by its :class:`ProbMixLikelihood`
    along plate dim ``dim`` with ``pairing``; ``kernel_of(base)`` gives the label kernel, and
    ``closed_form`` (:func:`~pyro_probmix.closed_forms.closed_form_likelihood`, for log-linear
    pooling) a closed form where one is registered. The site keeps its own mask: see the
    module's docstring.
    """
    name = msg["name"]
    fn, mask = unmask(msg["fn"], msg["mask"])
    _check_no_inner_mask(name, fn)
    if mask is False:
        return  # no cell of the site is scored: nothing to fuse
    value = _check_value(name, fn, msg["value"])
    rows = fn.batch_shape[dim] if len(fn.batch_shape) >= -dim else None
    if rows != pairing.partner.shape[0]:
        raise ValueError(
            f"site {name!r}: {type(fn).__name__} has batch_shape {tuple(fn.batch_shape)}, which "
            f"does not have the {pairing.partner.shape[0]} rows of its data plate at dim {dim}"
        )
    partner = pairing.partner
    event_dim = len(fn.event_shape)
    value = value.expand(fn.batch_shape + fn.event_shape)
    lam = pairing.lam_in(scoring_dtype(fn, value))
    lam = lam.reshape((-1,) + (1,) * (-dim - 1))
    partner_value = value.index_select(dim - event_dim, partner)
    if isinstance(mask, torch.Tensor):
        partner_scored = _partner_cells(mask, dim, partner)
        lam = torch.where(partner_scored, lam, lam.new_ones(()))
        keep = partner_scored.reshape(partner_scored.shape + (1,) * event_dim)
        partner_value = torch.where(keep, partner_value, value)
    if closed_form is not None and not pairing.embedded:
        fused = closed_form(fn, partner, dim, lam, partner_value, kernel_of(fn), label_fusion, criterion)
        if fused is not None:
            msg["fn"] = fused
            msg["mask"] = mask
            return
    if pairing.embedded:
        base = fn  # M-ProbMix: the embedding is fused already; fuse the labels only
    else:
        try:
            base = pool(fn, take_rows(fn, partner, dim), lam)
        except (NotImplementedError, ValueError, TypeError) as e:
            raise type(e)(f"site {name!r}: {e}") from e
    msg["fn"] = ProbMixLikelihood(
        # the kernel is chosen by the site's family (the pool has its support), named in errors
        base, partner_value, lam, kernel_of(fn), label_fusion, criterion, num_samples
    )
    msg["mask"] = mask


def _partner_cells(mask, dim, partner):
    """Whether each cell's partner cell is scored, shaped like ``mask`` broadcast along ``dim``."""
    if mask.dim() < -dim or mask.shape[dim] == 1:
        return mask  # the mask is the same for every row of the plate
    return mask.index_select(dim, partner)
