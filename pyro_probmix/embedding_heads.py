# SPDX-License-Identifier: Apache-2.0
"""
Whether an observed site after an :func:`~pyro_probmix.embedding` is computed from it.

After an embedding, probmix fuses only the labels of the plate's observed sites: their
prediction is pooled already, through the pooled embedding. A head computed from the inputs
alone (an auxiliary output beside the embedding) would score its own row's unpooled prediction
at the partner's label, which is neither the plain nor the ProbMix objective (a probe: 21.60
against 12.64 fused and 32.80 plain). :func:`check_computed_from` walks the autograd graph of the
site's parameters back to the embedding's value; it runs once per site name, and says nothing
when the embedding's value carries no graph (no parameter upstream, or ``torch.no_grad``).

>>> import torch
>>> z = torch.ones(2, requires_grad=True) * 2
>>> check_computed_from("y", torch.distributions.Normal(z + 1, 1.0), "z", z)  # computed from z
"""
import torch
from torch.distributions import Distribution
from torch.distributions.transforms import Transform

__all__ = ["check_computed_from"]


def check_computed_from(site, fn, embedding_site, value):
    """Raises ``ValueError`` when no parameter of ``fn`` (the distribution of observed ``site``)
    depends on ``value``, the embedding's, in the autograd graph."""
    target = value.grad_fn
    if target is None:
        return  # no graph to tell by
    frontier = [t.grad_fn for t in _tensors(fn) if t.grad_fn is not None]
    seen = set()
    while frontier:
        node = frontier.pop()
        if node is target:
            return
        if node is None or node in seen:
            continue
        seen.add(node)
        frontier.extend(next_node for next_node, _ in node.next_functions)
    raise ValueError(
        f"site {site!r} is observed after embedding {embedding_site!r} in its data plate but is "
        f"not computed from it: after an embedding probmix fuses only the labels of the plate's "
        f"sites (their prediction is pooled through the embedding), so this site would score its "
        f"own row's prediction at the partner's label. Compute it from the embedding's value, or "
        f"leave it out with probmix(..., sites=[...])"
    )


def _tensors(obj, depth=0):
    """The tensors a distribution holds, in its attributes and those of its parts."""
    if depth > 8:
        return
    for item in vars(obj).values():
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, (Distribution, Transform)):
            yield from _tensors(item, depth + 1)
        elif isinstance(item, (list, tuple)):
            for part in item:
                if isinstance(part, torch.Tensor):
                    yield part
                elif isinstance(part, (Distribution, Transform)):
                    yield from _tensors(part, depth + 1)
