# SPDX-License-Identifier: Apache-2.0
"""
Scores of predictive distributions: likelihood, error, CRPS, and calibration of intervals and
class probabilities.

Regression metrics take a Gaussian predictive ``Normal(loc, scale)`` by its parameters: ``loc``
and ``y`` of shape ``(N,)`` or ``(N, d)`` (``N`` rows, ``d`` independent outputs) and ``scale``
broadcastable to ``loc`` (a float is a homoscedastic scale). A row's score adds up over its ``d``
outputs and the result averages over rows, so it reads "per data point". Classification metrics
take ``(N, C)`` class probabilities and ``(N,)`` integer labels.

Scalar scores are returned as Python floats (one host sync each); per-row quantities stay tensors
on the input's device. Arithmetic runs in at least float32, because half precision loses the
tails of the normal CDF. Input checks read a flag back from the device, which is the only other
host sync.
"""
from .classification import accuracy, expected_calibration_error, reliability_bins
from .regression import gaussian_crps, gaussian_nll, interval_coverage, nll, pit, pit_histogram, rmse

__all__ = [
    "accuracy",
    "expected_calibration_error",
    "gaussian_crps",
    "gaussian_nll",
    "interval_coverage",
    "nll",
    "pit",
    "pit_histogram",
    "reliability_bins",
    "rmse",
]
