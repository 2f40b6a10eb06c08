//! MAR's masked-autoregressive sampler (`sample_tokens`): per-sample random orders, a cosine
//! reveal schedule, at least one token revealed per step, and the DiffLoss head drawing the
//! revealed tokens with CFG on eps. Known tokens (inpainting) stay fixed and out of the orders.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::diffloss::NoiseShape;
use super::diffusion::Diffusion;
use super::layers::{tensor_f32, to_host, Ctx};
use super::mar::{Mar, Mask};
use super::text::TextInput;
use crate::student::train::objects::PixelTokens;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CfgSchedule {
    /// The same scale at every step (LightGen's scripts).
    Constant,
    /// 1 + (cfg − 1)·revealed/L (Muse; MAR's ImageNet evaluation).
    Linear,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleOptions {
    /// Masked-AR steps (64 in LightGen).
    pub steps: usize,
    pub cfg: f64,
    pub cfg_schedule: CfgSchedule,
    /// Scales the head's per-step noise (1.0 in LightGen).
    pub temperature: f64,
    /// The temperature at the last AR step, moving linearly with the revealed share from
    /// `temperature` at the first (None: constant, as the reference). Early draws decide where
    /// objects go, and at low temperature the head collapses onto the dominant mode (the
    /// background); late draws fill in around what is there, where noise only blurs edges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_end: Option<f64>,
    /// Respaced diffusion steps of the head (100 in LightGen).
    pub diffusion_steps: usize,
    /// Clamp the head's predicted x0 to ±this at every diffusion step (iDDPM's
    /// `clip_denoised`). The reference does not (None); pixel tokens live in [-1, 1], and
    /// briefly trained heads amplify their eps error ~10⁴× at t = 999 without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_x0: Option<f64>,
    /// Scales the head's sampling noise along each token's channel means (1.0: as the rest of
    /// the noise, the reference). The eps head reads a token's level off the noisy token from
    /// mid noise down, so each token keeps the per-channel mean its starting noise gave it:
    /// plain backgrounds come out as tiles of different greys, which the analyzer reads as
    /// objects. 0 takes that mean out of every step's noise (docs/student.md, "Why the
    /// backgrounds come out as tiles"). Needs the token's channel count (`channels`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub mean_noise: f64,
    /// Undoes `train.object_loss_weight`'s prior: a student trained with object rows weighted
    /// W draws object tokens with about W times the corpus's odds (its head fits the weighted
    /// distribution), hence too many objects. With `object_prior = W` each drawn token that
    /// covers an object is kept with probability 1/W, else drawn again from the same
    /// condition (rejection sampling, at most `MAX_REDRAWS` rounds), which samples the
    /// unweighted odds. 1 = off (the reference). Pixel tokens only (`pixels`), and meant for
    /// tokens that hold whole objects (the demo's 8-px tokens): the test looks at a token's
    /// own pixels, so a token wholly inside a larger object is flat and counts as background.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub object_prior: f64,
    /// Channels of a token (channel-major: 3 for pixel patches), from the checkpoint's token
    /// spec (`Student::with_token_channels`), not the config; 0 = unknown.
    #[serde(skip)]
    #[schemars(skip)]
    pub channels: usize,
    /// How one pixel token maps back to pixels (`grid` 1), from the checkpoint's token spec,
    /// which `object_prior` needs to tell an object token; None = not pixel tokens.
    #[serde(skip)]
    #[schemars(skip)]
    pub pixels: Option<PixelTokens>,
}

/// Rounds of redraws for `SampleOptions::object_prior`: where z is sure of an object every
/// round draws one, and the last is kept.
pub const MAX_REDRAWS: usize = 16;

/// `object_prior`'s range, for the config, the CLI (`name`: how the user set it) and the
/// sampler alike: the object weight's prior, ≥ 1 (1 = off).
pub fn check_object_prior(name: &str, p: f64) -> Result<(), String> {
    match p >= 1.0 && p.is_finite() {
        true => Ok(()),
        false => Err(format!("{name} = {p}: expected the object weight's prior, ≥ 1 (1 = off)")),
    }
}

/// Serde default of a factor that is off at 1 (also the DPO config's object weights).
pub(crate) fn one() -> f64 {
    1.0
}

/// Leaves a factor at 1 out of a serialized config, so configs made before it keep their ids.
pub(crate) fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            steps: 64,
            cfg: 4.0,
            cfg_schedule: CfgSchedule::Constant,
            temperature: 1.0,
            temperature_end: None,
            diffusion_steps: 100,
            clip_x0: None,
            mean_noise: 1.0,
            object_prior: 1.0,
            channels: 0,
            pixels: None,
        }
    }
}

/// How many of `unknown` tokens are still masked after each of `steps` steps:
/// floor(U·cos(π/2·(s+1)/N)), kept ≥ 1 and ≤ (masked − 1) so each step reveals at least one;
/// the last step reveals the rest (its entry is 0).
pub fn mask_schedule(unknown: usize, steps: usize) -> Vec<usize> {
    let mut left = unknown;
    let mut out = Vec::with_capacity(steps);
    for s in 0..steps {
        if s + 1 == steps {
            out.push(0);
            break;
        }
        let cos = (std::f64::consts::FRAC_PI_2 * (s + 1) as f64 / steps as f64).cos();
        let m = ((unknown as f64 * cos).floor() as usize).min(left.saturating_sub(1)).max(1);
        out.push(m);
        left = m;
    }
    out
}

