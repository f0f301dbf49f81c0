#!/usr/bin/env bash
# The GPU path of pyro-probmix in one prepared run of a few minutes, from the repository root:
#
#   bash benchmarks/gpu_check.sh            # outputs under $OUT (default: ./gpu_check_out)
#
# (a) a Python with torch (CUDA build), pyro-ppl and pytest: $PYTHON if set, else python3 when it
#     has them, else a venv (/tmp/probmix-gpu-venv, reusing python3's own packages) filled offline
#     from the wheels in .whl/ (pip --no-index: the machine may have no network). The package
#     itself is imported from this checkout (PYTHONPATH), not installed.
# (b) the test suite's CUDA cases: tests/test_cuda.py and every case parametrised over
#     device="cuda" (pytest -k cuda);
# (c) benchmarks/bench_handler.py --device cuda, and exact KNNGraph on the GPU (bench_knn.py);
# (d) a batched UCI group on the GPU (20 power-plant splits in one step, ERM and ProbMix, 100
#     epochs) when UCI data are found ($PROBMIX_DATA, ./shared/data/uci or ../shared/data/uci),
#     else a batched toy-regression group (synthetic data), saying so.
#
# Without a CUDA device it says so and skips (b)-(d) (exit 0); when nvidia-smi sees a GPU but
# torch cannot use it (a CPU build of torch), it fails (exit 1). Each part has its own time
# limit; a failed part is reported in $OUT/summary.txt and the script goes on (exit 1 at the end).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
FAILED=0
say() { echo "[gpu_check] $*" | tee -a "$SUMMARY"; }

# part NAME LIMIT_S COMMAND...: runs COMMAND with its output in $OUT/NAME.txt, and times it
part() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    rc=$?
    say "$name: exit $rc in $(($(date +%s) - start)) s (limit $limit s): $*"
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        tail -n 5 "$OUT/$name.txt" | sed 's/^/    /' | tee -a "$SUMMARY"
    fi
}

# ---------------------------------------------------------------------------- (a) environment
has_stack() { "$1" -c "import torch, pyro, pytest" >/dev/null 2>&1; }
PY=${PYTHON:-python3}
if ! has_stack "$PY"; then
    if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
        say "$PY lacks torch/pyro/pytest: installing the wheels of .whl/ offline into /tmp/probmix-gpu-venv"
        python3 -m venv --system-site-packages /tmp/probmix-gpu-venv &&
            /tmp/probmix-gpu-venv/bin/pip install --no-index --find-links .whl \
                torch pyro-ppl numpy pytest hypothesis scipy >"$OUT/install.txt" 2>&1 ||
            { say "offline install failed (see install.txt)"; exit 1; }
        PY=/tmp/probmix-gpu-venv/bin/python
    else
        say "$PY lacks torch, pyro-ppl or pytest and there is no .whl/ folder of wheels to install offline:"
        say "carry wheels (pip download torch pyro-ppl pytest hypothesis scipy -d .whl) or set PYTHON"
        exit 1
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import platform, pyro, torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA build {torch.version.cuda}), "
      f"pyro {pyro.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device 0: {torch.cuda.get_device_name(0)}")
EOF
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 && GPU_SEEN=1 || GPU_SEEN=0
if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    if [ "$GPU_SEEN" = 1 ]; then
        say "FAIL: nvidia-smi sees a GPU but torch cannot use it (a CPU build of torch?): carry a CUDA wheel in .whl/"
        exit 1
    fi
    say "SKIPPED (b)-(d): no CUDA device here (nvidia-smi found none and torch.cuda.is_available() is False)"
    exit 0
fi

# ----------------------------------------------------------------------- (b) CUDA test cases
part pytest_cuda 300 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py \
    tests/test_graphs.py tests/test_handler.py tests/test_metrics.py tests/test_experiments_io.py -k cuda

# ------------------------------------------------------------------------- (c) benchmarks
part bench_handler_cuda 180 "$PY" benchmarks/bench_handler.py --device cuda --steps 200
part bench_knn_cuda 240 "$PY" benchmarks/bench_knn.py --device cuda --method exact --rows 100000 1000000 \
    --dims 8 64 --data gaussian

# ----------------------------------------------------------------- (d) a batched run group
UCI=""
for root in "${PROBMIX_DATA:-}" shared/data/uci ../shared/data/uci; do
    if [ -n "$root" ] && [ -f "$root/power-plant/data.txt" ]; then UCI=$root; break; fi
done
if [ -n "$UCI" ]; then
    part uci_group_cuda 300 "$PY" -m pyro_probmix.experiments uci --data-root "$UCI" --datasets power-plant \
        --methods ERM ProbMix --splits 0-19 --group-size 20 --epochs 100 --alphas 0.1 --betas 0 \
        --select-splits 1 --device cuda --out "$OUT/uci" --quiet
else
    say "no UCI data (set PROBMIX_DATA or place shared/data/uci): a batched toy-regression group instead"
    part toy_group_cuda 300 "$PY" -m pyro_probmix.experiments toy-regression --methods ERM ProbMix --runs 20 \
        --group-size 20 --epochs 200 --alphas 0.1 --betas 0 --select-splits 1 --device cuda \
        --out "$OUT/toy" --quiet
fi
say "done: $([ "$FAILED" = 0 ] && echo 'every part passed' || echo 'some part FAILED (see above)')"
exit "$FAILED"
