# SPDX-License-Identifier: Apache-2.0
"""
Figures of the experiments: predictive bands, calibration diagnostics, decision boundaries and
ablation box plots.

Every function draws on its own :class:`~matplotlib.figure.Figure` attached to the Agg canvas:
no pyplot state, nothing is ever shown, and it works on headless machines. It saves a PNG,
creating missing parent folders, and returns the path. Data may be tensors on any device (with or
without grad), numpy arrays or lists; dict inputs map a method's name to its data, one panel or
one line per method in the dict's order.
"""
# absolute imports: this folder may be loaded without its parent package, and then a relative
# import has no parent
from pyro_probmix.experiments.plots._style import line_style
from pyro_probmix.experiments.plots.ablation import plot_boxplots
from pyro_probmix.experiments.plots.classification import plot_decision_boundaries, plot_reliability
from pyro_probmix.experiments.plots.regression import plot_coverage, plot_pit_histograms, plot_regression_bands

__all__ = [
    "line_style",
    "plot_boxplots",
    "plot_coverage",
    "plot_decision_boundaries",
    "plot_pit_histograms",
    "plot_regression_bands",
    "plot_reliability",
]
