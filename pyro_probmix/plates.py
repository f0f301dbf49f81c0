# SPDX-License-Identifier: Apache-2.0
"""
Plate bookkeeping of the handler: along which plate a site is fused, which rows (and graph
nodes) a plate holds, and how a subsampled data plate weights its sites.
"""
import torch
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.replay_messenger import ReplayMessenger
from pyro.poutine.runtime import _PYRO_STACK

from .embedding import EMBEDDING_KEY
from .likelihood import mask_and, never_scored, scoring_dtype
from .pairing import draw_subsample, draw_within

__all__ = [
    "SAMPLE_PLATES",
    "PairingBook",
    "check_labelled",
    "data_frame",
    "check_guide_latent",
    "check_not_observed_outside",
    "check_reparameterised",
    "check_whole_rows",
    "guide_site",
    "observed_rows",
    "plate_indices",
    "replaying_a_guide",
    "rows_of",
    "score_anchors_only",
    "sequential_error",
    "training_rows",
    "value_dtype",
]

# plates over samples, never a data plate: the particles of pyro.infer.elbo (and Importance),
# the samples of pyro.infer.Predictive(parallel=True)
SAMPLE_PLATES = ("num_particles_vectorized", "_num_predictive_samples")


def data_frame(msg, data_plate, paired=()):
    """``(frame, None)`` with the frame of the data plate of a site to fuse, or ``(None, why)`` if
    the site is to be left alone (it lies outside every data plate, like a conditioned global
    latent). ``data_plate`` is the plate's name, or None for each site's only vectorized plate;
    ``paired`` holds the names of the plates paired so far, which a refusal suggests first.

    >>> import pyro, pyro.distributions as dist
    >>> from pyro import poutine
    >>> def model():
    ...     pyro.sample("w", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", 3):
    ...         pyro.sample("y", dist.Normal(0.0, 1.0))
    >>> trace = poutine.trace(model).get_trace()
    >>> data_frame(trace.nodes["y"], None)[0].name, data_frame(trace.nodes["w"], None)
    ('data', (None, 'outside any plate'))
    """
    stack = msg["cond_indep_stack"]
    vectorized = [f for f in stack if f.vectorized and f.name not in SAMPLE_PLATES]
    sequential = [f for f in stack if not f.vectorized]
    if data_plate is not None:
        frames = [f for f in vectorized if f.name == data_plate]
        if frames:
            return frames[0], None
        if any(f.name == data_plate for f in sequential):
            raise sequential_error(msg["name"], data_plate)
        return None, f"outside plate {data_plate!r}"
    if len(vectorized) == 1:
        return vectorized[0], None
    if len(vectorized) > 1:
        plates = [f.name for f in vectorized]
        before = [name for name in plates if name in paired]
        hint = (
            f"probmix(..., plate={before[0]!r}), the plate whose rows the sites before it were "
            f"paired along" if before else f"probmix(..., plate=...), one of {plates}"
        )
        raise ValueError(
            f"site {msg['name']!r} is in several plates {plates}: probmix pairs rows along "
            f"one data plate, the plate whose rows are the examples (each row one example, "
            f"the other plates its parts). Name it with {hint}"
        )
    if sequential:
        raise sequential_error(msg["name"], sequential[0].name)
    return None, "outside any plate"


def score_anchors_only(msg, frame, pairing):
    """Every site of a subsampled data plate counts its anchor rows only, scaled by B / A,
    so that the step is an unbiased estimate of the full-data objective."""
    msg["scale"] = msg["scale"] * pairing.scale
    if EMBEDDING_KEY in msg["infer"]:
        return  # adds nothing to the ELBO
    anchors = pairing.anchor_mask.reshape((-1,) + (1,) * (-frame.dim - 1))
    site = None if msg["is_observed"] else guide_site(msg["name"])
    if site is not None:  # the model's pass over a latent variable of the guide
        check_reparameterised(msg["name"], site, frame.name)
        if site["infer"].get("enumerate") == "parallel":
            # its guide pass could not tell it from a latent enumerated in the model
            if "mask" not in site:
                # the trace that infer_discrete replays (its nodes carry no mask): decoding under
                # the anchors-only mini-batch objective is not a defined posterior of any row
                raise NotImplementedError(
                    f"site {msg['name']!r}: infer_discrete inside a probmix block on the subsampled "
                    f"data plate {frame.name!r} is not supported (partner rows are scored by the "
                    f"prior only, anchors by the fused likelihood). Decode outside the block, on "
                    f"the plain model"
                )
            site["mask"] = mask_and(site["mask"], anchors)
    elif msg["infer"].get("enumerate") == "parallel":
        # enumerated in the model (or the guide's pass of a latent enumerated in the guide,
        # masked by the model's pass above): for a partner row it sums to 1 over its values
        # once the row's observations are masked; masking it too would add log(K) per row
        return
    msg["mask"] = mask_and(msg["mask"], anchors)


