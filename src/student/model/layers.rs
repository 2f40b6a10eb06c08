//! The primitive layers (Linear, LayerNorm, attention) on libtorch's fused kernels, a forward
//! context (train mode and compute precision), and the few host ↔ tensor conversions the
//! model code needs.

use tch::{Device, Kind, Tensor};

use super::store::Scope;

/// Train/eval mode and the compute dtype of one forward pass.
pub struct Ctx {
    pub train: bool,
    /// What the matmuls run in: Float, or BFloat16 as autocast does (weights stay f32 and are
    /// cast at each use, so gradients land on the f32 masters; norms run in f32).
    pub dtype: Kind,
}

impl Ctx {
    pub fn eval() -> Ctx {
        Ctx { train: false, dtype: Kind::Float }
    }

    /// Train mode; `seed` seeds libtorch's generators, which draw the dropout masks (on the
    /// device that runs them, as PyTorch does).
    pub fn train(seed: u64) -> Ctx {
        tch::manual_seed(seed as i64);
        Ctx { train: true, dtype: Kind::Float }
    }

    pub fn with_dtype(mut self, dtype: Kind) -> Ctx {
        self.dtype = dtype;
        self
    }

    /// `x` in the compute dtype.
    pub fn cast(&self, x: &Tensor) -> Tensor {
        like(x, self.dtype)
    }

    /// Inverted dropout (libtorch's fused kernel); the identity in eval mode.
    pub fn dropout(&self, x: &Tensor, p: f32) -> Tensor {
        if !self.train || p <= 0.0 {
            return x.shallow_clone();
        }
        x.dropout(p as f64, true)
    }
}

/// `t` as `kind` (no copy when it already is).
pub fn like(t: &Tensor, kind: Kind) -> Tensor {
    if t.kind() == kind {
        t.shallow_clone()
    } else {
        t.to_kind(kind)
    }
}

/// A host vector as a tensor of shape `dims` on `dev`.
pub fn tensor_f32(v: &[f32], dims: &[usize], dev: Device) -> Tensor {
    let shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(v).reshape(shape).to_device(dev)
}

/// Row indices (i64, as libtorch's index ops want) on `dev`.
pub fn index(rows: &[i64], dev: Device) -> Tensor {
    Tensor::from_slice(rows).to_device(dev)
}

/// Every value of `t`, flattened, as f32 on the host.
pub fn to_host(t: &Tensor) -> Vec<f32> {
    let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view(-1);
    Vec::<f32>::try_from(&t).expect("a float tensor converts to Vec<f32>")
}

/// A one-element tensor's value.
pub fn scalar(t: &Tensor) -> f64 {
    t.detach().to_device(Device::Cpu).to_kind(Kind::Double).double_value(&[])
}

/// `nn.Linear`: weight (out, in), optional bias (out).
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    /// Xavier-uniform weight, zero bias (MAR's `initialize_weights` for every backbone Linear).
    pub fn xavier(s: &mut Scope, inp: usize, out: usize) -> Linear {
        Linear { w: s.xavier("weight", out, inp), b: Some(s.zeros("bias", &[out])) }
    }

    pub fn zeros(s: &mut Scope, inp: usize, out: usize) -> Linear {
        Linear { w: s.zeros("weight", &[out, inp]), b: Some(s.zeros("bias", &[out])) }
    }

    pub fn normal(s: &mut Scope, inp: usize, out: usize, std: f32) -> Linear {
        Linear { w: s.normal("weight", &[out, inp], std), b: Some(s.zeros("bias", &[out])) }
    }

    /// The same weights under a second handle.
    pub fn shallow_clone(&self) -> Linear {
        Linear { w: self.w.shallow_clone(), b: self.b.as_ref().map(Tensor::shallow_clone) }
    }

    /// (…, in) → (…, out), in x's dtype (the weights are cast to it, as autocast does).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let k = x.kind();
        x.linear(&like(&self.w, k), self.b.as_ref().map(|b| like(b, k)))
    }
}

/// `nn.LayerNorm` over the last dimension (eps 1e-6 throughout MAR/LightGen).
pub struct LayerNorm {
    pub w: Option<Tensor>,
    pub b: Option<Tensor>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(s: &mut Scope, dim: usize) -> LayerNorm {
        LayerNorm { w: Some(s.ones("weight", &[dim])), b: Some(s.zeros("bias", &[dim])), eps: 1e-6 }
    }

    /// `elementwise_affine=False` (DiffLoss's final norm).
    pub fn plain() -> LayerNorm {
        LayerNorm { w: None, b: None, eps: 1e-6 }
    }

    /// libtorch's fused layer norm, in f32 whatever x's dtype (autocast's rule), returned in
    /// x's dtype.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let k = x.kind();
        let d = *x.size().last().expect("rank ≥ 1");
        let y = like(x, Kind::Float).layer_norm([d], self.w.as_ref(), self.b.as_ref(), self.eps, true);
        like(&y, k)
    }
}

/// Attention over heads with libtorch's fused scaled-dot-product kernel (flash or
/// memory-efficient on CUDA, the fused CPU kernel elsewhere): q (B, H, Lq, d), k and v
/// (B, H, Lk, d) → (B, H, Lq, d). Scale 1/sqrt(d), no mask.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, ctx: &Ctx, drop: f32) -> Tensor {
    let p = if ctx.train { drop as f64 } else { 0.0 };
    Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, p, false, None, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::model::store::ParamStore;

    #[test]
    fn layer_norm_and_attention_match_their_definitions() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0]).reshape([1, 4]);
        let y = to_host(&LayerNorm::plain().forward(&x));
        // mean 3, var (4+1+0+9)/4 = 3.5 → (x − 3)/sqrt(3.5 + 1e-6)
        for (a, b) in y.iter().zip([-2.0f32, -1.0, 0.0, 3.0]) {
            assert!((a - b / 3.5f32.sqrt()).abs() < 1e-5);
        }
        // One query over two keys: softmax(q·k/sqrt(d)) weighs the values.
        let q = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 1, 1, 2]);
        let k = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).reshape([1, 1, 2, 2]);
        let v = Tensor::from_slice(&[10.0f32, 0.0, 0.0, 10.0]).reshape([1, 1, 2, 2]);
        let o = to_host(&attention(&q, &k, &v, &Ctx::eval(), 0.0));
        let w = 1.0 / (1.0 + (-1.0f32 / 2f32.sqrt()).exp());
        assert!((o[0] - 10.0 * w).abs() < 1e-5 && (o[1] - 10.0 * (1.0 - w)).abs() < 1e-5, "{o:?}");
    }

    #[test]
    fn linear_keeps_leading_dimensions_and_dropout_keeps_the_mean() {
        let mut st = ParamStore::new(1, Device::Cpu);
        let lin = Linear::xavier(&mut st.root().pp("l"), 4, 3);
        let x = Tensor::ones([2, 5, 4], (Kind::Float, Device::Cpu));
        assert_eq!(lin.forward(&x).size(), [2, 5, 3]);
        let ctx = Ctx::train(7);
        let big = Tensor::ones([20000], (Kind::Float, Device::Cpu));
        let m = scalar(&ctx.dropout(&big, 0.1).mean(Kind::Float));
        assert!((m - 1.0).abs() < 0.02, "{m}");
    }
}
