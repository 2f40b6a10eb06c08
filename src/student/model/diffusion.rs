//! The Gaussian diffusion of MAR's DiffLoss (`diffusion/gaussian_diffusion.py`,
//! `respace.py`): cosine betas over 1000 steps, learned-range variance, and the 100-step
//! respaced sampler. Coefficients are computed in f64 (as the reference, with numpy) and
//! handed to the tensors per row.

/// The schedule's per-step tables.
#[derive(Debug, Clone)]
pub struct Diffusion {
    pub betas: Vec<f64>,
    /// ln β (the learned-range variance's upper end).
    pub log_betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub sqrt_alphas_cumprod: Vec<f64>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
    /// Spaced index → the original 0‥999 timestep the network sees.
    pub timestep_map: Vec<usize>,
}

/// `betas_for_alpha_bar(T, ᾱ(t) = cos((t + 0.008)/1.008 · π/2)²)`, clipped at 0.999.
pub fn cosine_betas(t: usize) -> Vec<f64> {
    let ab = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    (0..t).map(|i| (1.0 - ab((i + 1) as f64 / t as f64) / ab(i as f64 / t as f64)).min(0.999)).collect()
}

/// `space_timesteps(T, "N")`: N evenly spaced steps including 0 and T − 1, rounded as Python
/// rounds (half to even).
pub fn space_timesteps(t: usize, n: usize) -> Vec<usize> {
    if n >= t {
        return (0..t).collect();
    }
    if n == 1 {
        return vec![0];
    }
    let stride = (t - 1) as f64 / (n - 1) as f64;
    let mut cur = 0.0f64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(cur.round_ties_even() as usize);
        cur += stride;
    }
    out
}

impl Diffusion {
    fn from_betas(betas: Vec<f64>, timestep_map: Vec<usize>) -> Diffusion {
        let n = betas.len();
        let mut ac = Vec::with_capacity(n);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            ac.push(acc);
        }
        let prev: Vec<f64> = std::iter::once(1.0).chain(ac[..n - 1].iter().copied()).collect();
        let post_var: Vec<f64> = (0..n).map(|i| betas[i] * (1.0 - prev[i]) / (1.0 - ac[i])).collect();
        // log(0) at t = 0 is replaced by the next value, as the reference does.
        let clipped: Vec<f64> = (0..n)
            .map(|i| if i == 0 { post_var.get(1).copied().unwrap_or(post_var[0]) } else { post_var[i] }.ln())
            .collect();
        Diffusion {
            sqrt_alphas_cumprod: ac.iter().map(|a| a.sqrt()).collect(),
            sqrt_one_minus_alphas_cumprod: ac.iter().map(|a| (1.0 - a).sqrt()).collect(),
            sqrt_recip_alphas_cumprod: ac.iter().map(|a| (1.0 / a).sqrt()).collect(),
            sqrt_recipm1_alphas_cumprod: ac.iter().map(|a| (1.0 / a - 1.0).sqrt()).collect(),
            posterior_log_variance_clipped: clipped,
            posterior_mean_coef1: (0..n).map(|i| betas[i] * prev[i].sqrt() / (1.0 - ac[i])).collect(),
            posterior_mean_coef2: (0..n).map(|i| (1.0 - prev[i]) * (1.0 - betas[i]).sqrt() / (1.0 - ac[i])).collect(),
            alphas_cumprod: ac,
            log_betas: betas.iter().map(|b| b.ln()).collect(),
            betas,
            timestep_map,
        }
    }

    /// The training process: 1000 cosine steps.
    pub fn training() -> Diffusion {
        Self::from_betas(cosine_betas(1000), (0..1000).collect())
    }

    /// The sampler: `steps` of the 1000, with betas recomputed from the kept ᾱ (`respace.py`).
    pub fn respaced(steps: usize) -> Diffusion {
        let base = Self::training();
        let keep = space_timesteps(1000, steps);
        let mut last = 1.0;
        let mut betas = Vec::with_capacity(keep.len());
        for &i in &keep {
            let ab = base.alphas_cumprod[i];
            betas.push(1.0 - ab / last);
            last = ab;
        }
        Self::from_betas(betas, keep)
    }

    pub fn steps(&self) -> usize {
        self.betas.len()
    }
}

/// GLIDE/DiT timestep embedding: [cos(t·f), sin(t·f)], f_k = exp(−ln(10000)·k/half); t is the
/// original 0‥999 index. Returns rows of `dim` values.
pub fn timestep_embedding(ts: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half).map(|k| (-(10000f32.ln()) * k as f32 / half as f32).exp()).collect();
    let mut out = Vec::with_capacity(ts.len() * dim);
    for &t in ts {
        out.extend(freqs.iter().map(|f| (t * f).cos()));
        out.extend(freqs.iter().map(|f| (t * f).sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_betas_match_the_reference() {
        // Reference (numpy, gaussian_diffusion.get_named_beta_schedule("cosine", 1000)):
        //   betas[0] = 1 - ab(1/1000)/ab(0) with ab(t) = cos((t+0.008)/1.008*pi/2)**2
        //   → 4.128422e-05; betas[999] is clipped to 0.999; betas[500] = 3.155691e-03.
        let b = cosine_betas(1000);
        let ab = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        assert!((b[0] - (1.0 - ab(0.001) / ab(0.0))).abs() < 1e-15);
        assert!((b[0] - 4.128422e-5).abs() < 1e-10, "{}", b[0]);
        assert_eq!(b[999], 0.999);
        assert!((b[500] - 3.155691e-3).abs() < 1e-9, "{}", b[500]);
        assert!(b.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn respacing_keeps_100_steps_with_both_ends() {
        let s = space_timesteps(1000, 100);
        assert_eq!(s.len(), 100);
        assert_eq!((s[0], s[1], s[2], s[99]), (0, 10, 20, 999));
        let d = Diffusion::respaced(100);
        assert_eq!(d.timestep_map, s);
        // The respaced ᾱ equal the kept originals.
        let full = Diffusion::training();
        for (i, &t) in s.iter().enumerate() {
            assert!((d.alphas_cumprod[i] - full.alphas_cumprod[t]).abs() < 1e-12);
        }
    }

    #[test]
    fn timestep_embedding_is_cos_then_sin() {
        // Reference: freqs = exp(-log(10000) * arange(half) / half); emb = cat([cos(t f), sin(t f)]).
        let e = timestep_embedding(&[0.0, 999.0], 256);
        assert_eq!(e.len(), 512);
        assert_eq!((e[0], e[127], e[128], e[255]), (1.0, 1.0, 0.0, 0.0));
        assert!((e[256] - 999f32.cos()).abs() < 1e-4 && (e[384] - 999f32.sin()).abs() < 1e-4);
        let f1 = (-(10000f32.ln()) / 128.0).exp();
        assert!((e[257] - (999.0 * f1).cos()).abs() < 1e-4);
    }
}
