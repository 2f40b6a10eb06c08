#!/usr/bin/env bash
# Builds `lightgen --features cuda` on a machine with no GPU and no system CUDA toolkit, from
# the CUDA 13.0 PyPI wheels (13.0 = what driver R580 runs; newer nvcc emits PTX it cannot JIT).
# Follows ../shared/reference/cuda-build.md, MODE=linked, for candle 0.9 (bindgen_cuda):
#
#   scripts/build-cuda.sh [CARGO_PROFILE]      # default: release; `dev` reuses the test build
#
# The binary needs libcuda.so.1 (the driver) and libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10 and libcudart.so.13 on the GPU host: PyTorch's cu130 wheels ship them, or
# copy them from $CUDA_DIR/venv/.../nvidia/cu13/lib and set LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-release}"
CUDA_DIR="${CUDA_DIR:-$PWD/target/cuda-toolkit}"
mkdir -p "$CUDA_DIR"
if [[ ! -x "$CUDA_DIR/venv/bin/python" ]]; then
    python3 -m venv "$CUDA_DIR/venv"
    "$CUDA_DIR/venv/bin/pip" install -q \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
fi
CUDA_HOME=$("$CUDA_DIR/venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
"$CUDA_HOME/bin/nvcc" --version | tail -1

# The wheels ship versioned sonames only; the linker wants lib*.so. No wheel ships libcuda
# (the driver does): a link-time stub with soname libcuda.so.1 stands in, as the toolkit's own
# lib64/stubs does, and the driver's library replaces it at run time.
LINK="$CUDA_DIR/link/lib"
rm -rf "$LINK" && mkdir -p "$LINK"
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    ln -sf "$CUDA_HOME/lib/$so" "$LINK/${so%.so.*}.so"
done
grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\b' "$CUDA_HOME/include/cuda.h" | sort -u |
    sed 's/.*/int &(void) { return 34; }/' > "$LINK/libcuda_stub.c"
gcc -shared -fPIC -O2 -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/libcuda_stub.c"

export PATH="$CUDA_HOME/bin:$PATH"          # bindgen_cuda and cudarc run plain `nvcc`
export CUDA_ROOT="$CUDA_HOME"               # bindgen_cuda finds include/cuda.h here
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"   # no nvidia-smi here; 90 = H100/H200
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --profile "$PROFILE" --features cuda --bin lightgen
DIR=$([[ "$PROFILE" == dev ]] && echo debug || echo "$PROFILE")
echo "built target/$DIR/lightgen with CUDA (sm_$CUDA_COMPUTE_CAP)"
