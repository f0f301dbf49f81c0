# SPDX-License-Identifier: Apache-2.0
"""
The ``probmix`` effect handler.
"""
import sys
import warnings
from typing import Callable, Iterable, Optional, Union

import pyro.ops.jit
import torch
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample

from .embedding import EMBEDDING_KEY
from .graphs import FullGraph, Graph
from .labels import CRITERIA, LABEL_FUSIONS, LabelKernel, check_beta, default_label_kernel
from .likelihood import ProbMixLikelihood, fuse_observed_site, support_is_discrete, unmask
from .pairing import LambdaSampler, Pairing, draw_subsample, draw_within, sample_symmetric_beta
from .closed_forms import closed_form_likelihood
from .pooling import get_pooler, log_linear_pool
from .rows import take_rows

__all__ = [
    "NothingFusedWarning",
    "ProbMixMessenger",
    "probmix",
    "Pairing",
    "ProbMixLikelihood",
    "sample_symmetric_beta",
]

_PARTICLE_PLATE = "num_particles_vectorized"  # the plate over particles of pyro.infer.elbo
_COMPILED_CALL = pyro.ops.jit.CompiledFunction.__call__.__code__


class NothingFusedWarning(UserWarning):
    """A ``with probmix(...)`` block ended without having fused any site."""


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
    >>> isinstance(trace.nodes["y"]["fn"], ProbMixLikelihood), handler.pairings["data"].lam.tolist()
    (True, [0.5, 0.5, 0.5, 0.5])
    """

    def __init__(
        self,
        alpha: Optional[float] = None,
        graph: Optional[Graph] = None,
        *,
        lam=None,
        beta: float = 0.0,
        plate: Optional[str] = None,
        sites: Union[str, Iterable[str], None] = None,
        fusion: str = "log_linear",
        label_fusion: str = "linear",
        criterion: str = "expected_log",
        num_samples: int = 1,
        label_kernel: Optional[LabelKernel] = None,
    ):
        super().__init__()
        self.lam_sampler = LambdaSampler(alpha, lam)
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
        self._layouts = {}  # (batch, device) -> static rows of the subsample path
        self._kernels = {}  # (site name, family) -> label kernel
        self._reset()

    def _reset(self):
        self._data_plate = self.plate  # the plate probmix subsamples: named, or taken over
        self._drawn = {}  # plate name -> (subsample indices, Pairing) drawn by the handler
        self._within = {}  # plate name -> (plate indices, Pairing) of rows paired in the plate
        self._latest = {}  # plate name -> latest Pairing, for inspection
        self._fused = set()  # names of the sites fused in this block
        self._left_alone = {}  # site name -> why it was not fused
        self._embedding_sites = set()

    def __enter__(self):
        if any(isinstance(m, ProbMixMessenger) for m in _PYRO_STACK):
            raise RuntimeError(
                "probmix handlers cannot be nested: every fused site would be pooled twice. "
                "Use one probmix handler; its sites= argument chooses the sites it fuses"
            )
        self._reset()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        result = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            self._check_block()
        elif exc_type is RuntimeError:
            for name in self._embedding_sites:
                if f"site {name} must be sampled in trace" in str(exc_value):
                    raise RuntimeError(
                        f"embedding site {name!r} is in the guide: embedding() marks a "
                        f"stochastic hidden layer of the model, which M-ProbMix pools and which "
                        f"adds no term to the ELBO; a latent variable of the guide is a "
                        f"pyro.sample site. Move the embedding into the model, or use pyro.sample "
                        f"in the guide"
                    ) from exc_value
        return result

    @property
    def pairings(self):
        """
        The latest :class:`~pyro_probmix.pairing.Pairing` of each plate, by plate name, for
        inspection; kept after the ``with`` block and cleared when it is entered again.
        """
        return dict(self._latest)

    # ----------------------------------------------------------------- messages
    def _pyro_param(self, msg):
        if _inside_compiled_loss():
            raise RuntimeError(_JIT_MESSAGE)

    def _pyro_sample(self, msg):
        if torch.jit.is_tracing():
            raise RuntimeError(_JIT_MESSAGE)
        if site_is_subsample(msg):
            self._enter_plate(msg)
            return
        if EMBEDDING_KEY in msg["infer"]:
            if self.sites is None or msg["name"] in self.sites:
                self._fuse_embedding(msg)
        elif (
            msg["is_observed"]
            and not msg["infer"].get("is_auxiliary")
            and not msg["infer"].get("_deterministic")
            and (self.sites is None or msg["name"] in self.sites)
        ):
            self._fuse_observation(msg)
        drawn = self._drawn_plate_of(msg)
        if drawn is not None:
            self._score_anchors_only(msg, drawn)

    # ----------------------------------------------------------------- plates
    def _enter_plate(self, msg):
        name, fn = msg["name"], msg["fn"]
        subsampled = fn.subsample_size is not None and fn.subsample_size < fn.size
        if not subsampled or msg["value"] is not None:
            return  # a full plate, or indices given by the user or replayed from the guide
        if self._data_plate is None and self.graph.num_nodes == fn.size:
            self._data_plate = name  # the only plate a graph over the training rows can pair
        elif self._data_plate != name:
            if self.plate is None and self.graph.num_nodes == fn.size:
                raise ValueError(
                    f"plates {self._data_plate!r} and {name!r} both subsample the "
                    f"{fn.size} rows that {self.graph!r} pairs: name the data plate with "
                    f"probmix(..., plate=...)"
                )
            return
        # lambdas in float64 until a site tells the model's dtype (Pairing.lam_in)
        indices, pairing = draw_subsample(
            self.graph, self.lam_sampler, name, fn.size, fn.subsample_size, fn.device,
            torch.float64, self._layouts,
        )
        msg["value"] = indices
        self._drawn[name] = indices, pairing
        self._latest[name] = pairing

    def _drawn_plate_of(self, msg):
        """The Pairing of the subsample the handler drew, if ``msg`` is inside that plate."""
        if not self._drawn:
            return None
        for frame in msg["cond_indep_stack"]:
            drawn = self._drawn.get(frame.name)
            if drawn is not None and _plate_indices(frame.name) is drawn[0]:
                return frame, drawn[1]
        return None

    @staticmethod
    def _score_anchors_only(msg, drawn):
        """Every site of a subsampled data plate counts its anchor rows only, scaled by B / A,
        so that the step is an unbiased estimate of the full-data objective."""
        frame, pairing = drawn
        msg["scale"] = msg["scale"] * pairing.scale
        if msg["infer"].get("enumerate") == "parallel" or EMBEDDING_KEY in msg["infer"]:
            # an enumerated latent of a partner row sums to 1 over its values once the row's
            # observations are masked; masking it too would add log(K) per row
            return
        anchors = pairing.anchor_mask.reshape((-1,) + (1,) * (-frame.dim - 1))
        mask = msg["mask"]
        msg["mask"] = anchors if mask is None or mask is True else mask & anchors

    def _site_plate(self, msg):
        """The frame of the data plate of a site to fuse, or None if the site is to be left alone
        (it lies outside every data plate, like a conditioned global latent)."""
        stack = msg["cond_indep_stack"]
        vectorized = [f for f in stack if f.vectorized and f.name != _PARTICLE_PLATE]
        sequential = [f for f in stack if not f.vectorized]
        if self._data_plate is not None:
            frames = [f for f in vectorized if f.name == self._data_plate]
            if frames:
                return frames[0]
            if any(f.name == self._data_plate for f in sequential):
                raise _sequential_error(msg["name"], self._data_plate)
            return self._leave_alone(msg, f"outside plate {self._data_plate!r}")
        if len(vectorized) == 1:
            return vectorized[0]
        if len(vectorized) > 1:
            plates = [f.name for f in vectorized]
            raise ValueError(
                f"site {msg['name']!r} is in several plates {plates}: probmix pairs rows along "
                f"one data plate; name it with probmix(..., plate={plates[-1]!r}) (or another "
                f"of {plates})"
            )
        if sequential:
            raise _sequential_error(msg["name"], sequential[0].name)
        return self._leave_alone(msg, "outside any plate")

    def _leave_alone(self, msg, why):
        if self.sites is not None:
            raise ValueError(
                f"site {msg['name']!r} is named in sites= but is {why}: probmix fuses rows of the "
                f"data plate; move the site into that plate or drop it from sites="
            )
        self._left_alone[msg["name"]] = why
        return None

    def _pairing(self, msg, frame, observed=None):
        """The pairing of the site's data plate in this execution of the model: the subsample
        the handler drew, or a pairing of the plate's rows drawn on first use."""
        name = frame.name
        drawn = self._drawn.get(name)
        indices = _plate_indices(name)
        if drawn is not None and indices is drawn[0]:
            pairing = drawn[1]
        else:
            within = self._within.get(name)
            # a new execution of the model: new rows, or a site fused a second time
            if within is None or within[0] is not indices or msg["name"] in within[1].used_by:
                pairing = self._draw_within(msg, frame, indices, observed)
                self._within[name] = indices, pairing
                self._latest[name] = pairing
            else:
                pairing = within[1]
        pairing.used_by.add(msg["name"])
        self._fused.add(msg["name"])
        return pairing

    def _draw_within(self, msg, frame, indices, observed):
        device = msg["value"].device  # where the rows live, whatever the plate's device
        if self.graph.num_nodes is None:
            nodes = torch.arange(frame.size, device=device)
        else:
            nodes = self._training_rows(frame, indices).to(device)
        return draw_within(self.graph, self.lam_sampler, frame.name, nodes, _dtype_of(msg), observed)

    def _training_rows(self, frame, indices):
        """The graph nodes of a plate's rows: ``subsample=idx`` holds training rows ``idx``."""
        n = self.graph.num_nodes
        rows = torch.arange(n, device=indices.device)
        whole = frame.size == n and (
            torch.equal(indices, rows) or torch.equal(torch.sort(indices).values, rows)
        )
        if not whole:
            raise ValueError(
                f"{self.graph!r} pairs the {n} training rows, but plate {frame.name!r} holds "
                f"{frame.size} of {frame.full_size} rows chosen outside probmix, so a partner may lie "
                f"outside the batch. Declare pyro.plate({frame.name!r}, {n}, subsample_size=B) "
                f"inside the model (probmix then draws anchors and their partners; pass "
                f"probmix(..., plate={frame.name!r}) if several plates have {n} rows), give the "
                f"full batch in any order with pyro.plate({frame.name!r}, {n}, subsample=order), "
                f"or use FullGraph() to pair rows within the batch"
            )
        return indices

    # ----------------------------------------------------------------- fusion
    def _fuse_embedding(self, msg):
        self._embedding_sites.add(msg["name"])
        frame = self._site_plate(msg)
        if frame is None:
            return
        fn = msg["fn"].base_dist  # embedding() masks the distribution out of the ELBO
        pairing = self._pairing(msg, frame)
        dim = frame.dim
        if len(fn.batch_shape) < -dim or fn.batch_shape[dim] != pairing.partner.shape[0]:
            raise ValueError(
                f"embedding site {msg['name']!r}: {type(fn).__name__} has batch_shape "
                f"{tuple(fn.batch_shape)}, which does not have the {pairing.partner.shape[0]} rows "
                f"of plate {frame.name!r} at dim {dim}"
            )
        lam = pairing.lam_in(_dtype_of(msg)).reshape((-1,) + (1,) * (-dim - 1))
        try:
            pooled = self.pool(fn, take_rows(fn, pairing.partner, dim), lam)
        except (NotImplementedError, ValueError) as e:
            raise type(e)(f"embedding site {msg['name']!r}: {e}") from e
        msg["fn"] = pooled.mask(False)
        msg["value"] = pooled.mean if msg["infer"][EMBEDDING_KEY]["mean"] else pooled.rsample()
        pairing.embedded = True

    def _fuse_observation(self, msg):
        frame = self._site_plate(msg)
        if frame is None:
            return
        fn, mask = unmask(msg["fn"], msg["mask"])
        if mask is False:
            self._left_alone[msg["name"]] = "masked out"
            return
        pairing = self._pairing(msg, frame, observed=_observed_rows(mask, frame.dim))
        fuse_observed_site(
            msg, frame.dim, pairing, self.pool, lambda base: self._kernel(msg, base),
            self.label_fusion, self.criterion, self.num_samples,
            closed_form_likelihood if self.pool is log_linear_pool else None,
        )

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

    # ----------------------------------------------------------------- end of a block
    def _check_block(self):
        if self.sites is not None:
            missing = sorted(self.sites - self._fused)
            if missing:
                raise ValueError(
                    f"probmix(sites={sorted(self.sites)}): no site named {missing} was fused in "
                    f"this block; fused: {sorted(self._fused)}. Check the names of the model's "
                    f"observed and embedding sites"
                )
        if not self._fused:
            left = ", ".join(f"{name!r} ({why})" for name, why in self._left_alone.items())
            warnings.warn(
                "probmix fused no site in this block, so it trained the plain model. "
                + (f"Observed sites left alone: {left}. " if left else "")
                + "probmix fuses observed sites inside a data plate (pyro.plate) and "
                "embedding() sites; it sees no site of a model run behind poutine.block "
                "(e.g. by MCMC or Importance) or inside a loss compiled before the block",
                NothingFusedWarning,
                stacklevel=3,
            )


