#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
# Snapshots are checked, never rewritten, here; review changes with `cargo insta review`.
export INSTA_UPDATE=no
cargo test --locked "$@"
