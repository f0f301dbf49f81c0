"""
``scripts/sweep_state.py`` carries an unfinished sweep to the next session's machine: the runs it
restores are the runs the sweep then skips, and nothing else.
"""
import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

from pyro_probmix.experiments.records import RecordStore, RunSpec

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sweep_state.py"
spec = importlib.util.spec_from_file_location("sweep_state", SCRIPT)
sweep_state = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep_state)


def _fingerprint(code):
    return {"code": code, "data": {"power-plant/data.txt": "daeb"}}


def _write(store, split, code):
    run = RunSpec.make("uci", "power-plant", "ERM", split, hparams={"weight_decay": 1e-6})
    store.write(run, {"metrics": {"test": {"nll": 2.8 + split}}, "fingerprint": _fingerprint(code)},
                arrays={"test_mean": [1.0, 2.0]})
    return run


def test_restored_runs_are_the_finished_runs_of_the_results_code_and_count_as_done(tmp_path):
    old = RecordStore(tmp_path / "old" / "uci-controls")
    done = [_write(old, split, sweep_state.FINGERPRINT) for split in range(3)]
    other_version = _write(old, 3, "0123456789abcdef")
    (old.out / "selection" / "uci" / "mlp").mkdir(parents=True)
    (old.out / "selection" / "uci" / "mlp" / "power-plant.json").write_text('{"ERM": {}}')

    sweep_state.save(["power-plant"], results=tmp_path / "old", state=tmp_path / "state")
    with tarfile.open(tmp_path / "state" / "power-plant.tar.xz") as tar:
        assert len(tar.getnames()) == 4  # three records and the selection file
    new = RecordStore(tmp_path / "new" / "uci-controls")
    sweep_state.restore(results=tmp_path / "new", state=tmp_path / "state")

    expected = _fingerprint(sweep_state.FINGERPRINT)
    assert [new.status(run, expected) for run in done] == [("ok", "")] * 3
    assert [new.read(run)["metrics"]["test"]["nll"] for run in done] == [2.8, 3.8, 4.8]
    assert new.arrays(new.read(done[0])) is None  # prediction arrays are not carried
    assert new.status(other_version) == ("missing", "")
    assert (new.out / "selection" / "uci" / "mlp" / "power-plant.json").read_text() == '{"ERM": {}}'


def test_restore_keeps_the_files_already_there(tmp_path):
    old = RecordStore(tmp_path / "old" / "uci-controls")
    run = _write(old, 0, sweep_state.FINGERPRINT)
    sweep_state.save(["power-plant"], results=tmp_path / "old", state=tmp_path / "state")
    new = RecordStore(tmp_path / "new" / "uci-controls")
    _write(new, 0, sweep_state.FINGERPRINT)
    new.path(run).write_text(new.path(run).read_text().replace("2.8", "9.5"))
    sweep_state.restore(results=tmp_path / "new", state=tmp_path / "state")
    assert new.read(run)["metrics"]["test"]["nll"] == 9.5


def test_a_pack_that_writes_outside_the_results_folder_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with tarfile.open(state / "evil.tar.xz", "w:xz") as tar:
        info = tarfile.TarInfo("../outside.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(SystemExit, match="not a file under results/"):
        sweep_state.restore(results=tmp_path / "results", state=state)
    assert not (tmp_path / "outside.json").exists()


def test_a_pack_of_another_code_versions_records_only_is_refused(tmp_path):
    old = RecordStore(tmp_path / "old" / "uci-controls")
    _write(old, 0, "0123456789abcdef")
    with pytest.raises(SystemExit, match="no record of 'power-plant' is of the code"):
        sweep_state.save(["power-plant"], results=tmp_path / "old", state=tmp_path / "state")
    assert not list((tmp_path / "state").iterdir())
