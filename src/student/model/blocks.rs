//! Transformer blocks: timm's pre-norm ViT `Block` (self-attention) and LightGen's
//! `Attention_Block(is_cross=True)` (`models/utils.py`), whose residual starts from the
//! *normalised* query — a quirk kept for parity with the released weights.

use tch::Tensor;

use super::layers::{attention, Ctx, LayerNorm, Linear};
use super::rope::Angles;
use super::store::Scope;

/// timm `Mlp`: fc1 (d → r·d), exact GELU, dropout, fc2, dropout.
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    drop: f32,
}

impl Mlp {
    pub fn new(s: &mut Scope, dim: usize, ratio: usize, drop: f32) -> Mlp {
        Mlp {
            fc1: Linear::xavier(&mut s.pp("fc1"), dim, dim * ratio),
            fc2: Linear::xavier(&mut s.pp("fc2"), dim * ratio, dim),
            drop,
        }
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
        let h = ctx.dropout(&self.fc1.forward(x).gelu("none"), self.drop);
        ctx.dropout(&self.fc2.forward(&h), self.drop)
    }
}

/// (B, L, H·d) → (B, H, L, d): a view, as SDPA takes strided inputs.
fn heads(x: &Tensor, h: i64) -> Tensor {
    let (b, l, d) = x.size3().expect("(B, L, D)");
    x.view([b, l, h, d / h]).transpose(1, 2)
}

/// (B, H, L, d) → (B, L, H·d).
fn merge(x: &Tensor) -> Tensor {
    let (b, h, l, d) = x.size4().expect("(B, H, L, d)");
    x.transpose(1, 2).reshape([b, l, h * d])
}

/// timm `Attention`: fused qkv (with bias), SDPA, proj.
pub struct SelfAttention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
    attn_drop: f32,
    proj_drop: f32,
}

impl SelfAttention {
    pub fn forward(&self, x: &Tensor, ctx: &Ctx, rope: Option<&Angles>) -> Tensor {
        let (b, l, d) = x.size3().expect("(B, L, D)");
        let qkv = self.qkv.forward(x).view([b, l, 3, self.heads, d / self.heads]).permute([2, 0, 3, 1, 4]); // (3, B, H, L, d)
        let (q, k) = match rope {
            Some(r) => (r.rotate(&qkv.get(0)), r.rotate(&qkv.get(1))),
            None => (qkv.get(0), qkv.get(1)),
        };
        let o = attention(&q, &k, &qkv.get(2), ctx, self.attn_drop); // (B, H, L, d)
        ctx.dropout(&self.proj.forward(&merge(&o)), self.proj_drop) // (B, L, D)
    }
}

/// timm `Block`: x + Attn(LN(x)); x + Mlp(LN(x)).
pub struct Block {
    norm1: LayerNorm,
    attn: SelfAttention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    pub fn new(s: &mut Scope, dim: usize, heads: usize, ratio: usize, attn_drop: f32, proj_drop: f32) -> Block {
        let norm1 = LayerNorm::new(&mut s.pp("norm1"), dim);
        let attn = {
            let mut a = s.pp("attn");
            SelfAttention {
                qkv: Linear::xavier(&mut a.pp("qkv"), dim, 3 * dim),
                proj: Linear::xavier(&mut a.pp("proj"), dim, dim),
                heads: heads as i64,
                attn_drop,
                proj_drop,
            }
        };
        let norm2 = LayerNorm::new(&mut s.pp("norm2"), dim);
        let mlp = Mlp::new(&mut s.pp("mlp"), dim, ratio, proj_drop);
        Block { norm1, attn, norm2, mlp }
    }

