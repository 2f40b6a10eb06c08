//! LightGen's `FLUID` (`XianfengWu01/LightGen:models/fluid_arbitrary.py`), a text-to-image
//! MAR (`LTH14/mar:models/mar.py`): an MAE encoder over the visible tokens only, a decoder
//! with a learned mask token, a stack of cross-attention blocks over the aligned text, and the
//! DiffLoss head. Weight names mirror the PyTorch modules. Sequence length is an argument
//! (the grid), never model state; positions interpolate bicubically for other grids.

use tch::{Device, Tensor};

use super::blocks::{Block, CrossBlock};
use super::config::{MarConfig, PosInit};
use super::diffloss::DiffLoss;
use super::layers::{index, like, Ctx, LayerNorm, Linear};
use super::positions::{resize_positions, sincos_2d};
use super::rope::{Angles, Rope};
use super::store::{ParamStore, Scope};
use super::text::TextAligner;

/// Which tokens are masked, per sample; every sample masks the same number (one ratio per
/// batch), so the visible tokens gather into a dense (B, L_vis, D).
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub batch: usize,
    pub len: usize,
    /// (B · L), true = masked.
    pub masked: Vec<bool>,
}

impl Mask {
    /// Masks the first `count` positions of each sample's order (`random_masking`).
    pub fn from_orders(orders: &[Vec<usize>], len: usize, count: usize) -> Mask {
        let mut masked = vec![false; orders.len() * len];
        for (b, o) in orders.iter().enumerate() {
            for &p in &o[..count] {
                masked[b * len + p] = true;
            }
        }
        Mask { batch: orders.len(), len, masked }
    }

    pub fn count(&self) -> usize {
        self.masked[..self.len].iter().filter(|m| **m).count()
    }

    /// The same mask twice (for the unconditional half of CFG).
    pub fn doubled(&self) -> Mask {
        Mask { batch: 2 * self.batch, len: self.len, masked: [self.masked.clone(), self.masked.clone()].concat() }
    }

    /// Flat row indices (b·L + l) where `masked == want`, in raster order per sample.
    pub fn rows(&self, want: bool) -> Vec<i64> {
        self.masked.iter().enumerate().filter(|(_, m)| **m == want).map(|(i, _)| i as i64).collect()
    }
}

pub struct Mar {
    pub cfg: MarConfig,
    z_proj: Linear,
    z_proj_ln: LayerNorm,
    encoder_pos: Tensor,
    encoder_blocks: Vec<Block>,
    encoder_norm: LayerNorm,
    decoder_embed: Linear,
    mask_token: Tensor,
    decoder_pos: Tensor,
    decoder_blocks: Vec<Block>,
    decoder_norm: LayerNorm,
    last_embed: Linear,
    last_pos: Tensor,
    cross_blocks: Vec<CrossBlock>,
    cross_norm: LayerNorm,
    /// The learned null caption (1, 1, D) for classifier-free guidance.
    pub fake_latent: Tensor,
    pub text: TextAligner,
    pub diffloss: DiffLoss,
    /// z → the token's x0 (C), when `cfg.x0_head` (a training signal only).
    pub x0_head: Option<X0Head>,
    /// z → logits over the codebook's codes (`cfg.codes`; a training signal only).
    pub code_head: Option<Linear>,
    /// A token's 3×3 window of visible tokens, 9·(C + 1) → D, added to z, when
    /// `cfg.neighbours`.
    nbr_proj: Option<Linear>,
    /// The aligned caption → the decoder's prefix tokens, when `cfg.text_prefix`.
    decoder_text_embed: Option<Linear>,
    /// z → a token's class and colour logits (`cfg.labels`; a training signal only).
    pub label_head: Option<Linear>,
}

