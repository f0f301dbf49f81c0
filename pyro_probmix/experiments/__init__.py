# SPDX-License-Identifier: Apache-2.0
"""
The experiment layer of the paper (§6, Appendix E): methods, networks, data, one training loop,
records, sweeps and reports, built on the public API of :mod:`pyro_probmix`.

Command line: ``python -m pyro_probmix.experiments <experiment> ...`` (see :mod:`.cli` and
``docs/experiments.md``). Heavy modules (matplotlib) are imported only where they are used.
"""
from .data import ExperimentError
from .methods import METHOD_NAMES, Method, canonical_name, resolve_method

__all__ = ["ExperimentError", "METHOD_NAMES", "Method", "canonical_name", "resolve_method",
           "run_toy_regression", "run_toy_classification"]


def __getattr__(name):
    if name in ("run_toy_regression", "run_toy_classification"):
        from . import toy

        return getattr(toy, name)
    raise AttributeError(name)
