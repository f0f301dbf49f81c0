#!/bin/bash
# The sweeps behind docs/results/, run by the code that trained the committed per-run data.
#
#   bash scripts/results_sweep.sh ITEM [ITEM ...]
#
# ITEM: toy-regression, toy-classification, a UCI folder name (yacht, bostonHousing, energy,
# concrete, wine-quality-red, kin8nm, power-plant, naval-propulsion-plant,
# protein-tertiary-structure) or stocks. Items run one after another, JOBS worker processes
# (default 1) of one torch thread each: JOBS=2 for both cores on one item, or two of these
# commands side by side; a run's numbers do not depend on either. The code is the commit
# RESULTS_COMMIT below, checked out once into .results-code/ (a git worktree), so the package's
# fingerprint stays the one of the committed records while main moves on. Records go to
# results/<experiment>/ of this checkout; a killed sweep resumes from its records and checkpoints
# (the same command again). results/ is not committed: at the end of a session, save what an
# unfinished item has done with `python scripts/sweep_state.py save ITEM` and commit sweep-state/;
# this script restores it first, so the next session's machine goes on from there. Then
# scripts/publish_results.sh writes the tables into docs/results/; docs/results.md says which
# pages come from which run.
set -euo pipefail
RESULTS_COMMIT=38b321a
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CODE=$ROOT/.results-code
DATA=${PROBMIX_DATA:-$ROOT/../shared/data}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -d "$CODE" ] || git -C "$ROOT" worktree add --detach "$CODE" "$RESULTS_COMMIT"
[ "$(git -C "$CODE" rev-parse --short=7 HEAD)" = "$RESULTS_COMMIT" ] || { echo "$CODE is not at $RESULTS_COMMIT" >&2; exit 1; }
"$PYTHON" "$ROOT/scripts/sweep_state.py" restore
cd "$CODE"
export PYTHONPATH=$CODE
sweep() { nice -n 10 "$PYTHON" -m pyro_probmix.experiments "$@" --jobs "${JOBS:-1}" --threads 1 --compile --no-report --quiet; }
NINE_METHODS_AND_M_ERM="ERM Mix LocKMix M-Mix LocKM-Mix ProbMix LocKProbMix M-ProbMix LocKM-ProbMix M-ERM"
for item in "$@"; do
  echo "=== $item start $(date -u +%FT%T)"
  case $item in
    toy-regression|toy-classification)
      sweep "$item" --runs 10 --methods $NINE_METHODS_AND_M_ERM --out "$ROOT/results/$item" ;;
    stocks)  # issue 11's protocol: 3 seeds x 1500 epochs, alpha in {0.1, 1}, beta = 0, chosen on seed 0
      sweep stocks --splits 0-2 --select-splits 1 --alphas 0.1 1.0 --betas 0 --methods $NINE_METHODS_AND_M_ERM \
        --data-root "$DATA/stocks" --out "$ROOT/results/stocks" ;;
    *)
      sweep uci --datasets "$item" --data-root "$DATA/uci" --out "$ROOT/results/uci-controls" ;;
  esac
  echo "=== $item end $(date -u +%FT%T)"
done
