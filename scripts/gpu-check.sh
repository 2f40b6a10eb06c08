#!/usr/bin/env bash
# One-step GPU check for the candle trainer: builds lightgen with `--features cuda` (unless
# LIGHTGEN_BIN points at a CUDA build), trains the `base` preset for a few hundred steps on
# random latents and T5-XXL-sized features, and reports ms/step, tokens/s and the peak GPU
# memory (polled from nvidia-smi). Runs on any CUDA machine (driver ≥ 580 for CUDA 13):
#
#   scripts/gpu-check.sh [STEPS] [BATCH]
#
# Building needs a CUDA toolkit (nvcc on PATH or CUDA_HOME) and CUDA_COMPUTE_CAP (90 for
# H100/H200); see the README's "GPU" section for a toolkit from PyPI wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-300}"
BATCH="${2:-64}"
BIN="${LIGHTGEN_BIN:-}"
if [[ -z "$BIN" ]]; then
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    cargo build --release --features cuda
    BIN=target/release/lightgen
fi
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
PEAK_FILE="$(mktemp)"
echo 0 > "$PEAK_FILE"
( while sleep 0.5; do
      used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
      [[ "$used" -gt "$(cat "$PEAK_FILE")" ]] && echo "$used" > "$PEAK_FILE"
  done ) &
POLL=$!
trap 'kill $POLL 2>/dev/null || true' EXIT
"$BIN" train-check --preset base --steps "$STEPS" --batch "$BATCH" --grid 16 --device cuda
kill $POLL 2>/dev/null || true
echo "peak GPU memory: $(cat "$PEAK_FILE") MiB (nvidia-smi, whole device)"
