# SPDX-License-Identifier: Apache-2.0
"""
The four experiments of the paper as suites: task, architecture, training settings, datasets
and runs ("units"). Unit ``i`` of a dataset is split ``i`` (UCI), the toy data drawn with seed
``i`` (toy problems) or training seed ``i`` on the fixed chronological split (stocks).
"""
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .data import (
    PAPER_UCI_DATASETS,
    ExperimentError,
    UCIDataset,
    available_uci_datasets,
    default_stocks_root,
    default_uci_root,
    toy_regression,
    toy_rings,
)
from .methods import METHOD_NAMES, PAPER_STOCK_METHODS
from .stock_data import STOCK_TICKERS, stock_split

__all__ = ["Suite", "SUITES", "get_suite", "init_seed", "ALPHAS", "BETAS"]

#: the paper's grid (Appendix E.1), used for every method and experiment
ALPHAS = (0.01, 0.05, 0.1, 0.5, 1.0)
#: the label-kernel widths of the paper's grid (Appendix E.1)
BETAS = (0.0, 0.01)

UCI_ALIASES = {
    "boston": "bostonHousing",
    "naval": "naval-propulsion-plant",
    "power": "power-plant",
    "wine": "wine-quality-red",
    "protein": "protein-tertiary-structure",
}


def init_seed(*parts):
    """A stable 31-bit seed from strings and ints (the same in every process and Python).

    >>> init_seed("uci", "yacht", 0)
    2032835471
    >>> init_seed("uci", "yacht", 1) != init_seed("uci", "yacht", 0)
    True
    """
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Suite:
    """One experiment: its ``task`` (``"regression"`` or ``"classification"``), architectures
    ``archs``, the paper's ``epochs``, ``lr`` and ``hidden`` widths, the methods and datasets run
    by default, ``default_units`` (runs per dataset where the data do not fix their number),
    whether the whole grid is trained on every unit (``ablation``) and the paper's tables it
    reproduces (``paper_table``).

    >>> suite = SUITES["toy-regression"]
    >>> suite.task, suite.archs, suite.epochs, suite.hidden
    ('regression', ('mlp',), 500, (128, 64))
    >>> suite.resolve_datasets(["CUBIC"])
    ['cubic']
    >>> suite.load("cubic", 0).x_train.shape  # unit 0: the toy data drawn with seed 0
    (80, 1)
    """

    name: str
    task: str
    archs: tuple
    epochs: int
    lr: float
    hidden: tuple
    default_methods: tuple
    default_datasets: tuple
    default_units: int  # runs per dataset when the data do not fix it
    ablation: bool = False  # run the whole (alpha, beta) grid on every unit (toy ablations)
    paper_table: str = ""

    # ------------------------------------------------------------------ datasets
    def root(self, data_root=None):
        if data_root is not None:
            return Path(data_root)
        if self.name == "uci":
            return default_uci_root()
        if self.name == "stocks":
            return default_stocks_root()
        return None

    def resolve_datasets(self, requested, data_root=None):
        """Canonical dataset names; raises :class:`~pyro_probmix.experiments.data.ExperimentError`
        for unknown ones."""
        if self.name.startswith("toy"):
            valid = self.default_datasets
            out = []
            for name in requested or valid:
                if name.lower() not in [v.lower() for v in valid]:
                    raise ExperimentError(f"unknown dataset {name!r} for {self.name}; valid: {', '.join(valid)}")
                out.append(valid[[v.lower() for v in valid].index(name.lower())])
            return out
        root = self.root(data_root)
        if self.name == "uci":
            available = available_uci_datasets(root)
            if not available:
                raise ExperimentError(
                    f"no UCI dataset under {root}: pass --data-root DIR, set $PROBMIX_DATA (the folder holding uci/), or run "
                    f"`python -m pyro_probmix.experiments download`"
                )
            if not requested:
                requested = [d for d in self.default_datasets if d in available]
                if not requested:
                    raise ExperimentError(
                        f"none of the paper's datasets ({', '.join(self.default_datasets)}) is under {root}; "
                        f"name one with --datasets (available: {', '.join(available)})"
                    )
            elif [r.lower() for r in requested] == ["all"]:
                requested = available
            lookup = {a.lower(): a for a in available}
            out = []
            for name in requested:
                key = UCI_ALIASES.get(name.lower(), name).lower()
                if key not in lookup:
                    raise ExperimentError(
                        f"unknown UCI dataset {name!r}; datasets under {root}: {', '.join(available)}"
                    )
                out.append(lookup[key])
            return list(dict.fromkeys(out))
        # stocks
        out = []
        for name in requested or self.default_datasets:
            ticker = name.upper()
            path = root / f"{ticker}.csv"
            if not path.is_file():
                found = sorted(p.stem for p in root.glob("*.csv")) if root.is_dir() else []
                hint = f" (tickers under {root}: {', '.join(found)})" if found else ""
                raise ExperimentError(
                    f"unknown stock {name!r}: missing file {path}{hint}; pass --data-root DIR, set "
                    f"$PROBMIX_DATA (the folder holding stocks/), or run `python -m pyro_probmix.experiments download`"
                )
            out.append(ticker)
        return list(dict.fromkeys(out))

    def num_units(self, dataset, data_root=None):
        if self.name == "uci":
            return _uci(str(self.root(data_root)), dataset).num_splits
        return None  # any number

    def check_units(self, dataset, units, data_root=None):
        n = self.num_units(dataset, data_root)
        for u in units:
            if u < 0 or (n is not None and u >= n):
                raise ExperimentError(
                    f"split {u} out of range for {dataset}: it has {n} splits (0..{n - 1})"
                    if n is not None
                    else f"split/run index must be >= 0, got {u}"
                )

    def default_unit_list(self, dataset, data_root=None):
        n = self.num_units(dataset, data_root)
        return list(range(self.default_units if n is None else n))

    # ------------------------------------------------------------------ data
    def load(self, dataset, split, data_root=None):
        """The :class:`~pyro_probmix.experiments.data.SplitData` of unit ``split`` of ``dataset``."""
        if self.name == "toy-regression":
            return toy_regression(split)
        if self.name == "toy-classification":
            return toy_rings(split)
        if self.name == "uci":
            return _uci(str(self.root(data_root)), dataset).split(split)
        return _stock(str(self.root(data_root) / f"{dataset}.csv"))

    def data_files(self, dataset, split, data_root=None):
        """The files unit ``split`` of ``dataset`` is read from (none for the toy problems, whose
        data the code draws)."""
        if self.name == "uci":
            return _uci(str(self.root(data_root)), dataset).files(split)
        if self.name == "stocks":
            return [self.root(data_root) / f"{dataset}.csv"]
        return []

    def seed_of(self, split):
        """The training seed of unit ``split`` (UCI: 0, the split varies the data)."""
        return 0 if self.name == "uci" else split


