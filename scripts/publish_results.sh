#!/bin/bash
# Copy the report of finished sweeps into docs/results/ (the committed pages and per-run CSVs).
#
#   bash scripts/publish_results.sh toy-regression | toy-classification
#   bash scripts/publish_results.sh uci DATASET [DATASET ...]     # the complete UCI sets only
#
# Only records of the results' code version (FINGERPRINT below, that of RESULTS_COMMIT in
# results_sweep.sh) are taken, and a UCI set must have all its runs; the report is written by the
# code of .results-code/. The page keeps its title line; the report's figures section is left out
# (the pages link their figures). Then: python -m pytest tests/test_committed_results.py. Used for every committed page of 38b321a.
set -euo pipefail
FINGERPRINT=dc485d2875f5056e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CODE=$ROOT/.results-code
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
report() { (cd "$CODE" && PYTHONPATH=$CODE "$PYTHON" -m pyro_probmix.experiments report --out "$1" --quiet); }
experiment=$1; shift
if [ "$experiment" = uci ]; then
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
else
  out=$ROOT/results/$experiment; page=$experiment
fi
report "$out"
dst=$ROOT/docs/results
title=$(head -1 "$dst/$page.md")
{ echo "$title"; tail -n +2 "$out/report/report.md" | sed '/^### Figures/,$d'; } > "$dst/$page.md"
exp=$(basename "$(ls "$out"/report/*_runs.csv)" _runs.csv)
cp "$out/report/${exp}_runs.csv" "$dst/${page}_runs.csv"
cp "$out/report/summary.csv" "$dst/${page}-summary.csv"
[ "$experiment" = uci ] || for f in "$dst/${exp}"_*.png; do
  [ -f "$out/report/figures/$(basename "$f")" ] && cp "$out/report/figures/$(basename "$f")" "$f"
done
echo "published $page; update its title line and docs/results.md by hand"
