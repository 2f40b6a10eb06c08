//! The samplers of diffusers that the SD / SD-Turbo / SDXL / LCM exports name in
//! `scheduler/scheduler_config.json`: Euler, Euler-ancestral, DDIM (η = 0) and LCM, following
//! the diffusers implementations (timestep spacing, sigma interpolation, init noise sigma,
//! input scaling, v-prediction). All maths in f64 on flat latents.

use serde_json::Value;

use crate::config::SchedulerKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    V,
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

/// What `scheduler_config.json` says (diffusers defaults where it is silent).
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub kind: SchedulerKind,
    pub train_steps: usize,
    pub alphas_cumprod: Vec<f64>,
    /// σ = √((1 − ᾱ) / ᾱ) per training timestep.
    pub sigmas: Vec<f64>,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: usize,
    pub final_alpha_cumprod: f64,
    pub clip_sample: Option<f64>,
    pub original_steps: usize,
    pub timestep_scaling: f64,
}

impl SchedulerConfig {
    /// Reads a diffusers scheduler config; `force` overrides the class it names.
    pub fn from_json(v: &Value, force: SchedulerKind) -> Result<SchedulerConfig, String> {
        let class = v["_class_name"].as_str().unwrap_or("");
        let kind = match force {
            SchedulerKind::Auto => match class {
                "EulerDiscreteScheduler" => SchedulerKind::Euler,
                "EulerAncestralDiscreteScheduler" => SchedulerKind::EulerAncestral,
                "DDIMScheduler" => SchedulerKind::Ddim,
                "LCMScheduler" => SchedulerKind::Lcm,
                // Samplers lightgen does not implement: Euler solves the same ODE.
                "PNDMScheduler" | "LMSDiscreteScheduler" | "DPMSolverMultistepScheduler" => SchedulerKind::Euler,
                other => {
                    return Err(format!(
                        "_class_name = {other:?}: unknown scheduler; set generate.onnx.scheduler to euler, \
                         euler-ancestral, ddim or lcm"
                    ))
                }
            },
            k => k,
        };
        let f = |k: &str, d: f64| v[k].as_f64().unwrap_or(d);
        let train_steps = v["num_train_timesteps"].as_u64().unwrap_or(1000) as usize;
        if !(2..=100_000).contains(&train_steps) {
            return Err(format!("num_train_timesteps = {train_steps}: expected 2 to 100000"));
        }
        let (b0, b1) = (f("beta_start", 0.00085), f("beta_end", 0.012));
        let betas: Vec<f64> = match v["beta_schedule"].as_str().unwrap_or("scaled_linear") {
            "linear" => linspace(b0, b1, train_steps),
            "scaled_linear" => linspace(b0.sqrt(), b1.sqrt(), train_steps).into_iter().map(|b| b * b).collect(),
            other => return Err(format!("beta_schedule = {other:?}: expected linear or scaled_linear")),
        };
        let mut ac = Vec::with_capacity(train_steps);
        let mut p = 1.0;
        for b in betas {
            p *= 1.0 - b;
            ac.push(p);
        }
        let prediction = match v["prediction_type"].as_str().unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            other => return Err(format!("prediction_type = {other:?}: expected epsilon, v_prediction or sample")),
        };
        let spacing = match v["timestep_spacing"].as_str().unwrap_or(if kind == SchedulerKind::Lcm {
            "leading"
        } else {
            "linspace"
        }) {
            "linspace" => Spacing::Linspace,
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            other => return Err(format!("timestep_spacing = {other:?}: expected linspace, leading or trailing")),
        };
        let final_alpha_cumprod = if v["set_alpha_to_one"].as_bool().unwrap_or(true) { 1.0 } else { ac[0] };
        let clip_sample = v["clip_sample"].as_bool().unwrap_or(false).then(|| f("clip_sample_range", 1.0));
        let sigmas = ac.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
        Ok(SchedulerConfig {
            kind,
            train_steps,
            alphas_cumprod: ac,
            sigmas,
            prediction,
            spacing,
            steps_offset: v["steps_offset"].as_u64().unwrap_or(0) as usize,
            final_alpha_cumprod,
            clip_sample,
            original_steps: v["original_inference_steps"].as_u64().unwrap_or(50) as usize,
            timestep_scaling: f("timestep_scaling", 10.0),
        })
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
}

