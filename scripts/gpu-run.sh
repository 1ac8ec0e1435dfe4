#!/usr/bin/env bash
# Runs the packed GPU binaries (scripts/gpu-build.sh) on a GPU machine and writes a report.
#
#   scripts/gpu-run.sh PACK_DIR OUT_DIR
#
# On the device tool's H200, from the repository root, with the pack carried:
#   run(command="scripts/gpu-run.sh target/gpu-pack $OUT", carry=["target/gpu-pack"],
#       timeout_s=420)
# It needs no toolkit and no install there: the CUDA and cuDNN libraries come from the
# python3 environment's nvidia wheels (PyTorch cu130), libcuda from the driver.
#
# Steps, each under its own `timeout -k`, all within GPU_RUN_BUDGET seconds (default 330;
# a step that would start past the budget is reported as not run):
#   1. each GPU test (tests/gpu_cudnn.rs) in its own process: PASS, FAIL, TIMEOUT or
#      SKIPPED (no CUDA device), with cuDNN's error log on (CUDNN_LOGLEVEL_DBG=2) and
#      RUST_BACKTRACE=1;
#   2. compute-sanitizer memcheck, one process per light test (the golden sweep, the TF32
#      shape, the memory loops and the step kernels' 224-call sweep are left out; the
#      step kernels' half-type test runs every one of their kernels);
#   3. the benchmark (examples/bench_gpu.rs), every row time-bounded;
#   4. the PyTorch anchor (scripts/bench_gpu_anchor.py) on the same rows, and the table of
#      ours / PyTorch per row;
#   5. the training example on the GPU (examples/train.rs --gpu).
# About 3 to 5 minutes on an H200.
#
# OUT_DIR receives at most six files, none in a subfolder: report.md (the header is written
# first; each step appends its results and elapsed time as it ends), raw.log (every step's
# full output, appended as it ends), sanitizer.log, bench_gpu.json, bench_torch.json and
# train.log. A run cut short still leaves everything up to the step it was in. Copy
# OUT_DIR/report.md to gpu-reports/DATE-COMMIT-DEVICE.md (with raw.log beside it as
# DATE-COMMIT-DEVICE.raw.log) and commit both.
#
# Exit status: 0 when every step ran and nothing failed (SKIPPED is not a failure), 1
# otherwise. GPU_RUN_LIBS prepends library folders (CI uses it to run this runner against
# the toolchain's libraries and the libcuda link stub, where every test reports SKIPPED).
set -uo pipefail
cd "$(dirname "$0")/.."

pack=${1:-target/gpu-pack}
out=${2:?usage: gpu-run.sh PACK_DIR OUT_DIR}
budget=${GPU_RUN_BUDGET:-330}
t0=$(date +%s)
mkdir -p "$out"
out=$(cd "$out" && pwd)
report="$out/report.md"
raw="$out/raw.log"
: > "$raw"
work=$(mktemp -d)
if ! tar -C "$work" -xJf "$pack/gpu-bin.tar.xz"; then
  echo "# GPU report: cannot unpack $pack/gpu-bin.tar.xz" > "$report"
  exit 1
fi
bin="$work/bin"