/// The head's temperature for a step after which `revealed` (0–1) of the unknown tokens are known.
pub fn temperature_at(opts: &SampleOptions, revealed: f64) -> f64 {
    match opts.temperature_end {
        Some(end) => opts.temperature + (end - opts.temperature) * revealed,
        None => opts.temperature,
    }
}

/// Rejection sampling of `SampleOptions::object_prior`: of the K drawn tokens (K·C values in
/// `drawn`), each that `is_object` says covers an object is kept with probability `keep`, the
/// others are drawn again by `redraw` (the indices to draw, their K'·C new values), up to
/// `MAX_REDRAWS` rounds.
pub fn redraw_objects<E>(
    drawn: &mut [f32],
    c: usize,
    keep: f64,
    is_object: impl Fn(&[f32]) -> bool,
    rng: &mut impl Rng,
    mut redraw: impl FnMut(&[usize], &mut dyn Rng) -> Result<Vec<f32>, E>,
) -> Result<(), E> {
    // Only a fresh draw is judged: a token once kept stays kept.
    let mut again: Vec<usize> = (0..drawn.len() / c).collect();
    for _ in 0..MAX_REDRAWS {
        again.retain(|&k| is_object(&drawn[k * c..(k + 1) * c]) && rng.random::<f64>() >= keep);
        if again.is_empty() {
            break;
        }
        let new = redraw(&again, rng)?;
        for (j, &k) in again.iter().enumerate() {
            drawn[k * c..(k + 1) * c].copy_from_slice(&new[j * c..(j + 1) * c]);
        }
    }
    Ok(())
}

/// A starting canvas: tokens (B·L·C) and which of them are unknown (B·L, equal counts).
pub struct Canvas {
    pub tokens: Vec<f32>,
    pub unknown: Vec<bool>,
}

impl Canvas {
    pub fn blank(b: usize, l: usize, c: usize) -> Canvas {
        Canvas { tokens: vec![0.0; b * l * c], unknown: vec![true; b * l] }
    }
}

