# SPDX-License-Identifier: Apache-2.0
"""
The ``probmix`` effect handler.
"""
from typing import Callable, Iterable, Optional, Union

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample

from .arguments import check_choice, check_num_samples, positional_arguments, site_names
from .block_log import BlockLog, NothingFusedWarning
from .closed_forms import closed_form_likelihood
from .embedding import EMBEDDING_KEY
from .embedding_heads import check_computed_from
from .embedding_pool import check_value_not_set, fuse_embedding, guide_embedding_error, replayed_guide_embeddings
from .graphs import FullGraph, Graph
from .jit_guard import check_not_in_compiled_loss, check_not_tracing
from .labels import CRITERIA, LABEL_FUSIONS, LabelKernel, check_beta, site_label_kernel
from .likelihood import (
    ProbMixLikelihood, check_observation_is_data, fuse_observed_site, is_factor, unmask
)
from .pairing import LambdaSampler, Pairing, sample_symmetric_beta
from .particle_guard import check_particles_share_pairs
from .plates import (
    check_guide_latent,
    check_not_observed_outside,
    check_whole_rows,
    PairingBook,
    data_frame,
    observed_rows,
    replaying_a_guide,
    rows_of,
    score_anchors_only,
)
from .pooling import check_poolable, get_pooler, log_linear_pool

