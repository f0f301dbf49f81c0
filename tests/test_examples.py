import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_regression_demo_prints_a_table_and_writes_the_figure(tmp_path, capsys):
    out = tmp_path / "toy.png"
    _load("toy_regression").main(["--runs", "2", "--epochs", "3", "--samples", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    for method in ("ERM", "ProbMix", "LocKProbMix", "M-ProbMix", "LocKM-ProbMix"):
        assert f"| {method} |" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