/// Samples tokens for `b` captions (the canvas's unknown tokens only): (B·L·C) on the host.
/// Runs without autograd.
pub fn sample_tokens(
    model: &Mar,
    text: &TextInput,
    canvas: Canvas,
    grid: usize,
    opts: &SampleOptions,
    rng: &mut impl Rng,
) -> Result<Vec<f32>, String> {
    let _guard = tch::no_grad_guard();
    if opts.mean_noise != 1.0 && (opts.channels == 0 || !model.cfg.token_dim.is_multiple_of(opts.channels)) {
        return Err(format!(
            "sample.mean_noise = {} needs the token's channels (known: {}) to divide its {} values",
            opts.mean_noise, opts.channels, model.cfg.token_dim
        ));
    }
    check_object_prior("sample.object_prior", opts.object_prior)?;
    if opts.object_prior > 1.0 && opts.pixels.is_none() {
        return Err(format!(
            "sample.object_prior = {}: objects are found in pixel tokens, and this checkpoint's tokens are not (expected 1)",
            opts.object_prior
        ));
    }
    let ctx = Ctx::eval();
    let (l, c) = (grid * grid, model.cfg.token_dim);
    let b = canvas.unknown.len() / l;
    let dev = model.device();
    let guided = opts.cfg != 1.0;
    let text_c = model.text.forward(text, &ctx)?; // (B, T, D)
    let text_all = if guided {
        let t = text_c.size()[1] as usize;
        Tensor::cat(&[&text_c, &model.null_text(b, t)], 0) // (2B, T, D)
    } else {
        text_c
    };
    let Canvas { mut tokens, unknown } = canvas;
    let u = unknown[..l].iter().filter(|m| **m).count();
    if unknown.chunks(l).any(|m| m.iter().filter(|x| **x).count() != u) {
        return Err("every sample must have the same number of unknown tokens".into());
    }
    // Orders: the unknown positions shuffled; `orders[..mask_len]` stay masked.
    let orders: Vec<Vec<usize>> = (0..b)
        .map(|i| {
            let mut o: Vec<usize> = (0..l).filter(|&p| unknown[i * l + p]).collect();
            o.shuffle(rng);
            o
        })
        .collect();
    let mut mask = Mask { batch: b, len: l, masked: unknown };
    let diff = Diffusion::respaced(opts.diffusion_steps);
    let steps = opts.steps.clamp(1, u.max(1));
    for &mask_len in &mask_schedule(u, steps) {
        if u == 0 {
            break;
        }
        let x = tensor_f32(&tokens, &[b, l, c], dev);
        let (x, m) = if guided { (Tensor::cat(&[&x, &x], 0), mask.doubled()) } else { (x, mask.clone()) };
        let next = Mask::from_orders(&orders, l, mask_len);
        // Reveal what is masked now and not masked next.
        let pred: Vec<i64> = (0..b * l).filter(|&i| mask.masked[i] && !next.masked[i]).map(|i| i as i64).collect();
        mask = next;
        let revealed = (u - mask_len) as f64 / u as f64; // after this step, in (0, 1]
        let scale = match opts.cfg_schedule {
            CfgSchedule::Constant => opts.cfg,
            CfgSchedule::Linear => 1.0 + (opts.cfg - 1.0) * revealed,
        };
        let temperature = temperature_at(opts, revealed);
        let rows: Vec<i64> = if guided {
            pred.iter().copied().chain(pred.iter().map(|&i| i + (b * l) as i64)).collect()
        } else {
            pred.clone()
        };
        let z_sel = model.forward_z_rows(&x, &m, &text_all, grid, &ctx, &rows); // (K or 2K, D)
        let shape = NoiseShape { mean_noise: opts.mean_noise, channels: opts.channels };
        let cfg = if guided { scale } else { 1.0 };
        let new = model.diffloss.sample(&z_sel, cfg, temperature, opts.clip_x0, shape, &diff, rng); // (K, C)
        let mut new = to_host(&new);
        if let (Some(px), true) = (opts.pixels, opts.object_prior > 1.0) {
            let k_all = pred.len() as i64;
            redraw_objects(
                &mut new,
                c,
                1.0 / opts.object_prior,
                |t| px.object_tokens(t)[0],
                rng,
                |again, rng| {
                    // The same condition rows: the conditional K first, then (guided) the unconditional.
                    let idx: Vec<i64> = again.iter().map(|&k| k as i64).collect();
                    let rows: Vec<i64> =
                        if guided { idx.iter().copied().chain(idx.iter().map(|&k| k + k_all)).collect() } else { idx };
                    let z = z_sel.index_select(0, &Tensor::from_slice(&rows).to_device(dev)); // (K' or 2K', D)
                    let mut rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
                    Ok::<_, String>(to_host(&model.diffloss.sample(
                        &z,
                        cfg,
                        temperature,
                        opts.clip_x0,
                        shape,
                        &diff,
                        &mut rng,
                    )))
                },
            )?;
        }
        for (k, &i) in pred.iter().enumerate() {
            tokens[i as usize * c..(i as usize + 1) * c].copy_from_slice(&new[k * c..(k + 1) * c]);
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrawing_object_tokens_samples_the_unweighted_odds() {
        // Seeded (ChaCha8, seed 3). One value a token, 1 = object; every draw is an object with
        // probability 1/2. A head fitted with object rows weighted 4 has odds 4 × p/(1 − p);
        // kept with probability 1/4, the objects come out at p = 0.2: 1/8 ÷ (1/8 + 1/2).
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 20_000;
        let coin = |rng: &mut dyn Rng, k: usize| -> Vec<f32> {
            (0..k).map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 }).collect()
        };
        let first = coin(&mut rng, n);
        let share = |v: &[f32]| v.iter().filter(|&&x| x == 1.0).count() as f64 / v.len() as f64;
        let mut kept = first.clone();
        redraw_objects(&mut kept, 1, 1.0, |t| t[0] == 1.0, &mut rng, |a, r| Ok::<_, ()>(coin(r, a.len()))).unwrap();
        assert_eq!(kept, first, "keep 1 redraws nothing");
        let mut rounds = 0;
        redraw_objects(
            &mut kept,
            1,
            0.25,
            |t| t[0] == 1.0,
            &mut rng,
            |a, r| {
                rounds += 1;
                Ok::<_, ()>(coin(r, a.len()))
            },
        )
        .unwrap();
        assert!((0.18..0.22).contains(&share(&kept)), "object share {} (expected 0.2)", share(&kept));
        assert!(rounds <= MAX_REDRAWS);
        // A condition that only ever draws objects keeps one after the last round.
        let mut sure = vec![1.0f32; 8];
        redraw_objects(&mut sure, 1, 0.25, |t| t[0] == 1.0, &mut rng, |a, _| Ok::<_, ()>(vec![1.0; a.len()])).unwrap();
        assert_eq!(sure, vec![1.0; 8]);
    }

    #[test]
    fn schedule_reveals_at_least_one_per_step_and_all_by_the_end() {
        for (u, n) in [(256, 64), (64, 16), (1024, 64), (5, 5), (7, 3), (1, 1)] {
            let s = mask_schedule(u, n);
            assert_eq!(s.len(), n);
            assert_eq!(*s.last().unwrap(), 0, "all revealed at the end");
            let mut prev = u;
            for &m in &s {
                assert!(m < prev, "u {u} n {n}: {s:?}");
                prev = m;
            }
        }
        // lightgen.md §4: L = 1024, N = 64 reveals 1, 1, 1, 2, 3, … first.
        let s = mask_schedule(1024, 64);
        let revealed: Vec<usize> = std::iter::once(1024)
            .chain(s.iter().copied())
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[0] - w[1])
            .collect();
        assert_eq!(&revealed[..5], &[1, 1, 1, 2, 3][..], "{revealed:?}");
        assert!(revealed[62] > 20);
    }
}