__all__ = [
    "NothingFusedWarning",
    "ProbMixMessenger",
    "probmix",
    "Pairing",
    "ProbMixLikelihood",
    "sample_symmetric_beta",
]

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
        self.sites = site_names(sites)
        self.pool = get_pooler(fusion)
        check_choice("label_fusion", label_fusion, LABEL_FUSIONS)
        check_choice("criterion", criterion, CRITERIA)
        self.label_fusion = label_fusion
        self.criterion = criterion
        self.num_samples = check_num_samples(num_samples)
        if label_kernel is not None and not isinstance(label_kernel, LabelKernel):
            raise TypeError(
                f"label_kernel must be a pyro_probmix.labels.LabelKernel, got {label_kernel!r}"
            )
        self.label_kernel = label_kernel
        self._layouts = {}  # (batch, device) -> static rows of the subsample path
        self._kernels = {}  # (site name, family) -> label kernel
        self._heads_checked = set()  # sites after an embedding found computed from it
        self._reset()

    def _reset(self):
        self.book = PairingBook(self.graph, self.lam_sampler, self.plate, self._layouts)
        self.log = BlockLog(self.sites, self.plate)
        self._embedding_sites = set()
        self._guide_checked = None  # the latest guide trace checked for embedding sites
        self._observed_here = set()  # ids of the messages that were observed when they reached probmix

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
                    raise guide_embedding_error(name) from exc_value
        return result

    @property
    def pairings(self):
        """
        The latest :class:`~pyro_probmix.pairing.Pairing` of each plate, by plate name, for
        inspection; kept after the ``with`` block and cleared when it is entered again.
        """
        return dict(self.book.latest)

    # ----------------------------------------------------------------- messages
    def _pyro_param(self, msg):
        check_not_in_compiled_loss()

    def _pyro_sample(self, msg):
        check_not_tracing()
        if site_is_subsample(msg):
            self.book.enter_plate(msg)
            return
        self.log.see(msg)
        if msg["is_observed"]:
            self._observed_here.add(id(msg))
        if EMBEDDING_KEY in msg["infer"]:
            if self.sites is None or msg["name"] in self.sites:
                self._fuse_embedding(msg)
        elif msg["is_observed"] and (self.sites is None or msg["name"] in self.sites):
            if is_factor(msg):
                self._check_factor(msg)
            elif not msg["infer"].get("is_auxiliary") and not msg["infer"].get("_deterministic"):
                self._fuse_observation(msg)
        drawn = self.book.drawn_plate_of(msg)
        if drawn is not None:
            score_anchors_only(msg, *drawn)
        elif not msg["is_observed"]:
            check_guide_latent(msg, self.book.data_plate)

    def _pyro_post_sample(self, msg):
        if (msg["is_observed"] and id(msg) not in self._observed_here and not site_is_subsample(msg)
                and (self.sites is None or msg["name"] in self.sites)):
            check_not_observed_outside(msg, self.book.data_plate)
        self._observed_here.discard(id(msg))

    # ----------------------------------------------------------------- plates
    def _data_frame(self, msg):
        frame, why = data_frame(msg, self.book.data_plate, self.book.latest)
        return frame if frame is not None else self._leave_alone(msg, why)

    def _pairing(self, msg, frame, rows, observed=None):
        check_particles_share_pairs(msg["name"])
        self.log.fused.add(msg["name"])
        return self.book.pairing(msg, frame, rows, observed)

    def _leave_alone(self, msg, why):
        if self.sites is not None:
            raise ValueError(
                f"site {msg['name']!r} is named in sites= but is {why}: probmix fuses rows of the "
                f"data plate; move the site into that plate or drop it from sites="
            )
        self.log.leave_alone(msg["name"], why)
        return None

    # ----------------------------------------------------------------- fusion
    def _check_guide(self):
        """The model's pass of an ELBO: refuses a guide that had embedding sites (once per step)."""
        trace, embeddings = replayed_guide_embeddings()
        if trace is not None and trace is not self._guide_checked:
            if embeddings:
                raise guide_embedding_error(embeddings[0])
            self._guide_checked = trace

    def _fuse_embedding(self, msg):
        self._embedding_sites.add(msg["name"])
        check_value_not_set(msg, self)
        self._check_guide()
        frame = self._data_frame(msg)
        if frame is None:
            return
        pairing = self._pairing(msg, frame, rows_of(msg, msg["fn"].base_dist, frame))
        fuse_embedding(msg, frame, pairing, self.pool)

    def _check_factor(self, msg):
        """A ``pyro.factor`` adds a log-density term, which has no distribution to pool: inside
        the data plate of a model being trained it would stay unfused beside the fused sites (or
        be evaluated at a pooled embedding), so it is refused there."""
        frame, _ = data_frame(msg, self.book.data_plate, self.book.latest)
        if frame is None:
            return  # a term outside the data plate: kept as written
        if not replaying_a_guide():
            self.log.leave_alone(msg["name"], "a pyro.factor, which probmix cannot pool")
            return
        raise ValueError(
            f"site {msg['name']!r} is a pyro.factor inside data plate {frame.name!r}: a log-density "
            f"term of each row, which probmix cannot pool (it has no distribution of an "
            f"observation), so it would stay unfused beside the fused sites. Write it as an observed "
            f"pyro.sample of a distribution (or register_pool a family for it), move it out of the "
            f"plate, or name the sites to fuse with probmix(..., sites=[...]) leaving it out"
        )

    def _fuse_observation(self, msg):
        self._check_guide()
        frame = self._data_frame(msg)
        if frame is None:
            return
        if not isinstance(msg["value"], torch.Tensor):
            raise TypeError(
                f"site {msg['name']!r}: the observed value is a {type(msg['value']).__name__}, not "
                f"a torch.Tensor; pass obs=torch.as_tensor(...) (plain Pyro's log_prob refuses it too)"
            )
        fn, mask = unmask(msg["fn"], msg["mask"])
        if mask is False:
            self.log.leave_alone(msg["name"], "masked out")
            return
        check_observation_is_data(msg, fn)
        if self.pool is log_linear_pool:
            try:
                check_poolable(fn)  # before any pair is drawn: fail at the first step
            except (NotImplementedError, ValueError) as e:
                raise type(e)(f"site {msg['name']!r}: {e}") from e
        if self.criterion == "log_expected":
            check_whole_rows(msg, frame)
        rows = rows_of(msg, fn, frame)
        pairing = self._pairing(msg, frame, rows, observed=observed_rows(mask, frame.dim))
        if pairing.embedded and msg["name"] not in self._heads_checked:
            check_computed_from(msg["name"], fn, *pairing.embedding)
            self._heads_checked.add(msg["name"])
        pairing.observed_fused = True
        fuse_observed_site(
            msg, frame.dim, pairing, self.pool, lambda base: self._kernel(msg, base),
            self.label_fusion, self.criterion, self.num_samples,
            closed_form_likelihood if self.pool is log_linear_pool else None,
        )

    def _kernel(self, msg, d):
        key = msg["name"], type(d), type(getattr(d, "base_dist", None))
        if key not in self._kernels:
            self._kernels[key] = site_label_kernel(
                msg["name"], d, self.label_kernel, self.beta, self.label_fusion
            )
        return self._kernels[key]

    # ----------------------------------------------------------------- end of a block
    def _check_block(self):
        self.book.check_finished()
        self.log.check_end()


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
    fn, alpha, graph = positional_arguments(fn, alpha, graph)
    messenger = ProbMixMessenger(
        alpha, graph, lam=lam, beta=beta, plate=plate, sites=sites, fusion=fusion,
        label_fusion=label_fusion, criterion=criterion, num_samples=num_samples,
        label_kernel=label_kernel,
    )
    return messenger if fn is None else messenger(fn)
