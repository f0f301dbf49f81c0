# SPDX-License-Identifier: Apache-2.0
"""
What a ``with probmix`` block did, and the checks made on it: a block that fused no site warns
as soon as the model has run a second time without fusing one (not only at the end of a long
training loop), a ``plate=`` that names no plate of the model is an error, and names given in
``sites=`` must have been fused by the end of the block.

>>> import torch, pyro, pyro.distributions as dist
>>> from pyro import poutine
>>> from pyro_probmix import probmix
>>> def model():
...     pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5))  # outside any plate
>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught, probmix(alpha=0.5) as handler:
...     warnings.simplefilter("always")
...     _ = poutine.trace(model).get_trace()
>>> handler.log.left_alone, handler.log.plates, [w.category.__name__ for w in caught]
({'y': 'outside any plate'}, set(), ['NothingFusedWarning'])
"""
import os
import sys
import warnings

import pyro
import torch

__all__ = ["BlockLog", "NothingFusedWarning"]


class NothingFusedWarning(UserWarning):
    """A ``with probmix(...)`` block ended, or ran its model twice, without having fused any site."""


class BlockLog:
    """
    The sites a block fused and left alone, the plates its sites were in, and whether it saw a
    site at all. ``sites`` and ``plate`` are the handler's arguments (``sites`` a frozenset or
    None).
    """

    def __init__(self, sites, plate):
        self.sites, self.plate = sites, plate
        self.fused = set()  # names of the sites fused in this block
        self.left_alone = {}  # site name -> why it was not fused
        self.plates = set()  # names of the vectorized plates of the sites seen
        self.saw_a_site = False
        self.warned = False

    def see(self, msg):
        """Every sample site the handler sees (but the plates' own subsample sites)."""
        self.saw_a_site = True
        self.plates.update(f.name for f in msg["cond_indep_stack"] if f.vectorized)

    def leave_alone(self, name, why):
        if name in self.left_alone and not self.fused and not self.warned:
            # the model runs again (the next step) and has fused nothing yet: say so now
            self._check_plate_exists()
            self._warn("probmix has fused no site in this block so far: the model ran again "
                       f"(site {name!r} a second time) and trained the plain model both times. ")
        self.left_alone[name] = why

    def check_end(self):
        if self.sites is not None:
            missing = sorted(self.sites - self.fused)
            if missing:
                raise ValueError(
                    f"probmix(sites={sorted(self.sites)}): no site named {missing} was fused in "
                    f"this block; fused: {sorted(self.fused)}. Check the names of the model's "
                    f"observed and embedding sites"
                )
        if self.fused or self.warned:
            return
        self._check_plate_exists()
        if not self.saw_a_site:
            warnings.warn(
                "probmix saw no sample site in this block, so no model ran inside it: build the "
                "SVI object anywhere, but call svi.step(...) inside `with probmix(...)`. A model "
                "run behind poutine.block (e.g. by MCMC or Importance) or by a loss compiled "
                "before the block is not seen either",
                NothingFusedWarning,
                stacklevel=_caller_level(),
            )
            return
        self._warn(
            "probmix fused no site in this block: every run of the model inside it was the plain "
            "model (a training step trained the plain objective; a Predictive or a pass without "
            "observations has nothing to fuse). "
        )

    def _check_plate_exists(self):
        if self.plate is not None and self.plates and self.plate not in self.plates:
            raise ValueError(
                f"probmix(plate={self.plate!r}): no site of this block is in a plate of that "
                f"name, so nothing was fused; the plates of its sites: {sorted(self.plates)}"
            )

    def _warn(self, opening):
        left = ", ".join(f"{name!r} ({why})" for name, why in self.left_alone.items())
        warnings.warn(
            opening
            + (f"Observed sites left alone: {left}. " if left else "")
            + "probmix fuses observed sites inside a data plate (pyro.plate) and "
            "embedding() sites; it sees no site of a model run behind poutine.block "
            "(e.g. by MCMC or Importance) or inside a loss compiled before the block. To fuse "
            "a site, observe it inside `with pyro.plate('data', N):` with its rows along the "
            "plate's dim (a model that scores all rows as one event, such as a Gaussian process "
            "or a single time series, has no rows to pair)",
            NothingFusedWarning,
            stacklevel=_caller_level(),
        )
        self.warned = True


# frames of these packages are skipped: the warning points at the user's line
_LIBRARY_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep for module in (sys.modules[__package__], pyro, torch)
) + (os.path.dirname(os.__file__) + os.sep,)


def _caller_level():
    """The ``stacklevel`` of the first frame outside pyro_probmix, Pyro, torch and the standard
    library (the ``with`` statement or the ``svi.step`` of the user's code)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level