def training_rows(graph, frame, rows, indices):
    """The graph nodes of a plate's rows: ``subsample=idx`` holds training rows ``idx``; a
    plate whose size Pyro infers holds the rows in order."""
    n = graph.num_nodes
    # pyro.plate(subsample=...) takes any sequence of integer indices
    indices = torch.arange(rows) if indices is None else torch.as_tensor(indices).long()
    size = rows if frame.full_size in (None, -1) else frame.full_size  # -1: inferred from the batch
    nodes = torch.arange(n, device=indices.device)
    permutation = rows == n and (
        torch.equal(indices, nodes) or torch.equal(torch.sort(indices).values, nodes)
    )
    if not (permutation and size == n):
        other_plate = (
            f"The plate has {size} rows and the graph {n} nodes: build the graph from "
            f"the features of this plate's rows, or, if another plate holds the {n} training rows, "
            f"name it with probmix(..., plate=...). "
            if size != n else ""
        )
        held = (
            f"holds {rows} indices that are not each of the {n} rows once (a row repeats or "
            f"is missing)" if rows == n and size == n
            else f"holds {rows} of {size} rows chosen outside probmix, so a partner may lie outside the batch"
        )
        raise ValueError(
            f"{graph!r} pairs the {n} training rows, but plate {frame.name!r} {held}. "
            f"{other_plate}Otherwise declare pyro.plate({frame.name!r}, {n}, subsample_size=B) "
            f"inside the model (probmix then draws anchors and their partners; pass "
            f"probmix(..., plate={frame.name!r}) if several plates have {n} rows), give the "
            f"full batch in any order with pyro.plate({frame.name!r}, {n}, subsample=order), "
            f"or use FullGraph() to pair rows within the batch"
        )
    return indices


def plate_indices(frame):
    """The indices of the live plate of ``frame`` (its subsample, or ``arange(size)``); None for
    a plate whose size Pyro infers from the batch."""
    if frame.size < 0:
        return None
    for messenger in reversed(_PYRO_STACK):
        if isinstance(messenger, IndepMessenger) and messenger.name == frame.name:
            return messenger.indices
    return None


def check_reparameterised(name, site, plate):
    """Refuses a latent variable of the guide in the data plate ``plate`` that is neither
    reparameterised nor enumerated. Its gradient is a score-function estimate, which Pyro's ELBOs
    Rao-Blackwellise by plate: row i's latent is credited with row i's terms only, but row j's
    fused likelihood uses row i's latent too (row i is j's partner), so the estimate is biased
    (full batch) or, on mini-batches, the partner rows' terms are dropped."""
    if site["infer"].get("enumerate") == "parallel" or site["fn"].has_rsample:
        return
    raise NotImplementedError(
        f"site {name!r}: a latent variable of the guide that is not reparameterised "
        f"({type(site['fn']).__name__}), in the data plate {plate!r}. Its score-function gradient "
        f"credits each row's latent with that row's terms only, but the fused likelihood of the "
        f"row's partner uses it too, so the gradient would be biased. Use a reparameterised "
        f"guide, or enumerate the site (infer={{'enumerate': 'parallel'}} with TraceEnum_ELBO)"
    )


def _data_plate_name(msg, data_plate):
    """The name of the data plate the site is in (``data_plate``, or its only vectorized plate),
    or None."""
    names = [f.name for f in msg["cond_indep_stack"] if f.vectorized and f.name not in SAMPLE_PLATES]
    if data_plate in names:
        return data_plate
    return names[0] if data_plate is None and len(names) == 1 else None


def check_guide_latent(msg, data_plate):
    """The model's pass over a latent of the guide in the data plate (full batch): refused
    unless reparameterised or enumerated (:func:`check_reparameterised`)."""
    site = guide_site(msg["name"])
    plate = _data_plate_name(msg, data_plate)
    if site is not None and plate is not None:
        check_reparameterised(msg["name"], site, plate)


def check_not_observed_outside(msg, data_plate):
    """A site of the data plate that a handler outside probmix observed
    (``pyro.condition(probmix(model), data)``) reached probmix as a latent variable, so it was
    not fused: refused."""
    if msg["infer"].get("is_auxiliary") or msg["infer"].get("_deterministic") or EMBEDDING_KEY in msg["infer"]:
        return
    if never_scored(msg):  # e.g. the value a poutine.reparam outside probmix put in place of a latent
        return
    if _data_plate_name(msg, data_plate) is not None:
        raise ValueError(
            f"site {msg['name']!r} is observed by a handler outside probmix (e.g. "
            f"pyro.condition(probmix(model), data), or poutine.do around the block), so it "
            f"reached probmix as a latent variable and was not fused. Apply that handler "
            f"inside: probmix(pyro.condition(model, data)), probmix(poutine.do(model, data)), "
            f"or pass the observations to the model (obs=...)"
        )


