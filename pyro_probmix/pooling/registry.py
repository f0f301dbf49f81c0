# SPDX-License-Identifier: Apache-2.0
"""
The registry of log-linear pooling rules, dispatching on the pair of types like
:func:`torch.distributions.kl.register_kl`, and the helpers the rules share.
"""
import functools

import torch

__all__ = ["check_poolable", "log_linear_pool", "register_check", "register_pool", "supported_families"]

_POOL_REGISTRY = {}
_WRAPPERS = set()  # types whose rule pools the distribution they wrap (not listed as families)
_CHECKS = {}  # type -> check(d) run by check_poolable before any pair is drawn


def register_pool(type_p, type_q):
    """
    Decorator registering the log-linear pooling rule of a pair of distribution types, with the
    dispatch of :func:`torch.distributions.kl.register_kl` (the most specific match of the two
    types' class hierarchies wins). Rules are registered on the ``torch.distributions`` classes,
    so Pyro's wrappers of them and torch's own classes dispatch alike.

    The rule receives ``(p, q, lam)`` and returns the distribution proportional to
    ``p ** lam * q ** (1 - lam)``; ``lam`` is a float or a tensor broadcastable to the batch shape.

    >>> import torch
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
    for name, t in (("type_p", type_p), ("type_q", type_q)):
        if not (isinstance(t, type) and issubclass(t, torch.distributions.Distribution)):
            raise TypeError(f"register_pool expects Distribution subclasses, got {name}={t!r}")

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
    _check_same_density(type_p, left_p)
    _check_same_density(type_q, left_q)
    return left_fun


# classes of these packages that redefine log_prob keep their parent's density (numerically
# better forms, NaN masking, Pyro's wrappers): a rule of the parent pools them
_DENSITY_PRESERVING_MODULES = ("torch.distributions", "pyro.distributions", "pyro_probmix")


def _check_same_density(cls, registered):
    """Refuses a subclass of a registered family that defines its own density: the family's rule
    would pool it as the parent, dropping that density (a user's truncated Normal, say)."""
    for c in cls.__mro__:
        if c is registered:
            return
        own = [name for name in ("log_prob", "support") if name in vars(c)]
        if own and not c.__module__.startswith(_DENSITY_PRESERVING_MODULES):
            raise NotImplementedError(
                f"{cls.__name__} subclasses {registered.__name__} but {c.__name__} defines its own "
                f"{' and '.join(own)}: the {registered.__name__} rule would pool it as a plain "
                f"{registered.__name__}, dropping that density. Register a rule with "
                f"@pyro_probmix.pooling.register_pool({cls.__name__}, {cls.__name__}), or use "
                f"fusion='linear' (a two-component mixture of the rows' own distributions)"
            )


def _rule(type_p, type_q):
    fun = _dispatch_pool(type_p, type_q)
    if fun is None:
        raise NotImplementedError(
            f"No log-linear pooling rule for ({type_p.__name__}, {type_q.__name__}). "
            f"Supported families: {', '.join(supported_families())}. Register one with "
            f"@pyro_probmix.pooling.register_pool({type_p.__name__}, {type_q.__name__}), "
            f"or use fusion='linear' (a two-component mixture, valid for every family whose rows "
            f"pyro_probmix.rows.take_rows can select)."
        )
    return fun


def supported_families():
    """
    Names of the distribution families with a registered log-linear pooling rule (the wrappers
    ``Independent``, masked, expanded and transformed distributions pool whatever family they
    wrap).

    >>> "Normal" in supported_families(), "Independent" in supported_families()
    (True, False)
    """
    return sorted({p.__name__ for p, q in _POOL_REGISTRY if p is q and p not in _WRAPPERS})


def log_linear_pool(p, q, lam):
    """
    Log-linear pool :math:`\\tilde p(y) \\propto p(y)^{\\lambda} q(y)^{1-\\lambda}` of two
    distributions of the same family, returned as a Pyro distribution of that family.
    ``lam`` is taken in the dtype of the parameters (a float64 model pools with a float64
    ``lam``), and ``lam`` exactly 0 or 1 returns exactly the parameters of ``q`` or ``p``.

    :param p: first distribution (weight ``lam``).
    :param q: second distribution (weight ``1 - lam``), same family and shapes as ``p``.
    :param lam: float in [0, 1] or tensor broadcastable to ``p.batch_shape``.
    :raises NotImplementedError: when no rule is registered for ``(type(p), type(q))``.
    :raises ValueError: when the pool does not exist: no outcome is possible under both, or
        parameters that must be shared differ (``Binomial`` ``total_count``).

    >>> import torch, pyro.distributions as dist
    >>> d = log_linear_pool(dist.Normal(0.0, 1.0), dist.Normal(2.0, 1.0), 0.5)
    >>> float(d.loc), float(d.scale)
    (1.0, 1.0)
    """
    return _rule(type(p), type(q))(p, q, lam)


def register_check(type_d):
    """
    Decorator registering a check of one distribution of type ``type_d`` (or a subclass), run
    by :func:`check_poolable` after the rule lookup; it raises if the rows cannot be pooled.

    >>> class Fixed(torch.distributions.Normal):
    ...     pass
    >>> @register_check(Fixed)
    ... def _check_fixed(d):
    ...     raise ValueError("Fixed rows never pool")
    >>> check_poolable(Fixed(0.0, 1.0))
    Traceback (most recent call last):
    ...
    ValueError: Fixed rows never pool
    """

    def decorator(fun):
        _CHECKS[type_d] = fun
        return fun

    return decorator


def check_poolable(d):
    """
    Raise if the rows of ``d`` cannot be pooled log-linearly with each other, before any pair
    is drawn: the handler calls it once per site (with ``fusion="log_linear"``), so a model
    fails at its first step, not at the first unlucky pair. Wrappers (``Independent``, masked,
    expanded, transformed) check what they wrap.

    :raises NotImplementedError: no log-linear pooling rule for ``type(d)``.
    :raises ValueError: a parameter that a row and its partner must share varies across rows
        (a ``Binomial`` whose ``total_count`` differs by row).

    >>> import torch, pyro.distributions as dist
    >>> check_poolable(dist.Binomial(5, logits=torch.zeros(3)))
    >>> check_poolable(dist.Binomial(torch.tensor([5.0, 6.0, 5.0]), logits=torch.zeros(3)))
    Traceback (most recent call last):
    ...
    ValueError: Binomial total_count differs across rows (from 5 to 6): ...
    """
    _rule(type(d), type(d))
    for cls in type(d).__mro__:
        if cls in _CHECKS:
            _CHECKS[cls](d)
            return


def as_weight(lam, like):
    """
    ``lam`` as a tensor of the dtype and device of the parameter ``like`` (a float is converted
    once, from double precision, so ``0.3`` is ``0.3`` in a float64 model).

    >>> as_weight(0.3, torch.zeros(2, dtype=torch.float64)).item() == 0.3
    True
    """
    if isinstance(lam, torch.Tensor):
        return lam.to(dtype=like.dtype, device=like.device)
    return torch.tensor(float(lam), dtype=like.dtype, device=like.device)


def endpoints(lam, a, b, mixed):
    """
    ``mixed``, except exactly ``a`` where ``lam == 1`` and ``b`` where ``lam == 0``.

    >>> endpoints(torch.tensor([1.0, 0.0, 0.5]), torch.ones(3), torch.zeros(3), torch.full((3,), 7.0))
    tensor([1., 0., 7.])
    """
    return torch.where(lam == 1, a, torch.where(lam == 0, b, mixed))


def _mix(a, b, lam):
    """``lam * a + (1 - lam) * b`` with ``0 * inf = 0``, so that lam in {0, 1} returns an input."""
    mixed = lam * a + (1 - lam) * b
    if isinstance(lam, torch.Tensor):
        return endpoints(lam, a, b, mixed)
    return a if lam == 1 else b if lam == 0 else mixed


def unsqueeze_right(lam, n):
    """
    Add ``n`` trailing singleton dims to a tensor ``lam`` so it broadcasts over event dims.

    >>> unsqueeze_right(torch.zeros(4), 2).shape
    torch.Size([4, 1, 1])
    """
    if isinstance(lam, torch.Tensor):
        return lam.reshape(lam.shape + (1,) * n)
    return lam
