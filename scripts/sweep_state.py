"""Carry an unfinished sweep from one session's machine to the next one's.

    python scripts/sweep_state.py save ITEM [ITEM ...]   # results/ -> sweep-state/ITEM.tar.xz
    python scripts/sweep_state.py restore                # sweep-state/*.tar.xz -> results/
    python scripts/sweep_state.py drop ITEM [ITEM ...]   # a published item's pack is no longer needed

``results/`` (the records of ``scripts/results_sweep.sh``) is not committed and a session's
machine is not kept, so a sweep longer than a session resumes in the next one only from what is
committed. ``save`` packs the finished runs' JSON records of the results' code version (and a
data set's selection file, once written) into one ``.tar.xz`` per item, a few hundred bytes a
run; ``restore`` writes them back under ``results/`` without overwriting anything, and the sweep
then trains only the runs that have no record. A run still training when the session ended
starts again from its beginning: its numbers depend on its key only, not on the interruption.

What is not carried: the prediction arrays (``.npz``, ~13 KB a run, used by no UCI or stocks
table: a restored record has no ``arrays`` entry) and the training checkpoints.
"""
import io
import json
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
STATE = ROOT / "sweep-state"
FINGERPRINT = "dc485d2875f5056e"  # the code of RESULTS_COMMIT in results_sweep.sh
TOYS = ("toy-regression", "toy-classification")


def _item_files(item, results):
    """(records folder, selection files) of a sweep item under ``results``."""
    if item == "stocks" or item in TOYS:
        out = results / item
        return out / "records", sorted((out / "selection").rglob("*.json"))
    out = results / "uci-controls"
    return out / "records" / "uci" / "mlp" / item, sorted((out / "selection" / "uci" / "mlp").glob(f"{item}.json"))


def save(items, results=RESULTS, state=STATE):
    """One pack per item in ``state``: the item's finished runs under ``results``."""
    state.mkdir(exist_ok=True)
    for item in items:
        records, selections = _item_files(item, results)
        if not records.is_dir():
            sys.exit(f"save: no records of {item!r} under {records}")
        pack = state / f"{item}.tar.xz"
        runs, others = 0, {}
        with tarfile.open(pack.with_suffix(".tmp"), "w:xz") as tar:
            for path in sorted(records.rglob("*.json")):
                record = json.loads(path.read_text())
                code = record.get("fingerprint", {}).get("code")
                if code != FINGERPRINT:  # another code version's run: not part of these results
                    others[code] = others.get(code, 0) + 1
                    continue
                record.pop("arrays", None)
                _add(tar, path.relative_to(results), json.dumps(record, indent=1) + "\n")
                runs += 1
            for path in selections:
                _add(tar, path.relative_to(results), path.read_text())
        if others and not runs:
            pack.with_suffix(".tmp").unlink()
            sys.exit(f"save: no record of {item!r} is of the code {FINGERPRINT} (FINGERPRINT); "
                     f"found {others} (fingerprint: records)")
        pack.with_suffix(".tmp").replace(pack)
        skipped = f", {sum(others.values())} of other code versions left out" if others else ""
        print(f"{pack.name}: {runs} runs{skipped}, {len(selections)} selection file(s), "
              f"{pack.stat().st_size / 1024:.0f} KB")


def _add(tar, name, text):
    data = text.encode()
    info = tarfile.TarInfo(name.as_posix())
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def restore(results=RESULTS, state=STATE):
    """Write the files of every pack in ``state`` that ``results`` lacks."""
    for pack in sorted(state.glob("*.tar.xz")):
        written = kept = 0
        with tarfile.open(pack) as tar:
            for member in tar.getmembers():
                target = results / member.name
                if not member.isfile() or results.resolve() not in target.resolve().parents:
                    sys.exit(f"restore: {pack.name} holds {member.name!r}, not a file under results/")
                if target.exists():
                    kept += 1
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                written += 1
        print(f"{pack.name}: {written} files restored, {kept} already there")


def drop(items, state=STATE):
    """Remove the packs of ``items`` (published items, whose rows are committed)."""
    for item in items:
        pack = state / f"{item}.tar.xz"
        if pack.exists():
            pack.unlink()
            print(f"removed {pack.name}")


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "save" and args:
        save(args)
    elif command == "restore" and not args:
        restore()
    elif command == "drop" and args:
        drop(args)
    else:
        sys.exit(__doc__)
