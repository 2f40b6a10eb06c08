#!/usr/bin/env bash
# The GPU preset's quality run (issue 18, item 3): distills configs/shapes-gpu.toml, trains
# configs/train-gpu.toml on it for a wall-clock budget and evaluates every held-out prompt.
# The budget is turned into a step count by timing the first PROBE_STEPS steps (`train
# --stop-at`), then the run resumes with `--steps` set so it ends in time; the learning curve
# (eval-curve.png, metrics.jsonl) comes from train.eval_every, set to a fifth of the run.
#
#   LIGHTGEN_BIN=target/debug/lightgen OUT_DIR=out scripts/gpu-quality.sh
#
# Environment (defaults in brackets): TRAIN_S, the training budget of each run in seconds,
# first steps included [600, the issue's 10 minutes]; VARIANTS, the tokenizations to train side
# by side on one GPU: p4 = 8×8 tokens of 4×4 px, p2 = 16×16 tokens of 2×2 px sampled in 64 AR
# steps [p4]; DEVICE [cuda]; PROBE_STEPS [200]; COUNT, prompts to distill [the config's];
# EVAL_N images per held-out prompt [4]; EVAL_LIMIT prompts, 0 = all [0]; RUN_CONFIG,
# TRAIN_CONFIG; WORK, the folder the runs are kept in [a new temporary one]; OUT_DIR, where
# results.tar.gz (curves, reports, sample grids of every variant) is written; CURRICULUM, the
# share of each run's steps spent first on the single-object scenes alone (`manifest subset
# --where family=single_object,colors`), the rest on every family from there (`train
# --init-from`): on 2 CPU cores 9,000 + 4,500 steps of `tiny` read twice the accuracy of 9,000
# on every family (docs/student.md, "A curriculum") [0: off].
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
    local v="$1" dir="$WORK/$1" patch="${1#p}" ar=32
    [[ "$patch" == 2 ]] && ar=64
    mkdir -p "$dir"
    sed -e "s|^taxonomy = .*|taxonomy = \"$PWD/prompts/shapes.toml\"|" \
        -e "s|^patch = [0-9]*|patch = $patch|" "$RUN_CONFIG" > "$dir/run.toml"
    sed -e "/^\[sample\]/,\$ s|^steps = .*|steps = $ar|" "$TRAIN_CONFIG" > "$dir/train.toml"
}

# Seconds for `timeout`, which reads 0 as no limit at all.
at_least_1() { echo $(( $1 > 1 ? $1 : 1 )); }

