"""
The committed result tables are what ``report`` builds from the committed per-run data
(``docs/results/<experiment>_runs.csv``), so every reported number can be regenerated with one
command: ``python -m pyro_probmix.experiments report --from-csv FILE --out DIR``.
"""
from pathlib import Path

import pytest

from pyro_probmix.experiments.cli import main

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


@pytest.mark.parametrize("page, runs", [("toy-regression", 1000), ("toy-classification", 1000), ("uci-controls", 2080)])
def test_committed_tables_are_rebuilt_from_the_committed_per_run_csv(tmp_path, page, runs):
    csv = RESULTS / f"{page}_runs.csv"
    assert main(["report", "--from-csv", str(csv), "--out", str(tmp_path), "--no-figures", "--quiet"]) == 0
    rebuilt = (tmp_path / "report" / "report.md").read_text().split("### Figures")[0]
    committed = (RESULTS / f"{page}.md").read_text()
    # the page's title is its own (the report titles itself by experiment); the rest is the report
    assert rebuilt.split("\n", 1)[1] == committed.split("\n", 1)[1]
    # one code version: every reported run carries the same code fingerprint
    rows = csv.read_text().splitlines()[1:]
    assert len(rows) == runs and len({row.rsplit('"code"":""', 1)[1][:16] for row in rows}) == 1
