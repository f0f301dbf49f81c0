# SPDX-License-Identifier: Apache-2.0
"""
One JSON record per finished run, written atomically, so a sweep can be killed and resumed.

A run is identified by its key: experiment, dataset, architecture, method, split, seed,
hyper-parameters and training settings. Its record lives at
``<out>/records/<experiment>/<arch>/<dataset>/<method>/split<split>-seed<seed>-<digest>.json`` where
``digest`` hashes the whole key; an optional ``.npz`` of predictions sits next to it and is
written *before* the JSON, so an existing JSON always means a complete run. Files are written to a
temporary name in the same folder and moved into place with :func:`os.replace` (atomic on POSIX
and Windows): a killed process leaves at worst a stray ``.tmp`` file, never a truncated record.
"""
import hashlib
import io
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["RunSpec", "RecordStore", "library_versions", "atomic_write_bytes"]


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RunSpec:
    """Everything that identifies one run.

    >>> spec = RunSpec.make("uci", "yacht", "ProbMix", split=3, hparams={"beta": 0.0, "alpha": 0.5})
    >>> spec.hparams, spec.describe()
    ((('alpha', 0.5), ('beta', 0.0)), 'uci/mlp/yacht/ProbMix[alpha=0.5,beta=0.0] split 3 seed 0')
    >>> spec.relpath().parent.as_posix(), len(spec.digest())
    ('records/uci/mlp/yacht/ProbMix', 16)
    >>> other = RunSpec.make("uci", "yacht", "ProbMix", split=4, hparams=dict(spec.hparams))
    >>> other.group_key() == spec.group_key(), other.digest() == spec.digest()  # same group, another run
    (True, False)
    """

    experiment: str
    dataset: str
    method: str
    split: int
    seed: int = 0
    arch: str = "mlp"
    hparams: tuple = ()  # sorted (name, value) pairs
    train: tuple = ()  # sorted (name, value) pairs: epochs, lr, batch_size, eval_every
    extra: tuple = field(default=(), compare=True)  # other settings that change the result

    @staticmethod
    def make(experiment, dataset, method, split, seed=0, arch="mlp", hparams=None, train=None, extra=None):
        """A spec from dicts of ``hparams``, ``train`` settings and ``extra`` settings."""
        items = lambda d: tuple(sorted((d or {}).items()))  # noqa: E731
        return RunSpec(experiment, dataset, method, int(split), int(seed), arch, items(hparams), items(train), items(extra))

    def key(self):
        """The key as a JSON-able dict (stored in the record)."""
        return {
            "experiment": self.experiment,
            "dataset": self.dataset,
            "arch": self.arch,
            "method": self.method,
            "split": self.split,
            "seed": self.seed,
            "hparams": dict(self.hparams),
            "train": dict(self.train),
            "extra": dict(self.extra),
        }

    def digest(self):
        """16 hex digits of the SHA-1 of the whole key."""
        return hashlib.sha1(_canonical(self.key()).encode()).hexdigest()[:16]

    def group_key(self):
        """Runs with equal group keys differ only by split and seed: they can share a step."""
        return (self.experiment, self.dataset, self.arch, self.method, self.hparams, self.train, self.extra)

    def relpath(self):
        """The record's path relative to ``out``."""
        return Path(
            "records", self.experiment, self.arch, self.dataset, self.method,
            f"split{self.split}-seed{self.seed}-{self.digest()}.json",
        )

    def describe(self):
        """A one-line label of the run."""
        hp = ",".join(f"{k}={v}" for k, v in self.hparams)
        return f"{self.experiment}/{self.arch}/{self.dataset}/{self.method}[{hp}] split {self.split} seed {self.seed}"


def library_versions():
    """The versions of Python, torch, Pyro, numpy and pyro_probmix (stored in every record).

    >>> versions = library_versions()
    >>> sorted(versions), versions["numpy"] == np.__version__
    (['numpy', 'pyro', 'pyro_probmix', 'python', 'torch'], True)
    """
    import pyro
    import torch

    import pyro_probmix

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "pyro_probmix": pyro_probmix.__version__,
    }


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temporary file, then :func:`os.replace`), creating
    missing parent folders.

    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name, "a", "b", "note.txt")
    >>> atomic_write_bytes(path, b"hello")
    >>> path.read_bytes(), [p.name for p in path.parent.iterdir()]  # no temporary file left
    (b'hello', ['note.txt'])
    >>> tmp.cleanup()
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class RecordStore:
    """The records under ``out``.

    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = RecordStore(tmp.name)
    >>> spec = RunSpec.make("uci", "yacht", "ERM", split=0)
    >>> store.exists(spec)
    False
    >>> path = store.write(spec, {"metrics": {"test": {"nll": 1.5}}}, {"pred": np.arange(3)})
    >>> store.exists(spec), store.read(spec)["metrics"], store.read(spec)["key"]["dataset"]
    (True, {'test': {'nll': 1.5}}, 'yacht')
    >>> store.arrays(path)["pred"].tolist(), len(store.all("uci"))
    ([0, 1, 2], 1)
    >>> tmp.cleanup()
    """

    def __init__(self, out):
        self.out = Path(out)

    def path(self, spec):
        """The path of the record of ``spec``."""
        return self.out / spec.relpath()

    def exists(self, spec):
        """Whether the run ``spec`` is recorded."""
        return self.path(spec).is_file()

    def write(self, spec, record, arrays=None):
        """Write ``record`` (a JSON-able dict; the key is added) and optional ``arrays``."""
        path = self.path(spec)
        record = {"key": spec.key(), "digest": spec.digest(), **record}
        if arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
            atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
            record["arrays"] = path.with_suffix(".npz").name
        atomic_write_bytes(path, (json.dumps(record, indent=1, default=_json_default) + "\n").encode())
        return path

    def read(self, spec):
        """The record of ``spec`` (a dict)."""
        return json.loads(self.path(spec).read_text())

    def arrays(self, record_path_or_record):
        """The arrays saved with a record (given as a dict or the path of its JSON file), as a
        dict of numpy arrays, or ``None`` when it has none."""
        if isinstance(record_path_or_record, dict):
            rec = record_path_or_record
            path = self.out / RunSpec.make(**_spec_args(rec["key"])).relpath()
        else:
            path = Path(record_path_or_record)
            rec = json.loads(path.read_text())
        if "arrays" not in rec:
            return None
        with np.load(path.with_name(rec["arrays"])) as z:
            return {k: z[k] for k in z.files}

    def all(self, experiment=None):
        """Every record (dicts), optionally of one experiment; unreadable files are skipped."""
        base = self.out / "records"
        if experiment is not None:
            base = base / experiment
        out = []
        if not base.is_dir():
            return out
        for path in sorted(base.rglob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out


def _spec_args(key):
    return {
        "experiment": key["experiment"], "dataset": key["dataset"], "method": key["method"],
        "split": key["split"], "seed": key["seed"], "arch": key["arch"], "hparams": key["hparams"],
        "train": key["train"], "extra": key.get("extra", {}),
    }


def spec_from_key(key):
    return RunSpec.make(**_spec_args(key))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
