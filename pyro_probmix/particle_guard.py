# SPDX-License-Identifier: Apache-2.0
"""
Why ``probmix`` refuses ELBOs that pool sequential particles non-linearly, and how it notices them.

``RenyiELBO`` and ``ReweightedWakeSleep`` combine their particles by a log-mean-exp of the
particles' log-weights. Without ``vectorize_particles``, each particle is a new execution of the
model, and so draws new pairs and lambdas: the log-mean-exp then runs over the pairs as well and
estimates ``-log E[exp(fused log-likelihood)]``, biased low against the ProbMix objective
``-E[fused log-likelihood]`` (a 6-row Normal model, ``RenyiELBO(0, num_particles=4)``: mean loss
8.69 over 1,000 steps, against the objective's 9.21, which ``Trace_ELBO`` and the vectorized
particles reach). With ``vectorize_particles=True`` the particles are one execution and share
one pairing. ELBOs that average their particles (``Trace_ELBO`` and the others) estimate the
objective either way. :func:`check_particles_share_pairs` finds the ELBO's particle loop
(``ELBO._get_traces``) on the call stack.

>>> check_particles_share_pairs("y")  # plain Python: nothing to refuse
"""
import sys

from pyro.infer import ELBO, RenyiELBO, ReweightedWakeSleep

__all__ = ["check_particles_share_pairs"]

_PARTICLE_LOOP = ELBO._get_traces.__code__
_LOG_MEAN_EXP_ELBOS = (RenyiELBO, ReweightedWakeSleep)


def check_particles_share_pairs(site):
    """Raises ``ValueError`` naming ``site`` when the model runs as one of several sequential
    particles of an ELBO that log-mean-exps them (see the module's docstring)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _PARTICLE_LOOP:
            elbo = frame.f_locals.get("self")
            if (isinstance(elbo, _LOG_MEAN_EXP_ELBOS) and elbo.num_particles > 1
                    and not elbo.vectorize_particles):
                name = type(elbo).__name__
                raise ValueError(
                    f"site {site!r}: {name}(num_particles={elbo.num_particles}) runs the model once "
                    f"per particle, and each run draws new pairs and lambdas, so its log-mean-exp "
                    f"over the particles would pool the pairs too: a different objective from "
                    f"ProbMix's. Use {name}(..., vectorize_particles=True, max_plate_nesting=...) "
                    f"(the particles then share one pairing) or num_particles=1"
                )
            return
        frame = frame.f_back
