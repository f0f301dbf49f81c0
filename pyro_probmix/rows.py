# SPDX-License-Identifier: Apache-2.0
"""
Row selection along a batch dimension of a distribution: the partner rows of a plate.

:func:`take_rows` rebuilds a distribution from its parameters, found by the torch convention
that each constructor argument is listed in ``arg_constraints`` (with the constraint's
``event_dim`` trailing dims) and readable under its name. The families that do not follow it
(wrappers, mixtures, transformed distributions, a ``total_count`` stored outside
``arg_constraints``) have a rule in a registry that dispatches on the type's class hierarchy,
like :func:`torch.distributions.kl.register_kl`; :func:`register_rows` adds one.
"""
import functools
import inspect

import torch
from pyro.distributions import Delta, FoldedDistribution, ImproperUniform, MaskedMixture, TransformedDistribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Independent, LKJCholesky, MixtureSameFamily, Multinomial
from torch.distributions import RelaxedBernoulli, RelaxedOneHotCategorical
from torch.distributions import TransformedDistribution as TorchTransformedDistribution
from torch.distributions import transforms as T

__all__ = ["register_rows", "take_rows"]

# Constructor arguments that exclude each other, in order of preference.
_EXCLUSIVE_PARAMS = (
    ("logits", "probs"),
    ("gate_logits", "gate"),
    ("scale_tril", "covariance_matrix", "precision_matrix"),
)

_ROWS_REGISTRY = {}


def register_rows(type_d):
    """
    Decorator registering how to select rows of the distributions of type ``type_d`` (and of its
    subclasses without a rule of their own). The rule receives ``(d, index, dim)`` with ``dim``
    a negative batch dimension of ``d`` and returns the distribution whose rows along ``dim``
    are those of ``d`` at ``index``.

    >>> import torch
    >>> class Shifted(torch.distributions.Distribution):
    ...     arg_constraints = {}
    ...     def __init__(self, shift):
    ...         self.shift = shift
    ...         super().__init__(shift.shape, validate_args=False)
    >>> @register_rows(Shifted)
    ... def _shifted_rows(d, index, dim):
    ...     return Shifted(d.shift.index_select(dim, index))
    >>> take_rows(Shifted(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([2, 2]), -1).shift
    tensor([3., 3.])
    """
    if not (isinstance(type_d, type) and issubclass(type_d, torch.distributions.Distribution)):
        raise TypeError(f"register_rows expects a Distribution subclass, got {type_d!r}")

    def decorator(fun):
        _ROWS_REGISTRY[type_d] = fun
        _dispatch_rows.cache_clear()
        return fun

    return decorator


def take_rows(d, index, dim):
    """
    The distribution whose batch entries along ``dim`` are those of ``d`` at ``index``
    (like ``tensor.index_select(dim, index)`` on every parameter).

    :param d: a distribution of ``pyro.distributions`` or ``torch.distributions``.
    :param index: LongTensor of row indices.
    :param int dim: a negative batch dimension of ``d``.
    :raises TypeError: for a family whose parameters cannot be found; the message says how to
        register a rule.

    >>> import torch, pyro.distributions as dist
    >>> d = dist.Normal(torch.tensor([0.0, 1.0, 2.0]), 1.0)
    >>> take_rows(d, torch.tensor([2, 0]), -1).loc
    tensor([2., 0.])
    >>> take_rows(dist.LogNormal(torch.tensor([0.0, 1.0, 2.0]), 1.0), torch.tensor([1]), -1).loc
    tensor([1.])
    """
    if not -len(d.batch_shape) <= dim < 0:
        raise ValueError(
            f"cannot take rows along dim {dim} of {type(d).__name__} with batch_shape "
            f"{tuple(d.batch_shape)}: expected a negative batch dimension"
        )
    rule = _dispatch_rows(type(d))
    return rule(d, index, dim) if rule is not None else _rebuild_from_params(d, index, dim)


@functools.lru_cache(maxsize=None)
def _dispatch_rows(cls):
    # the rule of the most specific registered class in cls's hierarchy
    return next((_ROWS_REGISTRY[c] for c in cls.__mro__ if c in _ROWS_REGISTRY), None)


