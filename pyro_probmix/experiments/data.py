# SPDX-License-Identifier: Apache-2.0
"""
Datasets of the experiments: the toy problems of §6.1, the UCI benchmark with its standard
splits (§6.2); the stock windows of §6.3 are in
:mod:`~pyro_probmix.experiments.stock_data`. Nothing is downloaded here (see ``download``).

Every loader returns a :class:`SplitData`: standardised float32 arrays for training, validation
and test, and the target's mean and standard deviation so that predictions can be reported on the
original scale (an NLL gains ``log sigma_y``). Statistics come from the training part only.
"""
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ExperimentError",
    "SplitData",
    "UCIDataset",
    "default_uci_root",
    "default_stocks_root",
    "toy_regression",
    "toy_rings",
    "PAPER_UCI_DATASETS",
]

#: the eight datasets of Tables 1 and 3 (protein-tertiary-structure is an extra row)
PAPER_UCI_DATASETS = (
    "bostonHousing",
    "energy",
    "wine-quality-red",
    "concrete",
    "power-plant",
    "yacht",
    "kin8nm",
    "naval-propulsion-plant",
)
EXTRA_UCI_DATASETS = ("protein-tertiary-structure",)

_REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding pyro_probmix/


class ExperimentError(Exception):
    """Bad input to an experiment (unknown name, missing file, bad data): the CLI prints the
    message and exits with status 2, without a traceback.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     try:
    ...         UCIDataset(root, "yacht")
    ...     except ExperimentError as e:
    ...         print(str(e).split(":")[0])
    unknown UCI dataset 'yacht'
    """


