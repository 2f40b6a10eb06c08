#!/usr/bin/env bash
# The GPU preset's quality run (issue 18, item 3): distills configs/shapes-gpu.toml, trains
# configs/train-gpu.toml on it for a wall-clock budget and evaluates every held-out prompt.
# The budget is turned into a step count by timing PROBE_STEPS steps (`train --stop-at`, in
# probe/), then the run starts afresh with train.steps set so it ends in time and
# train.focus_steps set to FOCUS of them (a resumed run keeps its checkpoint's curriculum); the
# learning curve (eval-curve.png, metrics.jsonl) comes from train.eval_every, set to a fifth
# of the run.
#
#   LIGHTGEN_BIN=target/debug/lightgen OUT_DIR=out scripts/gpu-quality.sh
#
# Environment (defaults in brackets): TRAIN_S, the training budget of each run in seconds,
# the probe included [600, the issue's 10 minutes]; VARIANTS, the tokenizations to train side
# by side on one GPU: p8 = the demo's 4×4 tokens of 8×8 px, one object a token, sampled in 16
# AR steps; p4 = 8×8 tokens of 4×4 px and p2 = 16×16 tokens of 2×2 px, objects 1.6× and off
# the grid (the preset before the demo's), in 32 and 64 AR steps [p8]; FOCUS, the share of the
# steps drawn from the one-object scenes only (train.focus_families; 0 = every family
# throughout) [0.25]; DEVICE [cuda]; PROBE_STEPS [200]; COUNT, prompts to distill [the
# config's]; EVAL_N images per held-out prompt [4]; EVAL_LIMIT prompts, 0 = all [0];
# RUN_CONFIG, TRAIN_CONFIG; WORK, the folder the runs are kept in [a new temporary one];
# OUT_DIR, where results.tar.gz (curves, reports, sample grids of every variant) is written.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${LIGHTGEN_BIN:-target/debug/lightgen}"
DEVICE="${DEVICE:-cuda}"
TRAIN_S="${TRAIN_S:-600}"
PROBE="${PROBE_STEPS:-200}"
RUN_CONFIG="${RUN_CONFIG:-configs/shapes-gpu.toml}"
TRAIN_CONFIG="${TRAIN_CONFIG:-configs/train-gpu.toml}"
WORK="${WORK:-$(mktemp -d)}"
if [[ "$DEVICE" == cuda* ]]; then
    # The binary built here loads the GPU machine's libtorch (scripts/gpu-check.sh).
    TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "work folder: $WORK"

# One variant's corpus and training configs, with paths made absolute (they are read from $WORK).
configure() {
    local v="$1" dir="$WORK/$1" patch="${1#p}" ar=16 corpus=()
    # p4 and p2 spread each object over several tokens: objects 1.6× and off the 8-px grid.
    if [[ "$patch" != 8 ]]; then
        ar=$((patch == 4 ? 32 : 64))
        corpus=(-e "/^grid = /d" -e "s|^object_scale = .*|object_scale = 1.6|")
    fi
    mkdir -p "$dir"
    sed -e "s|^taxonomy = .*|taxonomy = \"$PWD/prompts/shapes.toml\"|" \
        -e "s|^patch = [0-9]*|patch = $patch|" "${corpus[@]}" "$RUN_CONFIG" > "$dir/run.toml"
    sed -e "/^\[sample\]/,\$ s|^steps = .*|steps = $ar|" "$TRAIN_CONFIG" > "$dir/train.toml"
}

# Seconds for `timeout`, which reads 0 as no limit at all.
at_least_1() { echo $(( $1 > 1 ? $1 : 1 )); }

