# SPDX-License-Identifier: Apache-2.0
"""
Pairs of rows and their weights: who is fused with whom, and with which lambda.

A :class:`Pairing` belongs to one execution of the model. It is drawn in one of two ways:

* :func:`draw_subsample` fills a subsampled plate with ``B // 2`` anchors and their graph
  partners (the handler writes the indices into the plate's subsample site), so that partners
  are evaluated in the same forward pass; only anchor rows are scored, scaled by ``B / (B // 2)``;
* :func:`draw_within` pairs the rows of a plate among themselves; where the rows that are
  observed are known (the mask of the site that draws the pairs), partners of observed rows are
  drawn among observed rows.
"""
import math
import numbers
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.distributions import constraints

__all__ = ["Pairing", "LambdaSampler", "draw_subsample", "draw_within", "sample_symmetric_beta"]

#: the smallest alpha: Joehnk's log(1 - U) / alpha stays finite in float32 above it
MIN_ALPHA = 1e-30

# anchors are drawn with replacement when the batch is at most 1/16 of the rows
_REPLACEMENT_RATIO = 16


@dataclass
class Pairing:
    """
    Pairs drawn for one execution of a data plate: row ``r`` of the plate is fused with row
    ``partner[r]`` with weight ``lam[r]``. In the subsample path only rows with ``anchor_mask``
    are scored and every site of the plate is multiplied by ``scale``.

    >>> import torch
    >>> p = Pairing(partner=torch.tensor([1, 0, 0]), lam=torch.tensor([0.2, 0.9, 0.5]))
    >>> p.partner[0].item(), p.scale, p.anchor_mask is None
    (1, 1.0, True)
    """

    partner: torch.Tensor
    lam: torch.Tensor
    anchor_mask: Optional[torch.Tensor] = None
    scale: float = 1.0
    embedded: bool = False  # an embedding site of this plate was fused already
    embedding: Optional[tuple] = None  # (name, value) of that embedding site
    observed_fused: bool = False  # an observed site was fused with these pairs
    used_by: set = field(default_factory=set)  # names of the sites fused with these pairs

    def lam_in(self, dtype):
        """``lam`` in ``dtype``, the dtype of the model's values (converted once)."""
        if self.lam.dtype != dtype:
            self.lam = self.lam.to(dtype)
        return self.lam


class LambdaSampler:
    """
    Draws the weights lambda of the pairs: ``Beta(alpha, alpha)``, a fixed value, or any scalar
    distribution on [0, 1]; exactly one of ``alpha`` and ``lam`` is given. Draws come in the
    dtype of the model (the dtype of the site's values).

    >>> LambdaSampler(lam=0.3).sample(2, "cpu", torch.float64).tolist()
    [0.3, 0.3]
    >>> LambdaSampler(alpha=0.5).sample(4, "cpu", torch.float32).shape
    torch.Size([4])
    """

    def __init__(self, alpha=None, lam=None):
        if (alpha is None) == (lam is None):
            raise ValueError(
                "give exactly one of alpha (lambda ~ Beta(alpha, alpha)) and lam (a float in [0, 1] "
                f"or a distribution on [0, 1]); got alpha={alpha!r}, lam={lam!r}"
            )
        self.alpha = self.fixed = self.dist = None
        if alpha is not None:
            if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
                raise TypeError(f"alpha must be a number (int or float), got {type(alpha).__name__} {alpha!r}")
            if not MIN_ALPHA <= alpha < float("inf"):
                raise ValueError(
                    f"alpha must be a finite number >= {MIN_ALPHA:g}, got alpha={alpha!r} (below that, "
                    f"Beta(alpha, alpha) is a fair coin on {{0, 1}} to float precision: no pair is fused)"
                )
            self.alpha = float(alpha)
        elif isinstance(lam, numbers.Real) and not isinstance(lam, bool):
            if not 0 <= lam <= 1:
                raise ValueError(f"a fixed lam must lie in [0, 1], got lam={lam!r}")
            self.fixed = float(lam)
        elif isinstance(lam, torch.distributions.Distribution):
            support = lam.support
            if not (
                lam.event_shape == ()
                and lam.batch_shape == ()
                and isinstance(support, constraints.interval)
                and float(support.lower_bound) >= 0
                and float(support.upper_bound) <= 1
            ):
                raise ValueError(
                    f"lam must be a scalar distribution supported on [0, 1], got {lam!r} with "
                    f"support {support}"
                )
            self.dist = lam
        else:
            raise TypeError(f"lam must be a float in [0, 1] or a distribution on [0, 1], got {lam!r}")

    def sample(self, n, device, dtype):
        if self.fixed is not None:
            return torch.full((n,), self.fixed, device=device, dtype=dtype)
        if self.alpha is not None:
            return sample_symmetric_beta(self.alpha, n, device, dtype)
        return self.dist.sample((n,)).to(device=device, dtype=dtype)


