# SPDX-License-Identifier: Apache-2.0
"""The per-run CSV and the paired evidence of the report: records -> CSV -> the same report."""
import csv
import json

import pytest

from pyro_probmix.experiments.cli import main
from pyro_probmix.experiments.records import RecordStore, RunSpec
from pyro_probmix.experiments.data import ExperimentError
from pyro_probmix.experiments.report import ANY_CODE, write_report
from pyro_probmix.experiments.runs_csv import COLUMNS, data_digest
from pyro_probmix.experiments.sweep import SweepOptions, run_sweep

SPLITS = range(6)
# test NLL per method and split: ProbMix beats ERM on every split; M-ProbMix and M-ERM alternate
NLL = {
    "ERM": [1.0, 1.2, 0.9, 1.4, 1.1, 1.3],
    "M-ERM": [0.8, 1.0, 0.8, 1.1, 0.9, 1.0],
    "ProbMix": [0.7, 0.95, 0.5, 1.0, 0.85, 0.9],
    "M-ProbMix": [0.9, 0.9, 0.9, 1.0, 1.0, 0.95],
}


def _test_metrics(nll, split):
    return {"nll": nll, "rmse": 2.0 + 0.1 * split, "mse": (2.0 + 0.1 * split) ** 2, "crps": nll / 3,
            "coverage": {"0.5": 0.5, "0.8": 0.75, "0.9": 0.875, "0.95": 0.9}, "pit_hist": [split, 1, 2, 3, 4, 5, 6, 7, 8, 9]}


CODE = "c0dec0dec0dec0de"


def _uci_records(out, datasets=(("yacht", 0.0), ("concrete", 2.0))):
    store = RecordStore(out)
    train = {"epochs": 10, "lr": 0.005, "batch_size": None, "eval_every": 1}
    for ds, offset in datasets:
        for method, nlls in NLL.items():
            hp = {"alpha": 0.1, "beta": 0.0} if "ProbMix" in method else {}
            if method == "ERM":
                hp = {"weight_decay": 1e-4}
            for split in SPLITS:
                record = {"metrics": {"test": _test_metrics(nlls[split] + offset, split), "val": {"nll": 1.0}},
                          "best_epoch": split + 3}
                if split % 2:  # a record of a data file of its own; the even ones are older, with none
                    record["fingerprint"] = {"code": CODE, "data": {f"{ds}/data.txt": f"{split}"}}
                store.write(RunSpec.make("uci", ds, method, split, 0, "mlp", hp, train), record)
        for method, hp in (("ERM", {}), ("ProbMix", {"alpha": 1.0, "beta": 0.0})):  # worse on validation
            for split in (0, 1, 2):
                store.write(RunSpec.make("uci", ds, method, split, 0, "mlp", hp, train),
                            {"metrics": {"test": _test_metrics(99.0, split), "val": {"nll": 5.0}}, "best_epoch": 1})


def _report_files(rep):
    return {p.name: p.read_text() for p in sorted(rep.glob("*.md")) if p.name != "report.md"} | \
        {p.name: p.read_text() for p in sorted(rep.glob("*.csv")) if not p.name.endswith("_runs.csv")}


def test_report_rebuilds_every_table_and_figure_from_the_per_run_csv(tmp_path):
    _uci_records(tmp_path / "records", datasets=[("yacht", 0.0)])
    path = write_report(tmp_path / "records", figures=True, code=ANY_CODE)
    runs_csv = path.parent / "uci_runs.csv"
    with runs_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 4 * 6 and "99.0" not in runs_csv.read_text()  # the chosen configurations only
    erm = [r for r in rows if r["method"] == "ERM" and r["dataset"] == "yacht"]
    assert [r["split"] for r in erm] == ["0", "1", "2", "3", "4", "5"]
    assert json.loads(erm[0]["hparams"]) == {"weight_decay": 0.0001} and erm[2]["best_epoch"] == "5"
    assert [r["fingerprint"] for r in erm] == [
        "" if split % 2 == 0 else '{"code":"%s","data":"%s"}' % (CODE, data_digest({"yacht/data.txt": str(split)}))
        for split in SPLITS
    ]
    assert erm[0]["coverage_0.8"] == "0.75" and erm[1]["pit_hist"] == "1 1 2 3 4 5 6 7 8 9"

    again = write_report(tmp_path / "from-csv", figures=True, from_csv=[runs_csv], code=ANY_CODE)
    assert again.read_text() == path.read_text()
    assert _report_files(again.parent) == _report_files(path.parent)


