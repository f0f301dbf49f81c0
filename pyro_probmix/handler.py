# SPDX-License-Identifier: Apache-2.0
"""
The ``probmix`` effect handler.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from .embedding import EMBEDDING_KEY
from .graphs import FullGraph, Graph
from .labels import (
    CRITERIA,
    LABEL_FUSIONS,
    LabelKernel,
    check_beta,
    default_label_kernel,
    fused_label_log_prob,
)
from .pooling import get_pooler
from .rows import take_rows

__all__ = ["ProbMixMessenger", "probmix", "Pairing", "ProbMixLikelihood", "sample_symmetric_beta"]


# anchors are drawn with replacement when the batch is at most 1/16 of the rows
_REPLACEMENT_RATIO = 16
_PARTICLE_PLATE = "num_particles_vectorized"  # the plate over particles of pyro.infer.elbo


@dataclass
class Pairing:
    """
    Pairs drawn for one execution of the data plate: row ``r`` of the plate is fused with row
    ``partner[r]`` with weight ``lam[r]``. In the subsample path only rows with ``anchor_mask``
    are scored and their scores are multiplied by ``scale``.

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


@dataclass
class _PlateRecord:
    indices: Optional[torch.Tensor]  # the plate's subsample value (links guide and model passes)
    rows_are_data: bool  # rows are range(N) in order (full batch drawn by Pyro itself)
    pairing: Optional[Pairing] = None


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
        return fused_label_log_prob(
            self.base, value, self.partner_value, self.lam, self.kernel,
            self.fusion, self.criterion, self.num_samples,
        )