site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
libs=$(ls -d "$site"/nvidia/*/lib "$site"/nvidia/cu13/lib 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${GPU_RUN_LIBS:+$GPU_RUN_LIBS:}${libs}${LD_LIBRARY_PATH:-}"
export RUST_BACKTRACE=1 CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG=stderr PYTHONUNBUFFERED=1

failures=0
elapsed_lines=""
# step NAME MAX_SECONDS OUTFILE CMD...: runs CMD under a timeout no later than the budget
# allows; appends its output to raw.log; sets $status (124 = timed out, 125 = not run) and
# $secs.
step() {
  local name=$1 max=$2 file=$3
  shift 3
  local left=$((budget - ($(date +%s) - t0)))
  local limit=$((max < left - 5 ? max : left - 5))
  if [ "$limit" -lt 5 ]; then
    status=125 secs=0
    echo "not run: the ${budget}s budget is spent" > "$file"
    echo "== $name: not run (the ${budget}s budget is spent)" >> "$raw"
    elapsed_lines+="| $name | not run |"$'\n'
    return
  fi
  local s=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$file" 2>&1
  status=$?
  secs=$(($(date +%s) - s))
  { echo "== $name (exit status $status, ${secs}s, limit ${limit}s)"; cat "$file"; echo; } >> "$raw"
  elapsed_lines+="| $name | ${secs} s |"$'\n'
}

verdict() { # exit status, output file -> PASS / FAIL / TIMEOUT / SKIPPED / NOT_RUN
  if [ "$1" = 125 ]; then echo NOT_RUN
  elif [ "$1" = 124 ] || [ "$1" = 137 ]; then echo TIMEOUT
  elif [ "$1" != 0 ]; then echo FAIL
  elif grep -q "skipped: no \(CUDA device\|torch\)" "$2"; then echo SKIPPED
  else echo PASS
  fi
}

# --- header, written before anything runs ---
commit=$(sed -n 's/^commit //p' "$work/BUILD")
device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
cudnn=$(python3 -c 'import importlib.metadata as m; print(m.version("nvidia-cudnn-cu13"))' 2>/dev/null)
torchv=$(timeout 60 python3 -c 'import torch; print(torch.__version__, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null)
{
  echo "# GPU report: ${device:-no GPU}"
  echo
  echo "| field | value |"
  echo "|---|---|"
  echo "| commit | \`$commit\` |"
  echo "| run at | $(date -u +%Y-%m-%dT%H:%M:%SZ) |"
  echo "| device | ${device:-none (nvidia-smi found no GPU)} |"
  echo "| driver | ${driver:-none} |"
  echo "| CUDA (driver) | ${cuda:-unknown} |"
  echo "| cuDNN library (nvidia-cudnn-cu13 wheel) | ${cudnn:-not installed in python3} |"
  echo "| PyTorch | ${torchv:-not importable} |"
  sed 's/^/| build | /; s/$/ |/' "$work/BUILD"
  echo "| command | \`scripts/gpu-run.sh $pack OUT\` (budget ${budget}s) |"
  echo
  echo "## Tests (tests/gpu_cudnn.rs, one process each)"
  echo
  echo "| test | result | time |"
  echo "|---|---|---|"
} > "$report"
{ echo "== ldd -r gpu_cudnn (missing libraries, undefined symbols)"
  ldd -r "$bin/gpu_cudnn" 2>&1 | grep -E 'not found|undefined' || echo "none"; echo; } >> "$raw"

# --- 1. tests ---
tests=$("$bin/gpu_cudnn" --list 2>/dev/null | sed -n 's/: test$//p')
[ -n "$tests" ] || { echo "| (no test could be listed: see raw.log) | FAIL | |" >> "$report"; failures=$((failures + 1)); }
declare -A counts=()
for name in $tests; do
  case $name in
    *golden*) max=120 ;;
    *memory*) max=75 ;;
    *) max=45 ;;
  esac
  step "$name" "$max" "$work/test.out" "$bin/gpu_cudnn" --exact "$name" --test-threads=1 --nocapture
  v=$(verdict "$status" "$work/test.out")
  counts[$v]=$((${counts[$v]:-0} + 1))
  case $v in PASS|SKIPPED) ;; *) failures=$((failures + 1)) ;; esac
  echo "| $name | $v | ${secs} s |" >> "$report"
done
{
  echo
  echo "${counts[PASS]:-0} passed, $((${counts[FAIL]:-0} + ${counts[TIMEOUT]:-0})) failed (${counts[TIMEOUT]:-0} timed out), ${counts[SKIPPED]:-0} skipped, ${counts[NOT_RUN]:-0} not run"
  echo
} >> "$report"

# --- 2. memcheck ---
san=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer \
  /opt/nvidia/*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1)
sanlog="$out/sanitizer.log"
: > "$sanlog"
{
  echo "## compute-sanitizer memcheck"
  echo
  echo "| test | exit | errors | time |"
  echo "|---|---|---|---|"
} >> "$report"
if [ -z "$san" ]; then
  echo "| (compute-sanitizer not found) | - | - | - |" >> "$report"
elif [ "${counts[PASS]:-0}" = 0 ]; then
  echo "| (not run: no GPU test passed) | - | - | - |" >> "$report"
else
  for name in $tests; do
    case $name in *golden*|*tf32*|*memory*|*step_kernels_match_the_loop*) continue ;; esac
    step "memcheck $name" 90 "$work/san.out" "$san" --tool memcheck --error-exitcode 99 \
      "$bin/gpu_cudnn" --exact "$name" --test-threads=1
    errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) error.*/\1/p' "$work/san.out" | tail -n 1)
    { echo "== $name"; head -c 2000000 "$work/san.out"; } >> "$sanlog"
    [ "$status" = 0 ] && [ "${errors:-x}" = 0 ] || failures=$((failures + 1))
    echo "| $name | $status | ${errors:-none reported} | ${secs} s |" >> "$report"
  done
fi
echo >> "$report"

# --- 3. benchmark, 4. PyTorch anchor ---
step "bench_gpu" 110 "$work/bench.out" "$bin/bench_gpu" --json "$out/bench_gpu.json" --min-time 0.3 --max-time 2
bench_v=$(verdict "$status" "$work/bench.out")
[ "$bench_v" = PASS ] || [ "$bench_v" = SKIPPED ] || failures=$((failures + 1))
{ echo "## Benchmark (examples/bench_gpu.rs): $bench_v"; echo; echo '```'; cat "$work/bench.out"; echo '```'; echo; } >> "$report"
step "PyTorch anchor" 100 "$work/anchor.out" python3 scripts/bench_gpu_anchor.py \
  --json "$out/bench_torch.json" --ours "$out/bench_gpu.json"
anchor_v=$(verdict "$status" "$work/anchor.out")
[ "$anchor_v" = PASS ] || [ "$anchor_v" = SKIPPED ] || failures=$((failures + 1))
{
  echo "## PyTorch anchor (scripts/bench_gpu_anchor.py): $anchor_v"
  echo
  echo '```'
  sed '/^| shape/,$d' "$work/anchor.out"
  echo '```'
  echo
  sed -n '/^| shape/,$p' "$work/anchor.out"
  echo
} >> "$report"

# --- 5. training example ---
step "train --gpu" 60 "$out/train.log" "$bin/train" --gpu --out "$work/train"
train_v=$(verdict "$status" "$out/train.log")
[ "$train_v" = PASS ] || [ "$train_v" = SKIPPED ] || failures=$((failures + 1))
{
  echo "## Training example on the GPU (examples/train.rs --gpu): $train_v"
  echo
  echo '```'
  grep -E '^(model|epoch +(1|5|10|15) |final|GRU path|skipped)' "$out/train.log" || tail -n 5 "$out/train.log"
  echo '```'
  echo
  echo "## Elapsed"
  echo
  echo "| step | time |"
  echo "|---|---|"
  printf '%s' "$elapsed_lines"
  echo "| total | $(($(date +%s) - t0)) s |"
  echo
  echo "$failures failed step(s). Raw output of every step: raw.log; memcheck output: sanitizer.log."
} >> "$report"
echo "report: $report ($failures failed)"
[ "$failures" = 0 ]