    /// (B, L, D) → (B, L, D).
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
        self.forward_rope(x, ctx, None)
    }

    /// [`Self::forward`] with queries and keys rotated by `rope` (B or 1, 1, L, hd).
    pub fn forward_rope(&self, x: &Tensor, ctx: &Ctx, rope: Option<&Angles>) -> Tensor {
        let x = x + self.attn.forward(&self.norm1.forward(x), ctx, rope);
        &x + self.mlp.forward(&self.norm2.forward(&x), ctx)
    }

    /// [`Self::forward`] at `rows` only (flat b·L + l, `k` per sample, sample-major): every
    /// token still serves as a key and value, but only those rows are queried and go through
    /// the projection and the MLP. x (B, L, D) → (B, K, D). `rope`: the rows' angles (for
    /// the queries) and every token's (for the keys).
    pub fn forward_rows(
        &self,
        x: &Tensor,
        rows: &Tensor,
        k: i64,
        ctx: &Ctx,
        rope: Option<(&Angles, &Angles)>,
    ) -> Tensor {
        let (b, l, d) = x.size3().expect("(B, L, D)");
        let a = &self.attn;
        let (h, hd) = (a.heads, d / a.heads);
        let qkv = a.qkv.forward(&self.norm1.forward(x)); // (B, L, 3D)
        let q = qkv.view([b * l, 3 * d]).index_select(0, rows).narrow(1, 0, d); // (B·K, D)
        let q = q.reshape([b, k, h, hd]).transpose(1, 2); // (B, H, K, d)
        let kv = qkv.view([b, l, 3, h, hd]).permute([2, 0, 3, 1, 4]); // (3, B, H, L, d)
        let (q, key) = match rope {
            Some((rq, rk)) => (rq.rotate(&q), rk.rotate(&kv.get(1))),
            None => (q, kv.get(1)),
        };
        let o = merge(&attention(&q, &key, &kv.get(2), ctx, a.attn_drop)); // (B, K, D)
        let x =
            x.view([b * l, d]).index_select(0, rows).view([b, k, d]) + ctx.dropout(&a.proj.forward(&o), a.proj_drop);
        &x + self.mlp.forward(&self.norm2.forward(&x), ctx)
    }
}

/// LightGen `Cross_Attention`: Q from the image tokens, K/V from the text.
pub struct CrossAttention {
    query_linear: Linear,
    kv: Linear,
    proj: Linear,
    heads: i64,
    attn_drop: f32,
    proj_drop: f32,
}

/// LightGen's cross block: q = LN(q); kv = LN(kv); x = q + CrossAttn(q, kv); x + Mlp(LN(x)).
pub struct CrossBlock {
    normq: LayerNorm,
    normkv: LayerNorm,
    attn: CrossAttention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl CrossBlock {
    pub fn new(s: &mut Scope, dim: usize, heads: usize, ratio: usize, attn_drop: f32, proj_drop: f32) -> CrossBlock {
        let normq = LayerNorm::new(&mut s.pp("normq"), dim);
        let normkv = LayerNorm::new(&mut s.pp("normkv"), dim);
        let attn = {
            let mut a = s.pp("attn");
            CrossAttention {
                query_linear: Linear::xavier(&mut a.pp("query_linear"), dim, dim),
                kv: Linear::xavier(&mut a.pp("kv"), dim, 2 * dim),
                proj: Linear::xavier(&mut a.pp("proj"), dim, dim),
                heads: heads as i64,
                attn_drop,
                proj_drop,
            }
        };
        let norm2 = LayerNorm::new(&mut s.pp("norm2"), dim);
        let mlp = Mlp::new(&mut s.pp("mlp"), dim, ratio, proj_drop);
        CrossBlock { normq, normkv, attn, norm2, mlp }
    }

    /// x (B, L, D) image tokens, text (B, T, D) → (B, L, D).
    pub fn forward(&self, x: &Tensor, text: &Tensor, ctx: &Ctx) -> Tensor {
        let q = self.normq.forward(x);
        let kv = self.normkv.forward(text);
        let (b, t, d) = kv.size3().expect("(B, T, D)");
        let a = &self.attn;
        let qh = heads(&a.query_linear.forward(&q), a.heads); // (B, H, L, d)
        let kv2 = a.kv.forward(&kv).view([b, t, 2, a.heads, d / a.heads]).permute([2, 0, 3, 1, 4]); // (2, B, H, T, d)
        let o = merge(&attention(&qh, &kv2.get(0), &kv2.get(1), ctx, a.attn_drop)); // (B, L, D)
        let x = &q + ctx.dropout(&a.proj.forward(&o), a.proj_drop);
        &x + self.mlp.forward(&self.norm2.forward(&x), ctx)
    }
}