def test_a_report_of_runs_of_two_code_versions_is_refused_or_cut_to_one(tmp_path):
    _uci_records(tmp_path / "records", datasets=[("yacht", 0.0)])
    both = write_report(tmp_path / "records", figures=False, code=ANY_CODE).parent / "uci_runs.csv"
    runs_csv = tmp_path / "uci_runs.csv"
    runs_csv.write_text(both.read_text())
    for source in ({"out": tmp_path / "records"}, {"out": tmp_path / "csv", "from_csv": [runs_csv]}):
        with pytest.raises(ExperimentError, match=r"trained by 2 code versions: no fingerprint \(12 runs\), "
                                                  r"c0dec0dec0dec0de \(12 runs\); report one of them with --code"):
            write_report(figures=False, **source)
        with pytest.warns(UserWarning, match=r"report --code c0dec0dec0dec0de: left out \d+ runs of other code"):
            path = write_report(figures=False, code=CODE, **source)
        assert "| yacht |" in path.read_text()
        with pytest.raises(ExperimentError, match=r"report --code 0123: no run was trained by that code version"):
            write_report(figures=False, code="0123", **source)
    with (tmp_path / "records" / "report" / "uci_runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["split"] for r in rows}) == ["1", "3", "5"] and all(CODE in r["fingerprint"] for r in rows)


def test_report_pairs_each_method_with_erm_and_its_no_mixing_control(tmp_path):
    _uci_records(tmp_path)
    text = write_report(tmp_path, figures=False, code=ANY_CODE).read_text()
    # ProbMix wins 6/6 against ERM: exact two-sided p = 2 / 2**6
    assert "| Dataset | ProbMix | M-ProbMix | M-ERM |" in text
    assert "| yacht | **6/6, p=0.031** | 5/6, p=0.062 | **6/6, p=0.031** |" in text  # M-ProbMix: one tie
    # M-ProbMix against M-ERM: differences +0.1, -0.1, +0.1, -0.1, +0.1, -0.05, rank sums 10.5 and 10.5
    assert "| Dataset | M-ProbMix vs M-ERM |" in text and "| yacht | 3/6, p=1 |" in text
    assert ("Beat their no-mixing control on test NLL (paired Wilcoxon p < 0.05, more wins than losses): "
            "ProbMix (vs ERM) on concrete (6/6, p=0.031); ProbMix (vs ERM) on yacht (6/6, p=0.031).") in text
    assert "| yacht | weight_decay=0.0001 |" in text  # ERM's chosen weight decay


def test_toy_sweep_with_the_controls_round_trips_through_the_csv(tmp_path):
    opts = SweepOptions("toy-regression", methods=["ERM", "M-ERM", "M-ProbMix"], splits=[0, 1],
                        epochs=2, alphas=[0.1, 1.0], betas=[0.0], weight_decays=[0.0, 1e-3], select_splits=1,
                        out=tmp_path / "sweep", quiet=True)
    chosen = run_sweep(opts)[("cubic", "mlp")]
    assert set(chosen["ERM"]) <= {"weight_decay"} and set(chosen["M-ERM"]) <= {"weight_decay", "predict"}
    path = write_report(tmp_path / "sweep", figures=False)
    runs = path.parent / "toy-regression_runs.csv"
    roles = [row["role"] for row in csv.DictReader(runs.open())]
    assert roles.count("final") == 3 * 2 and roles.count("ablation") == 3 * 2  # the other grid point, each unit
    again = write_report(tmp_path / "again", figures=False, from_csv=[runs])
    assert again.read_text() == path.read_text()
    assert "### Ablation over (α, β)" in again.read_text()


def test_cli_report_from_a_bad_csv_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "uci_runs.csv"
    bad.write_text("dataset,method\nyacht,ERM\n")
    assert main(["report", "--from-csv", str(bad), "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --from-csv: {bad}: not a per-run CSV") and "Traceback" not in err
    bad.write_text(",".join(COLUMNS) + "\nuci,mlp,yacht,ERM,0\n")  # the right header, a row cut short
    assert main(["report", "--from-csv", str(bad), "--out", str(tmp_path), "--quiet"]) == 2
    assert f"{bad}, line 2: unreadable row ({len(COLUMNS)} cells expected)" in capsys.readouterr().err
    assert main(["report", "--from-csv", str(tmp_path / "missing.csv"), "--out", str(tmp_path), "--quiet"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_a_row_reads_back_the_scores_bit_for_bit(tmp_path):
    from pyro_probmix.experiments.runs_csv import read_runs_csv, run_row, write_runs_csv

    reliability = {"confidence": [0.55, None], "accuracy": [0.5, None], "counts": [4, 0]}
    test = {"nll": 1 / 3, "accuracy": 0.7, "ece": float("inf"), "reliability": reliability}
    record = {"key": RunSpec.make("toy-classification", "rings", "M-ERM", 2, 2, "mlp", {"predict": "mean"},
                                  {"epochs": 3, "lr": 0.01}).key(),
              "metrics": {"test": test, "val": {"nll": float("nan")}}, "best_epoch": 0, "fingerprint": {"code": "ab"}}
    path = write_runs_csv(tmp_path / "toy_runs.csv", [run_row(record, "ablation")])
    (back,) = read_runs_csv(path)
    assert {k: back["key"][k] for k in back["key"]} == {k: record["key"][k] for k in back["key"]}
    assert back["metrics"]["test"] == test and back["best_epoch"] == 0 and back["role"] == "ablation"
    assert str(back["metrics"]["val"]["nll"]) == "nan" and back["fingerprint"] == '{"code":"ab"}'


def test_the_csv_keeps_one_digest_of_the_data_files_a_run_read():
    from pyro_probmix.experiments.runs_csv import data_digest, run_row

    data = {"yacht/data.txt": "00df", "yacht/index_train_0.txt": "6a7e"}
    record = {"key": RunSpec.make("uci", "yacht", "ERM", 0).key(), "metrics": {"test": {}, "val": {}},
              "fingerprint": {"code": "e1f8", "data": data}}
    cell = run_row(record)["fingerprint"]
    assert cell == '{"code":"e1f8","data":"%s"}' % data_digest(data)
    changed = {**data, "yacht/data.txt": "00de"}
    assert data_digest(changed) != data_digest(data) and len(data_digest(data)) == 16
