#!/usr/bin/env bash
# Runs the fused CPU path's tests on emulated CPUs without AVX-512: gru-core's unit tests
# (the packed AVX2 kernels, the gemm fallback) and the golden and fused-path suites under
# `qemu-x86_64 -cpu Haswell` (AVX2 + FMA), and gru-core's unit tests under `-cpu Nehalem`
# (no AVX: the baseline code and gemm). Installs qemu-user with apt-get when it is missing.
#
#   scripts/check-isas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  apt-get install -y -q qemu-user >/dev/null
fi
bins() {  # the test executables cargo builds for "$@"
  cargo test --no-run --message-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}
core=$(bins -p gru-core --lib)
suites=$(bins --test golden --test fused)
[ -n "$core" ] && [ -n "$suites" ] || { echo "check-isas: test executables not found" >&2; exit 1; }
run() {  # qemu's notes on CPU features TCG lacks (hle, rtm, ...) are not ours
  qemu-x86_64 -cpu "$1" "${@:2}" -q 2>&1 | grep -v "TCG doesn't support requested feature"
}
for cpu in Haswell Nehalem; do
  echo "== gru-core under qemu -cpu $cpu"
  run "$cpu" $core
done
for b in $suites; do
  echo "== $(basename "$b") under qemu -cpu Haswell"
  run Haswell "$b"
done
