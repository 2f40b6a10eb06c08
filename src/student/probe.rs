//! `lightgen probe`: does a checkpoint use its caption and its visible tokens? The loss alone
//! cannot tell, because a student that learned only the marginal token distribution reaches a
//! plausible loss. The probe measures, on one seeded batch of training samples:
//! - how much z (the head's condition) moves when the caption changes, with every token masked
//!   (the first sampling step);
//! - the eps-MSE of the masked tokens by timestep band, with the caption and with the null
//!   caption, with every token masked and with a quarter of them visible. A student that uses
//!   the caption has a lower loss with it than without, mostly in the noisiest bands; one that
//!   uses context has a lower loss with visible tokens;
//! - the same with three quarters visible, more than training ever shows (the last sampling
//!   steps do), and for the constant guess x0 = mean token, the floor a head must beat.

use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::student::model::layers::{index, scalar, tensor_f32, to_host, Ctx};
use crate::student::model::text::TextInput;
use crate::student::model::{Mask, Prediction};
use crate::student::sample::Student;
use crate::student::train::data::Dataset;
use crate::student::train::schedule::orders;

/// Timestep bands of 200 over the 1000 training steps.
pub const BANDS: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub checkpoint: String,
    pub samples: usize,
    /// "eps" or "v": what the MSE rows measure.
    pub prediction: String,
    /// mean |z(caption a) − z(caption b)| / mean |z| over adjacent samples, all tokens masked.
    pub caption_sensitivity: f64,
    /// MSE of the head's target (eps or v) per band (t in [200k, 200k + 200)), masked tokens only.
    pub masked_all_caption: Vec<f64>,
    pub masked_all_null: Vec<f64>,
    pub visible_quarter_caption: Vec<f64>,
    pub visible_quarter_null: Vec<f64>,
    /// Three quarters visible (with the caption): training never masks fewer than
    /// `mask_ratio_min` (0.7) of the tokens, but the last sampling steps see up to 80% of them.
    /// A student that generalises to that has a lower loss here than with a quarter visible.
    pub visible_three_quarters: Vec<f64>,
    /// The same MSE for the constant guess x0 = the batch's mean token (no network), same t and noise:
    /// a head that is above it in the noisy bands reads less from z than a mean image does.
    pub mean_token: Vec<f64>,
}

impl ProbeReport {
    /// (null − caption) / null per band, all tokens masked and a quarter visible.
    pub fn caption_gain(&self) -> (Vec<f64>, Vec<f64>) {
        let gain = |c: &[f64], n: &[f64]| c.iter().zip(n).map(|(c, n)| (n - c) / n).collect();
        (
            gain(&self.masked_all_caption, &self.masked_all_null),
            gain(&self.visible_quarter_caption, &self.visible_quarter_null),
        )
    }

    pub fn markdown(&self) -> String {
        let row = |name: &str, v: &[f64], digits: usize| {
            let cells: Vec<String> = v.iter().map(|x| format!("{x:.digits$}")).collect();
            format!("| {name} | {} |\n", cells.join(" | "))
        };
        let (gain_all, gain_quarter) = self.caption_gain();
        let mut s = format!(
            "caption sensitivity of z (all masked): {:.4}  ({} samples)\n\n| {}-MSE, t in | 0–199 | 200–399 | 400–599 | 600–799 | 800–999 |\n|---|---:|---:|---:|---:|---:|\n",
            self.caption_sensitivity, self.samples, self.prediction
        );
        s += &row("all masked, caption", &self.masked_all_caption, 4);
        s += &row("all masked, null caption", &self.masked_all_null, 4);
        s += &row("¼ visible, caption", &self.visible_quarter_caption, 4);
        s += &row("¼ visible, null caption", &self.visible_quarter_null, 4);
        s += &row("¾ visible, caption", &self.visible_three_quarters, 4);
        s += &row("constant mean token (no network)", &self.mean_token, 4);
        s += &row("caption gain, all masked", &gain_all, 3);
        s += &row("caption gain, ¼ visible", &gain_quarter, 3);
        s
    }
}

