#!/usr/bin/env bash
# One command for a lent GPU machine (no internet needed): picks a Python whose torch sees CUDA,
# runs the CUDA-marked tests, the bf16 throughput / MFU benchmark for both training stages and
# sampling at the default and large model sizes, and full-domain (1536 x 1536) sampling members/s
# with peak device memory, each under a time limit (all in at most ~8 minutes on one H200), then
# prints bf16 samples/s, model FLOP utilisation and a table of every figure. Results:
# benchmarks/results/gpu/*.json and all of them in one file, benchmarks/results/gpu/gpu_check.json.
# The train and sample benchmarks (--quick) run on request (--only=...,train,sample).
#
#   bash scripts/gpu_check.sh            # on the GPU machine
#   bash scripts/gpu_check.sh --dry      # the same steps on CPU (no GPU needed; checked by a test)
#   bash scripts/gpu_check.sh --only=tests,throughput   # a subset of: tests, throughput, domain, train, sample
#
# Python: $HPCSR_PYTHON, else .venv/bin/python, else python3. When the venv's torch is a CPU build
# and python3 has a CUDA torch of the same Python version, an overlay venv (system packages first,
# then the venv's packages for everything else) is made in $TMPDIR. A missing module stops only
# the steps that need it (reported). Exit code: 0 all steps passed, 1 a step failed, 2 bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
OUT=$ROOT/benchmarks/results/gpu
ONLY=tests,throughput,domain
for a in "$@"; do
  case "$a" in
    --dry) DRY=1 ;;
    --out=*) OUT=${a#--out=} ;;
    --only=*) ONLY=${a#--only=} ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$a' (allowed: --dry, --out=DIR, --only=tests,throughput,domain,train,sample)" >&2; exit 2 ;;
  esac
done
for s in ${ONLY//,/ }; do
  case "$s" in tests|throughput|domain|train|sample) ;; *) echo "gpu_check.sh: --only: unknown step '$s' (allowed: tests, throughput, domain, train, sample)" >&2; exit 2 ;; esac
done
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
T0=$(date +%s)
say() { printf '[gpu_check %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

cuda_ok() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
has_torch() { "$1" -c 'import torch' >/dev/null 2>&1; }
pyver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

overlay_venv() {  # $1: python with CUDA torch, $2: the repo venv's python; prints the overlay's python
  local sys_py=$1 venv_py=$2 dir="${TMPDIR:-/tmp}/hpcsr-gpu-overlay" site
  site=$("$venv_py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
  [ -x "$dir/bin/python" ] || "$sys_py" -m venv --system-site-packages --without-pip "$dir" >/dev/null || return 1
  # .pth entries go after the system site-packages: the CUDA torch wins, the venv supplies the rest
  echo "$site" > "$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hpcsr_venv.pth"
  echo "$dir/bin/python"
}

pick_python() {
  local c venv=$ROOT/.venv/bin/python
  if [ -n "${HPCSR_PYTHON:-}" ]; then echo "$HPCSR_PYTHON"; return 0; fi
  if [ "$DRY" = 1 ]; then
    for c in "$venv" python3 python; do has_torch "$c" && { echo "$c"; return 0; }; done
    return 1
  fi
  for c in "$venv" python3 python; do cuda_ok "$c" && { echo "$c"; return 0; }; done
  if [ -x "$venv" ]; then  # the venv has the packages but a CPU torch: borrow a CUDA torch
    for c in python3 python; do
      if cuda_ok "$c" && [ "$(pyver "$c")" = "$(pyver "$venv")" ]; then overlay_venv "$c" "$venv" && return 0; fi
    done
  fi
  return 1
}

PY=$(pick_python) || {
  if [ "$DRY" = 1 ]; then echo "gpu_check.sh: no Python with torch found (tried .venv/bin/python, python3, python): run scripts/setup.sh" >&2
  else echo "gpu_check.sh: no Python whose torch sees a CUDA GPU (tried \$HPCSR_PYTHON, .venv/bin/python, python3, python; nvidia-smi: $(nvidia-smi -L 2>&1 | head -1)). Set HPCSR_PYTHON=/path/to/python with a CUDA torch, or run with --dry" >&2
  fi
  exit 1
}
DEVICE=cuda
[ "$DRY" = 1 ] && DEVICE=cpu
say "python $PY ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")' 2>&1)); mode $([ "$DRY" = 1 ] && echo 'DRY (CPU)' || echo GPU)"
[ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/[gpu_check] /'

missing() {  # prints the modules among $@ that $PY cannot import
  "$PY" - "$@" <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}

declare -a SUMMARY=()
FAILED=0
step() {  # step NAME LIMIT_S MODULES -- command...: run with a time limit, record the outcome
  local name=$1 limit=$2 mods=$3 lack start code
  shift 4
  lack=$(missing $mods)
  if [ -n "$lack" ]; then
    say "SKIP $name: $PY cannot import $lack"
    SUMMARY+=("$name: skipped (missing modules: $lack)"); FAILED=1; return
  fi
  say "== $name (limit ${limit} s): $*"
  start=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$limit" "$@"
  code=$?
  local took=$(( $(date +%s) - start ))
  case $code in
    0) SUMMARY+=("$name: ok (${took} s)") ;;
    124|137) SUMMARY+=("$name: TIMED OUT after ${limit} s"); FAILED=1 ;;
    *) SUMMARY+=("$name: FAILED (exit $code, ${took} s)"); FAILED=1 ;;
  esac
}

