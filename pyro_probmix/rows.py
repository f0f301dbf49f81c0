# SPDX-License-Identifier: Apache-2.0
"""
Row selection along a batch dimension of a distribution: the partner rows of a plate.
"""
import functools

import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

__all__ = ["take_rows"]

# Constructor arguments that exclude each other, in order of preference.
_EXCLUSIVE_PARAMS = (
    ("logits", "probs"),
    ("scale_tril", "covariance_matrix", "precision_matrix"),
)


def take_rows(d, index, dim):
    """
    The distribution whose batch entries along ``dim`` are those of ``d`` at ``index``
    (like ``tensor.index_select(dim, index)`` on every parameter).

    Works through ``Independent``, masked and expanded wrappers; a leaf distribution is rebuilt
    from its parameters, found by the torch convention that each constructor argument is stored
    under its name in ``arg_constraints`` with the constraint's ``event_dim`` trailing dims.

    :param d: a distribution.
    :param index: LongTensor of row indices.
    :param int dim: a negative batch dimension of ``d``.

    >>> import torch, pyro.distributions as dist
    >>> d = dist.Normal(torch.tensor([0.0, 1.0, 2.0]), 1.0)
    >>> take_rows(d, torch.tensor([2, 0]), -1).loc
    tensor([2., 0.])
    """
    if not -len(d.batch_shape) <= dim < 0:
        raise ValueError(
            f"cannot take rows along dim {dim} of {type(d).__name__} with batch_shape "
            f"{tuple(d.batch_shape)}: expected a negative batch dimension"
        )
    if isinstance(d, Independent):
        n = d.reinterpreted_batch_ndims
        return Independent(take_rows(d.base_dist, index, dim - n), n)
    if isinstance(d, MaskedDistribution):
        mask = d._mask
        if isinstance(mask, torch.Tensor):
            mask = mask.expand(d.batch_shape).index_select(dim, index)
        return MaskedDistribution(take_rows(d.base_dist, index, dim), mask)
    if isinstance(d, ExpandedDistribution):
        return take_rows(d.base_dist.expand(d.batch_shape), index, dim)
    return _take_leaf_rows(d, index, dim)


@functools.lru_cache(maxsize=256)
def _constructor_params(arg_names, stored):
    """Constructor arguments among ``arg_names`` that an instance storing ``stored`` can give."""
    names = [name for name in arg_names if name in stored]
    for group in _EXCLUSIVE_PARAMS:
        present = [name for name in group if name in names]
        names = [name for name in names if name not in present[1:]]
    return tuple(names)


def _take_leaf_rows(d, index, dim):
    names = _constructor_params(tuple(d.arg_constraints), frozenset(vars(d)))
    if not names:
        raise TypeError(
            f"cannot select rows of {type(d).__name__}: none of its arg_constraints "
            f"{sorted(d.arg_constraints)} is stored as an attribute; store constructor "
            f"arguments under those names (the torch.distributions convention)"
        )
    params = {}
    for name in names:
        value = getattr(d, name)
        event_dim = d.arg_constraints[name].event_dim
        if isinstance(value, torch.Tensor):
            shape = d.batch_shape + value.shape[value.dim() - event_dim :]
            value = value.expand(shape).index_select(dim - event_dim, index)
        params[name] = value
    try:
        return type(d)(**params, validate_args=False)
    except TypeError as e:
        raise TypeError(
            f"cannot rebuild {type(d).__name__} from its parameters {sorted(params)} to select "
            f"partner rows: {e}"
        ) from e
