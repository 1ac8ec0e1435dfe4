#!/usr/bin/env bash
# Builds the GPU test and benchmark binaries (features `cudnn`) on a machine without a GPU,
# with the project's CUDA toolchain (scripts/cuda-toolchain.sh), and packs them with xz for
# carrying to a GPU machine (the device tool carries at most 64 MiB a call).
#
#   scripts/gpu-build.sh [TOOLCHAIN_PREFIX]   # default: $CUDA_TOOLCHAIN or target/cuda-tk
#
# Output: target/gpu-pack/gpu-bin.tar.xz holding bin/gpu_cudnn (tests/gpu_cudnn.rs),
# bin/bench_gpu (examples/bench_gpu.rs), bin/train (examples/train.rs) and BUILD (the full
# commit hash, a dirty flag, the date and rustc's version). Run it there with
# scripts/gpu-run.sh (its header has the exact command).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${1:-${CUDA_TOOLCHAIN:-target/cuda-tk}}
if [ ! -x "$prefix/nvidia/cu13/bin/nvcc" ]; then
  scripts/cuda-toolchain.sh "$prefix" >/dev/null
fi
eval "$(scripts/cuda-toolchain.sh "$prefix" --env)"

target=target/cuda-release
pack=target/gpu-pack
rm -rf "$pack" && mkdir -p "$pack/bin"

# candle-kernels with its MoE/GGUF static kernels stubbed (scripts/candle-kernels-lite.sh:
# the pack never calls them, and they are 90% of its compile). The patch makes cargo
# rewrite Cargo.lock's candle-kernels entry; the committed file is put back on exit.
lite=$PWD/target/candle-kernels-lite
scripts/candle-kernels-lite.sh "$lite"
lock=$(mktemp)
cp Cargo.lock "$lock"
trap 'cp "$lock" Cargo.lock; rm -f "$lock"' EXIT
patch=(--config "patch.crates-io.candle-kernels.path=\"$lite\"")

# The test binary: cargo prints its path in the JSON messages.
test_bin=$(cargo test "${patch[@]}" --release --features cudnn --target-dir "$target" --test gpu_cudnn \
  --no-run --message-format=json |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_cudnn":
        print(m["executable"])')
cargo build "${patch[@]}" --release --features cudnn --target-dir "$target" \
  --example bench_gpu --example train
cp "$lock" Cargo.lock
cp "$test_bin" "$pack/bin/gpu_cudnn"
cp "$target/release/examples/bench_gpu" "$pack/bin/bench_gpu"
cp "$target/release/examples/train" "$pack/bin/train"
strip "$pack/bin/"*

dirty=$(git diff --quiet HEAD -- . ':!gpu-reports' && echo clean || echo dirty)
{
  echo "commit $(git rev-parse HEAD) ($dirty)"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "rustc $(rustc --version)"
  echo "toolchain CUDA 13.0 wheels, cuDNN 9.19 (scripts/cuda-toolchain.sh)"
  echo "candle-kernels without its MoE/GGUF kernels (scripts/candle-kernels-lite.sh)"
} > "$pack/BUILD"
tar -C "$pack" -cJf "$pack/gpu-bin.tar.xz" bin BUILD
rm -rf "$pack/bin"
ls -l "$pack"
cat "$pack/BUILD"
