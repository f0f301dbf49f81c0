# SPDX-License-Identifier: Apache-2.0
"""
The experiment layer's input and output: data loaders, records and resuming, reports, the
command line (errors included) and ``download`` against a loopback HTTP server.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_probmix.experiments import executor as executor_module
from pyro_probmix.experiments.cli import main
from pyro_probmix.experiments.data import (
    ExperimentError,
    UCIDataset,
    default_stocks_root,
    default_uci_root,
)
from pyro_probmix.experiments.records import RecordStore, RunSpec
from pyro_probmix.experiments.report import write_report
from pyro_probmix.experiments.stock_data import stock_split

REPO = Path(__file__).resolve().parents[1]
SHARED_UCI = REPO.parent / "shared" / "data" / "uci"
SHARED_STOCKS = REPO.parent / "shared" / "data" / "stocks"
needs_shared = pytest.mark.skipif(not (SHARED_UCI / "yacht").is_dir(), reason="../shared/data not present")


def _uci_folder(root, name="tiny", rows=30, splits=2, nan=False):
    """A tiny dataset in the standard layout: 3 features, target = column 3."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(rows, 4))
    data[:, 3] = data[:, :3].sum(1) * 10 + 5
    if nan:
        data[7, 2] = np.nan
    folder = Path(root) / name
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", data)
    (folder / "index_features.txt").write_text("0\n1\n2\n")
    (folder / "index_target.txt").write_text("3\n")
    (folder / "n_splits.txt").write_text(f"{splits}\n")
    for i in range(splits):
        perm = np.random.default_rng(i).permutation(rows)
        np.savetxt(folder / f"index_train_{i}.txt", perm[: rows - 5], fmt="%d")
        np.savetxt(folder / f"index_test_{i}.txt", perm[rows - 5 :], fmt="%d")
    return Path(root)


# ----------------------------------------------------------------------------- data
def test_uci_loader_on_a_synthetic_folder(tmp_path):
    root = _uci_folder(tmp_path)
    ds = UCIDataset(root, "tiny")
    assert ds.num_splits == 2 and list(ds.features) == [0, 1, 2] and ds.target == 3
    d = ds.split(1)
    assert d.x_train.shape == (20, 3) and d.x_val.shape == (5, 3) and d.x_test.shape == (5, 3)
    assert d.x_train.dtype == np.float32
    assert np.allclose(d.x_train.mean(0), 0, atol=1e-5) and np.allclose(d.y_train.std(), 1, atol=1e-5)
    # the original target comes back from the standardised one
    test_rows = np.loadtxt(root / "tiny" / "index_test_1.txt", dtype=int)
    raw = np.loadtxt(root / "tiny" / "data.txt")[test_rows, 3]
    assert np.allclose(d.y_test * d.y_std + d.y_mean, raw, rtol=1e-5)
    with pytest.raises(ExperimentError, match="split 2 out of range.*2 splits"):
        ds.split(2)


@needs_shared
def test_uci_loader_on_the_shared_yacht_data():
    ds = UCIDataset(SHARED_UCI, "yacht")
    assert ds.data.shape == (308, 7) and ds.num_splits == 20 and ds.target == 6
    d = ds.split(0)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (222, 55, 31)
    train_rows = np.loadtxt(SHARED_UCI / "yacht" / "index_train_0.txt", dtype=int)
    test_rows = np.loadtxt(SHARED_UCI / "yacht" / "index_test_0.txt", dtype=int)
    assert np.allclose(d.y_test * d.y_std + d.y_mean, ds.data[test_rows, 6], atol=1e-4)
    # statistics come from the training part only (80% of the split's train rows)
    y_tr = d.y_train * d.y_std + d.y_mean
    assert np.abs(y_tr[:, None] - ds.data[train_rows, 6][None]).min(1).max() < 1e-3
    assert abs(float(y_tr.mean()) - d.y_mean) < 1e-3


