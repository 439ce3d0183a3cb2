#!/usr/bin/env bash
# Every GPU measurement of issue 14 in one go (about 6-8 minutes on one H200), outputs under $OUT (default
# ./gpu-results):
#   1. bench_train.py at mini (32 x 128 tokens, bf16): each TC path checked against a float64 reference on the
#      GPU, then MLM and TACO tokens/s, TACO/MLM step time, peak memory TACO/MLM and MFU per TC path
#      (gather, sparse, sparse_bag, shared);
#   2. the same at paper scale: small, blocks of 256, the largest micro-batch of 2048/1024/512/256 that fits;
#   3. the same at the micro-batch of experiments/configs/mlm_vs_taco_paper.yaml (256 x 256);
#   4. bench_probe.py --device cuda --only small (time per snapshot);
#   5. dynamics.probe on CUDA vs on the CPU on one run (random-initialised mini snapshots), the two stores'
#      metric tables compared row by row (benchmarks/compare_stores.py, 1e-6 absolute).
# Each step has its own time limit and log; a failing step is reported and the others still run.
#   bash benchmarks/gpu_all.sh                                  # on the GPU machine
#   TACO_BENCH_DEVICE=cpu TACO_BENCH_QUICK=1 bash benchmarks/gpu_all.sh   # the same steps, tiny, on a CPU
# Python: $PYTHON, else .venv/bin/python if present, else python3. Wheels in .whl/ (if any) are installed first.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
DEVICE=${TACO_BENCH_DEVICE:-cuda}
QUICK=${TACO_BENCH_QUICK:-0}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
WORK=$(mktemp -d)
CACHE="$WORK/cache"
LOG="$OUT/gpu_all.log"
: >"$LOG"
declare -a SUMMARY=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to the combined log (and to $OUT/NAME.txt
  local name=$1 limit=$2   # for bench_* and compare_*: at most 8 files come back from $OUT)
  shift 2
  local own=/dev/null
  case $name in bench_*|compare_*) own="$OUT/$name.txt" ;; esac
  echo "=== $name ($(date +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$own" | tee -a "$LOG"
  local rc=$?
  SUMMARY+=("$name: rc $rc, $((SECONDS - t0)) s")
  echo "=== $name: rc $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
}

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device $DEVICE"
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PYTHON" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "tokenizers", "numpy", "scipy", "sklearn", "yaml", "safetensors", "tqdm",
             "matplotlib", "datasets"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name} MISSING ({type(exc).__name__}){' - not needed by these steps' if name == 'datasets' else ''}")
import torch
print("  cuda available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} 2>&1 | tee -a "$LOG"

if [ "$QUICK" = 1 ]; then
  MINI=(--presets tiny --batch 4 --block 32 --steps 4)
  PAPER=(--presets tiny --block 64 --steps 4)
  SEARCH=(--batch 4)
  PAPER_CFG=(--presets tiny --block 64 --batch 2 --steps 4)
  PATHS=gather,sparse,sparse_bag,shared
  PROBE_SMALL=(--quick)
  WORDS=(--synthetic-words 60000)
else
  MINI=(--presets mini --batch 32 --block 128 --steps 10)
  PAPER=(--presets small --block 256 --steps 10)
  SEARCH=(--batch-search 2048,1024,512,256)
  PAPER_CFG=(--presets small --block 256 --batch 256 --steps 10)
  PATHS=gather,sparse,sparse_bag,shared
  PROBE_SMALL=()
  WORDS=()
fi
[ "$DEVICE" = cpu ] && SEARCH=(--batch 4)  # the micro-batch search catches CUDA out-of-memory errors only

BENCH=("$PYTHON" benchmarks/bench_train.py --device "$DEVICE" --precision bf16 --corpus synthetic --cache "$CACHE"
       --parts paths,speed,memory,mfu --tc-methods "$PATHS" "${WORDS[@]}")
step bench_train_mini 150 "${BENCH[@]}" "${MINI[@]}"
step bench_train_paper 210 "${BENCH[@]}" "${PAPER[@]}" "${SEARCH[@]}"
step bench_train_paper_config 150 "${BENCH[@]}" "${PAPER_CFG[@]}"
step bench_probe_small 120 "$PYTHON" benchmarks/bench_probe.py --device "$DEVICE" --only small "${PROBE_SMALL[@]}"

# The probe on the GPU and on the CPU, same run, same probe set: stored metrics must agree.
RUN="$WORK/probe-run"
"$PYTHON" - "$WORK" <<'EOF' 2>&1 | tee -a "$LOG"
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_probe import make_run
run = make_run(Path(sys.argv[1]), "mini", 4, 8192)
run.rename(Path(sys.argv[1]) / "probe-run")
print("probe run:", Path(sys.argv[1]) / "probe-run")
EOF
PROBE=("$PYTHON" -m dynamics.probe "$RUN" --no-figures --no-progress --probe-blocks 64)
step probe_on_device 120 "${PROBE[@]}" --device "$DEVICE" --out "$WORK/store-device"
step probe_on_cpu 180 "${PROBE[@]}" --device cpu --out "$WORK/store-cpu"
step compare_stores 60 "$PYTHON" benchmarks/compare_stores.py "$WORK/store-device" "$WORK/store-cpu" --atol 1e-6

{
  echo "=== summary"
  printf '%s\n' "${SUMMARY[@]}"
  echo "=== key lines"
  grep -h -E "ratio|tokens/s|fits|TC path|FAILED|stores A vs B|time per snapshot" "$OUT"/bench_*.txt "$OUT"/compare_stores.txt 2>/dev/null
} | tee "$OUT/summary.txt" | tee -a "$LOG"
rm -rf "$WORK"
