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

Each record carries the :func:`~pyro_probmix.experiments.fingerprint.fingerprint` of the code that trained it and of the data files it
read; :meth:`RecordStore.status` tells a sweep whether a record is ``ok``, ``missing``,
``unreadable`` (not JSON, truncated, ``{}``, not this run's, its arrays unreadable) or ``stale``
(another fingerprint), naming the difference. A group's training state is saved in a
:class:`Checkpoint` while it trains.
"""
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import ExperimentError
from .fingerprint import fingerprint_difference

__all__ = ["RunSpec", "RecordStore", "library_versions", "atomic_write_bytes", "Checkpoint", "RecordError",
           "VOLATILE_FIELDS"]

#: record fields that vary between two trainings of the same run (timing, grouping, versions):
#: everything else of a record is a function of the run's key, code and data
VOLATILE_FIELDS = ("finished", "wall_time_s", "group")


class RecordError(ExperimentError):
    """Records under ``--out`` that cannot be used (unreadable, truncated, ``{}``)."""


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

    def noise_seed(self):
        """The seed of the run's random streams (training noise, validation and test draws): a
        function of its whole key only."""
        return int(self.digest(), 16) >> 1

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
        """Whether the run ``spec`` has a record file (readable or not: see :meth:`status`)."""
        return self.path(spec).is_file()

    def status(self, spec, expected=None):
        """``(state, detail)`` of the record of ``spec``: ``("ok", "")``, ``("missing", "")``,
        ``("unreadable", why)`` or, when its fingerprint differs from ``expected``,
        ``("stale", what differs)``.

        >>> tmp = tempfile.TemporaryDirectory()
        >>> store, spec = RecordStore(tmp.name), RunSpec.make("uci", "yacht", "ERM", split=0)
        >>> store.status(spec)
        ('missing', '')
        >>> _ = store.path(spec).parent.mkdir(parents=True)
        >>> _ = store.path(spec).write_text("{}")
        >>> store.status(spec)
        ('unreadable', 'not a record of this run (no key/metrics)')
        >>> _ = store.write(spec, {"metrics": {}, "fingerprint": {"code": "a", "data": {}}})
        >>> store.status(spec, {"code": "b", "data": {}})
        ('stale', 'code a -> b')
        >>> tmp.cleanup()
        """
        path = self.path(spec)
        if not path.is_file():
            return "missing", ""
        try:
            record = self._load(path)
        except RecordError as e:
            return "unreadable", str(e)
        if record.get("digest") != spec.digest():
            return "unreadable", f"its digest {record.get('digest')} is not this run's {spec.digest()}"
        if expected is not None:
            diff = fingerprint_difference(record.get("fingerprint"), expected)
            if diff:
                return "stale", diff
        return "ok", ""

    @staticmethod
    def _load(path):
        """A record file's dict; raises :class:`RecordError` (why) for a truncated or garbage one."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RecordError(f"not readable JSON ({type(e).__name__}: {e})") from None
        if not (isinstance(record, dict) and isinstance(record.get("key"), dict) and "metrics" in record):
            raise RecordError("not a record of this run (no key/metrics)")
        if "arrays" in record:
            arrays = Path(path).with_name(str(record["arrays"]))
            try:
                with zipfile.ZipFile(arrays) as z:
                    bad = z.testzip()
            except (OSError, zipfile.BadZipFile) as e:
                raise RecordError(f"its arrays {arrays.name} are unreadable ({e})") from None
            if bad is not None:
                raise RecordError(f"its arrays {arrays.name} are corrupt ({bad})")
        return record

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

    def scan(self, experiment=None):
        """``(records, problems)``: every readable record (dicts), optionally of one experiment,
        and ``(path, why)`` for every record file that is not one."""
        base = self.out / "records"
        if experiment is not None:
            base = base / experiment
        records, problems = [], []
        if not base.is_dir():
            return records, problems
        for path in sorted(base.rglob("*.json")):
            try:
                records.append(self._load(path))
            except RecordError as e:
                problems.append((path, str(e)))
        return records, problems

    def all(self, experiment=None):
        """Every record (dicts), optionally of one experiment; raises :class:`RecordError`
        naming each record file that cannot be read (rerun the sweep: it retrains them)."""
        records, problems = self.scan(experiment)
        if problems:
            listed = "; ".join(f"{p.relative_to(self.out)}: {why}" for p, why in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise RecordError(
                f"{len(problems)} unreadable record(s) under {self.out}: {listed}{more}; rerun the sweep "
                f"to retrain them, or delete them"
            )
        return records


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


class Checkpoint:
    """The training state of one group at ``path``, saved atomically (:func:`torch.save`) at most
    every ``every_s`` seconds, so a killed sweep resumes a long group where it was.

    >>> tmp = tempfile.TemporaryDirectory()
    >>> ckpt = Checkpoint(Path(tmp.name, "g.pt"), every_s=0)
    >>> ckpt.load() is None, ckpt.due()
    (True, True)
    >>> ckpt.save({"epoch": 3})
    >>> ckpt.load()
    {'epoch': 3}
    >>> ckpt.remove(); ckpt.path.exists()
    False
    >>> tmp.cleanup()
    """

    def __init__(self, path, every_s=10.0):
        self.path, self.every_s = Path(path), float(every_s)
        self._last = time.monotonic()

    def due(self):
        """Whether ``every_s`` seconds have passed since the last save (or the start)."""
        return time.monotonic() - self._last >= self.every_s

    def load(self):
        """The saved state, or ``None`` when there is none (or it cannot be read: training
        starts over)."""
        import torch

        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable state means: start over, and say so
            print(f"checkpoint {self.path} unreadable ({type(e).__name__}); its group trains from the start",
                  file=sys.stderr)
            return None

    def save(self, state):
        """Write ``state`` atomically."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        self._last = time.monotonic()

    def remove(self):
        """Delete the saved state (its group is recorded)."""
        self.path.unlink(missing_ok=True)