# Distill, time the first steps, resume for the rest of the budget, evaluate.
variant() {
    local v="$1" dir="$WORK/$1" count=()
    [[ -n "${COUNT:-}" ]] && count=(--count "$COUNT")
    "$BIN" distill -q --config "$dir/run.toml" "${count[@]}" --output-dir "$dir/corpus" > "$dir/distill.txt"
    local manifest; manifest="$(ls "$dir"/corpus/*/manifest.json)"
    # With a curriculum the first phase trains on the single-object scenes in train1/.
    local first="$manifest" first_out="$dir/train"
    if [[ "$CURRICULUM" != 0 ]]; then
        "$BIN" manifest subset -q "$manifest" --name single --where family=single_object,colors > /dev/null
        first="$(dirname "$manifest")/manifest-single.json" first_out="$dir/train1"
    fi
    local t0=$SECONDS
    "$BIN" train -q -m "$first" -c "$dir/train.toml" --device "$DEVICE" --stop-at "$PROBE" --out "$first_out" \
        > "$dir/probe.json"
    local spent=$((SECONDS - t0))
    # Steps the rest of the budget buys at the probe's speed (its first log window left out:
    # start-up), less 25% for the curve's evaluations and checkpoints and for the variants
    # beside it (two variants on one H200 ran 12% slower than their probes).
    local steps; steps="$(python3 - "$first_out/metrics.jsonl" "$PROBE" "$TRAIN_S" "$spent" <<'EOF'
import json, statistics, sys
path, probe, budget, spent = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ms = [r["ms"] for r in map(json.loads, open(path)) if "ms" in r]
ms = statistics.median(ms[1:] or ms)
print(probe + max(0, int((budget - spent) * 1000 / ms * 0.75)))
EOF
)"
    # A checkpoint every tenth of the run: a run stopped at its deadline is evaluated near its end.
    local every=$(( (steps / 5 + 99) / 100 * 100 ))
    sed -i -e "s|^eval_every = .*|eval_every = $every|" -e "s|^checkpoint_every = .*|checkpoint_every = $((every / 2))|" \
        "$dir/train.toml"
    echo "$v: probe $PROBE steps in ${spent}s → $steps steps, curve every $every"
    # The budget is a promise: a run that is slower than its probe is stopped and evaluated at
    # its last checkpoint.
    local deadline=$((t0 + TRAIN_S + 60))
    if [[ "$CURRICULUM" != 0 ]]; then
        local s1; s1="$(python3 -c "print(max($PROBE, int($steps * $CURRICULUM)))")"
        local left=$((steps - s1 > 100 ? steps - s1 : 100))
        timeout "$(at_least_1 $((deadline - SECONDS - left * (TRAIN_S - spent) / steps)))" "$BIN" train -q -m "$first" \
            -c "$dir/train.toml" --device "$DEVICE" --resume --steps "$s1" --out "$first_out" --json \
            > "$dir/train1.json" || echo "$v: first phase stopped ($?)"
        echo "$v: single objects for $s1 steps, then every family for $left, at $((SECONDS - t0))s"
        timeout "$(at_least_1 $((deadline - SECONDS)))" "$BIN" train -q -m "$manifest" -c "$dir/train.toml" --device "$DEVICE" \
            --init-from "$first_out" --steps "$left" --out "$dir/train" --json > "$dir/train.json" \
            || echo "$v: training stopped ($?)"
    else
        timeout "$(at_least_1 $((deadline - SECONDS)))" "$BIN" train -q -m "$manifest" -c "$dir/train.toml" --device "$DEVICE" \
            --resume --steps "$steps" --out "$dir/train" --json > "$dir/train.json" || echo "$v: training stopped ($?)"
    fi
    echo "$v: trained in $((SECONDS - t0))s"
    local limit=()
    [[ "${EVAL_LIMIT:-0}" != 0 ]] && limit=(--limit "$EVAL_LIMIT")
    "$BIN" eval -q -m "$manifest" --checkpoint "$dir/train" --device "$DEVICE" -n "${EVAL_N:-4}" --batch 128 \
        "${limit[@]}" --out "$dir/eval" > "$dir/eval.txt"
    echo "$v: evaluated at $((SECONDS - t0))s"
}

CURRICULUM="${CURRICULUM:-0}"
python3 -c "import sys; c = float(sys.argv[1]); sys.exit(0 if 0 <= c < 1 else 1)" "$CURRICULUM" 2>/dev/null \
    || { echo "CURRICULUM: \"$CURRICULUM\": expected a share in [0, 1)" >&2; exit 2; }
for v in ${VARIANTS:-p4}; do
    # 32 px in patches of 2 or 4 (8 leaves a 4 × 4 grid: measured worse, docs/student.md).
    [[ "$v" =~ ^p(2|4)$ ]] || { echo "VARIANTS: \"$v\": expected p4 or p2" >&2; exit 2; }
done
pids=()
for v in ${VARIANTS:-p4}; do
    configure "$v"
    # Progress goes out as it happens too: a call stopped at its limit still shows how far it got.
    (set -o pipefail; variant "$v" 2>&1 | tee "$WORK/$v.log") &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
for v in ${VARIANTS:-p4}; do
    echo "== $v"
    tail -n 12 "$WORK/$v/distill.txt" 2>/dev/null | head -n 5 || true
    cat "$WORK/$v/train.json" "$WORK/$v/eval.txt" 2>/dev/null || true
    grep '"eval"' "$WORK/$v/train/metrics.jsonl" 2>/dev/null | cut -c1-200 || true
done
if [[ -n "${OUT_DIR:-}" ]]; then
    (cd "$WORK" && tar czf "$OUT_DIR/results.tar.gz" --exclude=checkpoints --exclude=corpus --exclude='*.jsonl.gz' \
        $(for v in ${VARIANTS:-p4}; do echo "$v.log $v/train $v/eval $v/distill.txt $v/train.toml"; ls -d "$v/train1" 2>/dev/null; done) \
        $(for v in ${VARIANTS:-p4}; do ls -d "$v"/corpus/*/reports 2>/dev/null; done))
fi
exit $status