def _select(value, index, dim, full_shape):
    """Rows ``index`` along ``dim`` (negative, of ``full_shape``) of a tensor broadcastable to it."""
    if not isinstance(value, torch.Tensor) or value.dim() < -dim or value.size(dim) == 1:
        return value  # a parameter shared by all rows
    return value.expand(full_shape[len(full_shape) - value.dim() :]).index_select(dim, index)


def _param_names(d):
    """Constructor arguments of ``d`` that it stores (or exposes as plain properties)."""
    stored = vars(d)
    given = stored.get("_param")  # torch's record of the parameter the constructor got
    built_from_probs = given is not None and given is stored.get("probs")
    return _readable_params(type(d), tuple(d.arg_constraints), frozenset(stored), built_from_probs)


@functools.lru_cache(maxsize=256)
def _readable_params(cls, arg_names, stored, built_from_probs):
    readable = [name for name in arg_names if name in stored or isinstance(getattr(cls, name, None), property)]
    for group in _EXCLUSIVE_PARAMS:
        present = [name for name in group if name in readable]
        if built_from_probs and "probs" in present:
            present.insert(0, present.pop(present.index("probs")))
        readable = [name for name in readable if name not in present[1:]]
    return tuple(readable)


@functools.lru_cache(maxsize=None)
def _takes_validate_args(cls):
    parameters = inspect.signature(cls.__init__).parameters.values()
    return any(p.name == "validate_args" or p.kind is p.VAR_KEYWORD for p in parameters)


def _rebuild_from_params(d, index, dim, extra=()):
    extra = dict(extra)  # constructor arguments outside arg_constraints
    names = _param_names(d)
    if not names and not extra:
        raise TypeError(
            f"cannot select rows of {type(d).__name__}: none of its arg_constraints "
            f"{sorted(d.arg_constraints)} can be read from it; store the constructor arguments "
            f"under those names (the torch.distributions convention) or register a rule with "
            f"@pyro_probmix.rows.register_rows({type(d).__name__})"
        )
    params = {}
    for name in names:
        value, event_dim = getattr(d, name), d.arg_constraints[name].event_dim
        if isinstance(value, torch.Tensor):
            # dims beyond the batch dims are event dims, also where the constraint does not say
            # so (LogisticNormal's loc, MixtureOfDiagNormals' locs)
            event_dim = max(event_dim, value.dim() - len(d.batch_shape))
            value = _select(value, index, dim - event_dim, d.batch_shape + value.shape[value.dim() - event_dim :])
        params[name] = value
    if _takes_validate_args(type(d)):
        extra["validate_args"] = False  # rows of validated parameters need no second check
    if _user_constructor(type(d)) and type(d) not in _ROUND_TRIPS:
        _check_round_trip(d, names, extra)
    try:
        return type(d)(**params, **extra)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"cannot select rows of {type(d).__name__}: rebuilding it from its parameters "
            f"{sorted(params)} failed ({e}); register a rule with "
            f"@pyro_probmix.rows.register_rows({type(d).__name__})"
        ) from e


# classes with a constructor of their own whose rebuild from stored parameters gave them back
_ROUND_TRIPS = set()


@functools.lru_cache(maxsize=None)
def _user_constructor(cls):
    """Whether ``cls.__init__`` is a user's (not torch's, Pyro's or ours): it may transform its
    arguments before storing them, so that a rebuild from the stored ones applies that twice."""
    owner = next(c for c in cls.__mro__ if "__init__" in vars(c))
    return not owner.__module__.startswith(("torch.", "pyro.", "pyro_probmix."))


def _check_round_trip(d, names, extra):
    """Rebuilds ``d`` from all its stored parameters and refuses it unless they come back equal
    (once per class): a subclass whose ``__init__`` shifts or scales its arguments would give
    every partner row another distribution than the row's."""
    rebuilt = type(d)(**{name: getattr(d, name) for name in names}, **extra)
    changed = [name for name in names if not _equal(getattr(rebuilt, name), getattr(d, name))]
    if changed:
        raise TypeError(
            f"cannot select rows of {type(d).__name__}: rebuilt from its own parameters "
            f"{sorted(names)}, it stores other values of {changed} (its __init__ transforms its "
            f"arguments), so a partner row rebuilt that way would be another distribution. "
            f"Register a rule with @pyro_probmix.rows.register_rows({type(d).__name__})"
        )
    _ROUND_TRIPS.add(type(d))