/// One sampling run's schedule.
#[derive(Debug, Clone)]
pub struct Schedule<'a> {
    cfg: &'a SchedulerConfig,
    /// Timesteps fed to the UNet, high noise first.
    pub timesteps: Vec<f64>,
    /// Euler family: σ per step, plus a final 0.
    sigmas: Vec<f64>,
}

impl<'a> Schedule<'a> {
    pub fn new(cfg: &'a SchedulerConfig, steps: usize) -> Schedule<'a> {
        let n = cfg.train_steps;
        let s = steps.clamp(1, n);
        let timesteps: Vec<f64> = match cfg.kind {
            SchedulerKind::Lcm => {
                let k = n / cfg.original_steps.clamp(1, n);
                let origin: Vec<f64> =
                    (1..=cfg.original_steps.clamp(1, n)).rev().map(|i| (i * k) as f64 - 1.0).collect();
                (0..s).map(|i| origin[(i as f64 * origin.len() as f64 / s as f64).floor() as usize]).collect()
            }
            _ => {
                let round = cfg.kind == SchedulerKind::Ddim;
                match cfg.spacing {
                    Spacing::Linspace => linspace(0.0, (n - 1) as f64, s)
                        .into_iter()
                        .rev()
                        .map(|t| if round { t.round() } else { t })
                        .collect(),
                    Spacing::Leading => (0..s).rev().map(|i| (i * (n / s)) as f64 + cfg.steps_offset as f64).collect(),
                    Spacing::Trailing => {
                        let ratio = n as f64 / s as f64;
                        (0..s).map(|i| (n as f64 - i as f64 * ratio).round() - 1.0).collect()
                    }
                }
            }
        };
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(&cfg.sigmas, t)).collect();
        sigmas.push(0.0);
        Schedule { cfg, timesteps, sigmas }
    }

    fn euler_family(&self) -> bool {
        matches!(self.cfg.kind, SchedulerKind::Euler | SchedulerKind::EulerAncestral)
    }

    /// The initial noise's standard deviation.
    pub fn init_noise_sigma(&self) -> f64 {
        if !self.euler_family() {
            return 1.0;
        }
        let max = self.sigmas.iter().copied().fold(0.0, f64::max);
        if matches!(self.cfg.spacing, Spacing::Linspace | Spacing::Trailing) {
            max
        } else {
            (max * max + 1.0).sqrt()
        }
    }

    /// The factor the UNet's input is scaled by at step `i`.
    pub fn input_scale(&self, i: usize) -> f64 {
        if self.euler_family() {
            1.0 / (self.sigmas[i].powi(2) + 1.0).sqrt()
        } else {
            1.0
        }
    }

    fn alpha(&self, t: f64) -> f64 {
        if t < 0.0 {
            self.cfg.final_alpha_cumprod
        } else {
            self.cfg.alphas_cumprod[(t as usize).min(self.cfg.train_steps - 1)]
        }
    }