def check_whole_rows(msg, frame):
    """``criterion="log_expected"`` mixes the labels of a pair as whole rows,
    ``log(lam p(y_i) + (1 - lam) p(y_j))`` with ``p(y_i)`` the product over a row's cells: a site
    in another plate besides the data plate splits a row into cells (or holds several groups of
    rows), which the handler cannot tell apart, and mixing cell by cell is another objective."""
    others = [f.name for f in msg["cond_indep_stack"]
              if f.vectorized and f.name not in SAMPLE_PLATES and f.name != frame.name]
    if others:
        raise NotImplementedError(
            f"site {msg['name']!r}: criterion='log_expected' mixes the labels of the two rows of a "
            f"pair as whole rows, but the site is also in plate(s) {others}, which split each row "
            f"of plate {frame.name!r} into cells that would be mixed one by one. Write those "
            f"dims as the event (d.to_event(n)), or use criterion='expected_log', which is the "
            f"same for cells and rows"
        )


def guide_site(name):
    """The guide's site ``name`` when the model's pass replays the guide's trace, else None."""
    for messenger in _PYRO_STACK:
        if isinstance(messenger, ReplayMessenger) and messenger.trace is not None:
            site = messenger.trace.nodes.get(name)
            if site is not None and site["type"] == "sample" and not site["is_observed"]:
                return site
    return None


def replaying_a_guide():
    """Whether this is the model's pass of an ELBO (which replays the guide's trace)."""
    return any(isinstance(m, ReplayMessenger) and m.trace is not None for m in _PYRO_STACK)


def sequential_error(site, plate):
    return ValueError(
        f"site {site!r} is inside the sequential plate {plate!r} (for i in pyro.plate(...)): "
        f"probmix pairs the rows of a vectorized plate; write `with pyro.plate({plate!r}, N):` "
        f"around one site that holds all N rows"
    )


def rows_of(msg, fn, frame):
    """The number of rows of ``fn`` along the dim of the plate ``frame``."""
    shape, dim = fn.batch_shape, frame.dim
    if len(shape) < -dim or (frame.size >= 0 and shape[dim] != frame.size):
        rows = f"the {frame.size} rows" if frame.size >= 0 else "the rows"
        raise ValueError(
            f"site {msg['name']!r}: {type(fn).__name__} has batch_shape {tuple(shape)}, which does "
            f"not have {rows} of plate {frame.name!r} at dim {dim}; probmix pairs the rows of the "
            f"distribution, so expand its parameters to the plate (e.g. d.expand(shape))"
        )
    return shape[dim]


def observed_rows(mask, dim):
    """Which rows of the plate have a scored cell (bool, one per row), or None if all have."""
    if not isinstance(mask, torch.Tensor) or mask.dim() < -dim or mask.shape[dim] == 1:
        return None
    rows = mask.shape[dim]
    return mask.movedim(dim, 0).reshape(rows, -1).any(-1)