def _equal(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b


@register_rows(Independent)
def _independent_rows(d, index, dim):
    n = d.reinterpreted_batch_ndims
    return type(d)(take_rows(d.base_dist, index, dim - n), n)


@register_rows(MaskedDistribution)
def _masked_rows(d, index, dim):
    mask = d._mask
    if isinstance(mask, torch.Tensor):
        mask = _select(mask, index, dim, d.batch_shape)
    return MaskedDistribution(take_rows(d.base_dist, index, dim), mask)


@register_rows(ExpandedDistribution)
def _expanded_rows(d, index, dim):
    # kept an ExpandedDistribution, so that the row's and its partner's pool by one rule
    base = d.base_dist
    if base.batch_shape != d.batch_shape:
        base = base.expand(d.batch_shape)
        if isinstance(base, ExpandedDistribution):
            # a family whose expand() wraps itself again (MaskedMixture) would recurse here
            raise TypeError(
                f"cannot select rows of {type(d.base_dist).__name__} expanded to batch_shape "
                f"{tuple(d.batch_shape)}: its expand() returns an ExpandedDistribution of itself. "
                f"Register a rule with @pyro_probmix.rows.register_rows({type(d.base_dist).__name__})"
            )
    rows = take_rows(base, index, dim)
    return ExpandedDistribution(rows, rows.batch_shape)


@register_rows(MixtureSameFamily)
def _mixture_rows(d, index, dim):
    # the components carry one more batch dim (the component index) on the right
    mixture = take_rows(d.mixture_distribution, index, dim)
    components = take_rows(d.component_distribution, index, dim - 1)
    return type(d)(mixture, components, validate_args=False)


@register_rows(MaskedMixture)
def _masked_mixture_rows(d, index, dim):
    # its expand() wraps it in an ExpandedDistribution, so the rows are selected from the parts:
    # the mask and both components, broadcast to the mixture's batch shape
    mask = _select(d.mask, index, dim, d.batch_shape)
    components = (c if c.batch_shape == d.batch_shape else c.expand(d.batch_shape) for c in (d.component0, d.component1))
    return MaskedMixture(mask, *(take_rows(c, index, dim) for c in components), validate_args=False)


@register_rows(Multinomial)
def _multinomial_rows(d, index, dim):
    # total_count is an int outside arg_constraints
    return _rebuild_from_params(d, index, dim, {"total_count": d.total_count})


@register_rows(Delta)
def _delta_rows(d, index, dim):
    shape = d.batch_shape + d.event_shape
    v = _select(d.v, index, dim - d.event_dim, shape)
    log_density = _select(d.log_density, index, dim, d.batch_shape)
    return Delta(v, log_density, event_dim=d.event_dim, validate_args=False)


@register_rows(TorchTransformedDistribution)
def _transformed_rows(d, index, dim):
    if type(d) not in (TorchTransformedDistribution, TransformedDistribution):
        # LogNormal, HalfNormal, Gumbel, ...: their constructor arguments are readable
        return _rebuild_from_params(d, index, dim)
    # transforms act on the rightmost dims, so batch dims keep their position from the left
    position = len(d.batch_shape) + dim
    shape = d.base_dist.batch_shape + d.base_dist.event_shape
    base = take_rows(d.base_dist, index, position - len(d.base_dist.batch_shape))
    transforms = []
    for t in d.transforms:
        transforms.append(_transform_rows(t, index, position - len(shape), shape))
        shape = t.forward_shape(shape)
    return TransformedDistribution(base, transforms, validate_args=False)


def _transform_rows(t, index, dim, shape):
    """``t`` with the rows ``index`` of its parameters (``dim`` is negative, of its input ``shape``)."""
    if isinstance(t, T.AffineTransform):
        return T.AffineTransform(
            _select(t.loc, index, dim, shape), _select(t.scale, index, dim, shape), t.event_dim, t._cache_size
        )
    if isinstance(t, T.PowerTransform):
        return T.PowerTransform(_select(t.exponent, index, dim, shape), t._cache_size)
    if isinstance(t, T.ComposeTransform):
        parts = []
        for part in t.parts:
            parts.append(_transform_rows(part, index, dim, shape))
            shape = part.forward_shape(shape)
        return T.ComposeTransform(parts, t._cache_size)
    if isinstance(t, T.IndependentTransform):
        base = _transform_rows(t.base_transform, index, dim, shape)
        return T.IndependentTransform(base, t.reinterpreted_batch_ndims, t._cache_size)
    if isinstance(t, T._InverseTransform):
        # t.inv maps t's output back: its input has t's output shape, batch dims on the left
        inner_shape = t.forward_shape(shape)
        inner = _transform_rows(t.inv, index, dim + len(shape) - len(inner_shape), inner_shape)
        return t if inner is t.inv else inner.inv
    if isinstance(t, T.CumulativeDistributionTransform):
        cdf = t.distribution  # acts element-wise: its batch dims broadcast against the input
        if len(cdf.batch_shape) < -dim or cdf.batch_shape[dim] == 1:
            return t
        return T.CumulativeDistributionTransform(take_rows(cdf, index, dim), t._cache_size)
    tensors = sorted(name for name, value in vars(t).items() if name != "_inv" and _holds_tensor(value))
    if tensors:
        raise TypeError(
            f"cannot select rows of a TransformedDistribution: its {type(t).__name__} carries "
            f"tensors {tensors} that may differ by row; register a rule for the distribution "
            f"with @pyro_probmix.rows.register_rows"
        )
    captured = sorted(name for name, value in vars(t).items() if _captures_tensor(value))
    if captured:
        # a conditioned flow (ConditionalTransformedDistribution.condition(x)) computes its
        # parameters from the context x held in a functools.partial or a closure: returning
        # the transform unchanged would give the partner row the row's own flow
        raise TypeError(
            f"cannot select rows of a TransformedDistribution: its {type(t).__name__} computes "
            f"its parameters from tensors captured in {captured} (a flow conditioned on a "
            f"context, e.g. ConditionalTransformedDistribution(...).condition(x)), whose rows "
            f"probmix cannot select; register a rule for the distribution with "
            f"@pyro_probmix.rows.register_rows, or fuse an embedding of x instead (M-ProbMix)"
        )
    return t  # a parameter-free transform (Exp, Sigmoid, ...) or a module shared by all rows


def _holds_tensor(value, depth=3):
    """Whether ``value`` is, or holds in a distribution, transform or list, a tensor of one dim
    or more (a parameter that may differ by row)."""
    if isinstance(value, torch.Tensor):
        return value.dim() > 0
    if depth == 0:
        return False
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v, depth - 1) for v in value)
    if isinstance(value, (torch.distributions.Distribution, T.Transform)):
        return any(_holds_tensor(v, depth - 1) for name, v in vars(value).items() if name != "_inv")
    return False


