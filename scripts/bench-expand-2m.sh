#!/usr/bin/env bash
# Expands general.toml to 2,000,000 prompts into Parquet and reports wall time and peak
# memory (the foundation issue's numbers: < 30 s, < 500 MB on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin lightgen
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
/usr/bin/time -f "wall %e s, peak RSS %M KiB" target/debug/lightgen expand -q --force \
  --config configs/general.toml --count 2000000 --output-dir "$out"
du -sh "$out/general/expand"
