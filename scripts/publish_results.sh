#!/bin/bash
# Copy the report of finished sweeps into docs/results/ (the committed pages and per-run CSVs).
#
#   bash scripts/publish_results.sh toy-regression | toy-classification
#   bash scripts/publish_results.sh uci DATASET [DATASET ...]     # complete UCI sets, added to the page
#
# Only records of the results' code version (FINGERPRINT below, that of RESULTS_COMMIT in
# results_sweep.sh) are taken, and a UCI set must have all its runs; the UCI page is then the
# report of these sets' rows and the rows committed before for the other sets (their records need
# not be on this machine). The report is written by the code of .results-code/. The page keeps
# its title line; the report's figures section is left out (the pages link their figures).
# Then: python -m pytest tests/test_committed_results.py. Used for every committed page of 38b321a.
set -euo pipefail
FINGERPRINT=dc485d2875f5056e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CODE=$ROOT/.results-code
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
report() { (cd "$CODE" && PYTHONPATH=$CODE "$PYTHON" -m pyro_probmix.experiments report --out "$1" --quiet); }
experiment=$1; shift
if [ "$experiment" = uci ]; then
  # the named sets from their records, the other sets from the rows committed before
  src=$ROOT/results/uci-controls; out=$ROOT/results/uci-published; page=uci-controls
  rm -rf "$out"; mkdir -p "$out/records/uci/mlp" "$out/selection/uci/mlp"
  for d in "$@"; do
    cp -r "$src/records/uci/mlp/$d" "$out/records/uci/mlp/"
    cp "$src/selection/uci/mlp/$d.json" "$out/selection/uci/mlp/"
  done
  "$PYTHON" - "$out" "$FINGERPRINT" <<'PY'
import collections, glob, json, os, sys
out, fingerprint = sys.argv[1:]
counts = collections.Counter()
for path in glob.glob(out + "/records/**/*.json", recursive=True):
    record = json.load(open(path))
    if record["fingerprint"]["code"] != fingerprint:  # another version's run, outside this protocol
        for f in glob.glob(path[: -len(".json")] + ".*"):
            os.remove(f)
        continue
    counts[record["key"]["dataset"]] += 1
incomplete = {d: n for d, n in counts.items() if n != 611}
if incomplete:
    sys.exit(f"incomplete at {fingerprint}: {incomplete} (611 runs each)")
print(dict(counts))
PY
  report "$out"
  "$PYTHON" - "$ROOT/docs/results/uci-controls_runs.csv" "$out/report/uci_runs.csv" "$out/merged/uci_runs.csv" "$@" <<'PY'
import csv, os, sys
committed, new, merged, *datasets = sys.argv[1:]
with open(committed) as f:
    reader = csv.DictReader(f)
    columns, kept = reader.fieldnames, [row for row in reader if row["dataset"] not in datasets]
with open(new) as f:
    added = list(csv.DictReader(f))
os.makedirs(os.path.dirname(merged), exist_ok=True)
with open(merged, "w", newline="") as f:
    writer = csv.DictWriter(f, columns, lineterminator="\n")
    writer.writeheader()
    # in the report's order of the data sets (that of Table 1, then protein)
    order = ("bostonHousing", "energy", "wine-quality-red", "concrete", "power-plant", "yacht", "kin8nm",
             "naval-propulsion-plant", "protein-tertiary-structure")
    writer.writerows(sorted(kept + added, key=lambda row: order.index(row["dataset"])))
print(f"{len(kept)} committed rows of other sets + {len(added)} new rows")
PY
  out=$out/merged; runs=$out/uci_runs.csv
  (cd "$CODE" && PYTHONPATH=$CODE "$PYTHON" -m pyro_probmix.experiments report --from-csv "$runs" --out "$out" --quiet)
else
  out=$ROOT/results/$experiment; page=$experiment
  report "$out"
  runs=$(ls "$out"/report/*_runs.csv)
fi
dst=$ROOT/docs/results
title=$(head -1 "$dst/$page.md")
{ echo "$title"; tail -n +2 "$out/report/report.md" | sed '/^### Figures/,$d'; } > "$dst/$page.md"
exp=$(basename "$runs" _runs.csv)
cp "$runs" "$dst/${page}_runs.csv"
cp "$out/report/summary.csv" "$dst/${page}-summary.csv"
[ "$experiment" = uci ] || for f in "$dst/${exp}"_*.png; do
  [ -f "$out/report/figures/$(basename "$f")" ] && cp "$out/report/figures/$(basename "$f")" "$f"
done
echo "published $page; update its title line and docs/results.md by hand"