def _captures_tensor(value, depth=2):
    """Whether ``value`` is a function that holds a tensor of one dim or more: bound in a
    :func:`functools.partial` or in a closure (``depth`` levels of nesting)."""
    if isinstance(value, torch.Tensor):
        return value.dim() > 0
    if depth == 0:
        return False
    if isinstance(value, functools.partial):
        held = [value.func, *value.args, *value.keywords.values()]
    elif inspect.isfunction(value) and value.__closure__:
        held = [cell.cell_contents for cell in value.__closure__ if cell.cell_contents is not value]
    else:
        return False
    return any(_captures_tensor(v, depth - 1) for v in held)



@register_rows(LKJCholesky)
def _lkj_cholesky_rows(d, index, dim):
    # the matrix size is an int outside arg_constraints
    return _rebuild_from_params(d, index, dim, {"dim": d.dim})


@register_rows(RelaxedBernoulli)
@register_rows(RelaxedOneHotCategorical)
def _relaxed_rows(d, index, dim):
    # the temperature is a constructor argument outside arg_constraints
    return _rebuild_from_params(d, index, dim, {"temperature": _select(d.temperature, index, dim, d.batch_shape)})


@register_rows(ImproperUniform)
def _improper_uniform_rows(d, index, dim):
    batch_shape = list(d.batch_shape)
    batch_shape[dim] = len(index)
    return ImproperUniform(d.support, torch.Size(batch_shape), d.event_shape)


@register_rows(FoldedDistribution)
def _folded_rows(d, index, dim):
    return FoldedDistribution(take_rows(d.base_dist, index, dim), validate_args=False)