# Distill, time the first steps, train for the budget, evaluate.
variant() {
    local v="$1" dir="$WORK/$1" count=()
    [[ -n "${COUNT:-}" ]] && count=(--count "$COUNT")
    "$BIN" distill -q --config "$dir/run.toml" "${count[@]}" --output-dir "$dir/corpus" > "$dir/distill.txt"
    local manifest; manifest="$(ls "$dir"/corpus/*/manifest.json)"
    local t0=$SECONDS
    "$BIN" train -q -m "$manifest" -c "$dir/train.toml" --device "$DEVICE" --stop-at "$PROBE" --out "$dir/probe" \
        > "$dir/probe.json"
    local spent=$((SECONDS - t0))
    # Steps the rest of the budget buys at the probe's speed (its first log window left out:
    # start-up), less 25% for the curve's evaluations and checkpoints and for the variants
    # beside it (two variants on one H200 ran 12% slower than their probes).
    local steps; steps="$(python3 - "$dir/probe/metrics.jsonl" "$PROBE" "$TRAIN_S" "$spent" <<'EOF'
import json, statistics, sys
path, probe, budget, spent = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ms = [r["ms"] for r in map(json.loads, open(path)) if "ms" in r]
ms = statistics.median(ms[1:] or ms)
print(max(100, int((budget - spent) * 1000 / ms * 0.75)))
EOF
)"
    local focus; focus="$(python3 -c "import sys; print(int(int(sys.argv[1]) * float(sys.argv[2])))" "$steps" "$FOCUS")"
    # A checkpoint every tenth of the run: a run stopped at its deadline is evaluated near its end.
    local every=$(( (steps / 5 + 99) / 100 * 100 ))
    local curriculum=(-e "s|^focus_steps = .*|focus_steps = $focus|")
    [[ "$focus" == 0 ]] && curriculum=(-e "s|^focus_steps = .*|focus_steps = 0|" -e "s|^focus_families = .*|focus_families = []|")
    sed -i -e "s|^eval_every = .*|eval_every = $every|" -e "s|^checkpoint_every = .*|checkpoint_every = $((every / 2))|" \
        -e "/^\[train\]/,/^\[sample\]/ s|^steps = .*|steps = $steps|" "${curriculum[@]}" "$dir/train.toml"
    echo "$v: probe $PROBE steps in ${spent}s → $steps steps (the first $focus on one-object scenes), curve every $every"
    # The budget is a promise: a run that is slower than its probe is stopped and evaluated at
    # its last checkpoint.
    local deadline=$((t0 + TRAIN_S + 60))
    timeout "$(at_least_1 $((deadline - SECONDS)))" "$BIN" train -q -m "$manifest" -c "$dir/train.toml" --device "$DEVICE" \
        --out "$dir/train" --json > "$dir/train.json" || echo "$v: training stopped ($?)"
    echo "$v: trained in $((SECONDS - t0))s"
    local limit=()
    [[ "${EVAL_LIMIT:-0}" != 0 ]] && limit=(--limit "$EVAL_LIMIT")
    "$BIN" eval -q -m "$manifest" --checkpoint "$dir/train" --device "$DEVICE" -n "${EVAL_N:-4}" --batch 128 \
        "${limit[@]}" --out "$dir/eval" > "$dir/eval.txt"
    echo "$v: evaluated at $((SECONDS - t0))s"
}

FOCUS="${FOCUS:-0.25}"
python3 -c "import sys; c = float(sys.argv[1]); sys.exit(0 if 0 <= c < 1 else 1)" "$FOCUS" 2>/dev/null \
    || { echo "FOCUS: \"$FOCUS\": expected a share in [0, 1)" >&2; exit 2; }
for v in ${VARIANTS:-p8}; do
    [[ "$v" =~ ^p(2|4|8)$ ]] || { echo "VARIANTS: \"$v\": expected p8, p4 or p2" >&2; exit 2; }
done
pids=()
for v in ${VARIANTS:-p8}; do
    configure "$v"
    # Progress goes out as it happens too: a call stopped at its limit still shows how far it got.
    (set -o pipefail; variant "$v" 2>&1 | tee "$WORK/$v.log") &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
for v in ${VARIANTS:-p8}; do
    echo "== $v"
    tail -n 12 "$WORK/$v/distill.txt" 2>/dev/null | head -n 5 || true
    cat "$WORK/$v/train.json" "$WORK/$v/eval.txt" 2>/dev/null || true
    grep '"eval"' "$WORK/$v/train/metrics.jsonl" 2>/dev/null | cut -c1-200 || true
done
if [[ -n "${OUT_DIR:-}" ]]; then
    (cd "$WORK" && tar czf "$OUT_DIR/results.tar.gz" --exclude=checkpoints --exclude=corpus --exclude='*.jsonl.gz' \
        $(for v in ${VARIANTS:-p8}; do echo "$v.log $v/train $v/eval $v/distill.txt $v/train.toml $v/probe.json"; done) \
        $(for v in ${VARIANTS:-p8}; do ls -d "$v"/corpus/*/reports 2>/dev/null; done))
fi
exit $status