class PairingBook:
    """
    The pairs of one ``with probmix`` block, plate by plate: the subsamples the handler drew
    (linked to the guide's and the model's pass of a step by the identity of the indices, which
    replay hands on) and the pairings of rows within a plate, drawn anew at each execution of
    the model (a site fused a second time, or other rows, start one).

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro import poutine
    >>> from pyro_probmix import probmix
    >>> def model():
    ...     with pyro.plate("data", 4):
    ...         pyro.sample("y", dist.Normal(torch.zeros(4), 1.0), obs=torch.ones(4))
    >>> with probmix(lam=0.5) as handler:
    ...     first = (poutine.trace(model).get_trace(), handler.book.latest["data"])[1]
    ...     second = (poutine.trace(model).get_trace(), handler.book.latest["data"])[1]
    >>> first is not second, sorted(first.used_by)
    (True, ['y'])
    """

    def __init__(self, graph, lam_sampler, plate, layouts):
        self.graph, self.lam_sampler, self.layouts = graph, lam_sampler, layouts
        self.data_plate = plate  # the plate probmix subsamples: named, or taken over
        self.named = plate is not None
        self.drawn = {}  # plate name -> (subsample indices, Pairing) drawn by the handler
        self.within = {}  # plate name -> (plate indices, Pairing) of rows paired in the plate
        self.latest = {}  # plate name -> latest Pairing, for inspection

    def enter_plate(self, msg):
        """Fill the subsample of the data plate with anchors and partners (a subsample site)."""
        name, fn = msg["name"], msg["fn"]
        subsampled = fn.subsample_size is not None and fn.subsample_size < fn.size
        if not subsampled or msg["value"] is not None:
            return  # a full plate, or indices given by the user or replayed from the guide
        if self.data_plate is None and self.graph.num_nodes == fn.size:
            self.data_plate = name  # the only plate a graph over the training rows can pair
        elif self.data_plate != name:
            if not self.named and self.graph.num_nodes == fn.size:
                raise ValueError(
                    f"plates {self.data_plate!r} and {name!r} both subsample the "
                    f"{fn.size} rows that {self.graph!r} pairs: name the data plate with "
                    f"probmix(..., plate=...)"
                )
            return
        # lambdas in float64 until a site tells the model's dtype (Pairing.lam_in)
        indices, pairing = draw_subsample(
            self.graph, self.lam_sampler, name, fn.size, fn.subsample_size, fn.device,
            torch.float64, self.layouts,
        )
        msg["value"] = indices
        self.drawn[name] = indices, pairing
        self._set_latest(name, pairing)

    def drawn_plate_of(self, msg):
        """``(frame, Pairing)`` of the subsample the handler drew, if ``msg`` is in that plate."""
        if not self.drawn:
            return None
        for frame in msg["cond_indep_stack"]:
            drawn = self.drawn.get(frame.name)
            if drawn is not None and plate_indices(frame) is drawn[0]:
                return frame, drawn[1]
        return None

    def pairing(self, msg, frame, rows, observed=None):
        """The pairing of the site's data plate (of ``rows`` rows) in this execution of the model:
        the subsample the handler drew, or a pairing of the plate's rows drawn on first use."""
        name = frame.name
        drawn = self.drawn.get(name)
        indices = plate_indices(frame)
        if drawn is not None and indices is drawn[0]:
            pairing = drawn[1]
        else:
            within = self.within.get(name)
            # a new execution of the model: new rows, or a site fused a second time
            if within is None or within[0] is not indices or msg["name"] in within[1].used_by:
                pairing = self._draw_within(msg, frame, rows, indices, observed)
                self.within[name] = indices, pairing
                self._set_latest(name, pairing)
            else:
                pairing = within[1]
        pairing.used_by.add(msg["name"])
        return pairing

    def _set_latest(self, name, pairing):
        """Start the pairing of a new execution of plate ``name``, after checking the one before."""
        if name in self.latest:
            check_labelled(name, self.latest[name])
        self.latest[name] = pairing

    def check_finished(self):
        """At the end of a block: checks the pairing of each plate's last execution."""
        for name, pairing in self.latest.items():
            check_labelled(name, pairing)

    def _draw_within(self, msg, frame, rows, indices, observed):
        device = msg["value"].device  # where the rows live, whatever the plate's device
        if self.graph.num_nodes is None:
            nodes = torch.arange(rows, device=device)
        else:
            nodes = training_rows(self.graph, frame, rows, indices).to(device)
        return draw_within(self.graph, self.lam_sampler, frame.name, nodes, value_dtype(msg), observed)


def check_labelled(plate, pairing):
    """
    Refuses an execution of the model in which embedding sites of ``plate`` were pooled but no
    observed site was fused: M-ProbMix fuses the labels of the observed sites after a pooled
    embedding, so without one the pass computed predictions from the pooled embedding of two rows
    (e.g. ``Predictive`` inside a ``probmix`` block), which predict neither row.

    >>> from pyro_probmix.pairing import Pairing
    >>> check_labelled("data", Pairing(torch.tensor([1, 0]), torch.tensor([0.5, 0.5]), embedded=True, used_by={"z"}))
    Traceback (most recent call last):
    ...
    ValueError: embedding site 'z' of plate 'data' was pooled in an execution of the model that fused no observed site ...
    """
    if pairing.embedded and not pairing.observed_fused:
        names = ", ".join(repr(n) for n in sorted(pairing.used_by))
        raise ValueError(
            f"embedding site {names} of plate {plate!r} was pooled in an execution of the model "
            f"that fused no observed site (no observation, or all masked out), so its outputs came "
            f"from the pooled embedding of two rows and predict neither: a prediction pass "
            f"(pyro.infer.Predictive, a forward pass with obs=None) inside a probmix block. Run "
            f"predictions outside the block, where embedding sites are not pooled; in training, "
            f"the observed sites after an embedding must be observed, in plate {plate!r} and, "
            f"with sites=, named there"
        )


def value_dtype(msg):
    """The floating dtype a site is fused in (:func:`~pyro_probmix.likelihood.scoring_dtype`)."""
    return scoring_dtype(msg["fn"], msg["value"])