def test_default_roots_resolve_relative_to_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv("PROBMIX_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # not the cwd
    if SHARED_UCI.is_dir():
        assert default_uci_root().resolve() == SHARED_UCI.resolve()
        assert default_stocks_root().resolve() == SHARED_STOCKS.resolve()
    monkeypatch.setenv("PROBMIX_DATA", str(tmp_path / "x"))  # the folder holding uci/ and stocks/
    assert (default_uci_root(), default_stocks_root()) == (tmp_path / "x" / "uci", tmp_path / "x" / "stocks")


def test_without_a_shared_folder_data_go_to_the_user_cache(monkeypatch, tmp_path):
    import pyro_probmix.experiments.data as data_module

    monkeypatch.delenv("PROBMIX_DATA", raising=False)
    monkeypatch.setattr(data_module, "_REPO_ROOT", tmp_path / "site-packages")  # as from a wheel
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_module.default_data_root() == tmp_path / "cache" / "pyro-probmix"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_module.default_data_root() == Path.home() / ".cache" / "pyro-probmix"


@pytest.mark.skipif(not (SHARED_STOCKS / "GOOG.csv").is_file(), reason="../shared/data not present")
def test_stock_windows_are_split_chronologically_with_gaps():
    d = stock_split(SHARED_STOCKS / "GOOG.csv")
    n = 505 - 42 - 21 + 1
    assert d.x_train.shape[1:] == (42, 4)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == n - 2 * 21
    tr, va, te = d.info["train_targets"], d.info["val_targets"], d.info["test_targets"]
    assert tr[1] < va[0] and va[1] < te[0] and te[1] <= "2020-12-31"
    # one scale for prices and target: the last close of a window and the target share units
    assert abs(float(d.x_train[..., 3].mean())) < 1.0 and d.y_std > 0


# ----------------------------------------------------------------------------- records
def test_records_are_written_atomically_and_keyed(tmp_path):
    store = RecordStore(tmp_path)
    spec = RunSpec.make("uci", "yacht", "Mix", 3, 0, "mlp", {"alpha": 0.1, "beta": 0.0}, {"epochs": 5})
    other = RunSpec.make("uci", "yacht", "Mix", 3, 0, "mlp", {"alpha": 0.5, "beta": 0.0}, {"epochs": 5})
    assert spec.digest() != other.digest() and spec.group_key() != other.group_key()
    path = store.write(spec, {"metrics": {"test": {"nll": 1.0}}}, {"a": np.arange(3)})
    assert store.exists(spec) and not store.exists(other)
    assert json.loads(path.read_text())["key"]["hparams"] == {"alpha": 0.1, "beta": 0.0}
    assert list(store.arrays(path)["a"]) == [0, 1, 2]
    assert not list(tmp_path.rglob("*.tmp"))


TOY = ["toy-regression", "--methods", "ERM", "ProbMix", "--runs", "3", "--alphas", "0.1", "0.5",
       "--betas", "0", "--weight-decays", "0", "--epochs", "30", "--group-size", "1", "--no-report"]
TOY_RUNS = 2 * 3 + 3  # ProbMix: grid x runs (ablation), ERM: runs


def _records(out):
    return sorted(Path(out).rglob("records/**/*.json"))


def test_resume_after_sigkill_finishes_without_duplicates(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pyro_probmix.experiments", *TOY, "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(_records(out)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(_records(out))
    assert 2 <= killed_at < TOY_RUNS, "the sweep should be killed midway"
    first = {p.name: p.stat().st_mtime_ns for p in _records(out)}
    assert main([*TOY, "--out", str(out), "--quiet"]) == 0
    records = _records(out)
    assert len(records) == TOY_RUNS
    digests = [json.loads(p.read_text())["digest"] for p in records]
    assert len(set(digests)) == TOY_RUNS
    assert all(p.stat().st_mtime_ns == first[p.name] for p in records if p.name in first)  # not redone
    assert not list(out.rglob("*.tmp"))


def test_resume_after_an_exception(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = executor_module.run_group
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(executor_module, "run_group", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        main([*TOY, "--epochs", "3", "--out", str(out), "--quiet"])
    assert len(_records(out)) == 2
    monkeypatch.setattr(executor_module, "run_group", real)
    assert main([*TOY, "--epochs", "3", "--out", str(out), "--quiet"]) == 0
    assert len(_records(out)) == TOY_RUNS
    # a rerun has nothing to do
    count = []
    monkeypatch.setattr(executor_module, "run_group", lambda *a, **k: count.append(1))
    assert main([*TOY, "--epochs", "3", "--out", str(out), "--quiet"]) == 0 and not count
    selection = json.loads((out / "selection" / "toy-regression" / "mlp" / "cubic.json").read_text())
    assert selection["ProbMix"]["hparams"]["alpha"] in (0.1, 0.5) and len(selection["ProbMix"]["val_nll"]) == 2


# ----------------------------------------------------------------------------- report
def _synthetic(out):
    store = RecordStore(out)
    rng = np.random.default_rng(0)
    for ds, base in (("yacht", 1.0), ("bostonHousing", 3.0)):
        for method, shift in (("ERM", 0.5), ("ProbMix", -0.2), ("M-ProbMix", 0.1)):
            hp = {} if method == "ERM" else {"alpha": 0.1, "beta": 0.0}
            for split in range(4):
                spec = RunSpec.make("uci", ds, method, split, 0, "mlp", hp, {"epochs": 10})
                metrics = {"nll": base + shift + 0.02 * split, "rmse": 2.0 + shift, "crps": 1.0,
                           "coverage": {"0.5": 0.5, "0.9": 0.9}, "pit_hist": [2] * 10}
                store.write(spec, {"metrics": {"test": metrics, "val": {"nll": 1.0}}},
                            {"test_pit": rng.uniform(size=20)})
            if method == "ProbMix":  # a worse configuration: must not be reported
                spec = RunSpec.make("uci", ds, method, 0, 0, "mlp", {"alpha": 1.0, "beta": 0.0}, {"epochs": 10})
                store.write(spec, {"metrics": {"test": {"nll": 99.0, "rmse": 9.0, "crps": 9.0}, "val": {"nll": 5.0}}})


def test_report_on_synthetic_records(tmp_path):
    _synthetic(tmp_path)
    path = write_report(tmp_path, figures=True)
    text = path.read_text()
    assert "| yacht | 1.53 ± 0.03 | **0.83 ± 0.03** | 1.13 ± 0.03 |" in text
    assert "99.00" not in text  # the configuration chosen on validation data only
    assert "### Paper, Table 1" in text and "**0.27 ± 0.36**" in text  # yacht: M-ProbMix in the paper
    rows = (tmp_path / "report" / "uci_nll.csv").read_text().splitlines()
    assert rows[0] == "dataset,method,mean,std,n,paper_mean,paper_std"
    assert any(r.startswith("yacht,ProbMix,0.83") and r.endswith(",4,1.39,0.42") for r in rows)
    assert (tmp_path / "report" / "figures" / "uci_yacht_pit.png").read_bytes()[:4] == b"\x89PNG"


def test_toy_function_returns_a_table_and_writes_the_figures(tmp_path):
    from pyro_probmix.experiments import run_toy_classification, run_toy_regression

    table = run_toy_regression(["ERM", "LocKM-ProbMix"], runs=2, epochs=3, out_dir=tmp_path, alphas=[0.1], betas=[0.0])
    assert [r["method"] for r in table] == ["ERM", "LocKM-ProbMix"] and table[1]["runs"] == 2
    assert table[0]["mse_mean"] > 0 and np.isfinite(table[0]["nll_mean"])
    figures = tmp_path / "report" / "figures"
    assert (figures / "toy-regression_cubic_bands.png").is_file()
    assert list(figures.glob("toy-regression_ablation_mse_*.png"))
    table = run_toy_classification(["ProbMix"], runs=1, epochs=2, out_dir=tmp_path, alphas=[0.1], betas=[0.01])
    assert 0 <= table[0]["accuracy_mean"] <= 1
    assert (figures / "toy-classification_rings_boundaries.png").is_file()
    assert (figures / "toy-classification_rings_reliability.png").is_file()


# ----------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize(
    "argv, message",
    [
        (["uci", "--methods", "SuperMix"], "unknown method 'SuperMix'; valid methods"),
        (["uci", "--datasets", "nosuch"], "unknown UCI dataset 'nosuch'"),
        (["uci", "--datasets", "tiny", "--splits", "7"], "split 7 out of range for tiny: it has 2 splits"),
        (["uci", "--datasets", "bad"], "NaN/inf value"),
        (["stocks", "--datasets", "ZZZZ"], "missing file"),
        (["uci", "--datasets", "tiny", "--splits", "x"], "--splits"),
    ],
)
def test_cli_errors_are_one_line_messages(tmp_path, capsys, argv, message):
    root = _uci_folder(tmp_path / "data")
    _uci_folder(root, "bad", nan=True)
    rc = main([*argv, "--data-root", str(root), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_cli_missing_data_root_via_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_probmix.experiments", "uci", "--data-root", str(tmp_path / "none"), "--quiet"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and "no UCI dataset under" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_missing_split_file(tmp_path, capsys):
    root = _uci_folder(tmp_path / "data")
    (root / "tiny" / "index_test_1.txt").unlink()
    rc = main(["uci", "--datasets", "tiny", "--splits", "1", "--data-root", str(root), "--out", str(tmp_path), "--quiet"])
    assert rc == 2 and "missing file" in capsys.readouterr().err


def test_cli_trains_a_synthetic_uci_folder(tmp_path):
    root = _uci_folder(tmp_path / "data")
    out = tmp_path / "out"
    rc = main(["uci", "--datasets", "tiny", "--methods", "erm", "lockm-probmix-star", "--epochs", "2",
               "--alphas", "0.5", "--betas", "0", "--data-root", str(root), "--out", str(out), "--quiet"])
    assert rc == 0 and len(_records(out)) == 4
    rec = json.loads(_records(out)[-1].read_text())
    assert set(rec["versions"]) >= {"torch", "pyro", "numpy", "pyro_probmix"} and rec["wall_time_s"] > 0
    assert {"nll", "rmse", "crps", "coverage", "pit_hist"} <= set(rec["metrics"]["test"])
    assert "LocKM-ProbMix-star" in (out / "report" / "report.md").read_text()


def test_worker_processes_write_the_same_records(tmp_path):
    """The --jobs path (spawned workers), with one worker so that one training runs at a time."""
    from pyro_probmix.experiments.progress import Progress
    from pyro_probmix.experiments.executor import _groups, _run_pool
    from pyro_probmix.experiments.sweep import SweepOptions, run_sweep

    opts = SweepOptions("toy-classification", methods=["ERM", "LocKMix"], splits=[0, 1], epochs=2,
                        alphas=[0.2], betas=[0.0], out=tmp_path / "pool", quiet=True)
    specs = [s for s in _all_specs(opts)]
    with Progress(len(specs), quiet=True) as bar:
        _run_pool(opts, _groups(specs, None), bar, workers=1)
    assert len(_records(tmp_path / "pool")) == 4
    opts.out = tmp_path / "inline"
    run_sweep(opts)
    pooled = {json.loads(p.read_text())["digest"]: json.loads(p.read_text()) for p in _records(tmp_path / "pool")}
    inline = {json.loads(p.read_text())["digest"]: json.loads(p.read_text()) for p in _records(tmp_path / "inline")}
    assert pooled.keys() == inline.keys()
    for k in pooled:  # same seeds and grouping: the same numbers
        assert pooled[k]["metrics"]["test"]["nll"] == pytest.approx(inline[k]["metrics"]["test"]["nll"], rel=1e-5)


def _all_specs(opts):
    from pyro_probmix.experiments.methods import resolve_method
    from pyro_probmix.experiments.sweep import _spec

    return [_spec(opts, "rings", "mlp", resolve_method(m, alpha=0.2, beta=0.0), u)
            for m in opts.methods for u in opts.splits]


def test_cli_rejects_an_unavailable_device(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    rc = main(["toy-regression", "--device", "cuda", "--out", str(tmp_path), "--quiet"])
    assert rc == 2 and "CUDA is not available" in capsys.readouterr().err


def test_cli_compile_without_a_cpp_compiler_is_a_clear_error(capsys, tmp_path, monkeypatch):
    from torch._inductor import config

    monkeypatch.setattr(config.cpp, "cxx", (None, "no-such-c++"))  # where inductor looks for one
    rc = main(["toy-regression", "--compile", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--compile on CPU needs a working C++ compiler" in err and "Traceback" not in err


def test_a_worker_whose_code_differs_from_the_sweeps_refuses_to_train(tmp_path):
    # a --jobs N worker imports the package itself: edited while the sweep ran, it wrote records
    # of another code version into the same folder (a probe: 20 of 30 records)
    from pyro_probmix.experiments.fingerprint import code_fingerprint
    from pyro_probmix.experiments.group import run_group

    train = {"epochs": 1, "lr": 0.01, "batch_size": None, "eval_every": 1}
    specs = [RunSpec.make("toy-regression", "cubic", "ERM", 0, 0, train=train)]
    with pytest.raises(RuntimeError, match=r"the sweep started with pyro_probmix at code 0123456789abcdef, but this "
                       r"worker imports code [0-9a-f]{16} \(the package was edited while the sweep ran"):
        run_group("toy-regression", specs, tmp_path, hidden=(8, 4), code="0123456789abcdef")
    assert not RecordStore(tmp_path).exists(specs[0])
    run_group("toy-regression", specs, tmp_path, hidden=(8, 4), code=code_fingerprint())
    assert RecordStore(tmp_path).exists(specs[0])
