# SPDX-License-Identifier: Apache-2.0
"""
pyro-probmix: Probabilistic Mixup (ProbMix) for any Pyro model.

``with probmix(alpha=0.1, graph=FullGraph()): svi.step(...)`` fuses the likelihoods of paired
rows by log-linear pooling; :func:`embedding` marks a stochastic layer to fuse instead
(M-ProbMix).
"""
from .embedding import embedding
from .handler import ProbMixMessenger, probmix
from .pooling import linear_pool, log_linear_pool, register_pool

# the one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic])
__version__ = "0.1.0"
__all__ = [
    "ProbMixMessenger",
    "embedding",
    "linear_pool",
    "log_linear_pool",
    "probmix",
    "register_pool",
]
