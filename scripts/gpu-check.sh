#!/usr/bin/env bash
# One-call GPU check for the libtorch student. The binary is the one built here (no Rust on the
# GPU machines): it loads the GPU machine's own libtorch (PyTorch 2.11, the version it was built
# against) through LD_LIBRARY_PATH, and libtorch's CUDA backend from there. Then:
#   1. trains `base` and `large` (PRESETS) for STEPS steps on random latents and T5-XXL-sized
#      features at BATCH × 256 tokens, in bf16 and in f32 (PRECISIONS), and reports ms/step,
#      tokens/s, model FLOPs/s and MFU, and peak GPU memory;
#   2. unless E2E=0: distills a shapes corpus (E2E_COUNT prompts, default 1,000), trains on it
#      on the GPU (E2E_CONFIG, default configs/train-tiny.toml, for E2E_STEPS, default 200) and
#      evaluates it there (EVAL_LIMIT held-out prompts, default 40, 0 = all; EVAL_N images each,
#      default 1).
# PRECISIONS="" skips step 1, E2E=0 step 2. The quality run of the GPU preset (issue 18) is
# scripts/gpu-quality.sh.
#
#   LIGHTGEN_BIN=target/debug/lightgen scripts/gpu-check.sh [STEPS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-30}"
BATCH="${2:-64}"
BIN="${LIGHTGEN_BIN:-target/debug/lightgen}"
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$BIN" doctor | grep libtorch
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# Peak memory of each run, polled from nvidia-smi (whole device).
peak_of() {
    local peak_file status=0; peak_file="$(mktemp)"; echo 0 > "$peak_file"
    # The poller writes nothing to stdout, so a pipe on this script closes when it ends.
    ( while sleep 0.5; do
          used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
          [[ "$used" -gt "$(cat "$peak_file")" ]] && echo "$used" > "$peak_file"
      done ) >/dev/null 2>&1 &
    local poll=$!
    "$@" || status=$?
    kill $poll 2>/dev/null || true
    echo "peak GPU memory: $(cat "$peak_file") MiB (exit $status)"
}
for preset in ${PRESETS:-base large}; do
    for precision in ${PRECISIONS-bf16 f32}; do
        peak_of "$BIN" train-check --preset "$preset" --steps "$STEPS" --batch "$BATCH" --grid 16 --device cuda --precision "$precision"
    done
done
# The whole student path on the GPU: a small shapes corpus, a short tiny training run with its
# sample grid, and an evaluation, all with --device cuda.
if [[ -n "${E2E:-1}" && "${E2E:-1}" != 0 ]]; then
    RUN="$(mktemp -d)"
    "$BIN" distill -q --config configs/shapes-demo.toml --count "${E2E_COUNT:-1000}" --output-dir "$RUN" | tail -n 9
    "$BIN" train -q -m "$RUN/shapes-demo/manifest.json" -c "${E2E_CONFIG:-configs/train-tiny.toml}" \
        --steps "${E2E_STEPS:-200}" --device cuda --out "$RUN/train" --json | tail -c 600
    limit=()
    [[ "${EVAL_LIMIT:-40}" != 0 ]] && limit=(--limit "${EVAL_LIMIT:-40}")
    "$BIN" eval -q -m "$RUN/shapes-demo/manifest.json" --checkpoint "$RUN/train" --device cuda -n "${EVAL_N:-1}" \
        "${limit[@]}" --out "$RUN/eval" | tail -n 12
    if [[ -n "${OUT_DIR:-}" ]]; then
        cp "$RUN/train/loss.png" "$RUN/train/metrics.jsonl" "$RUN/eval/samples.png" "$RUN/eval/eval.json" "$OUT_DIR/" || true
    fi
fi
