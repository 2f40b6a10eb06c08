#!/usr/bin/env python3
"""The reference's training step on this machine, for the side-by-side table in docs/performance.md:
LightGen's own FLUID (PyTorch) at `configs/train-tiny.toml`'s recipe (width 128, 2+2+2 blocks,
text aligner 1 block, DiffLoss 2 × 192, 8×8 tokens of 48, 32 caption tokens of 128 features,
batch 32, diffusion_batch_mul 1, AdamW with the reference's groups, clipping 3.0, EMA),
timed over STEPS steps after WARM warm-up steps: forward + backward + AdamW + EMA, f32, CPU.

  python3 scripts/reference-speed.py [--threads 2] [--steps 30]

Needs what scripts/reference-parity.py needs (torch 2.11, timm 0.9.12, diffusers, scipy).
Compare with `cargo bench --profile dev --bench train -- train_step/tiny` on the same machine,
one after the other on an idle machine.
"""
import argparse
import json
import os
import sys
import time
from functools import partial

import torch
import torch.nn as nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vendor", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "vendor", "LightGen"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warm", type=int, default=5)
    args = ap.parse_args()
    torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path.insert(0, os.path.abspath(args.vendor))
    import diffusers.models.embeddings  # noqa: F401
    import types
    stub = types.ModuleType("transformers")
    stub.T5Tokenizer = stub.T5EncoderModel = None
    sys.modules.setdefault("transformers", stub)
    from models.fluid_arbitrary import FLUID

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, grid, c, text_len, channels = 32, 8, 48, 32, 128
    model = FLUID(
        img_size=16, vae_stride=1, patch_size=1, text_depth=1,
        encoder_embed_dim=128, encoder_depth=2, encoder_num_heads=4,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
        cross_embed_dim=128, cross_depth=2, cross_num_heads=4,
        mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        caption_channels=channels, max_length=text_len, vae_embed_dim=c,
        text_drop_prob=0.1, attn_dropout=0.0, proj_dropout=0.0,
        diffloss_d=2, diffloss_w=192, diffusion_batch_mul=1,
    )
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or name.endswith(".bias") or "diffloss" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.02}],
                            lr=2e-3 * 32 / 256, betas=(0.9, 0.95))
    ema = [p.detach().clone() for p in model.parameters()]
    imgs = torch.rand(b, c, grid, grid) * 2 - 1  # (B, C, H, W): the model patchifies with patch 1
    feats = torch.randn(b, text_len, channels)

    def step():
        loss = model(imgs, feats, height=grid, width=grid)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.mul_(0.999).add_(p, alpha=0.001)
        return loss.item()

    for _ in range(args.warm):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    out = dict(engine=f"PyTorch {torch.__version__} (LightGen's FLUID)", threads=args.threads, batch=b,
               median_ms=times[len(times) // 2], min_ms=times[0], steps=args.steps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