class ProbMixMessenger(Messenger):
    """
    Turns a Pyro model into a ProbMix objective; see :func:`probmix` (same arguments), which
    returns one of these.

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro import poutine
    >>> def model(y):
    ...     with pyro.plate("data", 4):
    ...         pyro.sample("y", dist.Normal(torch.arange(4.0), 1.0), obs=y)
    >>> handler = ProbMixMessenger(lam=0.5)
    >>> with handler:
    ...     trace = poutine.trace(model).get_trace(torch.zeros(4))
    >>> type(trace.nodes["y"]["fn"]).__name__, handler.pairings["data"].lam.tolist()
    ('ProbMixLikelihood', [0.5, 0.5, 0.5, 0.5])
    """

    def __init__(
        self,
        alpha=None,
        graph=None,
        *,
        lam=None,
        beta=0.0,
        plate=None,
        sites=None,
        fusion="log_linear",
        label_fusion="linear",
        criterion="expected_log",
        num_samples=1,
        label_kernel=None,
    ):
        super().__init__()
        self.alpha, self.lam_dist, self.fixed_lam = _check_lam(alpha, lam)
        self.graph = FullGraph() if graph is None else graph
        if not isinstance(self.graph, Graph):
            raise TypeError(
                f"graph must be a pyro_probmix.graphs.Graph (FullGraph, KNNGraph, ...), "
                f"got {type(graph).__name__}"
            )
        self.beta = check_beta(beta)
        if plate is not None and not isinstance(plate, str):
            raise TypeError(f"plate must be the name of a pyro.plate (a str), got {plate!r}")
        self.plate = plate
        if isinstance(sites, str):
            sites = (sites,)
        self.sites = None if sites is None else frozenset(sites)
        self.pool = get_pooler(fusion)
        _check_choice("label_fusion", label_fusion, LABEL_FUSIONS)
        _check_choice("criterion", criterion, CRITERIA)
        self.label_fusion = label_fusion
        self.criterion = criterion
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        self.num_samples = num_samples
        if label_kernel is not None and not isinstance(label_kernel, LabelKernel):
            raise TypeError(
                f"label_kernel must be a pyro_probmix.labels.LabelKernel, got {label_kernel!r}"
            )
        self.label_kernel = label_kernel
        self._plates = {}
        self._layouts = {}  # (batch, device) -> static rows of the subsample path
        self._kernels = {}  # (site name, family) -> label kernel

    def __enter__(self):
        self._plates = {}
        return super().__enter__()

    @property
    def pairings(self):
        """
        The latest :class:`~pyro_probmix.handler.Pairing` of each plate, by plate name, for inspection; kept after the
        ``with`` block and cleared when it is entered again.
        """
        return {name: rec.pairing for name, rec in self._plates.items() if rec.pairing is not None}

    # ----------------------------------------------------------------- messages
    def _pyro_sample(self, msg):
        if site_is_subsample(msg):
            self._enter_plate(msg)
        elif EMBEDDING_KEY in msg["infer"]:
            if self.sites is None or msg["name"] in self.sites:
                self._fuse_embedding(msg)
        elif (
            msg["is_observed"]
            and not msg["infer"].get("is_auxiliary")
            and not msg["infer"].get("_deterministic")
            and (self.sites is None or msg["name"] in self.sites)
        ):
            self._fuse_observation(msg)

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg):
            record = self._plates[msg["name"]]
            if record.indices is None:
                record.indices = msg["value"]

    # ----------------------------------------------------------------- plates
    def _enter_plate(self, msg):
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        record = self._plates.get(name)
        if value is not None and record is not None and value is record.indices:
            return  # the model replays the guide's plate: keep the guide's pairs
        subsampled = fn.subsample_size is not None and fn.subsample_size < fn.size
        if name == self.plate and subsampled and value is None:
            indices, pairing = self._draw_subsample(name, fn)
            msg["value"] = indices
            self._plates[name] = _PlateRecord(indices, rows_are_data=False, pairing=pairing)
        else:
            full_and_drawn_by_pyro = value is None and not subsampled
            self._plates[name] = _PlateRecord(value, rows_are_data=full_and_drawn_by_pyro)

    def _draw_subsample(self, name, fn):
        size, batch = fn.size, fn.subsample_size
        if batch < 2:
            raise ValueError(
                f"plate {name!r}: subsample_size={batch} cannot hold an anchor and its partner; "
                f"use subsample_size >= 2"
            )
        num_anchors = batch // 2
        device = torch.device(fn.device)
        # anchors uniformly, then their partners; an odd batch is filled by a spare row (masked)
        if batch * _REPLACEMENT_RATIO <= size:
            # with replacement costs O(B) instead of the O(N) of a permutation, and multiplies
            # the variance of the (still unbiased) estimate by (N - 1) / (N - A) < 1.04
            rows = torch.randint(size, (batch - num_anchors,), device=device)
        else:
            rows = torch.randperm(size, device=device)[: batch - num_anchors]
        anchors, spare = rows[:num_anchors], rows[num_anchors:]
        partners = self._sample_partners(name, anchors, size)
        indices = torch.cat([anchors, partners, spare])
        partner, anchor_mask, spare_lam = self._subsample_layout(batch, device)
        lam = self._draw_lam(num_anchors, device)
        lam = torch.cat([lam, 1 - lam] + ([spare_lam] if batch % 2 else []))
        return indices, Pairing(partner, lam, anchor_mask=anchor_mask, scale=batch / num_anchors)

    def _subsample_layout(self, batch, device):
        """Row r < A pairs with r + A and vice versa (A = batch // 2); a spare row pairs with itself."""
        key = batch, device
        if key not in self._layouts:
            self._layouts[key] = self._build_subsample_layout(batch, device)
        return self._layouts[key]

    @staticmethod
    def _build_subsample_layout(batch, device):
        num_anchors = batch // 2
        rows = torch.arange(batch, device=device)
        partner = torch.where(rows < num_anchors, rows + num_anchors, rows - num_anchors)
        partner[2 * num_anchors :] = rows[2 * num_anchors :]
        spare_lam = torch.ones(batch - 2 * num_anchors, device=device)  # lam = 1: the row itself
        return partner, rows < num_anchors, spare_lam

    def _draw_within(self, frame, record, device):
        rows = frame.size
        if rows < 2:
            raise ValueError(f"plate {frame.name!r} has {rows} row: a plate of one row cannot be paired")
        if self.graph.num_nodes is not None and not record.rows_are_data:
            raise ValueError(
                f"{self.graph!r} pairs rows of the training set, but the rows of plate "
                f"{frame.name!r} ({rows} of {frame.full_size}) were chosen outside probmix, so "
                f"they cannot be matched to graph nodes. Declare the plate as "
                f"pyro.plate({frame.name!r}, N, subsample_size=B) and pass "
                f"probmix(..., plate={frame.name!r}) so the handler chooses anchors and "
                f"partners, or use FullGraph() to pair rows within the batch."
            )
        anchors = torch.arange(rows, device=device)
        partner = self._sample_partners(frame.name, anchors, rows)
        return Pairing(partner, self._draw_lam(rows, device))

    def _sample_partners(self, name, anchors, num_rows):
        try:
            return self.graph.sample(anchors, num_rows)
        except ValueError as e:
            raise ValueError(f"plate {name!r}: {e}") from e

    def _draw_lam(self, n, device):
        if self.fixed_lam is not None:
            return torch.full((n,), self.fixed_lam, device=device)
        if self.lam_dist is None:
            return sample_symmetric_beta(self.alpha, n, device)
        return self.lam_dist.sample((n,)).to(device)

    def _pairing(self, msg):
        """The data plate frame of a site and its pairing (drawn on first use)."""
        frame = self._data_frame(msg)
        record = self._plates.get(frame.name)
        if record is None:  # the plate was built before entering probmix
            record = self._plates[frame.name] = _PlateRecord(None, rows_are_data=frame.size == frame.full_size)
        if record.pairing is None:
            record.pairing = self._draw_within(frame, record, msg["value"].device)
        return frame, record.pairing

    def _data_frame(self, msg):
        # the particle plate of vectorize_particles=True is never a data plate: pairs are
        # shared by the particles
        frames = [
            f for f in msg["cond_indep_stack"] if f.vectorized and f.name != _PARTICLE_PLATE
        ]
        if self.plate is not None:
            frames = [f for f in frames if f.name == self.plate]
            if not frames:
                plates = [f.name for f in msg["cond_indep_stack"]]
                raise ValueError(
                    f"site {msg['name']!r} is not inside plate {self.plate!r} (its plates: "
                    f"{plates}); exclude it with probmix(..., sites=[...]) or move it into the plate"
                )
        elif len(frames) != 1:
            plates = [f.name for f in msg["cond_indep_stack"]]
            what = "outside any vectorized plate" if not frames else f"in several plates {plates}"
            raise ValueError(
                f"site {msg['name']!r} is {what}: probmix pairs rows along one data plate; "
                f"name it with probmix(..., plate='data') and wrap the site in that plate"
            )
        return frames[0]

    # ----------------------------------------------------------------- fusion
    def _rows(self, msg, frame, pairing, fn):
        """Check that fn's rows along the plate dim are the plate's rows."""
        dim = frame.dim
        shape = fn.batch_shape
        if len(shape) < -dim or shape[dim] != frame.size or pairing.partner.shape[0] != frame.size:
            raise ValueError(
                f"site {msg['name']!r}: {type(fn).__name__} has batch_shape {tuple(shape)}, which "
                f"does not have the {frame.size} rows of plate {frame.name!r} at dim {dim}"
            )
        return pairing.lam.reshape((-1,) + (1,) * (-dim - 1)).to(_dtype_of(msg["value"]))

    def _fuse_embedding(self, msg):
        fn = msg["fn"].base_dist  # embedding() masks the distribution out of the ELBO
        frame, pairing = self._pairing(msg)
        lam = self._rows(msg, frame, pairing, fn)
        try:
            pooled = self.pool(fn, take_rows(fn, pairing.partner, frame.dim), lam)
        except NotImplementedError as e:
            raise NotImplementedError(f"embedding site {msg['name']!r}: {e}") from e
        msg["fn"] = pooled.mask(False)
        msg["value"] = pooled.mean if msg["infer"][EMBEDDING_KEY]["mean"] else pooled.rsample()
        pairing.embedded = True

    def _fuse_observation(self, msg):
        fn = msg["fn"]
        frame, pairing = self._pairing(msg)
        lam = self._rows(msg, frame, pairing, fn)
        dim, partner = frame.dim, pairing.partner
        if pairing.embedded:
            base = fn  # M-ProbMix: the embedding is fused already; fuse the labels only
        else:
            try:
                base = self.pool(fn, take_rows(fn, partner, dim), lam)
            except NotImplementedError as e:
                raise NotImplementedError(f"site {msg['name']!r}: {e}") from e
        kernel = self._kernel(msg, base)
        event_dim = len(fn.event_shape)
        value = msg["value"].expand(fn.batch_shape + fn.event_shape)
        partner_value = value.index_select(dim - event_dim, partner)
        msg["fn"] = ProbMixLikelihood(
            base, partner_value, lam, kernel, self.label_fusion, self.criterion, self.num_samples
        )
        mask = msg["mask"]
        if isinstance(mask, torch.Tensor):
            # a pair is scored only where both of its rows are
            mask = mask.expand(fn.batch_shape)
            mask = mask & mask.index_select(dim, partner)
        if pairing.anchor_mask is not None:
            anchor = pairing.anchor_mask.reshape((-1,) + (1,) * (-dim - 1))
            mask = anchor if mask is None else mask & anchor
        msg["mask"] = mask
        msg["scale"] = msg["scale"] * pairing.scale

    def _kernel(self, msg, d):
        key = msg["name"], type(d), type(getattr(d, "base_dist", None))
        if key not in self._kernels:
            self._kernels[key] = self._choose_kernel(msg, d)
        return self._kernels[key]

    def _choose_kernel(self, msg, d):
        try:
            kernel = self.label_kernel or default_label_kernel(d, self.beta)
        except NotImplementedError as e:
            raise NotImplementedError(f"site {msg['name']!r}: {e}") from e
        if self.label_fusion == "log_linear" and not kernel.poolable:
            raise ValueError(
                f"site {msg['name']!r}: label_fusion='log_linear' pools the label kernels "
                f"s(.|y_i)^lam s(.|y_j)^(1-lam), which is undefined for "
                f"{type(d).__name__} labels with beta=0; use beta > 0 or label_fusion='linear'"
            )
        return kernel