if [ "$DRY" = 1 ]; then
  export OMP_NUM_THREADS=1  # a shared CPU: more threads than free cores makes OpenMP spin (10x slower)
  THROUGHPUT_ARGS=(--device cpu --model tiny --patch 20 --batch 1 --repeats 1 --quick)
  DOMAIN_ARGS=(--device cpu --quick)
else
  THROUGHPUT_ARGS=(--device cuda --model default,large --quick)
  DOMAIN_ARGS=(--device cuda)
fi

# 1. CUDA-marked tests (they skip, with the reason, without a GPU)
mapfile -t CUDA_FILES < <(grep -l "mark.cuda" tests/test_*.py)
wanted tests && step "pytest -m cuda" 150 "pytest torch" -- "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider "${CUDA_FILES[@]}"

# 2-3. the training and sampling benchmarks (their --quick variants), on the GPU when they take --device
bench() {  # bench NAME LIMIT MODULES
  local name=$1 script=benchmarks/$1.py extra=()
  if [ ! -f "$script" ]; then SUMMARY+=("benchmark $name: MISSING ($script)"); FAILED=1; return; fi
  "$PY" "$script" --help 2>/dev/null | grep -q -- "--device" && extra=(--device "$DEVICE")
  step "benchmark $name" "$2" "$3" -- "$PY" "$script" --quick --out "$OUT/$name.json" "${extra[@]}"
}
wanted train && bench train 110 "torch h5py deepspeed"
wanted sample && bench sample 110 "torch h5py netCDF4"

# 4. bf16 samples/s and model FLOP utilisation, both training stages and sampling, default and large sizes
wanted throughput && step "bf16 throughput and MFU" 180 "torch" -- "$PY" benchmarks/gpu_throughput.py "${THROUGHPUT_ARGS[@]}" --out "$OUT/gpu_throughput.json"

# 5. full-domain sampling: members/s at 1536 x 1536 with peak device memory
wanted domain && step "full-domain sampling" 140 "torch h5py netCDF4" -- "$PY" benchmarks/gpu_sample_domain.py "${DOMAIN_ARGS[@]}" --out "$OUT/gpu_sample_domain.json"

# summary: bf16 samples/s, MFU, and every figure written above
"$PY" - "$OUT" "$T0" <<'EOF'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from run_all import table
out = Path(sys.argv[1])
entries = []
for path in sorted(out.glob("*.json")):
    if path.stat().st_mtime < float(sys.argv[2]) or path.name == "gpu_check.json":
        continue  # an earlier run's file, or the combined file itself
    data = json.loads(path.read_text())
    entries.append({"name": path.stem, "status": "ok", "result": data} if isinstance(data.get("figures"), list)
                   else {"name": path.stem, "status": "unreadable", "error": "no figures list"})
tp = out / "gpu_throughput.json"
if tp.is_file():
    data = json.loads(tp.read_text())
    device = data["meta"]["device"]
    for fig in data["figures"]:
        mfu = f"{fig['mfu']:.1%}" if fig.get("mfu") is not None else "n/a (no peak for this device)"
        print(f"[gpu_check] {device}: {fig['name']}: {fig['value']:.4g} {fig['unit']} "
              f"({fig['ratio']:.2f}x fp32), {fig['achieved_tflops']:.4g} TFLOP/s, MFU {mfu}")
if entries:
    print(table(entries))
    from hpcsr.atomic import write_json_atomic
    combined = {e["name"]: e.get("result", e) for e in entries}
    print(f"[gpu_check] wrote {write_json_atomic(out / 'gpu_check.json', combined, indent=2)}")
EOF
say "summary:"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
say "results in $OUT; total $(( $(date +%s) - T0 )) s"
exit $FAILED
