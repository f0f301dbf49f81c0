# SPDX-License-Identifier: Apache-2.0
"""
Per-run random streams: every random number a run of a group draws while training (partners,
lambdas, embedding noise) comes from that run's own :class:`torch.Generator`, seeded from its own
key, so a run trained inside a group is bit for bit the run trained alone.

The ``R`` runs of a group share one Pyro model over their ``R * N`` rows (run after run), so each
draw of the handler or of the embedding covers every run at once. :class:`RunStreams` splits such
a draw by run: run ``r`` draws its share from ``generators[r]``, in the order it would alone.
It serves the three draws of a training step: the block graphs of
:mod:`~pyro_probmix.experiments.blocks` call :meth:`RunStreams.randint` for partners;
:class:`RunBeta` is the handler's ``lam`` distribution; and, as a Pyro messenger, it draws the
noise of the Gaussian embedding sites itself (it asks :func:`~pyro_probmix.probmix` for the
pooled mean and adds ``scale * noise``, which is how ``Normal.rsample`` draws).
"""
import hashlib

import torch
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger

from pyro_probmix.embedding import EMBEDDING_KEY
from pyro_probmix.handler import sample_symmetric_beta

__all__ = ["RunStreams", "RunBeta", "derive_seed"]

_DRAWN_HERE = "run_streams_draw"  # infer key of the embedding sites whose noise RunStreams draws


def derive_seed(*parts):
    """A 63-bit seed from ``parts`` (hashed with SHA-256): independent streams for one run's
    purposes (training noise, validation draws, test draws).

    >>> derive_seed("a1b2", "train") == derive_seed("a1b2", "train") != derive_seed("a1b2", "val")
    True
    """
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


class RunStreams(Messenger):
    """One CPU generator per run (``seeds``), for draws over ``runs * rows`` rows laid out run
    after run; draws go to ``device``. A draw over the rows of one run (a minibatch, ``runs=1``)
    takes them all from that run's generator.

    >>> streams = RunStreams([7, 8], rows=3)
    >>> both = streams.randint(0, 100, torch.arange(6))
    >>> alone = RunStreams([8], rows=3).randint(0, 100, torch.arange(3))
    >>> both[3:].tolist() == alone.tolist()  # run 1 draws the same numbers with or without run 0
    True
    """

    def __init__(self, seeds, rows, device="cpu"):
        super().__init__()
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.rows = int(rows)
        self.device = torch.device(device)

    @property
    def runs(self):
        return len(self.generators)

    def _by_run(self, rows, draw):
        """``draw(generator, m)`` for each run's ``m`` rows of ``rows`` (row indices, or ``None``
        for all the group's rows in order), placed at those rows' positions."""
        if rows is None:  # the full batch: run after run
            return torch.cat([draw(g, self.rows) for g in self.generators]).to(self.device)
        rows = rows.cpu()
        if self.runs == 1:
            return draw(self.generators[0], len(rows)).to(self.device)
        run = torch.div(rows, self.rows, rounding_mode="floor")
        if bool(((run < 0) | (run >= self.runs)).any()):
            raise ValueError(f"row indices outside the {self.runs} x {self.rows} rows of the group")
        counts = torch.bincount(run, minlength=self.runs).tolist()
        parts = [draw(g, m) for g, m in zip(self.generators, counts)]
        order = torch.argsort(run, stable=True)
        out = torch.empty_like(torch.cat(parts))
        out[order] = torch.cat(parts)
        return out.to(self.device)

    def randint(self, low, high, rows):
        """One integer in ``[low, high)`` per row of ``rows`` from its run's generator."""
        if len(rows) == self.runs * self.rows and bool((rows.cpu() == torch.arange(len(rows))).all()):
            rows = None  # the full batch (the common case): no sort
        return self._by_run(rows, lambda g, m: torch.randint(low, high, (m,), generator=g))

    def beta(self, alpha, n):
        """``n`` draws of Beta(alpha, alpha), ``n / runs`` from each run's generator."""
        return self._by_run(self._split_rows(n), lambda g, m: sample_symmetric_beta(alpha, m, generator=g))

    def randn(self, shape):
        """Standard normal noise of ``shape``, whose leading dim holds the rows, run after run."""
        rows = self._split_rows(shape[0])
        return self._by_run(rows, lambda g, m: torch.randn((m,) + tuple(shape[1:]), generator=g))

    def _split_rows(self, n):
        """``None`` (all rows, run after run) for a draw over the whole group; the ``n`` rows of a
        minibatch of the one run."""
        if self.runs == 1:
            return torch.arange(n)
        if n != self.runs * self.rows:
            raise ValueError(f"a draw over {n} rows does not cover the {self.runs} x {self.rows} rows of the group")
        return None

    # the noise of embedding sites: probmix pools to the mean, this messenger adds the noise
    def _pyro_sample(self, msg):
        wanted = msg["infer"].get(EMBEDDING_KEY)
        if wanted is not None and not wanted["mean"]:
            msg["infer"][EMBEDDING_KEY] = {**wanted, "mean": True}
            msg["infer"][_DRAWN_HERE] = True

    def _pyro_post_sample(self, msg):
        if not msg["infer"].pop(_DRAWN_HERE, False):
            return
        msg["infer"][EMBEDDING_KEY] = {**msg["infer"][EMBEDDING_KEY], "mean": False}
        leaf = msg["fn"]
        while hasattr(leaf, "base_dist"):  # masked, Independent
            leaf = leaf.base_dist
        if not (hasattr(leaf, "loc") and hasattr(leaf, "scale")):
            raise NotImplementedError(
                f"embedding site {msg['name']!r}: RunStreams draws Gaussian embeddings (loc + scale * noise), "
                f"got {type(leaf).__name__}"
            )
        noise = self.randn(leaf.loc.shape).to(leaf.loc.dtype)
        msg["value"] = leaf.loc + leaf.scale * noise


class RunBeta(torch.distributions.Distribution):
    """Beta(alpha, alpha) whose draws come from ``streams`` (a :class:`RunStreams`): the ``lam``
    of :func:`~pyro_probmix.probmix` for a group.

    >>> lam = RunBeta(0.5, RunStreams([3, 4], rows=2)).sample((4,))
    >>> lam[2:].tolist() == RunBeta(0.5, RunStreams([4], rows=2)).sample((2,)).tolist()
    True
    """

    arg_constraints = {}
    support = constraints.unit_interval

    def __init__(self, alpha, streams):
        self.alpha, self.streams = float(alpha), streams
        super().__init__(validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        if len(sample_shape) != 1:
            raise ValueError(f"RunBeta draws one lambda per row: sample_shape (n,), got {tuple(sample_shape)}")
        return self.streams.beta(self.alpha, sample_shape[0])