def _dtype_of(value):
    return value.dtype if torch.is_floating_point(value) else torch.get_default_dtype()


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}")


def sample_symmetric_beta(alpha, n, device=None, generator=None):
    """
    ``n`` draws of lambda ~ Beta(alpha, alpha): the ratio of two Gamma(alpha) draws, in log space,
    from torch's default generator or ``generator`` (a :class:`torch.Generator` of ``device``).
    For alpha < 1, Gamma(alpha) = Gamma(alpha + 1) U^(1/alpha) (Marsaglia and Tsang), so the tiny
    draws of small alpha do not underflow to 0/0. Faster than ``Beta(alpha, alpha).sample``.

    >>> lam = sample_symmetric_beta(0.1, 100000)
    >>> bool(abs(lam.mean() - 0.5) < 0.01), bool(abs(lam.var() - 1 / (4 * 1.2)) < 0.01)
    (True, True)
    """
    boosted = alpha < 1
    concentration = torch.full((2, n), alpha + 1.0 if boosted else alpha, device=device)
    # torch.distributions.Gamma samples with this same kernel; calling it directly skips the
    # per-call construction and validation that dominate for small n
    log_gamma = torch._standard_gamma(concentration, generator=generator).log_()
    if boosted:
        # log U^(1/alpha) = -Exponential(rate=alpha)
        log_gamma.sub_(torch.empty_like(log_gamma).exponential_(alpha, generator=generator))
    return torch.sigmoid(log_gamma[0] - log_gamma[1])