/// Probes `student` on `samples` training samples of `ds` (seeded by `seed`).
pub fn probe(student: &Student, ds: &Dataset, samples: usize, seed: u64) -> Result<ProbeReport> {
    let m = &student.model;
    let dev = student.store.device;
    let (l, c) = (ds.tokens, ds.token_dim);
    let grid = (l as f64).sqrt().round() as usize;
    if samples < 2 {
        return Err(Error::invalid("--samples", "the probe needs at least 2 samples".to_string()));
    }
    let b = ds.batch(seed, 0, samples, &mut (u64::MAX, Vec::new()));
    let ctx = Ctx::eval();
    let _guard = tch::no_grad_guard();
    let tokens = tensor_f32(&b.tokens, &[b.size, l, c], dev); // (B, L, C)
    let input = TextInput::from_host(&b.ids, &b.feats, b.size, ds.text_len, ds.text_channels, dev);
    let text = m.text.forward(&input, &ctx).map_err(|e| Error::invalid("probe", e))?; // (B, T, D)
    let null = m.drop_text(&text, &vec![false; b.size]);
    let (bl, ci) = ((b.size * l) as i64, c as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED);
    let order = orders(b.size, l, &mut rng);

    // MSE of the head's target on the masked tokens per band; the same orders, timesteps and noise for every row.
    let losses = |masked: usize, text: &Tensor| -> Vec<f64> {
        let mask = Mask::from_orders(&order, l, masked);
        let rows = mask.rows(true);
        let k = rows.len();
        let idx = index(&rows, dev);
        let z = m.forward_z_rows(&tokens, &mask, text, grid, &ctx, &rows); // (K, D)
        let x0 = tokens.view([bl, ci]).index_select(0, &idx); // (K, C)
        let mut draw = ChaCha8Rng::seed_from_u64(seed ^ 0xBA2D);
        (0..BANDS)
            .map(|band| {
                let ts: Vec<usize> = (0..k).map(|_| draw.random_range(band * 200..band * 200 + 200)).collect();
                let noise: Vec<f32> = (0..k * c).map(|_| StandardNormal.sample(&mut draw)).collect();
                let noise = tensor_f32(&noise, &[k, c], dev);
                scalar(&m.diffloss.terms(&x0, &z, &ts, &noise).mse.mean(Kind::Float))
            })
            .collect()
    };
    let mean_token = || -> Vec<f64> {
        let x0 = tokens.view([bl, ci]); // (B·L, C)
        let mu = x0.mean_dim(0, true, Kind::Float); // (1, C)
        let sq = to_host(&(x0 - mu).square().mean_dim(1, false, Kind::Float)); // (B·L,) |x0 − μ|² per dim
        let ab = &m.diffloss.train_diffusion.alphas_cumprod;
        let mut draw = ChaCha8Rng::seed_from_u64(seed ^ 0xBA2D);
        (0..BANDS)
            .map(|band| {
                let w: f64 = sq
                    .iter()
                    .map(|&d| {
                        let a = ab[draw.random_range(band * 200..band * 200 + 200)];
                        // x0 error e → eps error sqrt(ᾱ/(1−ᾱ))·e, v error e/sqrt(1−ᾱ).
                        let w = match m.cfg.prediction {
                            Prediction::Eps => a / (1.0 - a),
                            Prediction::V => 1.0 / (1.0 - a),
                        };
                        w * d as f64
                    })
                    .sum();
                w / sq.len() as f64
            })
            .collect()
    };
    let quarter = l - l / 4;
    let report = ProbeReport {
        checkpoint: student.checkpoint.display().to_string(),
        samples: b.size,
        prediction: match m.cfg.prediction {
            Prediction::Eps => "eps",
            Prediction::V => "v",
        }
        .to_string(),
        caption_sensitivity: caption_sensitivity(student, &tokens, &text, &order, grid),
        masked_all_caption: losses(l, &text),
        masked_all_null: losses(l, &null),
        visible_quarter_caption: losses(quarter, &text),
        visible_quarter_null: losses(quarter, &null),
        visible_three_quarters: losses(l / 4, &text),
        mean_token: mean_token(),
    };
    Ok(report)
}

/// mean |z_i − z_(i+1)| / mean |z| with every token masked: only the captions differ.
fn caption_sensitivity(student: &Student, tokens: &Tensor, text: &Tensor, order: &[Vec<usize>], grid: usize) -> f64 {
    let (b, l, _) = tokens.size3().expect("(B, L, C)");
    let z =
        student.model.forward_z(tokens, &Mask::from_orders(order, l as usize, l as usize), text, grid, &Ctx::eval()); // (B, L, D)
    let diff = scalar(&(z.narrow(0, 0, b - 1) - z.narrow(0, 1, b - 1)).abs().mean(Kind::Float));
    let scale = scalar(&z.abs().mean(Kind::Float));
    diff / scale.max(1e-12)
}

/// Loads a checkpoint and its manifest's training data, then probes.
pub fn run(ckpt: &Path, manifest_path: &Path, samples: usize, seed: u64, device: &str) -> Result<ProbeReport> {
    let ck = crate::student::train::checkpoint::resolve(ckpt)?;
    let m = crate::formats::manifest::verify(manifest_path)?;
    let ds = Dataset::open(manifest_path, &m)?;
    let student = Student::load(&ck, true, crate::student::train::device(device)?)?;
    probe(&student, &ds, samples.min(ds.len()), seed)
}
