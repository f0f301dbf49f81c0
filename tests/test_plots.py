# SPDX-License-Identifier: Apache-2.0
"""
Each figure renders a real PNG from realistic inputs; bad inputs fail with a clear message.
"""
import math

import numpy as np

import pytest
import torch
from PIL import Image

from pyro_probmix.experiments.plots import (
    line_style,
    plot_boxplots,
    plot_coverage,
    plot_decision_boundaries,
    plot_pit_histograms,
    plot_regression_bands,
    plot_reliability,
)
from pyro_probmix.experiments.plots import ablation
from pyro_probmix.experiments.plots.ablation import _box_limits
from pyro_probmix.metrics import interval_coverage, pit, reliability_bins

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = ["ERM", "Mix", "ProbMix", "LocKM-ProbMix", "M-ProbMix"]  # 5 panels: a 4-wide grid, 1 hidden


def assert_png(path, expected, inches):
    """A PNG at 150 dpi of ``inches`` (width, height), as the documentation shows it."""
    assert path == expected and path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5_000
    with Image.open(path) as image:
        assert tuple(map(round, image.info["dpi"])) == (150, 150)  # stored as pixels per metre
        assert image.size == tuple(int(150 * side) for side in inches)  # matplotlib truncates


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
        inches=(4 * 3.4, 2 * 1.45 * 2.9),  # 5 methods: 4 columns, 2 rows of a band over its residuals
    )


def test_pit_histograms(tmp_path):
    y = torch.randn(500, generator=torch.Generator().manual_seed(1))
    pits = {name: pit(torch.zeros(500), 0.5 + 0.25 * i, y) for i, name in enumerate(METHODS)}
    path = tmp_path / "pit.png"
    assert_png(plot_pit_histograms(pits, path), path, inches=(4 * 3.4, 2 * 2.9))


def test_reliability(tmp_path):
    torch.manual_seed(2)
    probs = torch.distributions.Dirichlet(torch.ones(3)).sample((500,))
    y = torch.distributions.Categorical(probs=probs).sample()
    bins = {name: reliability_bins((t * probs.log()).softmax(-1), y) for name, t in zip(METHODS, [0.5, 1, 2, 3, 4])}
    path = tmp_path / "reliability.png"
    assert_png(plot_reliability(bins, str(path)), path, inches=(4 * 3.4, 2 * 2.9))


def test_coverage(tmp_path):
    y = torch.randn(500, generator=torch.Generator().manual_seed(3))
    levels = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    coverages = {name: interval_coverage(torch.zeros(500), 0.4 + 0.3 * i, y, levels) for i, name in enumerate(METHODS)}
    path = tmp_path / "coverage.png"
    assert_png(plot_coverage(coverages, path), path, inches=(5, 5))


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
    assert_png(plot_decision_boundaries(x, y, xx, yy, probs, path), path, inches=(4 * 3.4, 2 * 2.9))


def test_boxplots_leave_out_non_finite_runs(tmp_path):
    gen = torch.Generator().manual_seed(5)
    values = {name: (i + torch.randn(10, generator=gen)).tolist() for i, name in enumerate(METHODS)}
    values["Mix"][:2] = [math.inf, math.nan]
    values["diverged"] = [math.inf] * 10
    path = tmp_path / "box.png"
    assert_png(plot_boxplots(values, path, ylabel="test NLL", title="α = 0.1, β = 0"), path, inches=(0.9 * 6 + 1.5, 4))


def test_line_styles_are_distinct_for_a_dozen_methods():
    styles = [line_style(i) for i in range(12)]
    assert len({style["color"] for style in styles}) == 12
    assert len({style["marker"] for style in styles}) == 12
    assert line_style(12) == {**line_style(0), "linestyle": "--"}


def test_box_limits_clip_one_far_outlier_and_frame_ordinary_runs():
    boxes = [np.arange(10.0), np.arange(10.0) + 5, np.array([*range(9), 6800.0])]
    low, high, clipped = _box_limits(boxes)
    # whiskers: 0 to 14 (the outlier is beyond q3 + 1.5 IQR of its box), padded by 5 %
    assert clipped and (low, high) == pytest.approx((-0.7, 14.7))
    low, high, clipped = _box_limits(boxes[:2])
    assert not clipped and (low, high) == pytest.approx((-0.7, 14.7))
    assert _box_limits([np.array([-2.0, -1.0]), np.array([])]) == pytest.approx((-2.05, -0.95, False))


def test_a_clipped_box_plot_names_the_runs_off_its_axis(tmp_path, monkeypatch):
    saved = {}
    monkeypatch.setattr(ablation, "_save", lambda fig, path: saved.setdefault("fig", fig) and path)
    plot_boxplots({"ERM": list(range(10)), "Mix": [*range(9), 6800.0]}, tmp_path / "box.png", "NLL (nats)", "NLL")
    (ax,) = saved["fig"].axes
    assert ax.get_ylim() == pytest.approx((-0.45, 9.45))  # both boxes' whiskers: 0 to 9
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ERM", "Mix\n1 off the axis,\nup to 6,800"]
    assert "axis clipped to the whiskers" in ax.get_title()


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
