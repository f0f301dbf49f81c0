# SPDX-License-Identifier: Apache-2.0
"""Input checks and the compute dtype shared by the regression and classification scores."""
from __future__ import annotations

import torch

#: a scale: a tensor, or one number for every row
TensorLike = torch.Tensor | float


def _compute_dtype(*tensors):
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_rows(name, x):
    if x.dim() not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N,) or (N, d) with N >= 1, got {tuple(x.shape)}")


def _broadcasts_to(shape, target):
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _check_bins(bins):
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")


def _check_not_nan(**tensors):
    """Refuses NaN in any of ``tensors`` (a mean over them would be NaN, or, for a comparison
    such as coverage or accuracy, silently count the NaN entries one way)."""
    for name, x in tensors.items():
        if x.is_floating_point() and bool(x.isnan().any()):
            raise ValueError(f"{name} holds {int(x.isnan().sum())} NaN of {x.numel()} entries")
