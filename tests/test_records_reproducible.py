# SPDX-License-Identifier: Apache-2.0
"""A run's record depends only on its key, code and data: not on its group, not on kills."""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_probmix.experiments.fingerprint as fingerprint_module
from pyro_probmix.experiments.cli import main
from pyro_probmix.experiments.methods import METHOD_NAMES, resolve_method
from pyro_probmix.experiments.records import VOLATILE_FIELDS, Checkpoint, RecordError, RecordStore, RunSpec
from pyro_probmix.experiments.group import run_group
from pyro_probmix.experiments.train import TrainConfig, train_group

TRAIN = {"epochs": 4, "lr": 0.01, "batch_size": None, "eval_every": 1}
#: the star variants' separate scale network runs softplus over the group's whole tensor, whose
#: last elements torch's CPU kernel computes by its scalar path: with these tiny widths (8, 4), run
#: 1's scales differ in the last bit from those of run 1 alone at the test set's shape (training is
#: exact); at the UCI widths they are exact (test below)
LAST_BITS = {"M-ProbMix-star", "LocKM-ProbMix-star", "M-ERM-star"}


def outcome(store, path):
    """A record without its timing fields, and its arrays."""
    record = json.loads(Path(path).read_text())
    arrays = store.arrays(path) or {}
    return {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}, arrays


def assert_same(a, b):
    assert json.dumps(a[0], sort_keys=True) == json.dumps(b[0], sort_keys=True)
    assert sorted(a[1]) == sorted(b[1]) and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_run_alone_is_the_run_in_a_group(tmp_path, name):
    torch.set_num_threads(1)
    method = resolve_method(name) if name == "ERM" else resolve_method(name, alpha=0.5)
    specs = [RunSpec.make("toy-regression", "cubic", name, u, u, hparams=method.hparams(), train=TRAIN)
             for u in (0, 1, 2)]
    grouped = run_group("toy-regression", specs, tmp_path / "group", hidden=(8, 4))[1]
    alone = run_group("toy-regression", specs[1:2], tmp_path / "alone", hidden=(8, 4))[0]
    a, b = outcome(RecordStore(tmp_path / "group"), grouped), outcome(RecordStore(tmp_path / "alone"), alone)
    assert a[0]["noise_seed"] == b[0]["noise_seed"] == specs[1].noise_seed()
    if name in LAST_BITS:
        assert a[0]["best_epoch"] == b[0]["best_epoch"]
        for part in ("test", "val"):
            assert a[0]["metrics"][part]["nll"] == pytest.approx(b[0]["metrics"][part]["nll"], rel=1e-8)
    else:
        assert_same(a, b)


SHARED_UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"


