#!/usr/bin/env bash
# Measures what the distributed path costs: one local `distill` against 4 workers writing to a
# local S3-compatible server (moto_server) plus `manifest merge`, same config and seed, on this
# machine. Prints both times, their ratio and whether the manifest ids agree.
#   scripts/distributed-bench.sh [prompts (8000)] [images per part (1000)] [workers (4)]
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPTS=${1:-8000}
PART=${2:-1000}
N=${3:-4}
cargo build --quiet
BIN=target/debug/lightgen
WORK=$(mktemp -d)
trap 'kill $MOTO 2>/dev/null || true; rm -rf "$WORK"' EXIT
sed -e "s/^part_size = 60/part_size = $PART/" tests/fixtures/distributed.toml > "$WORK/bench.toml"
sed -i "s#\"../../prompts/shapes.toml\"#\"$PWD/prompts/shapes.toml\"#" "$WORK/bench.toml"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
MOTO=$!
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT))" 2>/dev/null; do sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$PORT/bench" >/dev/null 2>&1 || python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$PORT/bench', method='PUT'))"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ENDPOINT="http://127.0.0.1:$PORT" AWS_ALLOW_HTTP=true
now() { date +%s.%N; }

t0=$(now)
LOCAL_ID=$($BIN -q distill -c "$WORK/bench.toml" --count "$PROMPTS" --output-dir "$WORK/local" --json | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
t1=$(now)
PIDS=()
for ((i = 0; i < N; i++)); do
  $BIN -q distill -c "$WORK/bench.toml" --count "$PROMPTS" --store "s3://bench/run" --worker "$i/$N" --output-dir "$WORK/w$i" --threads 1 --json >/dev/null &
  PIDS+=($!)
done
for p in "${PIDS[@]}"; do wait "$p"; done
t2=$(now)
MERGED_ID=$($BIN -q manifest merge -c "$WORK/bench.toml" --count "$PROMPTS" --store "s3://bench/run" --output-dir "$WORK/merged" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
t3=$(now)
python3 - "$t0" "$t1" "$t2" "$t3" "$LOCAL_ID" "$MERGED_ID" "$PROMPTS" "$PART" "$N" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
local, workers, merge = t1 - t0, t2 - t1, t3 - t2
print(f"{sys.argv[7]} prompts x 2 images, {sys.argv[8]} images per part, {sys.argv[9]} workers")
print(f"local single process   {local:7.2f} s")
print(f"{sys.argv[9]} workers to S3       {workers:7.2f} s")
print(f"manifest merge         {merge:7.2f} s")
print(f"distributed / local    {(workers + merge) / local:7.3f}")
print(f"manifest ids agree     {sys.argv[5] == sys.argv[6]}")
PY
