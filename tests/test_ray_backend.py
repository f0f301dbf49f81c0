# SPDX-License-Identifier: Apache-2.0
"""``--backend ray`` on a local Ray cluster (head + one worker node on 127.0.0.1) with a worker
process killed mid-run, and with the driver killed mid-run and the command run again: every run
recorded, once. Skipped without Ray (an optional extra); slow (12-45 s each here: a cluster
starts and trains six groups): ``python -m pytest tests/test_ray_backend.py -m slow``."""
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pyro_probmix.experiments.cli import build_parser
from pyro_probmix.experiments.data import ExperimentError
from pyro_probmix.experiments.records import RecordStore
from pyro_probmix.experiments.sweep import SweepOptions, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_backend_flags_reach_the_options():
    args = build_parser().parse_args(["toy-regression", "--backend", "ray", "--address", "10.0.0.1:6379"])
    assert (args.backend, args.address) == ("ray", "10.0.0.1:6379")
    assert build_parser().parse_args(["uci"]).backend == "local"
    with pytest.raises(ExperimentError, match=r"--backend must be 'local' or 'ray', got 'dask'"):
        SweepOptions("toy-regression", methods=["ERM"], splits=[0], epochs=1, backend="dask")


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    opts = SweepOptions("toy-regression", methods=["ERM"], splits=[0, 1], epochs=1, out=tmp_path, quiet=True,
                        backend="ray")
    with pytest.raises(ImportError, match=r"--backend ray needs Ray, an optional extra: pip install \"ray\[default\]\" \(or, in a checkout of pyro-probmix, pip install \"\.\[ray\]\"\)"):
        run_sweep(opts)
    assert RecordStore(tmp_path).all() == []


def _kill_first_task_worker(killed, stop):
    """SIGKILLs the first worker process seen running a group (Ray titles it with the task's
    name), after it has trained a moment; records its pid in ``killed``."""
    import psutil

    while not stop.is_set():
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and cmdline[0].startswith("ray::train_unrecorded"):
                time.sleep(0.5)
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_ray_cluster_with_a_killed_worker_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    pytest.importorskip("psutil")
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the nodes' workers import this checkout
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        opts = SweepOptions("toy-regression", methods=["ERM"], splits=list(range(6)), weight_decays=[0.0], epochs=300,
                            group_size=1, out=tmp_path, quiet=True, backend="ray", address=cluster.address)
        killed, stop = [], threading.Event()
        killer = threading.Thread(target=_kill_first_task_worker, args=(killed, stop), daemon=True)
        killer.start()
        run_sweep(opts)
        stop.set()
        killer.join()
    finally:
        cluster.shutdown()
    assert len(killed) == 1  # a worker died mid-run, and its group was retried
    records = RecordStore(tmp_path).all("toy-regression")
    assert sorted(r["split"] for r in records) == [0, 1, 2, 3, 4, 5]  # none lost, none twice
    assert len(list(tmp_path.rglob("*.json"))) == 6 + 1  # and the selection file
    assert list(tmp_path.rglob("*.tmp")) == []  # no half-written file left
    assert all(r["group"]["size"] == 1 and r["metrics"]["test"]["nll"] is not None for r in records)


def _ray_task_workers():
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith("ray::train_unrecorded")]


@pytest.mark.slow
def test_ray_sweep_resumes_after_its_driver_is_killed(tmp_path, monkeypatch):
    """The driver (the command) SIGKILLed once a first record is written, then the command again:
    the records written before the kill are kept as they are (not retrained), the others are
    trained, each run recorded once, and no temporary file is left."""
    pytest.importorskip("ray")
    pytest.importorskip("psutil")
    import subprocess

    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        command = [sys.executable, "-m", "pyro_probmix.experiments", "toy-regression", "--methods", "ERM",
                   "--splits", "0-5", "--weight-decays", "0", "--epochs", "300", "--group-size", "1", "--backend", "ray",
                   "--address", cluster.address, "--out", str(tmp_path), "--quiet", "--no-report"]
        records = tmp_path / "records"
        driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not list(records.rglob("*.json")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, "the sweep ended before it could be killed"
        driver.kill()
        driver.wait()
        while _ray_task_workers() and time.monotonic() < deadline:  # Ray ends the dead job's tasks
            time.sleep(0.1)
        before = {p: p.stat().st_mtime_ns for p in records.rglob("*.json")}
        assert 1 <= len(before) < 6
        assert subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL).returncode == 0
    finally:
        cluster.shutdown()
    after = {p: p.stat().st_mtime_ns for p in records.rglob("*.json")}
    assert len(after) == 6 and {p: after[p] for p in before} == before  # kept, not retrained
    assert sorted(r["split"] for r in RecordStore(tmp_path).all("toy-regression")) == [0, 1, 2, 3, 4, 5]
    assert list(tmp_path.rglob("*.tmp")) == []