@dataclass
class SplitData:
    """One train/validation/test split; arrays are float32 (labels int64 for classification).

    >>> x, y = np.zeros((4, 3), np.float32), np.ones(4, np.float32)
    >>> data = SplitData(x, y, x[:2], y[:2], x[:2], y[:2], y_mean=10.0, y_std=2.0)
    >>> data.in_shape, data.y_mean + data.y_std * float(data.y_test[0])  # back to the original scale
    ((3,), 12.0)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray  # standardised like y_train (regression)
    y_mean: float = 0.0
    y_std: float = 1.0
    extras: dict = field(default_factory=dict)  # e.g. prediction grids of the toy problems
    info: dict = field(default_factory=dict)  # sizes, periods, ... (goes into the record)

    @property
    def in_shape(self):
        """The shape of one input row."""
        return tuple(self.x_train.shape[1:])


# ----------------------------------------------------------------------------- helpers
def default_data_root():
    """The data folder, which holds ``uci/`` and ``stocks/`` (one convention for the CLI,
    ``download`` and the tutorials): ``$PROBMIX_DATA`` when set; else ``../shared/data`` beside
    the checkout when it exists; else the user's cache folder ``$XDG_CACHE_HOME/pyro-probmix``
    (default ``~/.cache/pyro-probmix``; ``%LOCALAPPDATA%\\pyro-probmix`` on Windows), never a folder
    inside the installed package.

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"PROBMIX_DATA": "/srv/probmix"}):
    ...     print(default_data_root().as_posix(), default_uci_root().as_posix())
    /srv/probmix /srv/probmix/uci
    """
    if os.environ.get("PROBMIX_DATA"):
        return Path(os.environ["PROBMIX_DATA"])
    shared = _REPO_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "pyro-probmix"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pyro-probmix"


def default_uci_root():
    """``uci/`` of :func:`default_data_root`."""
    return default_data_root() / "uci"


def default_stocks_root():
    """``stocks/`` of :func:`default_data_root`."""
    return default_data_root() / "stocks"


def _stats(a, axis=0):
    mean = a.mean(axis)
    std = a.std(axis)
    std = np.where(std > 0, std, 1.0)
    return mean, std


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def standardise(x_train, y_train, x_val, y_val, x_test, y_test, info=None, extras=None):
    """Standardise features and target with the statistics of the training part."""
    x_mean, x_std = _stats(x_train)
    y_mean, y_std = float(y_train.mean()), float(y_train.std())
    if not y_std > 0:
        raise ExperimentError("the target is constant on the training part: it cannot be standardised")
    xs = [_f32((x - x_mean) / x_std) for x in (x_train, x_val, x_test)]
    ys = [_f32((y - y_mean) / y_std) for y in (y_train, y_val, y_test)]
    out = SplitData(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], y_mean, y_std, extras or {}, info or {})
    out.extras.setdefault("x_mean", x_mean)
    out.extras.setdefault("x_std", x_std)
    return out


def _validation_split(n, split, fraction=0.2):
    """Indices (train, val) of a random ``fraction`` of ``n`` training rows, fixed by ``split``."""
    perm = np.random.default_rng(10_000 + split).permutation(n)
    n_val = int(round(fraction * n))
    return perm[n_val:], perm[:n_val]


# ----------------------------------------------------------------------------- toy data
def toy_regression(run, n=100, n_test=100, val_fraction=0.2, grid_size=241):
    """§6.1: ``y = x^3 + eps``, ``eps ~ N(0, 9)``, ``n`` points with ``x ~ U(-4, 4)``, test points
    with ``x ~ U(4, 6)``; 20% of the ``n`` points are the validation part. ``run`` seeds it.

    >>> data = toy_regression(0, n=20, n_test=5, grid_size=7)
    >>> data.x_train.shape, data.x_val.shape, data.x_test.shape, data.extras["x_grid"].shape
    ((16, 1), (4, 1), (5, 1), (7, 1))
    >>> bool(((data.extras["x_test_raw"] > 4) & (data.extras["x_test_raw"] < 6)).all())
    True
    >>> round(float(data.y_train.std()), 4)  # standardised with the training part's statistics
    1.0
    >>> np.array_equal(toy_regression(0, n=20, n_test=5).y_test, data.y_test)  # same run, same data
    True
    """
    rng = np.random.default_rng(run)
    x = rng.uniform(-4, 4, n)
    y = x**3 + 3.0 * rng.standard_normal(n)
    x_test = rng.uniform(4, 6, n_test)
    y_test = x_test**3 + 3.0 * rng.standard_normal(n_test)
    tr, va = _validation_split(n, run, val_fraction)
    grid = np.linspace(-6, 6, grid_size)
    data = standardise(
        x[tr, None], y[tr], x[va, None], y[va], x_test[:, None], y_test,
        info={"n_train": len(tr), "n_val": len(va), "n_test": n_test},
    )
    data.extras.update(
        x_grid_raw=grid,
        x_grid=_f32((grid[:, None] - data.extras["x_mean"]) / data.extras["x_std"]),
        x_train_raw=x[tr], y_train_raw=y[tr], x_test_raw=x_test, y_test_raw=y_test,
    )
    return data


def _rings(rng, n, radii=(0.5, 1.5, 2.5), noise_var=0.09):
    y = rng.permutation(np.arange(n) % len(radii))
    omega = rng.uniform(0, 2 * np.pi, n)
    r = np.asarray(radii)[y]
    x = np.stack([r * np.cos(omega), r * np.sin(omega)], 1) + math.sqrt(noise_var) * rng.standard_normal((n, 2))
    return x, y


def toy_rings(run, n=100, n_test=1000, val_fraction=0.2, grid_size=81):
    """§6.1: three noisy rings ``r = 0.5, 1.5, 2.5`` with noise ``N(0, 0.09 I)``, ``n`` points in
    (near) equal numbers per class; the test points come from the same distribution.

    >>> data = toy_rings(0, n=30, n_test=12, grid_size=5)
    >>> data.x_train.shape, data.x_test.shape, data.extras["x_grid"].shape
    ((24, 2), (12, 2), (25, 2))
    >>> np.bincount(data.y_test).tolist(), data.y_test.dtype
    ([4, 4, 4], dtype('int64'))
    """
    rng = np.random.default_rng(run)
    x, y = _rings(rng, n)
    x_test, y_test = _rings(rng, n_test)
    tr, va = _validation_split(n, run, val_fraction)
    x_mean, x_std = _stats(x[tr])
    lin = np.linspace(-3.5, 3.5, grid_size)
    xx, yy = np.meshgrid(lin, lin)
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    return SplitData(
        _f32((x[tr] - x_mean) / x_std), y[tr].astype(np.int64),
        _f32((x[va] - x_mean) / x_std), y[va].astype(np.int64),
        _f32((x_test - x_mean) / x_std), y_test.astype(np.int64),
        extras={
            "grid_xx": xx, "grid_yy": yy, "x_grid": _f32((grid - x_mean) / x_std),
            "x_train_raw": x[tr], "y_train_raw": y[tr],
        },
        info={"n_train": len(tr), "n_val": len(va), "n_test": n_test},
    )


# ----------------------------------------------------------------------------- UCI
def _read_indices(path, what):
    try:
        values = np.loadtxt(path, ndmin=1)
    except OSError as e:
        raise ExperimentError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ExperimentError(f"{path}: not a list of integer indices ({e})") from None
    if values.size == 0 or not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise ExperimentError(f"{path}: expected integer indices, one per line")
    return values.astype(np.int64)


class UCIDataset:
    """A dataset folder in the layout of Hernández-Lobato & Adams / Gal & Ghahramani:
    ``data.txt`` (whitespace-separated numbers), ``index_features.txt``, ``index_target.txt``
    (0-based columns), ``index_train_<i>.txt`` / ``index_test_<i>.txt`` (0-based rows) and
    optionally ``n_splits.txt``. Any such folder works, not only the paper's datasets.

    A dataset ``tiny`` of 10 rows, 2 features and a target, with one split:

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = Path(tmp.name, "tiny")
    >>> folder.mkdir()
    >>> np.savetxt(folder / "data.txt", np.random.default_rng(0).normal(size=(10, 3)))
    >>> files = {"index_features": "0 1", "index_target": "2",
    ...          "index_train_0": "0 1 2 3 4 5 6 7", "index_test_0": "8 9"}
    >>> for name, text in files.items():
    ...     _ = (folder / f"{name}.txt").write_text(text)
    >>> ds = UCIDataset(tmp.name, "tiny")
    >>> ds.num_splits, ds.features.tolist(), ds.target
    (1, [0, 1], 2)
    >>> split = ds.split(0)  # 20% of the 8 training rows validate
    >>> split.x_train.shape, split.x_val.shape, split.x_test.shape
    ((6, 2), (2, 2), (2, 2))
    >>> tmp.cleanup()
    """

    def __init__(self, root, name):
        self.root = Path(root)
        self.name = name
        self.path = self.root / name
        if not self.path.is_dir():
            available = available_uci_datasets(self.root)
            hint = (
                f"; datasets under {self.root}: {', '.join(available)}"
                if available
                else f"; {self.root} holds no dataset: pass --data-root DIR, set $PROBMIX_DATA (the folder holding uci/), or run "
                f"`python -m pyro_probmix.experiments download`"
            )
            raise ExperimentError(f"unknown UCI dataset {name!r}: no folder {self.path}{hint}")
        data_file = self.path / "data.txt"
        if not data_file.is_file():
            raise ExperimentError(f"missing file {data_file} (the dataset's data)")
        try:
            self.data = np.loadtxt(data_file, ndmin=2)
        except ValueError as e:
            raise ExperimentError(f"{data_file}: not a table of numbers ({e})") from None
        bad = ~np.isfinite(self.data)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ExperimentError(
                f"{data_file} holds {int(bad.sum())} NaN/inf value(s), the first at row {row}, "
                f"column {col}: clean the data first"
            )
        self.features = _read_indices(self.path / "index_features.txt", "the feature columns")
        target = _read_indices(self.path / "index_target.txt", "the target column")
        if target.size != 1:
            raise ExperimentError(f"{self.path / 'index_target.txt'}: expected one target column, got {target.size}")
        self.target = int(target[0])
        cols = self.data.shape[1]
        for c in list(self.features) + [self.target]:
            if not 0 <= c < cols:
                raise ExperimentError(f"{self.path}: column index {c} out of range for data.txt with {cols} columns")
        self.num_splits = self._count_splits()

    def _count_splits(self):
        n_file = self.path / "n_splits.txt"
        if n_file.is_file():
            return int(_read_indices(n_file, "the number of splits")[0])
        i = 0
        while (self.path / f"index_train_{i}.txt").is_file():
            i += 1
        if i == 0:
            raise ExperimentError(f"{self.path} has no split files index_train_0.txt, index_test_0.txt, ...")
        return i

    def check_split(self, split):
        if not (isinstance(split, int) and 0 <= split < self.num_splits):
            raise ExperimentError(
                f"split {split} out of range for {self.name}: it has {self.num_splits} splits "
                f"(0..{self.num_splits - 1})"
            )

    def files(self, split):
        """The files that :meth:`split` reads for ``split`` (the record's data fingerprint)."""
        names = ["data.txt", "index_features.txt", "index_target.txt", f"index_train_{split}.txt",
                 f"index_test_{split}.txt"]
        if (self.path / "n_splits.txt").is_file():
            names.append("n_splits.txt")
        return [self.path / n for n in names]

    def split(self, split, val_fraction=0.2):
        """Split ``split``: the standard train/test rows; ``val_fraction`` of the train rows
        (random, fixed by ``split``) are the validation part."""
        self.check_split(split)
        n = self.data.shape[0]
        parts = {}
        for part in ("train", "test"):
            f = self.path / f"index_{part}_{split}.txt"
            if not f.is_file():
                raise ExperimentError(f"missing file {f} (split {split} of {self.name})")
            idx = _read_indices(f, f"the {part} rows")
            if idx.min() < 0 or idx.max() >= n:
                raise ExperimentError(f"{f}: row index out of range for data.txt with {n} rows")
            parts[part] = idx
        train, test = parts["train"], parts["test"]
        shared = np.intersect1d(train, test)
        if shared.size:
            raise ExperimentError(
                f"{self.name} split {split}: {shared.size} row(s) are both training and test rows "
                f"(first: row {int(shared[0])} of index_train_{split}.txt and index_test_{split}.txt); "
                f"the test rows must be held out"
            )
        if len(train) < 5:
            raise ExperimentError(f"{self.name} split {split}: only {len(train)} training rows")
        tr, va = _validation_split(len(train), split, val_fraction)
        x, y = self.data[:, self.features], self.data[:, self.target]
        return standardise(
            x[train[tr]], y[train[tr]], x[train[va]], y[train[va]], x[test], y[test],
            info={"n_train": len(tr), "n_val": len(va), "n_test": len(test)},
        )


def available_uci_datasets(root):
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "data.txt").is_file())
