# SPDX-License-Identifier: Apache-2.0
"""
Why ``probmix`` refuses Pyro's JIT ELBOs, and how it notices them.

``torch.jit.trace`` records one execution of the model, so the pairs and the lambdas drawn then
would be frozen into the compiled loss; a loss compiled before entering the handler never runs
it at all. Both orders are caught: :func:`check_not_tracing` at a sample site (a trace in
progress) and :func:`check_not_in_compiled_loss` at a ``pyro.param`` call (made from inside a
compiled loss, whose ``CompiledFunction`` frame is on the call stack).

>>> check_not_tracing(); check_not_in_compiled_loss()  # plain Python: nothing to refuse
"""
import sys

import pyro.ops.jit
import torch

__all__ = ["JIT_MESSAGE", "check_not_in_compiled_loss", "check_not_tracing"]

JIT_MESSAGE = (
    "probmix cannot be combined with a JIT-compiled ELBO (JitTrace_ELBO, JitTraceEnum_ELBO, "
    "JitTraceGraph_ELBO, ...): torch.jit.trace records one execution of the model, so the pairs "
    "and the lambdas drawn then would be frozen into the compiled loss (and a loss compiled "
    "before entering probmix does not run the handler at all). Use the ELBO without Jit "
    "(Trace_ELBO, TraceEnum_ELBO, ...) inside probmix"
)

_COMPILED_CALL = pyro.ops.jit.CompiledFunction.__call__.__code__


def check_not_tracing():
    """Raises ``RuntimeError(JIT_MESSAGE)`` while ``torch.jit.trace`` records (a sample site of
    a JIT ELBO's first call)."""
    if torch.jit.is_tracing():
        raise RuntimeError(JIT_MESSAGE)


def check_not_in_compiled_loss():
    """Raises ``RuntimeError(JIT_MESSAGE)`` when the call comes from a loss compiled by
    :func:`pyro.ops.jit.trace` (a ``pyro.param`` call replayed by a compiled loss, which runs no
    sample site through the handler)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _COMPILED_CALL:
            raise RuntimeError(JIT_MESSAGE)
        frame = frame.f_back
