#!/usr/bin/env python3
"""Writes tests/fixtures/parity/: what LightGen's own PyTorch code computes for a small FLUID,
with every random choice fixed, so that lightgen's port can be checked against it
(tests: `model::parity`). Nothing of the reference is copied into lightgen; it is *run* here.

What it records (f32 unless said):
  weights.safetensors  the initial state dict (the reference's names; 256 position slots)
  inputs.safetensors   tokens (B, L, C), text features (B, T, Cc), and for each of STEPS steps:
                       orders (i64), keep (caption kept, u8), t (i64) and noise of the masked
                       rows in lightgen's row order (copy-major, then sample, then position)
  expect.safetensors   step 0: loss, z (B, L, D) and the gradients of a few named parameters;
                       after STEPS AdamW steps (groups, clipping) and EMA updates: every weight
                       and every EMA weight; one DiffLoss sampling step with CFG and fixed noise
  meta.json            sizes, masked counts per step, optimiser settings

Regenerate (needs ../shared/vendor/LightGen and, in a virtualenv: torch==2.11.0 timm==0.9.12
diffusers scipy safetensors numpy):
  python3 scripts/reference-parity.py --vendor ../shared/vendor/LightGen --out tests/fixtures/parity
"""
import argparse
import json
import math
import os
import sys
from functools import partial

import numpy as np
import torch
import torch.nn as nn