impl Mar {
    /// Builds the model with fresh weights in `store` (initialised as `initialize_weights`).
    pub fn new(cfg: &MarConfig, store: &mut ParamStore) -> Result<Mar, String> {
        cfg.check()?;
        let (d, p, h, r) = (cfg.width, cfg.pos_grid * cfg.pos_grid, cfg.heads, cfg.mlp_ratio);
        let (ad, pd) = (cfg.attn_dropout, cfg.proj_dropout);
        let mut s = store.root();
        let blocks = |s: &mut Scope, name: &str, n: usize| -> Vec<Block> {
            (0..n).map(|i| Block::new(&mut s.pp(name).pp(i), d, h, r, ad, pd)).collect()
        };
        let z_proj = Linear::xavier(&mut s.pp("z_proj"), cfg.token_dim, d);
        let z_proj_ln = LayerNorm::new(&mut s.pp("z_proj_ln"), d);
        let pos_table = |s: &mut Scope, name: &str| match cfg.pos_init {
            PosInit::Normal => s.normal(name, &[1, p, d], 0.02),
            PosInit::Sincos => s.values(name, &[1, p, d], sincos_2d(cfg.pos_grid, d)),
        };
        let encoder_pos = pos_table(&mut s, "encoder_pos_embed_learned");
        let encoder_blocks = blocks(&mut s, "encoder_blocks", cfg.encoder_depth);
        let encoder_norm = LayerNorm::new(&mut s.pp("encoder_norm"), d);
        let decoder_embed = Linear::xavier(&mut s.pp("decoder_embed"), d, d);
        let mask_token = s.normal("mask_token", &[1, 1, d], 0.02);
        let decoder_pos = pos_table(&mut s, "decoder_pos_embed_learned");
        let decoder_blocks = blocks(&mut s, "decoder_blocks", cfg.decoder_depth);
        let decoder_norm = LayerNorm::new(&mut s.pp("decoder_norm"), d);
        let last_embed = Linear::xavier(&mut s.pp("last_embed"), d, d);
        let last_pos = pos_table(&mut s, "last_pos_embed_learned");
        let cross_blocks = (0..cfg.cross_depth)
            .map(|i| CrossBlock::new(&mut s.pp("cross_attn_blocks").pp(i), d, h, r, ad, pd))
            .collect();
        let cross_norm = LayerNorm::new(&mut s.pp("cross_norm"), d);
        let fake_latent = s.normal("fake_latent", &[1, 1, d], 0.02);
        let text = TextAligner::new(&mut s.pp("text_emb"), cfg);
        let mut diffloss = DiffLoss::new(
            &mut s.pp("diffloss"),
            cfg.token_dim,
            d,
            (cfg.diffloss_width, cfg.diffloss_depth),
            cfg.prediction,
        );
        let x0_head = cfg.x0_head.then(|| X0Head::new(&mut s.pp("x0_head"), d, cfg.x0_hidden, cfg.token_dim));
        // The head reads the same weights (shallow copies: loading or swapping in the EMA reaches both).
        diffloss.centre = x0_head.as_ref().filter(|_| cfg.head_centre).map(X0Head::shallow_clone);
        let code_head = (cfg.codes > 0).then(|| Linear::xavier(&mut s.pp("code_head"), d, cfg.codes));
        // Zero at init: the model starts as the one without it (its weight still gets gradient).
        let nbr_proj = cfg.neighbours.then(|| Linear::zeros(&mut s.pp("nbr_proj"), 9 * (cfg.token_dim + 1), d));
        let decoder_text_embed = cfg.text_prefix.then(|| Linear::xavier(&mut s.pp("decoder_text_embed"), d, d));
        // Made last, so that every other weight starts as it does without it.
        let label_head = cfg.labels.then(|| Linear::xavier(&mut s.pp("label_head"), d, super::config::LABEL_LOGITS));
        Ok(Mar {
            cfg: cfg.clone(),
            z_proj,
            z_proj_ln,
            encoder_pos,
            encoder_blocks,
            encoder_norm,
            decoder_embed,
            mask_token,
            decoder_pos,
            decoder_blocks,
            decoder_norm,
            last_embed,
            last_pos,
            cross_blocks,
            cross_norm,
            fake_latent,
            text,
            diffloss,
            x0_head,
            code_head,
            nbr_proj,
            decoder_text_embed,
            label_head,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.fake_latent.device()
    }

    /// A positional table for a `grid`×`grid` sequence: as learned, or resized by libtorch's
    /// bicubic kernel as `interpolate_pos_encoding` (scale (grid + 0.1)/g, align_corners
    /// False). (1, grid², D).
    fn pos(&self, table: &Tensor, grid: usize) -> Tensor {
        resize_positions(table, self.cfg.pos_grid, grid)
    }

    /// The null caption for `b` samples of `t` tokens: (B, T, D).
    pub fn null_text(&self, b: usize, t: usize) -> Tensor {
        self.fake_latent.expand([b as i64, t as i64, self.cfg.width as i64], false)
    }

    /// Replaces the aligned text of samples whose `keep` is false by the null caption.
    pub fn drop_text(&self, text: &Tensor, keep: &[bool]) -> Tensor {
        self.drop_text_with(text, &self.keep_mask(keep, text.device()))
    }

    /// `keep` as a (B, 1, 1) device mask.
    pub fn keep_mask(&self, keep: &[bool], dev: Device) -> Tensor {
        Tensor::from_slice(keep).view([keep.len() as i64, 1, 1]).to_device(dev)
    }

    /// [`Self::drop_text`] with the mask already on the device. The null caption is in the
    /// graph even when every caption is kept, as in the reference (`drop·fake + (1 − drop)·text`):
    /// its gradient is then zero rather than absent, so AdamW keeps decaying its moments and
    /// moving it every step exactly as PyTorch's does.
    pub fn drop_text_with(&self, text: &Tensor, keep: &Tensor) -> Tensor {
        let (b, t, _) = text.size3().expect("(B, T, D)");
        let null = like(&self.null_text(b as usize, t as usize), text.kind());
        text.where_self(keep, &null)
    }

    /// tokens (B, L, C), mask, aligned text (B, T, D) → z (B, L, D) for the DiffLoss head, in
    /// the context's compute dtype.
    pub fn forward_z(&self, tokens: &Tensor, mask: &Mask, text: &Tensor, grid: usize, ctx: &Ctx) -> Tensor {
        self.forward(tokens, mask, text, grid, ctx, None)
    }

    /// z only at `rows` (flat b·L + l, ascending, the same count K per sample): (B·K, D), the
    /// rows of [`Self::forward_z`] bit for bit up to the GEMM's blocking. Training needs z at
    /// the masked tokens and sampling at the tokens it reveals next; everything after the
    /// decoder blocks is per token (norms, `last_embed`, cross-attention *from* image tokens
    /// to the text), so it runs on those rows only — about 1/8 of them per sampling step.
    pub fn forward_z_rows(
        &self,
        tokens: &Tensor,
        mask: &Mask,
        text: &Tensor,
        grid: usize,
        ctx: &Ctx,
        rows: &[i64],
    ) -> Tensor {
        let (b, l) = (mask.batch as i64, mask.len as i64);
        let k = rows.len() as i64 / b.max(1);
        debug_assert!(
            rows.len() as i64 == b * k && rows.iter().enumerate().all(|(i, &r)| r / l == i as i64 / k.max(1)),
            "rows must be K per sample, sample-major"
        );
        let z = self.forward(tokens, mask, text, grid, ctx, Some((rows, k))); // (B, K, D)
        z.view([b * k, self.cfg.width as i64])
    }

    fn forward(
        &self,
        tokens: &Tensor,
        mask: &Mask,
        text: &Tensor,
        grid: usize,
        ctx: &Ctx,
        rows: Option<(&[i64], i64)>,
    ) -> Tensor {
        let (b, l, _) = tokens.size3().expect("(B, L, C)");
        let d = self.cfg.width as i64;
        let dev = tokens.device();
        // Host → device copies first, before any kernel of this pass is queued: a copy from
        // host memory waits for the device's queue to drain.
        let vis = mask.rows(false);
        let lv = vis.len() as i64 / b;
        let vis_idx = index(&vis, dev);
        let vis_at = index(&vis.iter().map(|i| i % l).collect::<Vec<_>>(), dev); // their positions
        let mut next = 0i64;
        let src: Vec<i64> = mask
            .masked
            .iter()
            .map(|&m| {
                if m {
                    b * lv
                } else {
                    next += 1;
                    next - 1
                }
            })
            .collect();
        let src_idx = index(&src, dev);
        // The rows z is wanted at, and their positions (b·L + l → l).
        let out = rows.map(|(r, k)| (index(r, dev), index(&r.iter().map(|i| i % l).collect::<Vec<_>>(), dev), k));
        // With the caption prepended to the decoder (T tokens), its sequence is T + L long and
        // the rows sit at b·(T + L) + T + l.
        let t_pre = if self.decoder_text_embed.is_some() { text.size()[1] } else { 0 };
        let dec_rows = match (rows, t_pre) {
            (Some((r, _)), t) if t > 0 => {
                Some(index(&r.iter().map(|i| (i / l) * (t + l) + t + i % l).collect::<Vec<_>>(), dev))
            }
            _ => None,
        };
        // Rotary angles (B, 1, Lv, hd) for the encoder, (1, 1, L, hd) for the decoder.
        let kind = ctx.dtype;
        let rope = self.cfg.rope.then(|| {
            let r = Rope::new(grid, self.cfg.width / self.cfg.heads, dev);
            let (ec, es) = r.at(&vis_at);
            let enc = Angles::of(ec, es, b, kind);
            // The caption's prefix tokens, if any, are not rotated (angle 0): (T + L, hd).
            let (dec_cos, dec_sin) = match t_pre {
                0 => (r.cos.shallow_clone(), r.sin.shallow_clone()),
                t => {
                    let (hd, opts) = (r.cos.size()[1], (r.cos.kind(), dev));
                    let cos = Tensor::cat(&[&Tensor::ones([t, hd], opts), &r.cos], 0);
                    (cos, Tensor::cat(&[&Tensor::zeros([t, hd], opts), &r.sin], 0))
                }
            };
            let dec = Angles::of(dec_cos, dec_sin, 1, kind);
            (r, enc, dec)
        });
        let window = self.nbr_proj.as_ref().map(|p| {
            let vis = Tensor::from_slice(&mask.masked.iter().map(|&m| f32::from(u8::from(!m))).collect::<Vec<_>>())
                .to_device(dev)
                .view([b, l, 1]);
            let w = neighbour_window(&ctx.cast(tokens), &ctx.cast(&vis), grid); // (B, L, 9(C + 1))
            let w = match &out {
                None => w,
                Some((idx, _, k)) => w.view([b * l, -1]).index_select(0, idx).view([b, *k, -1]),
            };
            p.forward(&w) // (B, L or K, D)
        });
        let (tokens, text) = (&ctx.cast(tokens), &ctx.cast(text));
        let pos = |table: &Tensor| ctx.cast(&self.pos(table, grid));
        // Encoder over the visible tokens only (possibly none).
        let x = (lv > 0).then(|| {
            // Projection, position and norm are per token: only the visible ones.
            let c = tokens.size()[2];
            let vis_tokens = tokens.view([b * l, c]).index_select(0, &vis_idx).view([b, lv, c]); // (B, Lv, C)
            let vis_pos = pos(&self.encoder_pos).view([l, d]).index_select(0, &vis_at).view([b, lv, d]);
            let x = self.z_proj.forward(&vis_tokens) + vis_pos;
            let mut x = self.z_proj_ln.forward(&x); // (B, Lv, D)
            for blk in &self.encoder_blocks {
                x = blk.forward_rope(&x, ctx, rope.as_ref().map(|r| &r.1));
            }
            self.encoder_norm.forward(&x)
        });
        // Decoder: visible tokens back in place, the mask token everywhere else.
        let mask_row = ctx.cast(&self.mask_token.view([1, d]));
        let x = match x {
            Some(x) => {
                let x = self.decoder_embed.forward(&x).view([b * lv, d]); // (B·Lv, D)
                let pool = Tensor::cat(&[&x, &mask_row], 0); // (B·Lv + 1, D)
                pool.index_select(0, &src_idx).view([b, l, d]) // (B, L, D)
            }
            None => mask_row.view([1, 1, d]).expand([b, l, d], false),
        };
        let mut x = x + pos(&self.decoder_pos); // (B, L, D)
        if let Some(p) = &self.decoder_text_embed {
            x = Tensor::cat(&[&p.forward(text), &x], 1); // (B, T + L, D)
        }
        // The image tokens of the decoder's sequence: (B, T + L, D) → (B, L, D).
        let image = |x: Tensor| if t_pre > 0 { x.narrow(1, t_pre, l) } else { x };
        let n = self.decoder_blocks.len();
        let full = if out.is_some() { n.saturating_sub(1) } else { n };
        for blk in &self.decoder_blocks[..full] {
            x = blk.forward_rope(&x, ctx, rope.as_ref().map(|r| &r.2));
        }
        // From the last decoder block's queries on every op is per token: keep only the wanted
        // rows. (B, K, D)
        let (x, last_pos) = match &out {
            None => (image(x), pos(&self.last_pos)),
            Some((idx, at, k)) => {
                let x = match self.decoder_blocks.get(full) {
                    Some(last) => {
                        let q = rope.as_ref().map(|(r, _, dec)| {
                            let (c, s) = r.at(at);
                            (Angles::of(c, s, b, kind), dec)
                        });
                        let idx = dec_rows.as_ref().unwrap_or(idx);
                        last.forward_rows(&x, idx, *k, ctx, q.as_ref().map(|(q, k)| (q, *k)))
                    }
                    None => image(x).contiguous().view([b * l, d]).index_select(0, idx).view([b, *k, d]),
                };
                let p = pos(&self.last_pos).view([l, d]).index_select(0, at).view([b, *k, d]);
                (x, p)
            }
        };
        let x = self.decoder_norm.forward(&x);
        // Cross-attention stack over the text: image tokens attend to the text only.
        let mut x = self.last_embed.forward(&x) + last_pos;
        for blk in &self.cross_blocks {
            x = blk.forward(&x, text, ctx);
        }
        let z = self.cross_norm.forward(&x); // (B, L or K, D)
        match window {
            Some(w) => z + w,
            None => z,
        }
    }
}

/// Each token's 3×3 window of visible tokens on the `grid`×`grid` layout, raster order:
/// tokens (B, L, C), vis (B, L, 1) with 1 = visible → (B, L, 9·(C + 1)), per window slot the
/// token's values times its visibility, then the visibility; zero outside the grid.
/// libtorch's `im2col` lays channels out major: feature c·9 + (dy + 1)·3 + (dx + 1).
pub fn neighbour_window(tokens: &Tensor, vis: &Tensor, grid: usize) -> Tensor {
    let (b, l, c) = tokens.size3().expect("(B, L, C)");
    let g = grid as i64;
    let f = Tensor::cat(&[tokens * vis, vis.shallow_clone()], 2); // (B, L, C + 1)
    let f = f.view([b, g, g, c + 1]).permute([0, 3, 1, 2]); // (B, C + 1, g, g)
    let cols = f.im2col([3, 3], [1, 1], [1, 1], [1, 1]); // (B, 9(C + 1), L)
    cols.transpose(1, 2).contiguous().view([b, l, 9 * (c + 1)])
}

/// The x0 read-out of z (see `MarConfig::x0_head`): linear, or a one-hidden-layer MLP
/// (`MarConfig::x0_hidden`; its layers are `x0_head.fc1` / `x0_head.fc2`).
pub enum X0Head {
    Linear(Linear),
    Mlp(Linear, Linear),
}

impl X0Head {
    fn new(s: &mut Scope, d: usize, hidden: usize, c: usize) -> X0Head {
        match hidden {
            0 => X0Head::Linear(Linear::xavier(s, d, c)),
            h => X0Head::Mlp(Linear::xavier(&mut s.pp("fc1"), d, h), Linear::xavier(&mut s.pp("fc2"), h, c)),
        }
    }

    /// The same weights under a second handle.
    pub fn shallow_clone(&self) -> X0Head {
        match self {
            X0Head::Linear(l) => X0Head::Linear(l.shallow_clone()),
            X0Head::Mlp(a, b) => X0Head::Mlp(a.shallow_clone(), b.shallow_clone()),
        }
    }

    /// (…, D) → (…, C)
    pub fn forward(&self, z: &Tensor) -> Tensor {
        match self {
            X0Head::Linear(l) => l.forward(z),
            X0Head::Mlp(a, b) => b.forward(&a.forward(z).gelu("tanh")),
        }
    }
}