_JIT_MESSAGE = (
    "probmix cannot be combined with a JIT-compiled ELBO (JitTrace_ELBO, JitTraceEnum_ELBO, "
    "JitTraceGraph_ELBO, ...): torch.jit.trace records one execution of the model, so the pairs "
    "and the lambdas drawn then would be frozen into the compiled loss (and a loss compiled "
    "before entering probmix does not run the handler at all). Use the ELBO without Jit "
    "(Trace_ELBO, TraceEnum_ELBO, ...) inside probmix"
)


def _inside_compiled_loss():
    """Whether the current call comes from a loss compiled by :func:`pyro.ops.jit.trace`."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is _COMPILED_CALL:
            return True
        frame = frame.f_back
    return False


def _plate_indices(name):
    """The indices of the live plate ``name`` (its subsample, or ``arange(size)``)."""
    for messenger in reversed(_PYRO_STACK):
        if isinstance(messenger, IndepMessenger) and messenger.name == name:
            return messenger.indices
    return None


def _sequential_error(site, plate):
    return ValueError(
        f"site {site!r} is inside the sequential plate {plate!r} (for i in pyro.plate(...)): "
        f"probmix pairs the rows of a vectorized plate; write `with pyro.plate({plate!r}, N):` "
        f"around one site that holds all N rows"
    )


def _observed_rows(mask, dim):
    """Which rows of the plate have a scored cell (bool, one per row), or None if all have."""
    if not isinstance(mask, torch.Tensor) or mask.dim() < -dim or mask.shape[dim] == 1:
        return None
    rows = mask.shape[dim]
    return mask.movedim(dim, 0).reshape(rows, -1).any(-1)


def _dtype_of(msg):
    value = msg["value"]
    if torch.is_floating_point(value):
        return value.dtype
    try:
        return msg["fn"].mean.dtype
    except NotImplementedError:
        return torch.get_default_dtype()


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}")


def probmix(
    fn: Optional[Callable] = None,
    alpha: Optional[float] = None,
    graph: Optional[Graph] = None,
    *,
    lam=None,
    beta: float = 0.0,
    plate: Optional[str] = None,
    sites: Union[str, Iterable[str], None] = None,
    fusion: str = "log_linear",
    label_fusion: str = "linear",
    criterion: str = "expected_log",
    num_samples: int = 1,
    label_kernel: Optional[LabelKernel] = None,
):
    """
    Effect handler that trains a Pyro model with Probabilistic Mixup.

    Inside ``with probmix(...)``, every observed site in the data plate is replaced, row by row,
    by the log-linear pool of the row's likelihood and a partner row's, with
    :math:`\\lambda \\sim p(\\lambda; \\alpha)` per pair, and scored with the label-fused
    log-likelihood (ProbMix, LocKProbMix). Sites made with :func:`~pyro_probmix.embedding` are
    pooled instead, and observed sites after them in the same plate fuse their labels only
    (M-ProbMix, LocKM-ProbMix). Outside the handler the model is untouched. Like Pyro's
    handlers it also wraps a callable: ``probmix(model, alpha=0.1)`` is the model run inside
    the handler at every call.

    Pairs and lambdas belong to one execution of the model (the guide's and the model's pass of
    one step share them; the next step draws anew), however the plate is built. Three batching
    styles:

    * **Full batch** (``pyro.plate("data", N)``): row ``i`` is paired with a row of the same plate
      drawn from ``graph``; every row is scored. Row ``r`` is graph node ``r``, unless the plate
      is given ``subsample=order`` (all N rows in another order): then row ``r`` is node
      ``order[r]``.
    * **Subsampled plate** (``pyro.plate("data", N, subsample_size=B)`` built in the model):
      the handler fills the plate's subsample with ``B // 2`` anchors, drawn uniformly (without
      replacement, or with replacement when ``16 B <= N``), and their graph partners, so partners
      are evaluated in the same forward pass; every site of the plate counts its anchor rows
      only, scaled by ``N / (B // 2)``: an unbiased estimate of the full-data objective. The plate
      is the one named by ``plate=``, or, for a graph over N training rows, the one subsampled
      plate of N rows.
    * **Batches built outside Pyro** (``pyro.plate("data", B)`` over a batch the user sliced):
      ``FullGraph`` pairs rows within the batch; graphs over the training set raise an error,
      since the batch rows cannot be matched to graph nodes.

    Cells the model does not score (``poutine.mask``, ``obs_mask``, ``.mask()``) stay unscored and
    every scored cell keeps its weight; where a partner's cell is not scored, the cell is fused
    with itself. Observed sites outside the data plate (conditioned global latents) are left
    alone. A block that fuses no site warns (:class:`NothingFusedWarning`); ``sites=`` names that
    were never fused raise.

    :param fn: a model to wrap (optional; without it, use ``with probmix(...):``).
    :param float alpha: :math:`\\lambda \\sim Beta(\\alpha, \\alpha)`, alpha > 0.
    :param graph: a :class:`~pyro_probmix.graphs.Graph`; default ``FullGraph()``.
    :param lam: instead of ``alpha``: a float in [0, 1] (fixed lambda) or a scalar distribution
        supported on [0, 1].
    :param float beta: label kernel width: ``N(y, beta I)`` for real labels, ``1[y=k] + beta``
        for discrete ones (§5). Default 0.
    :param str plate: name of the data plate. Default: each site's only vectorized plate.
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

    The same objective with the model wrapped, as Pyro's handlers do:

    >>> svi = SVI(probmix(model, alpha=0.2), lambda x, y=None: None, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    >>> round(svi.evaluate_loss(x, y) / 20, 0) > -5
    True
    """
    if fn is not None and not callable(fn):  # probmix(alpha, graph), the handler's first form
        if graph is not None:
            raise TypeError(
                f"probmix takes a model, alpha and graph, or alpha and graph; got a first argument "
                f"{fn!r} that is not callable and three positional arguments"
            )
        fn, alpha, graph = None, fn, alpha
    messenger = ProbMixMessenger(
        alpha, graph, lam=lam, beta=beta, plate=plate, sites=sites, fusion=fusion,
        label_fusion=label_fusion, criterion=criterion, num_samples=num_samples,
        label_kernel=label_kernel,
    )
    return messenger if fn is None else messenger(fn)
