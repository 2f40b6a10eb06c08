#!/usr/bin/env bash
# Makes libtorch 2.11 (the PyTorch of the GPU machines; tch 0.24 binds it) available at
# target/libtorch, where .cargo/config.toml points tch's build and build.rs the binary's rpath.
# PyPI ships only the CUDA build of torch for Linux x86-64; its CPU library needs nothing but
# libcupti.so.13 and libcudart.so.13 from two small NVIDIA wheels, so no full `import torch`
# (and no multi-GB CUDA stack) is needed to build or run on a CPU machine.
# Reuses a pip-installed torch of the same version (e.g. the GPU machines' own) when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.11.0
WHEELS="torch==$VERSION nvidia-cuda-cupti==13.5.25 nvidia-cuda-runtime==13.5.37"
link=target/libtorch
has() { [ -f "$1/torch/version.py" ] && grep -q "__version__ = '$VERSION" "$1/torch/version.py" && [ -d "$1/torch/lib" ]; }
has_runtime() { has "$1" && [ -f "$1/nvidia/cu13/lib/libcudart.so.13" ] && [ -f "$1/nvidia/cu13/lib/libcupti.so.13" ]; }
if has_runtime "$link"; then
  exit 0
fi
home=${LIGHTGEN_LIBTORCH_HOME:-$HOME/.cache/lightgen/libtorch-$VERSION}
if ! has_runtime "$home"; then
  sp=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || true)
  if [ -n "$sp" ] && has_runtime "$sp"; then
    home=$sp
  else
    echo "installing libtorch $VERSION from PyPI (torch wheel, ~530 MB, plus CUDA runtime and CUPTI) into $home" >&2
    rm -rf "$home.partial"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$home.partial" $WHEELS
    rm -rf "$home"
    mv "$home.partial" "$home"
  fi
fi
mkdir -p target
ln -sfn "$home" "$link"
echo "libtorch $VERSION: $(readlink -f "$link")/torch" >&2