def _check_lam(alpha, lam):
    """(alpha, distribution of lambda, fixed lambda): exactly one of alpha and lam is given."""
    if (alpha is None) == (lam is None):
        raise ValueError(
            "give exactly one of alpha (lambda ~ Beta(alpha, alpha)) and lam (a float in [0, 1] "
            f"or a distribution on [0, 1]); got alpha={alpha!r}, lam={lam!r}"
        )
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < float("inf"):
            raise ValueError(f"alpha must be a finite number > 0, got alpha={alpha!r}")
        return float(alpha), None, None
    if isinstance(lam, (int, float)) and not isinstance(lam, bool):
        if not 0 <= lam <= 1:
            raise ValueError(f"a fixed lam must lie in [0, 1], got lam={lam!r}")
        return None, None, float(lam)
    if isinstance(lam, torch.distributions.Distribution):
        support = lam.support
        if (
            lam.event_shape == ()
            and lam.batch_shape == ()
            and isinstance(support, constraints.interval)
            and float(support.lower_bound) >= 0
            and float(support.upper_bound) <= 1
        ):
            return None, lam, None
        raise ValueError(
            f"lam must be a scalar distribution supported on [0, 1], got {lam!r} with support "
            f"{support}"
        )
    raise TypeError(f"lam must be a float in [0, 1] or a distribution on [0, 1], got {lam!r}")