@pytest.mark.skipif(not (SHARED_UCI / "yacht").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("name", sorted(LAST_BITS))
def test_at_the_uci_widths_the_star_variants_are_exact_too(tmp_path, name):
    torch.set_num_threads(1)
    train = {**TRAIN, "epochs": 3}
    method = resolve_method(name, alpha=0.5)
    specs = [RunSpec.make("uci", "yacht", name, u, 0, hparams=method.hparams(), train=train) for u in (0, 1, 2)]
    grouped = run_group("uci", specs, tmp_path / "group", data_root=SHARED_UCI)[1]
    alone = run_group("uci", specs[1:2], tmp_path / "alone", data_root=SHARED_UCI)[0]
    assert_same(outcome(RecordStore(tmp_path / "group"), grouped), outcome(RecordStore(tmp_path / "alone"), alone))


def test_training_resumed_from_a_checkpoint_is_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 12, 3, generator=g), torch.randn(2, 12, generator=g)
    method = resolve_method("LocKM-ProbMix", alpha=0.3, k=3)
    config = TrainConfig(epochs=6)

    def train(checkpoint=None, stop_at=None):
        epochs = []

        def progress(fraction):
            epochs.append(fraction)
            if len(epochs) == stop_at:
                raise KeyboardInterrupt

        return train_group(method, "regression", "mlp", x, y, x[:, :5], y[:, :5], [0, 1], config, hidden=(8, 4),
                           noise_seeds=[5, 6], progress=progress, checkpoint=checkpoint)

    whole = train()
    ckpt = Checkpoint(tmp_path / "g.pt", every_s=0)
    with pytest.raises(KeyboardInterrupt):
        train(ckpt, stop_at=4)  # saved after epochs 1-3, killed after epoch 4
    assert ckpt.load()["state"]["epoch"] == 3
    resumed = train(ckpt)
    assert resumed.steps == whole.steps == 6 and resumed.best_epoch == whole.best_epoch
    for (k, v), w in zip(whole.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(v, w), k


KILLED = ["toy-regression", "--methods", "ERM", "M-ProbMix", "--splits", "0-2", "--alphas", "0.5", "--betas", "0",
          "--no-report", "--quiet"]


def _records(out):
    return sorted(Path(out).rglob("records/**/*.json"))


def _assert_same_records(whole, killed):
    a, b = _records(whole), _records(killed)
    assert [p.name for p in b] == [p.name for p in a] and len(a) == 6  # 0 lost, 0 duplicated
    for x, y in zip(a, b):
        assert_same(outcome(RecordStore(whole), x), outcome(RecordStore(killed), y))
    assert not list(Path(killed).rglob("checkpoints/**/*.pt"))  # removed once their group is recorded


def test_a_sweep_interrupted_again_and_again_loses_nothing(tmp_path, monkeypatch):
    """Interrupted (in this process) right after a random tenth of the checkpoints and records it
    writes, rerun until it finishes: every record, bit for bit as in an uninterrupted sweep."""
    args = [*KILLED, "--epochs", "60", "--checkpoint-every", "0"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    rng = random.Random(0)
    real_save, real_write = Checkpoint.save, RecordStore.write

    def maybe_interrupt():
        if rng.random() < 0.1:
            raise KeyboardInterrupt

    def save(self, state):
        real_save(self, state)
        maybe_interrupt()

    def write(self, *a, **k):
        path = real_write(self, *a, **k)
        maybe_interrupt()
        return path

    monkeypatch.setattr(Checkpoint, "save", save)
    monkeypatch.setattr(RecordStore, "write", write)
    interrupts = 0
    while main([*args, "--out", str(tmp_path / "killed")]) == 130:
        interrupts += 1
    assert interrupts >= 5
    _assert_same_records(tmp_path / "whole", tmp_path / "killed")


def _progress(out):
    return {(p, p.stat().st_mtime_ns) for p in Path(out).rglob("*") if p.suffix in (".pt", ".json")}


@pytest.mark.slow
def test_a_sweep_killed_again_and_again_loses_nothing(tmp_path):
    """SIGKILL at a random moment after each new checkpoint or record, 8 times, then the sweep
    finishes: every record, bit for bit as in an uninterrupted sweep (~10 s per process here)."""
    args = [*KILLED, "--epochs", "300", "--checkpoint-every", "0.05"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng, kills = random.Random(0), 0
    while True:
        proc = subprocess.Popen([sys.executable, "-m", "pyro_probmix.experiments", *args, "--out", str(out)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seen = _progress(out)
        while proc.poll() is None and (kills >= 8 or _progress(out) == seen):
            time.sleep(0.01)
        if proc.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.1))
        proc.kill()
        proc.wait()
        kills += 1
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert kills == 8
    _assert_same_records(tmp_path / "whole", out)


# ----------------------------------------------------------------------------- fingerprints
def _tiny_uci(root, scale=1.0):
    folder = Path(root, "tiny")
    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).normal(size=(30, 3))
    data[:, 2] *= scale
    np.savetxt(folder / "data.txt", data)
    files = {"index_features": "0 1", "index_target": "2", "index_train_0": " ".join(map(str, range(24))),
             "index_test_0": " ".join(map(str, range(24, 30)))}
    for name, text in files.items():
        (folder / f"{name}.txt").write_text(text)
    return folder


def _uci(tmp_path, *extra):
    return ["uci", "--data-root", str(tmp_path / "data"), "--datasets", "tiny", "--methods", "ERM", "--splits", "0",
            "--epochs", "3", "--weight-decays", "0", "--out", str(tmp_path / "out"), "--no-report", "--quiet", *extra]


def _nll(tmp_path):
    (record,) = RecordStore(tmp_path / "out").all("uci")
    return record["metrics"]["test"]["nll"], record["fingerprint"]


def test_a_changed_data_file_or_code_retrains_the_record(tmp_path, capsys, monkeypatch):
    _tiny_uci(tmp_path / "data")
    assert main(_uci(tmp_path)) == 0
    nll, fp = _nll(tmp_path)
    assert sorted(fp["data"]) == ["tiny/data.txt", "tiny/index_features.txt", "tiny/index_target.txt",
                                  "tiny/index_test_0.txt", "tiny/index_train_0.txt"]
    _tiny_uci(tmp_path / "data", scale=10.0)  # the target x 10
    capsys.readouterr()
    assert main(_uci(tmp_path, "--reuse-stale")) == 0
    assert "keeping 1 stale record(s) (--reuse-stale): " in capsys.readouterr().err
    assert _nll(tmp_path)[0] == nll  # kept, as asked
    assert main(_uci(tmp_path)) == 0
    err = capsys.readouterr().err
    assert "retraining 1 stale record(s) (--reuse-stale keeps them)" in err and "data file tiny/data.txt changed" in err
    new_nll, new_fp = _nll(tmp_path)
    assert new_nll != nll and new_fp["data"]["tiny/data.txt"] != fp["data"]["tiny/data.txt"]
    monkeypatch.setattr(fingerprint_module, "code_fingerprint", lambda: "0123456789abcdef")
    assert main(_uci(tmp_path)) == 0
    assert f"code {fp['code']} -> 0123456789abcdef" in capsys.readouterr().err
    assert _nll(tmp_path) == (new_nll, {**new_fp, "code": "0123456789abcdef"})


@pytest.mark.parametrize("damage", ["{}", "truncated", "npz"])
def test_an_unreadable_record_is_reported_then_retrained(tmp_path, capsys, damage):
    _tiny_uci(tmp_path / "data")
    assert main(_uci(tmp_path)) == 0
    (path,) = _records(tmp_path / "out")
    before = outcome(RecordStore(tmp_path / "out"), path)
    if damage == "npz":
        npz = path.with_suffix(".npz")
        npz.write_bytes(npz.read_bytes()[:50])
    else:
        path.write_text("{}" if damage == "{}" else path.read_text()[:100])
    with pytest.raises(RecordError, match=f"1 unreadable record.*{path.name}"):
        RecordStore(tmp_path / "out").all()
    capsys.readouterr()
    assert main(["report", "--out", str(tmp_path / "out"), "--no-figures"]) == 2
    assert "unreadable record" in capsys.readouterr().err
    assert main(_uci(tmp_path)) == 0
    assert "retraining 1 unreadable record(s)" in capsys.readouterr().err
    assert_same(outcome(RecordStore(tmp_path / "out"), path), before)
