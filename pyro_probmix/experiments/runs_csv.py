# SPDX-License-Identifier: Apache-2.0
"""
The per-run CSV: one row per run that a report uses, everything its tables and its PIT,
coverage, reliability and ablation figures are made of, so that ``report --from-csv`` rebuilds
them without the records.

A row holds the run's key (experiment, arch, dataset, method, split, seed, chosen
hyper-parameters and training settings as JSON), its ``role`` (``final``: a reported run of the
configuration chosen on validation data; ``ablation``: another configuration of the toy
ablations), its test scores (NLL, RMSE, MSE, CRPS, accuracy, ECE, the coverage of each central
interval of :data:`~pyro_probmix.experiments.scoring.COVERAGE_LEVELS`, the PIT histogram counts and
the reliability bins), its validation NLL, best epoch and the ``fingerprint`` of the code and
data that trained it (empty for records written before fingerprints existed; the data files'
SHA-256s, which a record lists one by one, are cut to one digest of them all,
:func:`data_digest`, so that the CSV stays compact). Numbers are
written with :func:`repr`, so they read back bit for bit; an empty cell is a missing value.
"""
import csv
import hashlib
import io
import json
from pathlib import Path

from .scoring import COVERAGE_LEVELS

__all__ = ["COLUMNS", "data_digest", "run_row", "row_record", "write_runs_csv", "read_runs_csv"]

_KEY = ("experiment", "arch", "dataset", "method", "split", "seed")
_SCORES = ("nll", "rmse", "mse", "crps", "accuracy", "ece")
_COVERAGE = tuple(f"coverage_{level}" for level in COVERAGE_LEVELS)
#: the CSV's columns, in order
COLUMNS = (*_KEY, "role", "hparams", "train", *_SCORES, *_COVERAGE, "val_nll", "best_epoch", "pit_hist",
           "reliability", "fingerprint")
ROLES = ("final", "ablation")


def _number(value):
    return "" if value is None else repr(float(value))


def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def data_digest(data):
    """16 hex digits of the SHA-256 of a fingerprint's ``data`` part (``{file: sha256}``, as JSON with
    sorted keys): what the CSV keeps of the data files a run read.

    >>> data_digest({"yacht/data.txt": "00df", "yacht/index_train_0.txt": "6a7e"})
    '2e752121b2d487de'
    """
    return hashlib.sha256(_json(data).encode()).hexdigest()[:16]


def _fingerprint_cell(fingerprint):
    if fingerprint is None:
        return ""
    if isinstance(fingerprint, str):
        return fingerprint
    if isinstance(fingerprint.get("data"), dict):
        fingerprint = {**fingerprint, "data": data_digest(fingerprint["data"])}
    return _json(fingerprint)


def run_row(record, role="final"):
    """The CSV row (``{column: str}``) of a record.

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> key = RunSpec.make("uci", "yacht", "ERM", 3, hparams={"weight_decay": 1e-4}).key()
    >>> row = run_row({"key": key, "metrics": {"test": {"nll": 1.25, "coverage": {"0.9": 0.8}}, "val": {"nll": 1.5}},
    ...                "best_epoch": 40, "fingerprint": "3f2a"})
    >>> row["method"], row["split"], row["hparams"], row["nll"], row["rmse"], row["coverage_0.9"], row["fingerprint"]
    ('ERM', '3', '{"weight_decay":0.0001}', '1.25', '', '0.8', '3f2a')
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    key, test = record["key"], record["metrics"]["test"]
    row = {name: str(key[name]) for name in _KEY}
    row.update(role=role, hparams=_json(key["hparams"]), train=_json(key["train"]))
    row.update({name: _number(test.get(name)) for name in _SCORES})
    coverage = test.get("coverage") or {}
    row.update({column: _number(coverage.get(str(level))) for column, level in zip(_COVERAGE, COVERAGE_LEVELS)})
    row["val_nll"] = _number(record["metrics"].get("val", {}).get("nll"))
    best_epoch = record.get("best_epoch")
    row["best_epoch"] = "" if best_epoch is None else str(int(best_epoch))
    pit = test.get("pit_hist")
    row["pit_hist"] = "" if pit is None else " ".join(str(int(c)) for c in pit)
    row["reliability"] = "" if test.get("reliability") is None else _json(test["reliability"])
    row["fingerprint"] = _fingerprint_cell(record.get("fingerprint"))
    return row


def row_record(row):
    """The record-shaped dict of a CSV row: ``key``, ``metrics`` (``test`` and ``val``),
    ``best_epoch``, ``fingerprint`` and ``role``; missing values are left out, as in a record.

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> record = {"key": RunSpec.make("uci", "yacht", "ERM", 3).key(), "best_epoch": 7,
    ...           "metrics": {"test": {"nll": 0.1 + 0.2, "pit_hist": [1, 2]}, "val": {"nll": 1.5}}}
    >>> back = row_record(run_row(record))
    >>> back["metrics"]["test"], back["key"]["split"], back["best_epoch"], back["role"]
    ({'nll': 0.30000000000000004, 'pit_hist': [1, 2]}, 3, 7, 'final')
    """
    key = {name: row[name] for name in _KEY}
    key.update(split=int(row["split"]), seed=int(row["seed"]), hparams=json.loads(row["hparams"]),
               train=json.loads(row["train"]))
    test = {name: float(row[name]) for name in _SCORES if row[name] != ""}
    coverage = {str(level): float(row[c]) for c, level in zip(_COVERAGE, COVERAGE_LEVELS) if row[c] != ""}
    if coverage:
        test["coverage"] = coverage
    if row["pit_hist"]:
        test["pit_hist"] = [int(c) for c in row["pit_hist"].split()]
    if row["reliability"]:
        test["reliability"] = json.loads(row["reliability"])
    record = {"key": key, "metrics": {"test": test, "val": {}}, "role": row["role"]}
    if row["val_nll"] != "":
        record["metrics"]["val"]["nll"] = float(row["val_nll"])
    if row["best_epoch"] != "":
        record["best_epoch"] = int(row["best_epoch"])
    if row["fingerprint"]:
        record["fingerprint"] = row["fingerprint"]
    return record


def write_runs_csv(path, rows):
    """Write ``rows`` (from :func:`run_row`) to ``path`` (its folder is created); returns the path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_runs_csv(Path(tmp, "report", "uci_runs.csv"), [])
    ...     path.read_text().startswith("experiment,arch,dataset,method,split,seed,role,hparams,train,nll,")
    True
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue())
    return path


def read_runs_csv(path):
    """The record-shaped dicts (:func:`row_record`) of a per-run CSV; a file that is not one
    raises :class:`ValueError` naming the file and what is wrong.

    >>> import tempfile
    >>> from pyro_probmix.experiments.records import RunSpec
    >>> record = {"key": RunSpec.make("uci", "yacht", "ERM", 0).key(), "metrics": {"test": {"nll": 1.0}, "val": {}}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_runs_csv(Path(tmp, "uci_runs.csv"), [run_row(record)])
    ...     [r["metrics"]["test"]["nll"] for r in read_runs_csv(path)]
    [1.0]
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or tuple(reader.fieldnames) != COLUMNS:
            raise ValueError(f"{path}: not a per-run CSV: its header must be {','.join(COLUMNS)}")
        out = []
        for line, row in enumerate(reader, start=2):
            try:
                if None in row or None in row.values():
                    raise ValueError(f"{len(COLUMNS)} cells expected")
                if row["role"] not in ROLES:
                    raise ValueError(f"role {row['role']!r} is not one of {ROLES}")
                out.append(row_record(row))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}, line {line}: unreadable row ({e})") from None
    return out