def probmix(alpha=None, graph=None, **kwargs):
    """
    Effect handler that trains a Pyro model with Probabilistic Mixup.

    Inside ``with probmix(...)``, every observed site in the data plate is replaced, row by row,
    by the log-linear pool of the row's likelihood and a partner row's, with
    :math:`\\lambda \\sim p(\\lambda; \\alpha)` per pair, and scored with the label-fused
    log-likelihood (ProbMix, LocKProbMix). Sites made with :func:`~pyro_probmix.embedding` are
    pooled instead, and observed sites after them in the same plate fuse their labels only
    (M-ProbMix, LocKM-ProbMix). Outside the handler the model is untouched.

    Three batching styles:

    * **Full batch** (``pyro.plate("data", N)``): row ``i`` is paired with a row of the same plate
      drawn from ``graph``; every row is scored.
    * **Subsampled plate** (``pyro.plate("data", N, subsample_size=B)`` and
      ``probmix(..., plate="data")``): the handler fills the plate's subsample with ``B // 2``
      anchors, drawn uniformly (without replacement, or with replacement when ``16 B <= N``,
      which avoids a permutation of all N rows per step), and their graph partners, so partners are
      evaluated in the same forward pass; partner rows are masked out and the anchors' scores
      are scaled by ``N / (B // 2)``, an unbiased estimate of the full-data objective.
    * **Batches built outside Pyro** (``pyro.plate("data", B)`` over a batch the user sliced):
      ``FullGraph`` pairs rows within the batch; graphs over the training set raise an error,
      since the batch rows cannot be matched to graph nodes.

    :param float alpha: :math:`\\lambda \\sim Beta(\\alpha, \\alpha)`, alpha > 0.
    :param graph: a :class:`~pyro_probmix.graphs.Graph`; default ``FullGraph()``.
    :param lam: instead of ``alpha``: a float in [0, 1] (fixed lambda) or a scalar distribution
        supported on [0, 1].
    :param float beta: label kernel width: ``N(y, beta I)`` for real labels, ``1[y=k] + beta``
        for discrete ones (§5). Default 0.
    :param str plate: name of the data plate. Default: each site's only vectorized plate
        (required for subsampled plates).
    :param sites: names of the sites to fuse (observed and embedding sites); default all.
    :param str fusion: likelihood fusion, ``"log_linear"`` (default) or ``"linear"`` (mixture).
    :param str label_fusion: ``"linear"`` (default, Assumption 4.2) or ``"log_linear"``.
    :param str criterion: ``"expected_log"`` (default, Eq. 15) or ``"log_expected"``
        (Appendix B).
    :param int num_samples: Monte Carlo draws of the perturbed label where no closed form exists.
    :param label_kernel: a :class:`~pyro_probmix.labels.LabelKernel` overriding the default.

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from pyro_probmix import probmix
    >>> from pyro_probmix.graphs import FullGraph
    >>> x = torch.linspace(-1, 1, 20); y = 2 * x
    >>> def model(x, y=None):
    ...     w = pyro.param("w", torch.tensor(0.0))
    ...     with pyro.plate("data", x.shape[0]):
    ...         return pyro.sample("y", dist.Normal(w * x, 0.1), obs=y)
    >>> svi = SVI(model, lambda x, y=None: None, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    >>> with probmix(alpha=0.2, graph=FullGraph()):
    ...     losses = [svi.step(x, y) for _ in range(200)]
    >>> round(pyro.param("w").item(), 1)
    2.0
    """
    return ProbMixMessenger(alpha, graph, **kwargs)
