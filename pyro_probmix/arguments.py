# SPDX-License-Identifier: Apache-2.0
"""
The checks of :func:`~pyro_probmix.probmix`'s arguments that are not a family's or a graph's:
each refuses a bad value by the argument's name and says what is accepted.
"""
import numbers

from .graphs import Graph

__all__ = ["check_choice", "check_num_samples", "positional_arguments", "site_names"]


def positional_arguments(fn, alpha, graph):
    """``(fn, alpha, graph)`` of ``probmix(model, alpha, graph)``, ``probmix(alpha, graph)`` or
    ``probmix(alpha, graph=...)``: a first argument that is not callable is alpha.

    >>> positional_arguments(0.1, None, None)
    (None, 0.1, None)
    """
    if isinstance(fn, Graph):
        raise TypeError(
            f"probmix's first argument is the model or alpha, got the graph {fn!r}: pass it as "
            f"probmix(alpha, graph) or probmix(alpha=..., graph=...)"
        )
    if fn is not None and not callable(fn):  # probmix(alpha, graph), the handler's first form
        if graph is None:
            if alpha is not None and not isinstance(alpha, Graph):  # probmix(0.1, alpha=0.2)
                raise TypeError(f"probmix got alpha twice: {fn!r} as its first argument and alpha={alpha!r}")
            fn, alpha, graph = None, fn, alpha
        elif alpha is None:  # probmix(alpha, graph=...)
            fn, alpha = None, fn
        else:
            raise TypeError(
                f"probmix takes a model, alpha and graph, or alpha and graph; got a first argument "
                f"{fn!r} that is not callable (so it is alpha), and also alpha={alpha!r} and "
                f"graph={graph!r}"
            )
    return fn, alpha, graph


def check_num_samples(num_samples):
    if isinstance(num_samples, bool) or not (isinstance(num_samples, numbers.Integral) and num_samples >= 1):
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return int(num_samples)


def site_names(sites):
    """``sites=`` as a frozenset of names (None: every site)."""
    if sites is None:
        return None
    names = (sites,) if isinstance(sites, str) else sites
    try:
        names = frozenset(names)
    except TypeError:  # not iterable, or holding unhashable items
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise TypeError(f"sites must be a site name (str) or a collection of site names, got {sites!r}")
    return names


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}")
