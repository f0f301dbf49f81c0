# SPDX-License-Identifier: Apache-2.0
"""Bad input to the command line: one clear message and a non-zero exit (2: bad input), never a
traceback, never a silent run. Each case is ``(setup, argv, message fragment, exit code)``, run
in-process through :func:`~pyro_probmix.experiments.cli.main`.

``python tests/test_cli_errors.py`` (from a checkout's root) prints how each case fares with that
checkout's code: ``clear``, ``traceback`` or ``silent`` (exit 0 or no message).
"""
import contextlib
import io
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest

from pyro_probmix.experiments.cli import main
from pyro_probmix.experiments.records import RecordStore

TOY = ["toy-regression", "--methods", "ERM", "ProbMix", "--splits", "0", "--epochs", "2", "--alphas", "0.5",
       "--betas", "0", "--no-report", "--quiet"]


def _uci_folder(root, overlap=False):
    folder = Path(root, "data", "tiny")
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", np.random.default_rng(0).normal(size=(20, 3)))
    files = {"index_features": "0 1", "index_target": "2", "index_train_0": " ".join(map(str, range(15))),
             "index_test_0": " ".join(map(str, range(14 if overlap else 15, 20)))}
    for name, text in files.items():
        (folder / f"{name}.txt").write_text(text)
    return folder.parent


def _trained(tmp):
    """A sweep's output folder with one record (and its arrays) per run."""
    out = Path(tmp, "out")
    assert main([*TOY, "--out", str(out)]) == 0
    return out


def _damage(tmp, what):
    out = _trained(tmp)
    record = sorted(out.rglob("records/**/ERM/*.json"))[0]
    if what == "truncated":
        record.write_text(record.read_text()[:80])
    elif what == "{}":
        record.write_text("{}")
    elif what == "npz":
        npz = record.with_suffix(".npz")
        npz.write_bytes(npz.read_bytes()[:40])
    elif what == "garbage":
        (record.parent / "notes.json").write_text("these are not the results")
    elif what == "selection":
        selection = next(out.rglob("selection/**/*.json"))
        selection.write_text(selection.read_text()[:30])
    return out


def _file(tmp):
    path = Path(tmp, "results.txt")
    path.write_text("a file")
    return path


# (id, setup(tmp) -> {name: value} used in argv, argv template, message fragment, exit code)
CASES = [
    ("out-is-a-file", lambda t: {"out": _file(t)}, [*TOY, "--out", "{out}"], "is a file, not a folder", 2),
    ("out-under-a-file", lambda t: {"out": _file(t) / "sub"}, [*TOY, "--out", "{out}"], "cannot write there", 2),
    ("out-read-only", lambda t: {}, [*TOY, "--out", "/sys/probmix-out"], "cannot write there", 2),
    ("lr-negative", lambda t: {"out": t}, [*TOY, "--lr", "-0.1", "--out", "{out}"], "expected a finite number > 0", 2),
    ("lr-nan", lambda t: {"out": t}, [*TOY, "--lr", "nan", "--out", "{out}"], "expected a finite number > 0", 2),
    ("lr-zero", lambda t: {"out": t}, [*TOY, "--lr", "0", "--out", "{out}"], "expected a finite number > 0", 2),
    ("lr-text", lambda t: {"out": t}, [*TOY, "--lr", "fast", "--out", "{out}"], "expected a number", 2),
    ("batch-size-1-probmix", lambda t: {"out": t}, [*TOY, "--batch-size", "1", "--out", "{out}"],
     "a minibatch needs >= 2 rows", 2),
    ("splits-reversed", lambda t: {"out": t}, [*TOY[:4], "--splits", "3-1", *TOY[6:], "--out", "{out}"],
     "'3-1' is an empty range", 2),
    ("splits-empty", lambda t: {"out": t}, [*TOY[:4], "--splits", ",", *TOY[6:], "--out", "{out}"],
     "--splits selects no unit", 2),
    ("splits-negative", lambda t: {"out": t}, [*TOY[:4], "--splits", "-2", *TOY[6:], "--out", "{out}"],
     "indices must be >= 0", 2),
    ("epochs-zero", lambda t: {"out": t}, [*TOY, "--epochs", "0", "--out", "{out}"], "expected an integer >= 1", 2),
    ("checkpoint-negative", lambda t: {"out": t}, [*TOY, "--checkpoint-every", "-1", "--out", "{out}"],
     "--checkpoint-every must be a number of seconds >= 0", 2),
    ("test-rows-overlap-training", lambda t: {"data": _uci_folder(t, overlap=True), "out": Path(t, "o")},
     ["uci", "--data-root", "{data}", "--datasets", "tiny", "--methods", "ERM",
      "--epochs", "2", "--out", "{out}", "--quiet"], "1 row(s) are both training and test rows", 2),
    ("selection-file-truncated", lambda t: {"out": _damage(t, "selection")}, [*TOY, "--out", "{out}"],
     "is unreadable", 2),
    ("report-record-truncated", lambda t: {"out": _damage(t, "truncated")}, ["report", "--out", "{out}"],
     "1 unreadable record(s)", 2),
    ("report-record-empty", lambda t: {"out": _damage(t, "{}")}, ["report", "--out", "{out}"],
     "not a record of this run (no key/metrics)", 2),
    ("report-npz-truncated", lambda t: {"out": _damage(t, "npz")}, ["report", "--out", "{out}"],
     "are unreadable", 2),
    ("report-garbage-record", lambda t: {"out": _damage(t, "garbage")}, ["report", "--out", "{out}"],
     "notes.json: not readable JSON", 2),
    ("report-out-typo", lambda t: {"out": Path(t, "resluts")}, ["report", "--out", "{out}"], "no records there", 2),
    ("report-out-is-a-file", lambda t: {"out": _file(t)}, ["report", "--out", "{out}"], "no records there", 2),
    # a sweep retrains what it cannot read, and says so (exit 0: the records are whole again)
    ("sweep-record-truncated", lambda t: {"out": _damage(t, "truncated")}, [*TOY, "--out", "{out}"],
     "retraining 1 unreadable record(s)", 0),
    ("sweep-record-empty", lambda t: {"out": _damage(t, "{}")}, [*TOY, "--out", "{out}"],
     "retraining 1 unreadable record(s)", 0),
    ("sweep-npz-truncated", lambda t: {"out": _damage(t, "npz")}, [*TOY, "--out", "{out}"],
     "retraining 1 unreadable record(s)", 0),
    ("download-name-with-dots", lambda t: {"out": t}, ["download", "--dest", "{out}", "--datasets", "../x",
                                                       "--tickers", "--base-url", "http://127.0.0.1:9"],
     "no '/', no '..'", 2),
]