    /// One step: `x` (latents) moves from step `i` to the next, given the model's output.
    /// `noise` draws N(0, 1) for the stochastic samplers.
    pub fn step(&self, i: usize, out: &[f32], x: &mut [f32], noise: &mut dyn FnMut() -> f64) {
        let last = i + 1 == self.timesteps.len();
        let t = self.timesteps[i];
        match self.cfg.kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
                let (down, up) = if self.cfg.kind == SchedulerKind::EulerAncestral && sigma > 0.0 {
                    let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).max(0.0).sqrt();
                    ((next * next - up * up).max(0.0).sqrt(), up)
                } else {
                    (next, 0.0)
                };
                for (xv, &o) in x.iter_mut().zip(out) {
                    let (s, o) = (*xv as f64, o as f64);
                    let x0 = match self.cfg.prediction {
                        Prediction::Epsilon => s - sigma * o,
                        Prediction::V => o * (-sigma / (sigma * sigma + 1.0).sqrt()) + s / (sigma * sigma + 1.0),
                        Prediction::Sample => o,
                    };
                    let d = if sigma > 0.0 { (s - x0) / sigma } else { 0.0 };
                    let mut n = s + d * (down - sigma);
                    if up > 0.0 {
                        n += noise() * up;
                    }
                    *xv = n as f32;
                }
            }
            SchedulerKind::Ddim | SchedulerKind::Lcm => {
                let lcm = self.cfg.kind == SchedulerKind::Lcm;
                let prev_t = if lcm {
                    if last {
                        -1.0
                    } else {
                        self.timesteps[i + 1]
                    }
                } else {
                    t - (self.cfg.train_steps / self.timesteps.len()) as f64
                };
                let (a, a_prev) = (self.alpha(t), self.alpha(prev_t));
                let (c_skip, c_out) = if lcm {
                    let (sd, st) = (0.5f64, t * self.cfg.timestep_scaling);
                    (sd * sd / (st * st + sd * sd), st / (st * st + sd * sd).sqrt())
                } else {
                    (0.0, 1.0)
                };
                for (xv, &o) in x.iter_mut().zip(out) {
                    let (s, o) = (*xv as f64, o as f64);
                    let (mut x0, eps) = match self.cfg.prediction {
                        Prediction::Epsilon => ((s - (1.0 - a).sqrt() * o) / a.sqrt(), o),
                        Prediction::V => (a.sqrt() * s - (1.0 - a).sqrt() * o, a.sqrt() * o + (1.0 - a).sqrt() * s),
                        Prediction::Sample => (o, (s - a.sqrt() * o) / (1.0 - a).sqrt()),
                    };
                    if let Some(r) = self.cfg.clip_sample {
                        x0 = x0.clamp(-r, r);
                    }
                    *xv = if lcm {
                        let denoised = c_out * x0 + c_skip * s;
                        if last {
                            denoised
                        } else {
                            a_prev.sqrt() * denoised + (1.0 - a_prev).sqrt() * noise()
                        }
                    } else {
                        a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
                    } as f32;
                }
            }
            SchedulerKind::Auto => unreachable!("resolved when the config is read"),
        }
    }
}

/// Linear interpolation of `ys` (indexed 0..n) at `t`, as `np.interp`.
fn interp(ys: &[f64], t: f64) -> f64 {
    let t = t.clamp(0.0, (ys.len() - 1) as f64);
    let lo = t.floor() as usize;
    let hi = (lo + 1).min(ys.len() - 1);
    ys[lo] + (ys[hi] - ys[lo]) * (t - lo as f64)
}

