//! The primitive layers (Linear, LayerNorm, dropout, softmax, GELU) written with plain candle
//! ops so that every one of them has a gradient (candle-nn's fused layer-norm and softmax
//! kernels are inference-only), and a forward context that carries train mode and the seeded
//! dropout generator.

use std::cell::RefCell;

use candle_core::{DType, Result, Tensor, D};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::store::Scope;

/// Train/eval mode, the compute dtype and the dropout stream for one forward pass.
pub struct Ctx {
    pub train: bool,
    /// What the matmuls run in: F32, or BF16 as autocast does (weights stay f32 and are cast
    /// at each use, so gradients land on the f32 masters; norms and softmax run in f32).
    pub dtype: DType,
    rng: RefCell<ChaCha8Rng>,
}

impl Ctx {
    pub fn eval() -> Ctx {
        Ctx { train: false, dtype: DType::F32, rng: RefCell::new(ChaCha8Rng::seed_from_u64(0)) }
    }

    pub fn train(seed: u64) -> Ctx {
        Ctx { train: true, dtype: DType::F32, rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed)) }
    }

    pub fn with_dtype(mut self, dtype: DType) -> Ctx {
        self.dtype = dtype;
        self
    }

    /// `x` in the compute dtype.
    pub fn cast(&self, x: &Tensor) -> Result<Tensor> {
        like(x, self.dtype)
    }

    /// Inverted dropout: zero with probability p, scale the rest by 1 / (1 − p).
    pub fn dropout(&self, x: &Tensor, p: f32) -> Result<Tensor> {
        if !self.train || p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - p);
        if !x.device().is_cpu() {
            // On a GPU the mask is drawn there (seeded per step by the trainer): a host-side
            // mask of every attention map would cost more than the step itself.
            let m =
                (Tensor::rand(0f32, 1f32, x.shape(), x.device())?.ge(p as f64)?.to_dtype(x.dtype())? * keep as f64)?;
            return x.mul(&m);
        }
        let mut rng = self.rng.borrow_mut();
        let m: Vec<f32> = (0..x.elem_count()).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect();
        x.mul(&Tensor::from_vec(m, x.shape(), x.device())?.to_dtype(x.dtype())?)
    }
}

/// `t` as `dtype` (no copy when it already is).
pub fn like(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        Ok(t.clone())
    } else {
        t.to_dtype(dtype)
    }
}

/// `nn.Linear`: weight (out, in), optional bias (out).
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    /// Xavier-uniform weight, zero bias (MAR's `initialize_weights` for every backbone Linear).
    pub fn xavier(s: &mut Scope, inp: usize, out: usize) -> Result<Linear> {
        Ok(Linear { w: s.xavier("weight", out, inp)?, b: Some(s.zeros("bias", &[out])?) })
    }

    pub fn zeros(s: &mut Scope, inp: usize, out: usize) -> Result<Linear> {
        Ok(Linear { w: s.zeros("weight", &[out, inp])?, b: Some(s.zeros("bias", &[out])?) })
    }

    pub fn normal(s: &mut Scope, inp: usize, out: usize, std: f32) -> Result<Linear> {
        Ok(Linear { w: s.normal("weight", &[out, inp], std)?, b: Some(s.zeros("bias", &[out])?) })
    }

    /// (…, in) → (…, out), in x's dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inp = *dims.last().expect("rank ≥ 1");
        let rows = x.elem_count() / inp.max(1);
        let y = x.reshape((rows, inp))?.matmul(&like(&self.w, x.dtype())?.t()?)?; // (N, out)
        let y = match &self.b {
            Some(b) => y.broadcast_add(&like(b, x.dtype())?)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().expect("rank ≥ 1") = self.w.dim(0)?;
        y.reshape(out)
    }
}

/// `nn.LayerNorm` over the last dimension (eps 1e-6 throughout MAR/LightGen).
#[derive(Clone)]
pub struct LayerNorm {
    pub w: Option<Tensor>,
    pub b: Option<Tensor>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(s: &mut Scope, dim: usize) -> Result<LayerNorm> {
        Ok(LayerNorm { w: Some(s.ones("weight", &[dim])?), b: Some(s.zeros("bias", &[dim])?), eps: 1e-6 })
    }

    /// `elementwise_affine=False` (DiffLoss's final norm).
    pub fn plain() -> LayerNorm {
        LayerNorm { w: None, b: None, eps: 1e-6 }
    }

    /// In f32 whatever x's dtype (as autocast), returned in x's dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = &like(x, DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let mut y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        if let Some(w) = &self.w {
            y = y.broadcast_mul(w)?;
        }
        if let Some(b) = &self.b {
            y = y.broadcast_add(b)?;
        }
        like(&y, dtype)
    }
}

/// Softmax over the last dimension; the max is subtracted for range, detached as PyTorch's.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Attention over heads: q (B, H, Lq, d), k and v (B, H, Lk, d) → (B, H, Lq, d).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, ctx: &Ctx, drop: f32) -> Result<Tensor> {
    let scale = (q.dim(D::Minus1)? as f64).powf(-0.5);
    let att = like(&(q.matmul(&k.t()?)? * scale)?, DType::F32)?; // (B, H, Lq, Lk), f32 for the softmax
    let att = if ctx.train { softmax(&att)? } else { candle_nn::ops::softmax_last_dim(&att)? };
    ctx.dropout(&like(&att, v.dtype())?, drop)?.matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::ParamStore;
    use candle_core::Device;

    #[test]
    fn layer_norm_and_softmax_match_their_definitions() {
        let x = Tensor::new(&[[1.0f32, 2.0, 3.0, 6.0]], &Device::Cpu).unwrap();
        let y: Vec<f32> = LayerNorm::plain().forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // mean 3, var (4+1+0+9)/4 = 3.5 → (x − 3)/sqrt(3.5 + 1e-6)
        for (a, b) in y.iter().zip([-2.0f32, -1.0, 0.0, 3.0]) {
            assert!((a - b / 3.5f32.sqrt()).abs() < 1e-5);
        }
        let s: Vec<f32> = softmax(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let z: f32 = [1.0f32, 2.0, 3.0, 6.0].iter().map(|v| v.exp()).sum();
        assert!((s[3] - 6.0f32.exp() / z).abs() < 1e-6);
        let fused: Vec<f32> = candle_nn::ops::softmax_last_dim(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(s.iter().zip(&fused).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn linear_keeps_leading_dimensions_and_dropout_keeps_the_mean() {
        let mut st = ParamStore::new(1, &Device::Cpu);
        let lin = Linear::xavier(&mut st.root().pp("l"), 4, 3).unwrap();
        let x = Tensor::ones((2, 5, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(lin.forward(&x).unwrap().dims(), &[2, 5, 3]);
        let ctx = Ctx::train(7);
        let big = Tensor::ones(20000, candle_core::DType::F32, &Device::Cpu).unwrap();
        let m: f32 = ctx.dropout(&big, 0.1).unwrap().mean_all().unwrap().to_scalar().unwrap();
        assert!((m - 1.0).abs() < 0.02, "{m}");
    }
}