def sample_symmetric_beta(alpha, n, device=None, dtype=None, generator=None):
    """
    ``n`` draws of lambda ~ Beta(alpha, alpha), from torch's default generator or ``generator``
    (a :class:`torch.Generator` of ``device``).

    For alpha <= 1, Joehnk's method: with X = U^(1/alpha), Y = V^(1/alpha) for uniform U, V,
    X / (X + Y) given X + Y <= 1 is Beta(alpha, alpha); it accepts a pair with probability
    Gamma(alpha + 1)^2 / Gamma(2 alpha + 1) (0.99 at alpha = 0.1, 0.5 at alpha = 1) and, in log
    space, never underflows for small alpha. It costs a few element-wise passes, against the
    per-element rejection loop of a Gamma draw (about 5x as much here). For alpha > 1, the ratio
    of two Gamma(alpha) draws.

    >>> lam = sample_symmetric_beta(0.1, 100000)
    >>> bool(abs(lam.mean() - 0.5) < 0.01), bool(abs(lam.var() - 1 / (4 * 1.2)) < 0.01)
    (True, True)
    """
    out_dtype = dtype or torch.get_default_dtype()
    dtype = torch.promote_types(out_dtype, torch.float32)  # drawn in float32 at least (no half Gamma)
    if alpha > 1:
        if alpha > torch.finfo(dtype).max:
            raise ValueError(f"alpha={alpha:g} overflows {dtype}, the dtype lambda is drawn in")
        concentration = torch.full((2, n), float(alpha), device=device, dtype=dtype)
        # torch.distributions.Gamma samples with this same kernel; calling it directly skips
        # the per-call construction and validation that dominate for small n
        gamma = torch._standard_gamma(concentration, generator=generator)
        # G0 / (G0 + G1) as a sigmoid of log-ratios: the sum of two huge draws overflows
        return torch.sigmoid(gamma[0].log() - gamma[1].log()).to(out_dtype)
    acceptance = math.exp(2 * math.lgamma(alpha + 1) - math.lgamma(2 * alpha + 1))
    draws, missing = [], n
    while missing > 0:
        size = int(missing / acceptance * 1.1) + 16
        # 1 - U lies in (0, 1], so its log is finite, and at most 36.8 in size: divided by an
        # alpha >= MIN_ALPHA it stays finite in float32 (below, both could be -inf: NaN)
        log_xy = torch.rand(2, size, device=device, dtype=dtype, generator=generator).neg_().add_(1).log_().div_(alpha)
        accepted = torch.logaddexp(log_xy[0], log_xy[1]) <= 0
        lam = torch.sigmoid(log_xy[0] - log_xy[1])[accepted][:missing]
        draws.append(lam)
        missing -= len(lam)
    lam = draws[0] if len(draws) == 1 else torch.cat(draws)
    return lam.to(out_dtype)


