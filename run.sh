#!/usr/bin/env bash
# One entry point for a fresh machine; installs what it needs into .venv (idempotently).
#   bash run.sh demo   # toy regression of the paper (§6.1): ERM vs ProbMix variants, table + plot
#   bash run.sh test   # the test suite (pytest, doctests) and the docs build (tutorials executed)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

setup() {
    # the docs extra (Sphinx 9, installed for both commands) needs Python 3.11
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "run.sh: $("$PYTHON" --version 2>&1) found; run.sh needs Python >= 3.11 (PYTHON=python3.11 bash run.sh ...)." >&2
        echo "  The library alone needs 3.10: pip install . in a 3.10 environment." >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # reinstall only when the project's requirements change
    local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "run.sh: installing torch 2.13.0, pyro-ppl and this package into $VENV (first run: a few minutes)" >&2
        # torch first, pinned to 2.13.0, the version this project is tested with (its CPU build);
        # the default index serves the build for this platform (on Linux a multi-GB CUDA one):
        # pass TORCH_INDEX_URL=<the CPU or CUDA index of pytorch.org> to choose; then pyro-ppl
        # and the package with its extras
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev,experiments,docs]"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

case "${1:-}" in
    demo)
        setup
        shift
        "$VENV/bin/python" examples/toy_regression.py "$@"
        ;;
    test)
        setup
        shift
        # two tutorials of the docs build read the real data sets: say where they are looked for
        # before minutes of tests, not after
        data=$("$VENV/bin/python" -c "from pyro_probmix.experiments.data import default_data_root; print(default_data_root())")
        if [ ! -d "$data/uci" ] || [ ! -d "$data/stocks" ]; then
            echo "run.sh: no data sets in $data (uci/ and stocks/): the docs build runs tutorials that read them." >&2
            echo "  Set PROBMIX_DATA to the folder that holds uci/ and stocks/, put it at ../shared/data beside" >&2
            echo "  this checkout, or fetch it: $VENV/bin/python -m pyro_probmix.experiments download" >&2
            exit 2
        fi
        "$VENV/bin/python" -m pytest "$@"
        echo "run.sh: building the documentation (it executes the 7 tutorials; a few minutes)" >&2
        # the site with warnings as errors; tutorials run with fewer epochs (PROBMIX_FAST)
        PROBMIX_FAST=1 "$VENV/bin/sphinx-build" -W --keep-going -q -b html docs docs/_build/html
        ;;
    *)
        echo "usage: bash run.sh demo|test [extra arguments]" >&2
        exit 2
        ;;
esac
