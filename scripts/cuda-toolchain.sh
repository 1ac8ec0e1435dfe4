#!/usr/bin/env bash
# Installs the CUDA 13.0 build pieces (nvcc, headers, runtime libraries, cuBLAS, cuRAND,
# NVRTC, cuDNN 9.19) from PyPI into PREFIX, adds the unversioned .so links the linker needs
# and a libcuda link stub (no wheel ships the driver library), and prints the environment
# for cargo. Needs no GPU and no CUDA install. The versions are those PyTorch 2.11 (cu130)
# pins, so binaries built here run with a PyTorch cu130 environment's libraries.
#
#   scripts/cuda-toolchain.sh PREFIX        # about 1 GB of downloads, 1.7 GB on disk
#   eval "$(scripts/cuda-toolchain.sh PREFIX --env)"
#   cargo build --release --features cudnn
#
# The stub (PREFIX/nvidia/cu13/lib/stubs/libcuda.so) is for linking only: every function
# returns CUDA_ERROR_STUB_LIBRARY. Never put it on a GPU machine's library path.
set -euo pipefail

prefix=${1:?usage: cuda-toolchain.sh PREFIX [--env]}
prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)
cu="$prefix/nvidia/cu13"

print_env() {
  cat <<ENV
export CUDA_HOME="$cu"
export CUDA_PATH="$cu"
export PATH="$cu/bin:\$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=90
export CUDAFORGE_THREADS=$(nproc)
export LIBRARY_PATH="$cu/lib:$cu/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
ENV
}

if [ "${2:-}" = "--env" ]; then
  print_env
  exit 0
fi

wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
  nvidia-cudnn-cu13==9.19.0.56
)
if [ ! -x "$cu/bin/nvcc" ]; then
  python3 -m pip install --quiet --no-deps --only-binary=:all: --target "$prefix" "${wheels[@]}"
fi

# Unversioned names for the linker.
cd "$cu/lib"
for lib in libcublas libcublasLt libcurand libnvrtc libcudart; do
  real=$(ls "$lib".so.* 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] && ln -sf "$real" "$lib.so"
done
ln -sf "$prefix/nvidia/cudnn/lib/libcudnn.so.9" libcudnn.so
# cuDNN's headers next to CUDA's, where candle's and cudarc's builds look.
for h in "$prefix"/nvidia/cudnn/include/*.h; do ln -sf "$h" "$cu/include/$(basename "$h")"; done

# The libcuda link stub: one function per cu* name in cuda.h, returning
# CUDA_ERROR_STUB_LIBRARY (34).
mkdir -p "$cu/lib/stubs"
if [ ! -e "$cu/lib/stubs/libcuda.so" ]; then
  grep -oE '\bcu[A-Z][A-Za-z0-9_]*' "$cu/include/cuda.h" | sort -u |
    awk '{ printf "int %s(void) { return 34; }\n", $1 }' > "$cu/lib/stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cu/lib/stubs/libcuda.so.1" "$cu/lib/stubs/libcuda_stub.c"
  ln -sf libcuda.so.1 "$cu/lib/stubs/libcuda.so"
fi

echo "installed into $prefix; $(grep -c '^int ' "$cu/lib/stubs/libcuda_stub.c") stub functions" >&2
print_env