def _stamp(path):
    """Size and mtime of a file (``None`` when absent): a cache key that changes with the file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _uci(root, name):
    return _uci_cached(root, name, _stamp(Path(root, name, "data.txt")), _stamp(Path(root, name, "n_splits.txt")))


@functools.lru_cache(maxsize=16)
def _uci_cached(root, name, *stamps):
    return UCIDataset(root, name)


def _stock(path):
    return _stock_cached(path, _stamp(path))


@functools.lru_cache(maxsize=8)
def _stock_cached(path, stamp):
    return stock_split(path)


#: experiment name -> :class:`Suite`, for ``toy-regression``, ``toy-classification``, ``uci``
#: and ``stocks``
SUITES = {
    "toy-regression": Suite(
        "toy-regression", "regression", ("mlp",), 500, 0.01, (128, 64), METHOD_NAMES[:9], ("cubic",), 10,
        ablation=True,
    ),
    "toy-classification": Suite(
        "toy-classification", "classification", ("mlp",), 500, 0.01, (128, 64), METHOD_NAMES[:9], ("rings",), 10,
        ablation=True,
    ),
    "uci": Suite(
        "uci", "regression", ("mlp",), 1000, 0.005, (128, 32), METHOD_NAMES,
        PAPER_UCI_DATASETS, 20, paper_table="Tables 1 and 3",
    ),
    "stocks": Suite(
        "stocks", "regression", ("lstm", "transformer"), 1500, 5e-4, (64,), PAPER_STOCK_METHODS, STOCK_TICKERS, 10,
        paper_table="Tables 2 and 4",
    ),
}


def get_suite(name):
    """The :class:`Suite` of experiment ``name``; raises
    :class:`~pyro_probmix.experiments.data.ExperimentError` for an unknown one.

    >>> get_suite("uci").epochs, get_suite("uci").paper_table
    (1000, 'Tables 1 and 3')
    >>> try:
    ...     get_suite("mnist")
    ... except ExperimentError as e:
    ...     print(e)
    unknown experiment 'mnist'; valid: toy-regression, toy-classification, uci, stocks
    """
    try:
        return SUITES[name]
    except KeyError:
        raise ExperimentError(f"unknown experiment {name!r}; valid: {', '.join(SUITES)}") from None
