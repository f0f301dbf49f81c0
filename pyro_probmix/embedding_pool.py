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
from .embedding import EMBEDDING_KEY
from .likelihood import innermost
from .plates import value_dtype
from .rows import take_rows

__all__ = ["fuse_embedding"]


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
        raise type(e)(f"embedding site {msg['name']!r}: {e}") from e
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
