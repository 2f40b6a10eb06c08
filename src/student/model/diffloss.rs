//! MAR's diffusion head (`models/diffloss.py`): `SimpleMLPAdaLN` models p(token | z) with an
//! iDDPM diffusion (epsilon prediction, learned-range variance). Training loss per token =
//! eps-MSE + the variational bound with the mean detached; sampling is ancestral over the
//! respaced steps with classifier-free guidance on eps only. With `Prediction::V` the head
//! outputs v instead, trained by v-MSE; everything downstream sees the eps it implies.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

use super::config::Prediction;
use super::diffusion::{timestep_embedding, Diffusion};
use super::layers::{index, like, tensor_f32, LayerNorm, Linear};
use super::mar::X0Head;
use super::store::Scope;

const FREQ_DIM: usize = 256;

struct ResBlock {
    in_ln: LayerNorm,
    mlp0: Linear,
    mlp2: Linear,
    ada: Linear,
}

/// How the head's sampling noise is shaped: its component along each token's channel means
/// (`channels` channel-major groups) is scaled by `mean_noise` (1 = untouched, the reference).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseShape {
    pub mean_noise: f64,
    pub channels: usize,
}

impl NoiseShape {
    /// Noise as drawn, every component alike.
    pub const PLAIN: NoiseShape = NoiseShape { mean_noise: 1.0, channels: 0 };

    /// Noise (N, C) → the same with each row's per-channel mean scaled by `mean_noise`.
    pub fn apply(&self, noise: Tensor) -> Tensor {
        if self.mean_noise == 1.0 || self.channels == 0 {
            return noise;
        }
        let (n, c) = noise.size2().expect("(N, C) noise");
        let g = noise.view([n, self.channels as i64, c / self.channels as i64]); // (N, G, C/G)
        let mean = g.mean_dim(-1, true, Kind::Float); // (N, G, 1)
        (&g - mean * (1.0 - self.mean_noise)).view([n, c])
    }
}

/// `SimpleMLPAdaLN(in=C, width=w, out=2C, z=Dz, depth=n)`.
pub struct DiffLoss {
    time0: Linear,
    time2: Linear,
    cond_embed: Linear,
    input_proj: Linear,
    res_blocks: Vec<ResBlock>,
    final_ada: Linear,
    final_norm: LayerNorm,
    final_linear: Linear,
    pub token_dim: usize,
    pub prediction: Prediction,
    pub train_diffusion: Diffusion,
    /// The x0 read-out the head denoises around (`MarConfig::head_centre`), set by `Mar::new`.
    pub centre: Option<X0Head>,
}

/// Per-row timestep data for [`DiffLoss::terms_at`], on the device.
pub struct Timesteps {
    /// (N, 8): sqrt(ᾱ), sqrt(1 − ᾱ), clipped posterior log-variance, log β, sqrt(1/ᾱ),
    /// sqrt(1/ᾱ − 1), posterior mean coefficients 1 and 2.
    cols: Tensor,
    /// (U, 256) embeddings of the distinct timesteps, and each row's index into them.
    temb: Tensor,
    pos: Option<Tensor>,
    /// (N) rows at t = 0 (their VB term is the decoder NLL), when there are any.
    zero: Option<Tensor>,
}

/// GLIDE embeddings of the distinct values of `t` (U, 256) and each row's index into them
/// (None when `t` is exactly its sorted distinct values).
fn embed_timesteps(t: &[f32], dev: Device) -> (Tensor, Option<Tensor>) {
    let mut uniq: Vec<f32> = t.to_vec();
    uniq.sort_by(f32::total_cmp);
    uniq.dedup();
    let temb = tensor_f32(&timestep_embedding(&uniq, FREQ_DIM), &[uniq.len(), FREQ_DIM], dev);
    if uniq.as_slice() == t {
        return (temb, None);
    }
    let pos: Vec<i64> = t.iter().map(|v| uniq.partition_point(|q| q < v) as i64).collect();
    (temb, Some(index(&pos, dev)))
}

/// Per-row training terms.
pub struct Terms {
    /// mse + vb, (N).
    pub loss: Tensor,
    /// The MSE of the head's target alone (eps, or v), (N): what Diffusion-DPO compares.
    pub mse: Tensor,
}

fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    x * (scale + 1.0) + shift
}

/// A (N, 1) f32 column of per-row coefficients on `dev`.
#[cfg(test)]
fn column(v: impl Iterator<Item = f64>, dev: Device) -> Tensor {
    let v: Vec<f32> = v.map(|x| x as f32).collect();
    let n = v.len();
    tensor_f32(&v, &[n, 1], dev)
}

/// `approx_standard_normal_cdf`: 0.5·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
fn approx_cdf(x: &Tensor) -> Tensor {
    let inner = (x + x.pow_tensor_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    (inner.tanh() + 1.0) * 0.5
}

impl DiffLoss {
    /// Initialised as the reference: xavier Linears, N(0, 0.02) time-embedding weights, zero
    /// adaLN modulations and a zero output layer.
    pub fn new(
        s: &mut Scope,
        token_dim: usize,
        z_dim: usize,
        (width, depth): (usize, usize),
        prediction: Prediction,
    ) -> DiffLoss {
        let mut net = s.pp("net");
        let (time0, time2) = {
            let mut t = net.pp("time_embed.mlp");
            (Linear::normal(&mut t.pp(0), FREQ_DIM, width, 0.02), Linear::normal(&mut t.pp(2), width, width, 0.02))
        };
        let cond_embed = Linear::xavier(&mut net.pp("cond_embed"), z_dim, width);
        let input_proj = Linear::xavier(&mut net.pp("input_proj"), token_dim, width);
        let mut res_blocks = Vec::with_capacity(depth);
        for i in 0..depth {
            let mut b = net.pp(format!("res_blocks.{i}"));
            let in_ln = LayerNorm::new(&mut b.pp("in_ln"), width);
            let mlp0 = Linear::xavier(&mut b.pp("mlp").pp(0), width, width);
            let mlp2 = Linear::xavier(&mut b.pp("mlp").pp(2), width, width);
            let ada = Linear::zeros(&mut b.pp("adaLN_modulation").pp(1), width, 3 * width);
            res_blocks.push(ResBlock { in_ln, mlp0, mlp2, ada });
        }
        let mut f = net.pp("final_layer");
        let final_linear = Linear::zeros(&mut f.pp("linear"), width, 2 * token_dim);
        let final_ada = Linear::zeros(&mut f.pp("adaLN_modulation").pp(1), width, 2 * width);
        DiffLoss {
            time0,
            time2,
            cond_embed,
            input_proj,
            res_blocks,
            final_ada,
            final_norm: LayerNorm::plain(),
            final_linear,
            token_dim,
            prediction,
            train_diffusion: Diffusion::training(),
            centre: None,
        }
    }

    /// x (N, C) noisy tokens, t (N) original timesteps, z (M, Dz) with N = M·k (the rows of z
    /// repeated k times, as `diffusion_batch_mul` does) → (N, 2C) = [eps (or v), variance
    /// interpolation]. `sa`: sqrt(ᾱ) at each row's timestep, (N, 1) or a scalar, which
    /// `centre` scales the read-out by.
    ///
    /// It runs in z's dtype (bf16 under autocast) and returns f32 for the loss and sampler math.
    pub fn net(&self, x: &Tensor, t: &[f32], z: &Tensor, sa: &Tensor) -> Tensor {
        let (temb, pos) = embed_timesteps(t, x.device());
        self.net_at(x, &temb, pos.as_ref(), z, sa)
    }

    /// [`Self::net`] with the timesteps prepared: `temb` (U, 256) the embeddings of the distinct
    /// timesteps and `pos` (N) each row's index into them (None when the rows are exactly the
    /// distinct ones). Exact reformulations for speed: the timestep MLP runs once per distinct
    /// timestep and the condition projection once per distinct z row, then both are gathered to
    /// the N rows.
    fn net_at(&self, x: &Tensor, temb: &Tensor, pos: Option<&Tensor>, z: &Tensor, sa: &Tensor) -> Tensor {
        let n = x.size()[0];
        let m = z.size()[0];
        let x = match &self.centre {
            // x_t − sqrt(ᾱ)·x0(z) = sqrt(ᾱ)·(x0 − x0(z)) + sqrt(1 − ᾱ)·eps: the same eps.
            Some(h) => {
                let mu = h.forward(z).detach(); // (M, C)
                let mu = if m == n { mu } else { mu.repeat([n / m, 1]) }; // (N, C)
                like(&(x - like(&mu, Kind::Float) * sa), z.kind())
            }
            None => like(x, z.kind()),
        };
        let x = &x;
        let temb = self.time2.forward(&self.time0.forward(&like(temb, z.kind())).silu()); // (U, w)
        let t_emb = match pos {
            Some(p) => temb.index_select(0, p), // (N, w)
            None => temb,
        };
        let c = self.cond_embed.forward(z); // (M, w)
        let c = if m == n { c } else { c.repeat([n / m, 1]) }; // (N, w)
        let y = (t_emb + c).silu(); // (N, w), SiLU'd once for every adaLN
        let mut h = self.input_proj.forward(x); // (N, w)
        for b in &self.res_blocks {
            let m = b.ada.forward(&y).chunk(3, -1); // shift, scale, gate: (N, w) each
            let u = modulate(&b.in_ln.forward(&h), &m[0], &m[1]);
            let u = b.mlp2.forward(&b.mlp0.forward(&u).silu());
            h = h + &m[2] * u;
        }
        let m = self.final_ada.forward(&y).chunk(2, -1);
        like(&self.final_linear.forward(&modulate(&self.final_norm.forward(&h), &m[0], &m[1])), Kind::Float)
    }

    /// The per-row timestep data of `terms` for timesteps `t`, on `dev`: one upload of the
    /// schedule's coefficients and one of the distinct timesteps' embeddings, so that a training
    /// step copies everything before its first kernel.
    pub fn timesteps(&self, t: &[usize], dev: Device) -> Timesteps {
        let d = &self.train_diffusion;
        let tables: [&[f64]; 8] = [
            &d.sqrt_alphas_cumprod,
            &d.sqrt_one_minus_alphas_cumprod,
            &d.posterior_log_variance_clipped,
            &d.log_betas,
            &d.sqrt_recip_alphas_cumprod,
            &d.sqrt_recipm1_alphas_cumprod,
            &d.posterior_mean_coef1,
            &d.posterior_mean_coef2,
        ];
        let cols: Vec<f32> = t.iter().flat_map(|&i| tables.iter().map(move |tab| tab[i] as f32)).collect();
        let tf: Vec<f32> = t.iter().map(|&i| i as f32).collect();
        let (temb, pos) = embed_timesteps(&tf, dev);
        let zero = t.contains(&0).then(|| {
            let is0: Vec<bool> = t.iter().map(|&i| i == 0).collect();
            Tensor::from_slice(&is0).to_device(dev)
        });
        Timesteps { cols: tensor_f32(&cols, &[t.len(), tables.len()], dev), temb, pos, zero }
    }

    /// `training_losses` for target x0 (N, C), condition z (M, Dz) (N = M·k, see [`Self::net`]),
    /// timesteps t (N) and noise (N, C): per-row mse + vb (in bits, mean over channels).
    pub fn terms(&self, x0: &Tensor, z: &Tensor, t: &[usize], noise: &Tensor) -> Terms {
        self.terms_at(x0, z, &self.timesteps(t, x0.device()), noise)
    }

    /// [`Self::terms`] with the timesteps prepared by [`Self::timesteps`].
    pub fn terms_at(&self, x0: &Tensor, z: &Tensor, ts: &Timesteps, noise: &Tensor) -> Terms {
        let c = self.token_dim as i64;
        let col = |k: i64| ts.cols.narrow(1, k, 1); // (N, 1)
        let (sa, sb) = (col(0), col(1));
        let x_t = x0 * &sa + noise * &sb; // (N, C)
        let out = self.net_at(&x_t, &ts.temb, ts.pos.as_ref(), z, &sa); // (N, 2C)
        let pred = out.narrow(1, 0, c);
        let v = out.narrow(1, c, c);
        let target = match self.prediction {
            Prediction::Eps => noise.shallow_clone(),
            Prediction::V => noise * &sa - x0 * &sb,
        };
        let mse = (target - &pred).square().mean_dim(1, false, Kind::Float); // (N)

        // The variational bound trains only the variance: the mean comes from a detached eps.
        let eps_d = self.eps(&pred.detach(), &x_t, &sa, &sb);
        let (min_log, max_log) = (col(2), col(3)); // (N, 1)
        let frac = (v + 1.0) * 0.5;
        let model_logvar = &frac * &max_log + (-&frac + 1.0) * &min_log;
        let x0_hat = &x_t * col(4) - eps_d * col(5);
        let (c1, c2) = (col(6), col(7));
        let model_mean = x0_hat * &c1 + &x_t * &c2;
        let true_mean = x0 * &c1 + &x_t * &c2;
        // normal_kl(true_mean, true_logvar, model_mean, model_logvar), mean over channels, in bits.
        let dlog = &model_logvar - &min_log; // logvar2 − logvar1
        let kl = (-&dlog).exp() + &dlog + (true_mean - &model_mean).square() * (-&model_logvar).exp() - 1.0;
        let kl = kl.mean_dim(1, false, Kind::Float) * (0.5 / std::f64::consts::LN_2); // (N)
        let vb = match &ts.zero {
            Some(is0) => self.decoder_nll(x0, &model_mean, &model_logvar).where_self(is0, &kl),
            None => kl,
        };
        let loss = &mse + vb;
        Terms { loss, mse }
    }

    /// The eps implied by the head's output `pred` (N, C) at x_t (N, C), given sqrt(ᾱ) and
    /// sqrt(1 − ᾱ) as (N, 1) columns or scalars broadcast alike: eps = sqrt(ᾱ)·v + sqrt(1 − ᾱ)·x_t.
    fn eps(&self, pred: &Tensor, x_t: &Tensor, sa: &Tensor, sb: &Tensor) -> Tensor {
        match self.prediction {
            Prediction::Eps => pred.shallow_clone(),
            Prediction::V => pred * sa + x_t * sb,
        }
    }

    /// −log p(x0 | x1) under a discretised Gaussian (1/255 bins on [-1, 1]), in bits, (N).
    fn decoder_nll(&self, x0: &Tensor, mean: &Tensor, logvar: &Tensor) -> Tensor {
        let centered = x0 - mean;
        let inv_std = (logvar * -0.5).exp();
        let cdf_plus = approx_cdf(&((&centered + 1.0 / 255.0) * &inv_std));
        let cdf_min = approx_cdf(&((&centered - 1.0 / 255.0) * &inv_std));
        let log_plus = cdf_plus.clamp_min(1e-12).log();
        let log_one_minus_min = (-&cdf_min + 1.0).clamp_min(1e-12).log();
        let log_delta = (&cdf_plus - &cdf_min).clamp_min(1e-12).log();
        let lo = x0.lt(-0.999);
        let hi = x0.gt(0.999);
        let logp = log_plus.where_self(&lo, &log_one_minus_min.where_self(&hi, &log_delta));
        logp.mean_dim(1, false, Kind::Float) * (-1.0 / std::f64::consts::LN_2)
    }

    /// Ancestral sampling of N tokens from z: (N, Dz), or (2N, Dz) = [cond; uncond] with guidance
    /// scale `cfg` on eps (on v for a v head, the same thing: eps is affine in v at a shared
    /// x_t) (both halves start from the same noise and the cond half's state is
    /// fed to both, as `forward_with_cfg`). Temperature scales the per-step noise; `clip_x0`
    /// clamps the predicted x0 to ±r at every step; `shape` scales the noise's per-channel
    /// means. Noise comes from `rng` on the host, so a seed draws the same tokens on every
    /// device.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        z: &Tensor,
        cfg: f64,
        temperature: f64,
        clip_x0: Option<f64>,
        shape: NoiseShape,
        diff: &Diffusion,
        rng: &mut impl Rng,
    ) -> Tensor {
        let guided = cfg != 1.0;
        let rows = z.size()[0] as usize;
        let n = if guided { rows / 2 } else { rows };
        let c = self.token_dim;
        let dev = z.device();
        let mut noise = |len: usize| -> Tensor {
            let v: Vec<f32> = (0..len).map(|_| StandardNormal.sample(rng)).collect();
            shape.apply(tensor_f32(&v, &[len / c, c], dev))
        };
        let mut x = noise(n * c); // (N, C)
        for i in (0..diff.steps()).rev() {
            let z_i = (i > 0).then(|| noise(n * c));
            x = self.p_step(&x, z, i, cfg, temperature, clip_x0, diff, z_i.as_ref());
        }
        x
    }

    /// One ancestral step from x_i (N, C) at respaced index `i` to x_(i−1): `p_sample` with the
    /// given noise (N, C) (none at i = 0), the same for both CFG halves.
    #[allow(clippy::too_many_arguments)]
    pub fn p_step(
        &self,
        x: &Tensor,
        z: &Tensor,
        i: usize,
        cfg: f64,
        temperature: f64,
        clip_x0: Option<f64>,
        diff: &Diffusion,
        noise: Option<&Tensor>,
    ) -> Tensor {
        let guided = cfg != 1.0;
        let rows = z.size()[0] as usize;
        let (n, c) = (x.size()[0], self.token_dim as i64);
        let dev = x.device();
        let t = vec![diff.timestep_map[i] as f32; rows];
        let input = if guided { Tensor::cat(&[x, x], 0) } else { x.shallow_clone() };
        let sa = Tensor::scalar_tensor(diff.sqrt_alphas_cumprod[i], (Kind::Float, dev));
        let out = self.net(&input, &t, z, &sa); // (rows, 2C)
        let (eps, v) = if guided {
            let ec = out.narrow(0, 0, n).narrow(1, 0, c);
            let eu = out.narrow(0, n, n).narrow(1, 0, c);
            (&eu + (ec - &eu) * cfg, out.narrow(0, 0, n).narrow(1, c, c))
        } else {
            (out.narrow(1, 0, c), out.narrow(1, c, c))
        };
        let scalar = |v: f64| Tensor::scalar_tensor(v, (Kind::Float, dev));
        let eps =
            self.eps(&eps, x, &scalar(diff.sqrt_alphas_cumprod[i]), &scalar(diff.sqrt_one_minus_alphas_cumprod[i]));
        let frac = (v + 1.0) * 0.5;
        let (max_log, min_log) = (diff.betas[i].ln(), diff.posterior_log_variance_clipped[i]);
        let logvar = frac * (max_log - min_log) + min_log;
        let x0 = x * diff.sqrt_recip_alphas_cumprod[i] - eps * diff.sqrt_recipm1_alphas_cumprod[i];
        // The reference never clips (`clip_denoised=False`); `clip_x0` is iDDPM's
        // `clip_denoised` for tokens with a known range (pixels in [-1, 1]).
        let x0 = match clip_x0 {
            Some(r) => x0.clamp(-r, r),
            None => x0,
        };
        let mean = x0 * diff.posterior_mean_coef1[i] + x * diff.posterior_mean_coef2[i];
        match noise {
            Some(z) if i > 0 => mean + (logvar * 0.5).exp() * z * temperature,
            _ => mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::model::layers::{scalar, to_host};
    use crate::student::model::store::ParamStore;
    use crate::student::train::optim::AdamW;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn the_noise_shape_scales_each_channels_mean_and_leaves_the_rest() {
        // Two tokens of 3 channels × 4 values, as pixel patches are laid out (channel-major).
        let v: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 4.0).collect();
        let x = Tensor::from_slice(&v).view([2, 12]);
        let means = |t: &Tensor| to_host(&t.view([2, 3, 4]).mean_dim(-1, false, Kind::Float));
        let centred = |t: &Tensor| to_host(&(t.view([2, 3, 4]) - t.view([2, 3, 4]).mean_dim(-1, true, Kind::Float)));
        for f in [0.0, 0.5] {
            let y = NoiseShape { mean_noise: f, channels: 3 }.apply(x.shallow_clone());
            for (a, b) in means(&y).iter().zip(means(&x)) {
                assert!((a - f as f32 * b).abs() < 1e-5, "scale {f}: channel mean {a} from {b}");
            }
            for (a, b) in centred(&y).iter().zip(centred(&x)) {
                assert!((a - b).abs() < 1e-5, "scale {f}: what is not the mean is untouched");
            }
        }
        assert!(means(&x).iter().any(|m| m.abs() > 0.5), "the draw has channel means to scale");
        for plain in [NoiseShape::PLAIN, NoiseShape { mean_noise: 0.0, channels: 0 }] {
            assert_eq!(to_host(&plain.apply(x.shallow_clone())), v, "{plain:?} leaves the noise as drawn");
        }
    }

    #[test]
    fn a_trained_head_samples_its_target() {
        // Seeded (store 3, ChaCha 4): the head learns p(x | z) for two conditions with fixed
        // targets; its samples must land near them, with an eps head and with a v head.
        for prediction in [Prediction::Eps, Prediction::V] {
            trained_head_samples_its_target(prediction);
        }
    }

    fn trained_head_samples_its_target(prediction: Prediction) {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(3, dev);
        let head = DiffLoss::new(&mut store.root().pp("diffloss"), 4, 2, (64, 2), prediction);
        let targets = [[0.5f32, -0.5, 0.25, 0.9], [-0.8, 0.1, 0.7, -0.3]];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut opt = AdamW::new(0.9, 0.95, 0.0);
        let n = 256;
        for _ in 0..400 {
            let which: Vec<usize> = (0..n).map(|i| i % 2).collect();
            let x0: Vec<f32> = which.iter().flat_map(|&w| targets[w]).collect();
            let z: Vec<f32> = which.iter().flat_map(|&w| if w == 0 { [1.0f32, 0.0] } else { [0.0, 1.0] }).collect();
            let t: Vec<usize> = (0..n).map(|_| rng.random_range(0..1000)).collect();
            let noise: Vec<f32> = (0..n * 4).map(|_| StandardNormal.sample(&mut rng)).collect();
            let terms = head.terms(
                &tensor_f32(&x0, &[n, 4], dev),
                &tensor_f32(&z, &[n, 2], dev),
                &t,
                &tensor_f32(&noise, &[n, 4], dev),
            );
            let g = store.grads(&terms.loss.mean(Kind::Float));
            let _ = opt.step(&store, &g, 3e-3, 3.0).unwrap(); // the norm, unread
        }
        let z = tensor_f32(&[1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0], &[4, 2], dev);
        let x = to_host(&tch::no_grad(|| {
            head.sample(&z, 1.0, 1.0, Some(1.0), NoiseShape::PLAIN, &Diffusion::respaced(50), &mut rng)
        }));
        for (row, k) in x.chunks(4).zip([0, 0, 1, 1]) {
            for (a, b) in row.iter().zip(targets[k]) {
                assert!((a - b).abs() < 0.15, "{row:?} vs {:?}", targets[k]);
            }
        }
    }

    #[test]
    fn the_v_target_implies_the_true_eps() {
        // x_t = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·eps and v = sqrt(ᾱ)·eps − sqrt(1−ᾱ)·x0 must give back eps,
        // at every noise level, or a v head would sample from the wrong mean.
        let dev = Device::Cpu;
        let mut store = ParamStore::new(0, dev);
        let head = DiffLoss::new(&mut store.root().pp("diffloss"), 3, 2, (8, 1), Prediction::V);
        let d = Diffusion::training();
        let t = [0usize, 250, 500, 900, 999];
        let col = |tab: &[f64]| column(t.iter().map(|&i| tab[i]), dev);
        let (sa, sb) = (col(&d.sqrt_alphas_cumprod), col(&d.sqrt_one_minus_alphas_cumprod));
        let x0 = tensor_f32(&(0..15).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), &[5, 3], dev);
        let eps = tensor_f32(&(0..15).map(|i| (i as f32 * 1.3).cos()).collect::<Vec<_>>(), &[5, 3], dev);
        let x_t = &x0 * &sa + &eps * &sb;
        let v = &eps * &sa - &x0 * &sb;
        let back = head.eps(&v, &x_t, &sa, &sb);
        let err = scalar(&(back - &eps).abs().max());
        assert!(err < 1e-5, "{err}");
    }
}