def draw_subsample(graph, lam_sampler, plate, size, batch, device, dtype, layouts):
    """
    The subsample indices ``[anchors, partners, spare]`` of a plate of ``size`` rows and
    ``batch`` rows per step, and their :class:`Pairing`. ``layouts`` caches the static part.

    >>> from pyro_probmix.graphs import FullGraph
    >>> idx, p = draw_subsample(FullGraph(), LambdaSampler(lam=0.25), "data", 10, 5, "cpu", torch.float32, {})
    >>> idx.shape, p.partner.tolist(), p.anchor_mask.tolist(), p.scale
    (torch.Size([5]), [2, 3, 0, 1, 4], [True, True, False, False, False], 2.5)
    >>> p.lam.tolist()  # partners weigh 1 - lam; the spare row is fused with itself
    [0.25, 0.25, 0.75, 0.75, 1.0]
    """
    if batch < 2:
        raise ValueError(
            f"plate {plate!r}: subsample_size={batch} cannot hold an anchor and its partner; "
            f"use subsample_size >= 2"
        )
    num_anchors = batch // 2
    device = torch.device(device)
    # anchors uniformly, then their partners; an odd batch is filled by a spare row (masked)
    if batch * _REPLACEMENT_RATIO <= size:
        # with replacement costs O(B) instead of the O(N) of a permutation, and multiplies
        # the variance of the (still unbiased) estimate by (N - 1) / (N - A) < 1.04
        rows = torch.randint(size, (batch - num_anchors,), device=device)
    else:
        rows = torch.randperm(size, device=device)[: batch - num_anchors]
    anchors, spare = rows[:num_anchors], rows[num_anchors:]
    try:
        partners = graph.sample(anchors, size)
    except ValueError as e:
        raise ValueError(f"plate {plate!r}: {e}") from e
    indices = torch.cat([anchors, partners, spare])
    key = batch, device
    if key not in layouts:
        layouts[key] = _subsample_layout(batch, device)
    partner, anchor_mask = layouts[key]
    lam = lam_sampler.sample(num_anchors, device, dtype)
    lam = torch.cat([lam, 1 - lam, lam.new_ones(batch - 2 * num_anchors)])
    return indices, Pairing(partner, lam, anchor_mask=anchor_mask, scale=batch / num_anchors)


def _subsample_layout(batch, device):
    """Row r < A pairs with r + A and vice versa (A = batch // 2); a spare row pairs with itself."""
    num_anchors = batch // 2
    rows = torch.arange(batch, device=device)
    partner = torch.where(rows < num_anchors, rows + num_anchors, rows - num_anchors)
    partner[2 * num_anchors :] = rows[2 * num_anchors :]
    return partner, rows < num_anchors


def draw_within(graph, lam_sampler, plate, nodes, dtype, observed=None):
    """
    Pairs the rows of a plate among themselves. ``nodes`` (LongTensor) are the graph nodes of the
    plate's rows: ``arange(rows)`` for a graph that pairs the rows of any batch, the training rows
    the plate holds for a graph over the training set. ``observed`` (bool, one per row) restricts
    the partners of observed rows to observed rows (:meth:`~pyro_probmix.graphs.Graph.sample_among`).

    >>> from pyro_probmix.graphs import FullGraph
    >>> observed = torch.tensor([True, False, True, False])
    >>> p = draw_within(FullGraph(), LambdaSampler(lam=0.5), "data", torch.arange(4), torch.float32, observed)
    >>> p.partner[[0, 2]].tolist()  # the two observed rows are each other's only observed partner
    [2, 0]
    """
    rows = len(nodes)
    if rows < 2:
        raise ValueError(f"plate {plate!r} has {rows} row: a plate of one row cannot be paired")
    num_rows = rows if graph.num_nodes is None else graph.num_nodes
    try:
        if observed is None:
            partner_nodes = graph.sample(nodes, num_rows)
        else:
            allowed = observed if graph.num_nodes is None else _on_nodes(observed, nodes, num_rows)
            partner_nodes = graph.sample_among(nodes, num_rows, allowed)
    except ValueError as e:
        raise ValueError(f"plate {plate!r}: {e}") from e
    partner = partner_nodes if graph.num_nodes is None else _rows_of(partner_nodes, nodes, num_rows)
    return Pairing(partner, lam_sampler.sample(rows, nodes.device, dtype))


def _on_nodes(row_values, nodes, num_nodes):
    out = row_values.new_zeros(num_nodes)
    out[nodes] = row_values
    return out


def _rows_of(partner_nodes, nodes, num_nodes):
    """Plate rows of graph nodes, for a plate that holds every node once (``nodes`` a permutation)."""
    row_of_node = torch.empty(num_nodes, dtype=torch.long, device=nodes.device)
    row_of_node[nodes] = torch.arange(len(nodes), device=nodes.device)
    return row_of_node[partner_nodes]