B, GRID, C, TEXT_LEN, CAPTION = 2, 8, 12, 6, 24
WIDTH, HEADS, DL_W, DL_D, MUL = 32, 2, 48, 2, 2
STEPS, LR, WD, CLIP, EMA = 20, 2e-3, 0.05, 0.5, 0.9
SEED = 20261203


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vendor", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "vendor", "LightGen"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "parity"))
    args = ap.parse_args()
    torch.Tensor.cuda = lambda self, *a, **k: self  # the reference calls .cuda() on fresh tensors
    sys.path.insert(0, os.path.abspath(args.vendor))
    # models/utils.py imports T5 from transformers at module level; FLUID never builds it.
    import diffusers.models.embeddings  # noqa: F401  (imports before the stub below exists)
    import types
    stub = types.ModuleType("transformers")
    stub.T5Tokenizer = stub.T5EncoderModel = None
    sys.modules.setdefault("transformers", stub)
    from models.fluid_arbitrary import FLUID
    from safetensors.torch import save_file
    import diffusion.gaussian_diffusion as gd

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    model = FLUID(
        img_size=16, vae_stride=1, patch_size=1, text_depth=1,
        encoder_embed_dim=WIDTH, encoder_depth=1, encoder_num_heads=HEADS,
        decoder_embed_dim=WIDTH, decoder_depth=1, decoder_num_heads=HEADS,
        cross_embed_dim=WIDTH, cross_depth=1, cross_num_heads=HEADS,
        mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        caption_channels=CAPTION, max_length=TEXT_LEN, vae_embed_dim=C,
        mask_ratio_min=0.7, text_drop_prob=0.0, attn_dropout=0.0, proj_dropout=0.0,
        diffloss_d=DL_D, diffloss_w=DL_W, diffusion_batch_mul=MUL,
    )
    # The zero-initialised adaLN and output layers would make every gradient below them zero at
    # step 0; perturb them so the check covers the whole head.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(0, 0.02)
    model.train()
    L = GRID * GRID
    model.seq_h = model.seq_w = GRID
    model.seq_len = L
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

    rng = np.random.default_rng(SEED)
    tokens = torch.tensor(rng.uniform(-1, 1, (B, L, C)), dtype=torch.float32)
    feats = torch.tensor(rng.normal(size=(B, TEXT_LEN, CAPTION)), dtype=torch.float32)
    inputs = {"tokens": tokens, "feats": feats}
    masked_counts = []

    # One DiffLoss sampling step (the initial weights) with CFG 3 and temperature 0.9, at
    # respaced index 60 of 100, with fixed noise (the reference draws it with randn_like inside
    # p_sample, which is replaced for this call only).
    n = 5
    x = torch.tensor(rng.normal(size=(n, C)), dtype=torch.float32)
    zc = torch.tensor(rng.normal(size=(2 * n, WIDTH)), dtype=torch.float32)
    step_noise = torch.tensor(rng.normal(size=(n, C)), dtype=torch.float32)
    randn_like = gd.th.randn_like
    gd.th.randn_like = lambda like: torch.cat([step_noise, step_noise], 0)
    gen = model.diffloss.gen_diffusion
    with torch.no_grad():
        out = gen.p_sample(model.diffloss.net.forward_with_cfg, torch.cat([x, x], 0), torch.full((2 * n,), 60),
                           clip_denoised=False, model_kwargs=dict(c=zc, cfg_scale=3.0), temperature=0.9)
    gd.th.randn_like = randn_like
    inputs.update({"sample.x": x, "sample.z": zc, "sample.noise": step_noise})
    expect = {"sample.out": out["sample"][:n].contiguous()}

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or name.endswith(".bias") or "diffloss" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": WD}],
                            lr=LR, betas=(0.9, 0.95))
    ema = [p.detach().clone() for p in model.parameters()]
    for step in range(STEPS):
        orders = torch.tensor(np.stack([rng.permutation(L) for _ in range(B)]), dtype=torch.int64)
        masked = int(np.ceil(L * rng.uniform(0.7, 1.0)))
        masked_counts.append(masked)
        keep = torch.tensor(rng.uniform(size=B) > 0.3)
        mask = torch.zeros(B, L).scatter(-1, orders[:, :masked], torch.ones(B, L))
        n_all = B * L * MUL
        t_all = torch.tensor(rng.integers(0, 1000, n_all), dtype=torch.int64)
        noise_all = torch.tensor(rng.normal(size=(n_all, C)), dtype=torch.float32)

        enc = model.forward_fluid_encoder(tokens, mask)
        dec = model.forward_fluid_decoder(enc, mask)
        text = model.text_emb(feats)
        drop = (~keep).float().view(B, 1, 1)
        text = drop * model.fake_latent + (1 - drop) * text
        z = model.forward_fluid_text_decoder(dec, text)
        target = tokens.reshape(B * L, -1).repeat(MUL, 1)
        zz = z.reshape(B * L, -1).repeat(MUL, 1)
        m = mask.reshape(B * L).repeat(MUL)
        terms = model.diffloss.train_diffusion.training_losses(model.diffloss.net, target, t_all, dict(c=zz), noise_all)
        loss = (terms["loss"] * m).sum() / m.sum()
        opt.zero_grad()
        loss.backward()
        if step == 0:
            expect["loss"] = loss.detach().reshape(1)
            expect["z"] = z.detach().contiguous()
            named = dict(model.named_parameters())
            for name in ["z_proj.weight", "encoder_pos_embed_learned", "mask_token", "fake_latent",
                         "text_emb.text_proj.linear_1.weight", "text_emb.text_aligner.0.attn.qkv.weight",
                         "cross_attn_blocks.0.attn.kv.weight", "diffloss.net.res_blocks.1.mlp.0.weight",
                         "diffloss.net.time_embed.mlp.0.weight", "diffloss.net.final_layer.linear.bias"]:
                expect["grad." + name] = named[name].grad.detach().clone().contiguous()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.mul_(EMA).add_(p, alpha=1 - EMA)
        # lightgen's rows: for each copy j, the masked rows b·L + l in ascending order.
        rows = torch.cat([j * B * L + mask.reshape(-1).nonzero().flatten() for j in range(MUL)])
        inputs[f"orders.{step}"] = orders
        inputs[f"keep.{step}"] = keep.to(torch.uint8)
        inputs[f"t.{step}"] = t_all[rows].contiguous()
        inputs[f"noise.{step}"] = noise_all[rows].contiguous()
    for (name, p), e in zip(model.named_parameters(), ema):
        expect["final." + name] = p.detach().clone().contiguous()
        expect["ema." + name] = e.contiguous()

    os.makedirs(args.out, exist_ok=True)
    save_file(weights, os.path.join(args.out, "weights.safetensors"))
    save_file(inputs, os.path.join(args.out, "inputs.safetensors"))
    save_file(expect, os.path.join(args.out, "expect.safetensors"))
    meta = dict(batch=B, grid=GRID, token_dim=C, text_len=TEXT_LEN, caption_channels=CAPTION, width=WIDTH, heads=HEADS,
                diffloss_width=DL_W, diffloss_depth=DL_D, diffusion_batch_mul=MUL, steps=STEPS, lr=LR,
                weight_decay=WD, grad_clip=CLIP, ema=EMA, masked=masked_counts, pos_slots=256,
                sample=dict(index=60, of=100, cfg=3.0, temperature=0.9, rows=n), torch=torch.__version__, seed=SEED)
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {args.out}: loss {expect['loss'].item():.6f}, sample step ok")


if __name__ == "__main__":
    main()
