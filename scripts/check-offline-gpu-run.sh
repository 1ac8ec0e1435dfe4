#!/usr/bin/env bash
# Checks what scripts/gpu-run.sh wrote on a machine without a GPU (CI): the report and raw
# log exist, at least 10 GPU tests are listed and every one is SKIPPED, and the benchmark,
# PyTorch anchor and training steps each report that there is no GPU.
#
#   scripts/check-offline-gpu-run.sh OUT_DIR
set -euo pipefail
out=${1:?usage: check-offline-gpu-run.sh OUT_DIR}
report="$out/report.md"
fail() { echo "offline GPU run: $*" >&2; cat "$report" >&2 || true; exit 1; }
[ -s "$report" ] || fail "no report.md"
[ -s "$out/raw.log" ] || fail "no raw.log"
listed=$(grep -c '^| gpu_[a-z0-9_]* | [A-Z_]* |' "$report" || true)
skipped=$(grep -c '^| gpu_[a-z0-9_]* | SKIPPED |' "$report" || true)
[ "$listed" -ge 10 ] || fail "only $listed GPU tests listed"
[ "$skipped" = "$listed" ] || fail "$skipped of $listed GPU tests SKIPPED"
for section in 'Benchmark' 'PyTorch anchor' 'Training example on the GPU'; do
  grep -q "^## $section.*: SKIPPED\$" "$report" || fail "the $section step did not report SKIPPED"
done
grep -q '^| total | ' "$report" || fail "no elapsed-time table"
echo "offline GPU run: $listed GPU tests SKIPPED; benchmark, anchor and training report no GPU"
