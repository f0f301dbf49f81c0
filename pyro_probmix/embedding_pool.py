# SPDX-License-Identifier: Apache-2.0
"""
M-ProbMix at an :func:`~pyro_probmix.embedding` site: the layer's distribution is replaced by
the pool of each row's and its partner's, and the site's value by a draw of the pool (or its
mean). The layers after the site then see the pooled embedding, so the observed sites after it
fuse their labels only (:mod:`pyro_probmix.embedding_heads` checks they are computed from it).

>>> import torch, pyro, pyro.distributions as dist
>>> from pyro import poutine
>>> from pyro_probmix import embedding, probmix
>>> def model(y):
...     with pyro.plate("data", 2):
...         z = embedding("z", dist.Normal(torch.tensor([0.0, 4.0]), 1.0), mean=True)
...         pyro.sample("y", dist.Normal(z, 1.0), obs=y)
>>> with probmix(lam=0.25):  # two rows: each is the other's partner
...     trace = poutine.trace(model).get_trace(torch.zeros(2))
>>> trace.nodes["z"]["value"].tolist()  # equal scales: 0.25 * own mean + 0.75 * the partner's
[3.0, 1.0]
"""
from pyro.poutine.condition_messenger import ConditionMessenger
from pyro.poutine.do_messenger import DoMessenger
from pyro.poutine.replay_messenger import ReplayMessenger
from pyro.poutine.runtime import _PYRO_STACK

from .embedding import EMBEDDING_KEY
from .likelihood import innermost
from .plates import value_dtype
from .rows import take_rows

__all__ = ["check_value_not_set", "fuse_embedding", "guide_embedding_error", "replayed_guide_embeddings"]


def check_value_not_set(msg, handler):
    """Refuses an embedding site whose value a handler sets, ``pyro.condition`` or ``poutine.do``
    inside the block (the value differs from the one :func:`~pyro_probmix.embedding` passed) or
    outside ``handler``: pooling would overrule the value, or the value the pool, and the sites
    after it would fuse their labels at a layer that is not the pool of the rows."""
    name = msg["name"]
    inside = msg["value"] is not msg["infer"][EMBEDDING_KEY].get("value", msg["value"])
    outside = any(
        isinstance(m, (ConditionMessenger, DoMessenger)) and name in (m.data or {})
        for m in _PYRO_STACK[: _PYRO_STACK.index(handler)]
    )
    if inside or outside:
        raise ValueError(
            f"embedding site {name!r} is given a value by a handler ({'inside' if inside else 'outside'} "
            f"the probmix block: pyro.condition or poutine.do on the embedding). M-ProbMix replaces "
            f"the layer's value by a draw of the pool of the paired rows, so the two cannot both "
            f"hold. Condition the observed sites only, or leave the embedding out with "
            f"probmix(..., sites=[...]) (it then keeps the value given)"
        )


def replayed_guide_embeddings():
    """``(trace, names)``: the guide trace that the model's pass of an ELBO replays, and its
    embedding sites; ``(None, ())`` outside such a pass."""
    for messenger in _PYRO_STACK:
        if isinstance(messenger, ReplayMessenger) and messenger.trace is not None:
            trace = messenger.trace
            return trace, [n for n, site in trace.nodes.items() if EMBEDDING_KEY in site.get("infer", {})]
    return None, ()


def guide_embedding_error(name):
    return RuntimeError(
        f"embedding site {name!r} is in the guide: embedding() marks a stochastic hidden layer of "
        f"the model, which M-ProbMix pools and which adds no term to the ELBO; a latent variable "
        f"of the guide is a pyro.sample site. Move the embedding into the model, or use "
        f"pyro.sample in the guide"
    )


def fuse_embedding(msg, frame, pairing, pool):
    """Pools embedding site ``msg`` in place: ``fn`` becomes the (masked-out) pool of the rows of
    ``frame`` paired by ``pairing`` under the pooling operator ``pool``, ``value`` its draw."""
    fn = msg["fn"].base_dist  # embedding() masks the distribution out of the ELBO
    dim = frame.dim
    if len(fn.batch_shape) < -dim or fn.batch_shape[dim] != pairing.partner.shape[0]:
        raise ValueError(
            f"embedding site {msg['name']!r}: {type(fn).__name__} has batch_shape "
            f"{tuple(fn.batch_shape)}, which does not have the {pairing.partner.shape[0]} rows "
            f"of plate {frame.name!r} at dim {dim}"
        )
    if pairing.embedded:
        raise ValueError(
            f"embedding site {msg['name']!r}: a second embedding() pooled in plate "
            f"{frame.name!r} in one execution of the model. M-ProbMix pools one hidden layer: "
            f"the layers after it already see the pool of both rows, so pooling a later one "
            f"again with the same pairs mixes in the partner's partner, a third row. Mark one "
            f"layer with embedding(), or choose it with probmix(..., sites=...)"
        )
    lam = pairing.lam_in(value_dtype(msg)).reshape((-1,) + (1,) * (-dim - 1))
    mean = msg["infer"][EMBEDDING_KEY]["mean"]
    try:
        pooled = pool(fn, take_rows(fn, pairing.partner, dim), lam)
    except (NotImplementedError, ValueError, TypeError) as e:
        draws = "" if mean else (
            " (with mean=False the pool is drawn from, which needs a log-linear rule: "
            "fusion='linear' gives a mixture, which has no rsample)"
        )
        raise type(e)(f"embedding site {msg['name']!r}: {e}{draws}") from e
    if not mean and not pooled.has_rsample:
        raise NotImplementedError(
            f"embedding site {msg['name']!r}: the pool of its {type(innermost(fn)).__name__} rows, a "
            f"{type(pooled).__name__}, has no reparameterised sample (rsample), which an "
            f"embedding needs. Use embedding(..., mean=True), or a family with a log-linear "
            f"rule (Normal, MultivariateNormal, LogNormal, ...) and fusion='log_linear'"
        )
    msg["fn"] = pooled.mask(False)
    msg["value"] = pooled.mean if mean else pooled.rsample()
    pairing.embedded = True
    pairing.embedding = msg["name"], msg["value"]
