#!/usr/bin/env bash
# The README's main command: fetches libtorch once (scripts/libtorch.sh), then runs
# `lightgen demo` (distill + train + eval on the shapes world). Arguments go to `lightgen demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/libtorch.sh
exec cargo run -- demo "$@"
