#!/usr/bin/env bash
# Runs the packed GPU binaries (scripts/gpu-build.sh) on a GPU machine and writes a report:
# the full commit hash the binaries were built from, date, device, driver, CUDA and cuDNN
# versions, each test with PASS/FAIL, compute-sanitizer memcheck of the cuDNN tests, the
# GPU benchmark table, and the raw output.
#
#   scripts/gpu-run.sh [PACK_DIR] [REPORT_DIR]   # defaults: target/gpu-pack, gpu-reports
#
# On the device tool's machine use REPORT_DIR=$OUT so the report comes back; copy it into
# gpu-reports/ and commit it. Run from the repository root (the tests read tests/data).
# No CUDA toolkit is needed: the libraries come from the Python environment's nvidia
# wheels (PyTorch cu130); libcuda comes from the driver.
set -uo pipefail
cd "$(dirname "$0")/.."

pack=${1:-target/gpu-pack}
reports=${2:-gpu-reports}
mkdir -p "$reports"
work=$(mktemp -d)
tar -C "$work" -xJf "$pack/gpu-bin.tar.xz" || { echo "cannot unpack $pack/gpu-bin.tar.xz"; exit 1; }

site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
libs=$(ls -d "$site"/nvidia/*/lib "$site"/nvidia/cu13/lib 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"

commit=$(sed -n 's/^commit //p' "$work/BUILD")
short=$(echo "$commit" | cut -c1-12)
device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
cudnn=$(python3 -c 'import torch; print(torch.backends.cudnn.version())' 2>/dev/null || echo unknown)
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
slug=$(echo "${device:-nodevice}" | tr -c 'A-Za-z0-9' '-' | tr -s '-' | sed 's/-$//')
report="$reports/$(date -u +%Y-%m-%d)-${short:-unknown}-${slug}.md"

raw="$work/raw.txt"
results="$work/results.txt"
: > "$results"
{
  echo "== ldd -r gpu_cudnn (undefined symbols, missing libraries)"
  ldd -r "$work/bin/gpu_cudnn" 2>&1 | grep -E 'not found|undefined' || echo "none"
} > "$raw" 2>&1
# One process per test, so that each gets its own PASS/FAIL/SKIPPED from its exit status.
tests=$("$work/bin/gpu_cudnn" --list 2>/dev/null | sed -n 's/: test$//p')
for name in $tests; do
  out="$work/test-$name.txt"
  "$work/bin/gpu_cudnn" --exact "$name" --test-threads=1 --nocapture > "$out" 2>&1
  status=$?
  if [ $status -ne 0 ]; then
    verdict=FAIL
  elif grep -q "skipped: no CUDA device" "$out"; then
    verdict="SKIPPED (no CUDA device)"
  else
    verdict=PASS
  fi
  echo "| $name | $verdict |" >> "$results"
  { echo "== $name (exit status $status): $verdict"; cat "$out"; } >> "$raw"
done
[ -s "$results" ] || echo "| (no test could be listed: see raw output) | FAIL |" >> "$results"

san="$work/sanitizer.txt"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$sanitizer" ]; then
  # The cuDNN tests but the 10,000-call loop, and (unless SANITIZE_ALL=1) the golden sweep
  # and the large TF32 shape: memcheck slows kernels 10-100x. Bounded by SANITIZE_TIMEOUT
  # seconds (default 300) so that the report is always written.
  skips=(--skip gpu_memory_is_steady)
  [ "${SANITIZE_ALL:-0}" = 1 ] || skips+=(--skip gpu_golden_cases --skip gpu_tf32)
  timeout "${SANITIZE_TIMEOUT:-300}" "$sanitizer" --tool memcheck --leak-check full \
    --error-exitcode 99 "$work/bin/gpu_cudnn" --test-threads=1 "${skips[@]}" > "$san" 2>&1
  san_status=$?
else
  echo "compute-sanitizer not found" > "$san"
  san_status=127
fi

bench="$work/bench.txt"
"$work/bin/bench_gpu" --json "$reports/bench_gpu-${short:-unknown}.json" > "$bench" 2>&1
bench_status=$?

{
  echo "# GPU report: ${device:-no device}"
  echo
  echo "| field | value |"
  echo "|---|---|"
  echo "| commit | \`$commit\` |"
  echo "| run at | $stamp |"
  echo "| device | ${device:-none} |"
  echo "| driver | ${driver:-none} |"
  echo "| CUDA (driver) | ${cuda:-unknown} |"
  echo "| cuDNN (runtime, via PyTorch's wheel) | $cudnn |"
  sed 's/^/| build | /; s/$/ |/' "$work/BUILD"
  echo "| command | \`scripts/gpu-run.sh $pack $reports\` |"
  echo
  echo "## Tests (tests/gpu_cudnn.rs)"
  echo
  echo "| test | result |"
  echo "|---|---|"
  cat "$results"
  echo
  echo "$(grep -c '| PASS |' "$results") passed, $(grep -c '| FAIL |' "$results") failed, $(grep -c 'SKIPPED' "$results") skipped"
  echo
  echo "## compute-sanitizer memcheck (exit status $san_status; 0 = clean, 99 = errors, 124 = timed out)"
  echo
  echo '```'
  grep -E 'ERROR SUMMARY|LEAK SUMMARY|^test result|not found|Invalid|error' "$san" | head -n 40
  echo '```'
  echo
  echo "## Benchmark (examples/bench_gpu.rs, exit status $bench_status)"
  echo
  echo '```'
  cat "$bench"
  echo '```'
  echo
  echo "## Raw output"
  echo
  echo '```'
  cat "$raw"
  echo '```'
  echo
  echo "## Raw sanitizer output (last 200 lines)"
  echo
  echo '```'
  tail -n 200 "$san"
  echo '```'
} > "$report"
echo "report: $report"
cat "$results"
