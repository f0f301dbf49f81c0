# SPDX-License-Identifier: Apache-2.0
"""
Each figure renders a real PNG from realistic inputs; bad inputs fail with a clear message.
"""
import math

import pytest
import torch

from pyro_probmix.experiments.plots import (
    plot_boxplots,
    plot_coverage,
    plot_decision_boundaries,
    plot_pit_histograms,
    plot_regression_bands,
    plot_reliability,
)
from pyro_probmix.metrics import interval_coverage, pit, reliability_bins

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = ["ERM", "Mix", "ProbMix", "LocKM-ProbMix", "M-ProbMix"]  # 5 panels: a 4-wide grid, 1 hidden


def assert_png(path, expected):
    assert path == expected and path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5_000


def test_regression_bands(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x_train = 8 * torch.rand(100, 1, generator=gen) - 4
    y_train = x_train**3 + 3 * torch.randn(100, 1, generator=gen)
    x_test = 4 + 2 * torch.rand(20, generator=gen)
    grid = torch.linspace(-6, 6, 200)
    # grad-carrying outputs, and a band that explodes out of distribution
    results = {
        name: (grid**3 * (1 - 0.1 * i) + torch.zeros(200, requires_grad=True), 3 + i * grid.abs() ** 2)
        for i, name in enumerate(METHODS)
    }
    path = tmp_path / "nested" / "bands.png"
    assert_png(
        plot_regression_bands(x_train, y_train, grid, results, path, x_test, x_test**3, truth=lambda x: x**3),
        path,
    )


def test_pit_histograms(tmp_path):
    y = torch.randn(500, generator=torch.Generator().manual_seed(1))
    pits = {name: pit(torch.zeros(500), 0.5 + 0.25 * i, y) for i, name in enumerate(METHODS)}
    path = tmp_path / "pit.png"
    assert_png(plot_pit_histograms(pits, path), path)


def test_reliability(tmp_path):
    torch.manual_seed(2)
    probs = torch.distributions.Dirichlet(torch.ones(3)).sample((500,))
    y = torch.distributions.Categorical(probs=probs).sample()
    bins = {name: reliability_bins((t * probs.log()).softmax(-1), y) for name, t in zip(METHODS, [0.5, 1, 2, 3, 4])}
    path = tmp_path / "reliability.png"
    assert_png(plot_reliability(bins, str(path)), path)


def test_coverage(tmp_path):
    y = torch.randn(500, generator=torch.Generator().manual_seed(3))
    levels = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    coverages = {name: interval_coverage(torch.zeros(500), 0.4 + 0.3 * i, y, levels) for i, name in enumerate(METHODS)}
    path = tmp_path / "coverage.png"
    assert_png(plot_coverage(coverages, path), path)


def test_decision_boundaries(tmp_path):
    gen = torch.Generator().manual_seed(4)
    y = torch.arange(3).repeat_interleave(50)
    angle = 2 * math.pi * torch.rand(150, generator=gen)
    radius = 1.0 + y + 0.1 * torch.randn(150, generator=gen)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], -1)
    xx, yy = torch.meshgrid(torch.linspace(-4, 4, 60), torch.linspace(-4, 4, 50), indexing="xy")
    ring = (xx**2 + yy**2).sqrt().unsqueeze(-1)  # (50, 60, 1)
    probs = {
        name: (-((ring - torch.tensor([1.0, 2.0, 3.0])) ** 2) * (1 + i)).softmax(-1)
        for i, name in enumerate(METHODS)
    }
    path = tmp_path / "boundaries.png"
    assert_png(plot_decision_boundaries(x, y, xx, yy, probs, path), path)


def test_boxplots_leave_out_non_finite_runs(tmp_path):
    gen = torch.Generator().manual_seed(5)
    values = {name: (i + torch.randn(10, generator=gen)).tolist() for i, name in enumerate(METHODS)}
    values["Mix"][:2] = [math.inf, math.nan]
    values["diverged"] = [math.inf] * 10
    path = tmp_path / "box.png"
    assert_png(plot_boxplots(values, path, ylabel="test NLL", title="α = 0.1, β = 0"), path)


def test_bad_inputs(tmp_path):
    path = tmp_path / "bad.png"
    grid = torch.linspace(0, 1, 10)
    with pytest.raises(ValueError, match="results must map at least one method name"):
        plot_regression_bands(grid, grid, grid, {}, path)
    with pytest.raises(ValueError, match="ERM: mean has 9 values and std 10, x_grid has 10"):
        plot_regression_bands(grid, grid, grid, {"ERM": (grid[:9], grid)}, path)
    with pytest.raises(ValueError, match="pass x_test and y_test together"):
        plot_regression_bands(grid, grid, grid, {"ERM": (grid, grid)}, path, x_test=grid)
    with pytest.raises(ValueError, match=r"ERM: probs has shape \(5, 5, 3\), expected \(4, 4\) \+ \(C,\)"):
        plot_decision_boundaries(torch.zeros(3, 2), [0, 1, 2], torch.zeros(4, 4), torch.zeros(4, 4), {"ERM": torch.zeros(5, 5, 3)}, path)
    with pytest.raises(ValueError, match="ERM: every bin is empty"):
        plot_reliability({"ERM": (torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.long))}, path)
    assert not path.exists()