def run_case(setup, argv, tmp):
    """``(exit code, stderr)`` of ``main`` on the case; exceptions other than SystemExit propagate."""
    values = setup(tmp)
    argv = [a.format(**values) for a in argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, err.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_message_and_exit_code(tmp_path, case):
    name, setup, argv, message, code = case
    if name == "out-read-only" and not os.path.isdir("/sys"):
        pytest.skip("needs a read-only /sys")
    rc, err = run_case(setup, argv, tmp_path)
    assert message in err and rc == code, err
    if code:
        assert err.strip().splitlines()[-1].startswith(("error:", "usage:", "python -m")), err


def test_every_option_of_every_command_has_help():
    from pyro_probmix.experiments.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "experiment").choices
    missing = [f"{name} {a.option_strings[0]}" for name, sub in commands.items() for a in sub._actions
               if a.option_strings and not a.help]
    assert missing == [] and len(commands) == 6


def test_a_sweep_says_what_it_trains_reuses_and_scores(tmp_path, capsys):
    argv = ["toy-regression", "--methods", "ERM", "ProbMix", "--runs", "2", "--epochs", "2", "--alphas", "0.1", "0.5",
            "--betas", "0", "--out", str(tmp_path), "--no-report"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    # ablation grid: ProbMix x 2 configurations x units 0-2 (selection) and 0-1; ERM: 2 final runs
    # ERM selects among as many weight decays as ProbMix has (alpha, beta) configurations
    assert "toy-regression: 12 selection runs (configurations per method: ERM 2, ProbMix 2;" in err
    assert "then 4 final runs" in err and "final runs: reusing 4 of 4 records in" in err
    assert "\r" not in err  # not a terminal: plain progress lines
    lines = out.splitlines()
    assert lines[0] == "toy-regression: test scores of the final runs (2 epochs, lr 0.01; mean ± std over units)"
    selection = json.loads(next(tmp_path.rglob("selection/**/cubic.json")).read_text())
    records = RecordStore(tmp_path).all()
    for line, name in zip(lines[2:], ["ERM", "ProbMix"]):
        hparams = selection[name]["hparams"]
        nll = [r["metrics"]["test"]["nll"] for r in records if r["key"]["method"] == name
               and r["key"]["hparams"] == hparams and r["key"]["split"] < 2]
        assert line.split()[:2] == ["cubic", name if not hparams else f"{name}(alpha={hparams['alpha']},"]
        assert f"{np.mean(nll):.3f} ± {np.std(nll, ddof=1):.3f}" in line and len(nll) == 2
    assert main(argv) == 0
    assert "selection: reusing 12 of 12 records" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path), "--no-figures", "--quiet"]) == 0
    assert "Training settings of these runs: 2 epochs, Adam lr 0.01" in (tmp_path / "report" / "report.md").read_text()


if __name__ == "__main__":  # how each case fares with this checkout's code
    counts = {}
    for name, setup, argv, message, code in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                rc, err = run_case(setup, argv, tmp)
                verdict = "clear" if rc != 0 and err.strip() else "silent"
                if code == 0:  # a sweep over damaged records: must say what it retrains
                    verdict = "clear" if message in err else "silent"
            except Exception:  # noqa: BLE001
                verdict, rc, err = "traceback", None, traceback.format_exc().strip().splitlines()[-1]
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"{name:<28} {verdict:<9} rc={rc} {err.strip().splitlines()[-1][:90] if err.strip() else ''}")
    print(json.dumps(counts), file=sys.stderr)