/// LCM's guidance embedding for `timestep_cond` (sinusoidal of (w - 1) · 1000), `dim` wide.
pub fn guidance_embedding(guidance: f32, dim: usize) -> Vec<f32> {
    let w = (guidance as f64 - 1.0) * 1000.0;
    let half = dim / 2;
    let base = (10000f64).ln() / (half.max(2) - 1) as f64;
    let freqs: Vec<f64> = (0..half).map(|i| (-(i as f64) * base).exp() * w).collect();
    let mut e: Vec<f32> = freqs.iter().map(|f| f.sin() as f32).chain(freqs.iter().map(|f| f.cos() as f32)).collect();
    e.resize(dim, 0.0);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(class: &str, extra: Value) -> SchedulerConfig {
        let mut v = json!({ "_class_name": class, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                            "beta_end": 0.012, "num_train_timesteps": 1000, "steps_offset": 1 });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        SchedulerConfig::from_json(&v, SchedulerKind::Auto).unwrap()
    }

    #[test]
    fn timesteps_follow_diffusers() {
        // Values as diffusers' set_timesteps prints them for the SD 1.5 / SD-Turbo configs.
        let (c1, c2) = (
            cfg("DDIMScheduler", json!({"timestep_spacing": "leading"})),
            cfg("EulerDiscreteScheduler", json!({"timestep_spacing": "trailing"})),
        );
        let (c3, c4) = (cfg("EulerDiscreteScheduler", json!({})), cfg("LCMScheduler", json!({})));
        let ddim = Schedule::new(&c1, 4);
        assert_eq!(ddim.timesteps, vec![751.0, 501.0, 251.0, 1.0]);
        let turbo = Schedule::new(&c2, 4);
        assert_eq!(turbo.timesteps, vec![999.0, 749.0, 499.0, 249.0]);
        let lin = Schedule::new(&c3, 3);
        assert_eq!(lin.timesteps, vec![999.0, 499.5, 0.0]);
        let lcm = Schedule::new(&c4, 4);
        assert_eq!(lcm.timesteps, vec![999.0, 759.0, 499.0, 259.0]);
        // SD's final sigma is 14.6146; trailing spacing starts the noise there.
        assert!((turbo.init_noise_sigma() - 14.6146).abs() < 1e-3, "{}", turbo.init_noise_sigma());
    }

    #[test]
    fn a_perfect_noise_prediction_recovers_the_clean_latent() {
        // x_t = x0 + σ ε for Euler; √ᾱ x0 + √(1-ᾱ) ε for DDIM. Feeding the true ε at every step
        // must land on x0.
        let x0 = [0.3f32, -0.7, 1.2];
        let eps = [0.5f32, -1.0, 0.25];
        for class in ["EulerDiscreteScheduler", "DDIMScheduler"] {
            let c = cfg(class, json!({"timestep_spacing": "trailing"}));
            let s = Schedule::new(&c, 5);
            let mut x: Vec<f32> = if class == "DDIMScheduler" {
                let a = c.alphas_cumprod[s.timesteps[0] as usize];
                x0.iter().zip(eps).map(|(x, e)| (a.sqrt() * *x as f64 + (1.0 - a).sqrt() * e as f64) as f32).collect()
            } else {
                x0.iter().zip(eps).map(|(x, e)| (*x as f64 + s.sigmas[0] * e as f64) as f32).collect()
            };
            for i in 0..s.timesteps.len() {
                s.step(i, &eps, &mut x, &mut || 0.0);
            }
            for (a, b) in x.iter().zip(x0) {
                assert!((a - b).abs() < 1e-4, "{class}: {x:?} vs {x0:?}");
            }
        }
    }

    #[test]
    fn lcm_guidance_embedding_is_sinusoidal_in_w_minus_one() {
        // w = 1: (w − 1) · 1000 = 0, so every sine is 0 and every cosine 1.
        assert_eq!(guidance_embedding(1.0, 4), vec![0.0, 0.0, 1.0, 1.0]);
        // w = 1.001: argument 1 at the first frequency (exp(0) = 1), 1e-4 at the last of 2 (dim 4).
        let e = guidance_embedding(1.001, 4);
        assert!((e[0] - 1f32.sin()).abs() < 1e-3 && (e[2] - 1f32.cos()).abs() < 1e-3, "{e:?}");
        assert!((e[1] - 1e-4f32.sin()).abs() < 1e-6, "{e:?}");
        assert_eq!(guidance_embedding(8.0, 7).len(), 7, "odd widths are zero-padded");
    }

    #[test]
    fn unknown_schedulers_are_named() {
        let e = SchedulerConfig::from_json(&json!({"_class_name": "Mystery"}), SchedulerKind::Auto).unwrap_err();
        assert!(e.contains("Mystery") && e.contains("generate.onnx.scheduler"), "{e}");
    }
}
