//! The training config (`configs/train-*.toml`, schema `schemas/train-config.schema.json`):
//! the model preset and its overrides, the optimisation, and the sampler used for the grids.
//! What the data is comes from the manifest, never from here.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schedule::LrSchedule;
use crate::error::{Error, Result};
use crate::student::model::sampler::SampleOptions;
use crate::student::model::MarConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default = "default_sample")]
    pub sample: SampleOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// tiny | small | base | large.
    pub preset: String,
    pub width: Option<usize>,
    /// Encoder, decoder and cross-attention depth.
    pub depth: Option<usize>,
    pub heads: Option<usize>,
    pub text_depth: Option<usize>,
    pub diffloss_width: Option<usize>,
    pub diffloss_depth: Option<usize>,
    /// eps (the reference) | v: what the DiffLoss head predicts (see `Prediction`).
    pub prediction: Option<crate::student::model::config::Prediction>,
    /// normal (the reference) | sincos: how the positional tables start (see `PosInit`).
    pub pos_init: Option<crate::student::model::PosInit>,
    /// Attention and projection dropout.
    pub dropout: Option<f32>,
    /// 2-D rotary positions in the self-attention (see `MarConfig::rope`); off in the reference.
    pub rope: Option<bool>,
    /// The head's condition also reads each token's 3×3 window of visible tokens (see
    /// `MarConfig::neighbours`); off in the reference.
    pub neighbours: Option<bool>,
    /// The caption is prepended to the decoder's self-attention (see `MarConfig::text_prefix`);
    /// off in the reference.
    pub text_prefix: Option<bool>,
    /// The x0 read-out's hidden width (see `MarConfig::x0_hidden`; 0 = linear, as before).
    pub x0_hidden: Option<usize>,
    /// The head denoises around the x0 read-out (see `MarConfig::head_centre`; needs
    /// `train.x0_loss_weight` > 0); off in the reference.
    pub head_centre: Option<bool>,
}

/// The loss terms `train.object_loss_weight` scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectWeightTerms {
    /// The head's DiffLoss and the x0 read-out.
    #[default]
    All,
    /// The x0 read-out only (needs `x0_loss_weight` > 0).
    X0,
    /// The head's DiffLoss only: the read-outs regress on the unweighted mean, which is what
    /// `model.head_centre` starts the head from (a weighted mean is a faint object in every
    /// token where z is unsure).
    Head,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub batch_size: usize,
    pub steps: u64,
    /// Micro-batches per optimiser step (gradient accumulation): the global batch is
    /// batch_size × ranks × accumulate.
    pub accumulate: usize,
    /// Base learning rate: lr = blr × global batch / 256 (the reference's rule).
    pub blr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub lr_schedule: LrSchedule,
    /// With `lr_schedule = "cosine"`: the cosine spans only the last N steps, the lr holding
    /// until then (warm-up, stable, decay). 0 = the whole run after warm-up.
    pub lr_decay_steps: u64,
    pub weight_decay: f64,
    /// AdamW's (β1, β2): the reference's (0.9, 0.95). β1 averages each parameter's gradient
    /// over about 1/(1 − β1) steps, β2 its square. On the demo, longer averages (β1 0.95,
    /// β2 0.99) lose the shape word's binding; β1 0.8 starts faster and ends no higher
    /// (docs/student.md, "Updates, not samples").
    pub adam_betas: [f64; 2],
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    pub ema: f64,
    /// Copies of each token's condition, each with its own timestep and noise.
    pub diffusion_batch_mul: usize,
    pub mask_ratio_min: f64,
    /// Spread of the mask ratio's N(1, std²) on [mask_ratio_min, 1] (0.25 in the reference).
    /// Training with the reference's [0.7, 1] never shows the student more than 30% of the
    /// tokens, but the last of 8 sampling steps draw over half of them with 44–80% visible:
    /// a small student does not generalise there (`lightgen probe`'s "¾ visible" row).
    pub mask_ratio_std: f64,
    /// Share of training samples whose mask is block-wise (`schedule::block_order`: whole
    /// rectangles of tokens hidden) instead of uniformly random. 0 = off (the reference). With
    /// uniform masks a hidden object almost always has some of its tokens visible, so the
    /// student learns to continue objects from their visible parts but never to start one
    /// where the context shows only background (`inpaint --completion`: 0 of 60 scenes drawn
    /// when every token under the objects is hidden). At 0.5 on the demo it did not change that
    /// or the eval in 3,000 steps (docs/student.md, "the completion curve").
    pub block_mask_prob: f64,
    /// Share of training samples whose mask hides every token covering an object before any
    /// background token (`objects.rs`): the object is then entirely hidden with background
    /// around it, as when free sampling has to start an object. 0 = off (the reference).
    /// Pixel tokens only.
    pub object_mask_prob: f64,
    /// Share of training samples whose mask hides every background token before any object
    /// token (`objects.rs`): the objects stay visible while the rest is hidden, as when free
    /// sampling has drawn a scene's objects and must fill in around them. Uniform masks at
    /// the usual ratios seldom leave a scene's objects visible, and the student keeps adding
    /// objects (`inpaint --completion --hide background`). 0 = off (the reference); a sample
    /// drawn for `object_mask_prob` too takes objects first. Pixel tokens only.
    pub object_keep_prob: f64,
    /// Share of the run [0, 1) before which objects-last masks are off: the class binds on
    /// the head's object rows first, then the count is taught from the context. 0 = from
    /// the start. On the demo recipe at 0.5 (with `object_keep_prob` 0.5) the class holds
    /// and samples hold 2.6–2.9 objects for the 1.8 asked, against 4.2–4.5 without, but the
    /// accuracy is lower (three training seeds, docs/student.md).
    pub object_keep_from: f64,
    /// Weight of the loss rows of tokens that cover an object, against 1 for background
    /// tokens (normalised to a mean of 1 per batch). 1 = off (the reference). Objects are a
    /// fifth of a shapes image's tokens; textured and gradient backgrounds take most of the
    /// loss and of a small student's capacity. Pixel tokens only.
    pub object_loss_weight: f64,
    /// Share of the run (0, 1] that trains with `object_loss_weight`; the rest weighs every row
    /// 1. A loss weight that depends on the target biases a diffusion head: where z cannot
    /// tell object from background, it learns object tokens `object_loss_weight` times too
    /// likely, and free sampling scatters extra objects. 1 = the whole run.
    pub object_loss_weight_until: f64,
    /// Which loss terms the object weight scales: all (the head's DiffLoss and the x0
    /// read-out) or x0 (only the read-out, which shapes z but is not sampled from, so the
    /// head keeps the corpus's share of object tokens).
    pub object_loss_weight_terms: ObjectWeightTerms,
    /// Min-SNR-γ loss weighting (Hang et al. 2023): each token's eps-MSE is weighted by
    /// min(SNR_t, γ) / SNR_t (a v head's v-MSE by min(SNR_t, γ) / (SNR_t + 1)). 0 = off, the
    /// reference's uniform weighting. Uniform eps weighting spends almost all of the gradient
    /// on low-noise timesteps, where the answer is in the noisy token itself and text and
    /// context barely matter.
    pub min_snr_gamma: f64,
    /// High-noise weighting: each token's eps-MSE is also weighted by min(1 + 1/SNR, Γ),
    /// the v-prediction loss's weight truncated at Γ. 0 = off (the reference); eps heads only. With pixel
    /// tokens the head reads a flat colour off the noisy token itself down to SNR ≈ 1/16, so
    /// only the noisiest steps need the caption, and eps-MSE gives those ~SNR of the weight.
    pub high_noise_weight: f64,
    /// Share of each step's head rows (evenly spread over them) whose timestep is drawn from
    /// `timestep_band` instead of [0, 1000). 0 = off (the reference's uniform draw). An eps
    /// head weighs a token's x0 error by SNR_t, and z's knowledge of which object a token
    /// holds pays only where the noisy token does not already tell it, so the gradient that
    /// binds a caption's words into z comes from a band between the two. In the binding toy
    /// (12-value tokens), half the rows in [0, 400) bind the class about twice as fast; on the
    /// shapes world (192-value tokens, whose class shows through more noise) half in
    /// [400, 700) binds the colour at three training seeds (colour right 0.40 against 0.27)
    /// and gives back some of the class, at the same accuracy (docs/student.md, "Which
    /// timesteps bind a word"). All the rows in a band leaves the sampler drawing junk from the
    /// timesteps it never saw.
    pub timestep_band_share: f64,
    /// The band [lo, hi) of `timestep_band_share`, in timesteps of 1000.
    pub timestep_band: [usize; 2],
    /// Draw a step's head-row timesteps stratified over 0..1000 (a shuffled even grid with one
    /// random offset) instead of independently: each row's timestep is still uniform, so the
    /// loss is the same in expectation, with less noise from step to step. false = independent
    /// draws (the reference). Not with `timestep_band_share`.
    pub stratified_timesteps: bool,
    /// Weight of an MSE term between a linear read-out of z (`x0_head`) and each masked
    /// token's x0. 0 = off (the reference). The DiffLoss gradient reaching z is weak and noisy
    /// (one random timestep per token, most of them at noise levels where the noisy token
    /// already tells the answer); this term tells the backbone directly what each masked token
    /// is on average given the caption and the visible tokens.
    pub x0_loss_weight: f64,
    /// The x0 term's weight on background rows (object rows weigh 1; tokens told apart by
    /// their pixels, so pixel tokens only). 1 = every row alike (the reference's term, the
    /// demo). At 0 the read-out's target is the object the caption and the context imply, not
    /// that object diluted by the background's share of the tokens. On the shapes world it
    /// binds the colour (colour right 0.51 against 0.27 over three training seeds) and gives
    /// back a little of the class, at the demo's accuracy (docs/student.md, "Which class the
    /// student draws instead").
    pub x0_background_weight: f64,
    /// Weight of a cross-entropy term between a read-out of z (`code_head`) and each masked
    /// token's code: its nearest centre in a k-means codebook of `codes` centres, fitted at the
    /// start of the run on the tokens of `code_images` seeded training images. 0 = off (the
    /// reference). The x0 term's MSE asks z for the *mean* of what a token may hold; this term
    /// asks for the distribution over what it may be (an object of a class, in a colour, or
    /// background), which stays informative where the mean averages the options away. The
    /// object weight multiplies this term as it does the others (`object_loss_weight_terms`),
    /// so the read-out's odds of object codes carry that weight's prior: a training signal,
    /// not a calibrated probability.
    pub code_loss_weight: f64,
    /// Centres of that codebook (≥ 2).
    pub codes: usize,
    /// Training images whose tokens fit the codebook.
    pub code_images: usize,
    /// Weight of a cross-entropy term between a read-out of z (`label_head`) and each masked
    /// token's semantic label: the class and colour of the object the shapes analyzer finds on
    /// that token of the training image, or background. 0 = off (the reference). The x0 and
    /// code read-outs ask z for pixels, where a hexagon and a circle, or a star and a diamond,
    /// differ by a few edge pixels of an 8 × 8 token; this term asks for the class itself, as
    /// REPA aligns a generator's features with a frozen vision encoder's. Pixel tokens only.
    /// Unweighted by the object weight: a training signal, not a calibrated probability.
    pub label_loss_weight: f64,
    /// Compute precision: `auto` = bf16 on CUDA, f32 on CPU (the reference trains under
    /// bf16 autocast); `f32` or `bf16` force one. Weights and optimizer state are f32 always.
    pub precision: Precision,
    /// A curriculum: the first `focus_steps` steps draw only samples of these families (the
    /// taxonomy's, e.g. single_object and colors), the rest draw from all. Empty = off (the
    /// reference). A small student trained on every family at once learns the captions'
    /// colours but not which shape a word names; steps on scenes of one object name it first
    /// (docs/student.md, "Binding the shape word").
    pub focus_families: Vec<String>,
    pub focus_steps: u64,
    /// Captions replaced by the null caption (for classifier-free guidance).
    pub text_drop_prob: f64,
    pub seed: u64,
    pub log_every: u64,
    /// Checkpoint every N steps (and always at the end); 0 = only at the end.
    pub checkpoint_every: u64,
    /// Complete checkpoints kept (oldest removed first); the final one is always kept.
    pub keep_checkpoints: usize,
    /// A grid of samples for the held-out prompts every N steps (and at the end); 0 = end only.
    pub sample_every: u64,
    /// How many held-out prompts the grids show.
    pub grid_prompts: usize,
    /// Evaluate the EMA weights every N steps (and at the end) on a fixed slice of the
    /// held-out prompts: per-task accuracy into `metrics.jsonl` and `eval-curve.png`. 0 = off.
    pub eval_every: u64,
    /// Held-out prompts in that slice (taken in turn from each task, the same every time).
    pub eval_prompts: usize,
    /// Images per prompt at each of those evaluations.
    pub eval_images: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            batch_size: 64,
            accumulate: 1,
            steps: 1000,
            blr: 1e-4,
            min_lr: 0.0,
            warmup_steps: 100,
            lr_schedule: LrSchedule::Constant,
            lr_decay_steps: 0,
            weight_decay: 0.02,
            adam_betas: [0.9, 0.95],
            grad_clip: 3.0,
            ema: 0.9999,
            diffusion_batch_mul: 4,
            mask_ratio_min: 0.7,
            mask_ratio_std: 0.25,
            block_mask_prob: 0.0,
            object_mask_prob: 0.0,
            object_keep_prob: 0.0,
            object_keep_from: 0.0,
            object_loss_weight: 1.0,
            object_loss_weight_until: 1.0,
            object_loss_weight_terms: ObjectWeightTerms::All,
            min_snr_gamma: 0.0,
            high_noise_weight: 0.0,
            timestep_band_share: 0.0,
            timestep_band: [0, 400],
            stratified_timesteps: false,
            x0_loss_weight: 0.0,
            x0_background_weight: 1.0,
            code_loss_weight: 0.0,
            codes: 256,
            code_images: 1024,
            label_loss_weight: 0.0,
            precision: Precision::Auto,
            focus_families: Vec::new(),
            focus_steps: 0,
            text_drop_prob: 0.1,
            seed: 0,
            log_every: 10,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            sample_every: 0,
            grid_prompts: 8,
            eval_every: 0,
            eval_prompts: 60,
            eval_images: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Auto,
    F32,
    Bf16,
}

impl Precision {
    /// The matmul dtype on `device`.
    pub fn dtype(self, device: tch::Device) -> tch::Kind {
        match self {
            Precision::F32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
            Precision::Auto if device.is_cuda() => tch::Kind::BFloat16,
            Precision::Auto => tch::Kind::Float,
        }
    }
}

fn default_sample() -> SampleOptions {
    SampleOptions::default()
}

impl TrainConfig {
    /// The built-in training presets' names.
    pub const PRESETS: [&'static str; 5] = ["tiny", "small", "base", "large", "gpu"];

    /// A built-in training preset by name (`configs/train-<name>.toml` ship the same values).
    pub fn preset(name: &str) -> Option<TrainConfig> {
        let text = match name {
            "tiny" => include_str!("../../../configs/train-tiny.toml"),
            "small" => include_str!("../../../configs/train-small.toml"),
            "base" => include_str!("../../../configs/train-base.toml"),
            "large" => include_str!("../../../configs/train-large.toml"),
            "gpu" => include_str!("../../../configs/train-gpu.toml"),
            _ => return None,
        };
        Some(Self::parse(text, &format!("preset {name}")).expect("built-in train presets parse"))
    }

    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<TrainConfig> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map_or((0, 0), |s| crate::error::line_col(text, s.start));
            Error::invalid(format!("{origin}:{line}:{col}"), e.message().to_string())
        })?;
        cfg.validate().map_err(|m| Error::invalid(origin, m))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let model = self.model_config()?;
        let t = &self.train;
        if model.prediction == crate::student::model::Prediction::V && t.high_noise_weight > 0.0 {
            return Err(format!(
                "train.high_noise_weight = {} with model.prediction = \"v\": a v head's MSE already carries the weight 1 + 1/SNR; expected 0",
                t.high_noise_weight
            ));
        }
        for (field, v) in [
            ("train.batch_size", t.batch_size as u64),
            ("train.accumulate", t.accumulate as u64),
            ("train.steps", t.steps),
            ("train.diffusion_batch_mul", t.diffusion_batch_mul as u64),
        ] {
            if v == 0 {
                return Err(format!("{field} = 0; expected a positive number"));
            }
        }
        if !(0.0..=1.0).contains(&t.mask_ratio_min) || !(0.0..1.0).contains(&t.text_drop_prob) {
            return Err("train.mask_ratio_min must be in [0, 1] and train.text_drop_prob in [0, 1)".into());
        }
        if !(t.object_loss_weight > 0.0 && t.object_loss_weight.is_finite()) {
            return Err(format!(
                "train.object_loss_weight = {}: expected a weight > 0 (1 = off)",
                t.object_loss_weight
            ));
        }
        if t.object_loss_weight_terms == ObjectWeightTerms::X0 && t.object_loss_weight != 1.0 && t.x0_loss_weight <= 0.0
        {
            return Err(format!(
                "train.object_loss_weight_terms = \"x0\" with x0_loss_weight = {}: the object weight would scale nothing (expected x0_loss_weight > 0, or terms = \"all\")",
                t.x0_loss_weight
            ));
        }
        if let Some(h) = self.model.x0_hidden.filter(|&h| h > 0 && t.x0_loss_weight <= 0.0) {
            return Err(format!(
                "model.x0_hidden = {h} with train.x0_loss_weight = {}: the read-out is only built and trained with a weight > 0",
                t.x0_loss_weight
            ));
        }
        if !(t.object_loss_weight_until > 0.0 && t.object_loss_weight_until <= 1.0) {
            return Err(format!(
                "train.object_loss_weight_until = {}: expected a share of the run in (0, 1]",
                t.object_loss_weight_until
            ));
        }
        if !(0.0..=1.0).contains(&t.object_mask_prob) {
            return Err(format!("train.object_mask_prob = {}: expected a share in [0, 1]", t.object_mask_prob));
        }
        if !(0.0..=1.0).contains(&t.object_keep_prob) {
            return Err(format!("train.object_keep_prob = {}: expected a share in [0, 1]", t.object_keep_prob));
        }
        if !(0.0..1.0).contains(&t.object_keep_from) {
            return Err(format!(
                "train.object_keep_from = {}: expected a share of the run in [0, 1)",
                t.object_keep_from
            ));
        }
        if !(0.0..=1.0).contains(&t.block_mask_prob) {
            return Err(format!("train.block_mask_prob = {}: expected a share in [0, 1]", t.block_mask_prob));
        }
        if !(t.mask_ratio_std > 0.0 && t.mask_ratio_std.is_finite()) {
            return Err(format!("train.mask_ratio_std = {}: expected a positive spread", t.mask_ratio_std));
        }
        if !(0.0..=1.0).contains(&t.timestep_band_share) {
            return Err(format!("train.timestep_band_share = {}: expected a share in [0, 1]", t.timestep_band_share));
        }
        if let Some(b) = t.adam_betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
            return Err(format!(
                "train.adam_betas = [{}, {}]: expected each in [0, 1), not {b} (the reference: [0.9, 0.95])",
                t.adam_betas[0], t.adam_betas[1]
            ));
        }
        if t.stratified_timesteps && t.timestep_band_share > 0.0 {
            return Err(format!(
                "train.stratified_timesteps = true with timestep_band_share = {}: expected one of them (the band moves a share of the rows off the grid)",
                t.timestep_band_share
            ));
        }
        let [lo, hi] = t.timestep_band;
        if lo >= hi || hi > 1000 {
            return Err(format!("train.timestep_band = [{lo}, {hi}]: expected [lo, hi) with lo < hi ≤ 1000"));
        }
        if !(t.x0_loss_weight >= 0.0 && t.x0_loss_weight.is_finite()) {
            return Err(format!("train.x0_loss_weight = {}: expected ≥ 0 (0 = off)", t.x0_loss_weight));
        }
        if !(t.x0_background_weight >= 0.0 && t.x0_background_weight.is_finite()) {
            return Err(format!("train.x0_background_weight = {}: expected ≥ 0 (1 = off)", t.x0_background_weight));
        }
        if t.x0_background_weight != 1.0 && t.x0_loss_weight <= 0.0 {
            return Err(format!(
                "train.x0_background_weight = {} with x0_loss_weight = {}: expected x0_loss_weight > 0 (the weight scales that term's rows)",
                t.x0_background_weight, t.x0_loss_weight
            ));
        }
        if !(t.code_loss_weight >= 0.0 && t.code_loss_weight.is_finite()) {
            return Err(format!("train.code_loss_weight = {}: expected ≥ 0 (0 = off)", t.code_loss_weight));
        }
        if t.code_loss_weight > 0.0 && (t.codes < 2 || t.code_images == 0) {
            return Err(format!(
                "train.codes = {} and train.code_images = {} with code_loss_weight = {}: expected at least 2 codes fitted on at least 1 image",
                t.codes, t.code_images, t.code_loss_weight
            ));
        }
        if !(t.label_loss_weight >= 0.0 && t.label_loss_weight.is_finite()) {
            return Err(format!("train.label_loss_weight = {}: expected ≥ 0 (0 = off)", t.label_loss_weight));
        }
        if !(t.min_snr_gamma >= 0.0) || !(t.high_noise_weight >= 0.0) {
            return Err(format!(
                "train.min_snr_gamma = {} and train.high_noise_weight = {}: expected ≥ 0 (0 = off)",
                t.min_snr_gamma, t.high_noise_weight
            ));
        }
        if t.focus_families.is_empty() != (t.focus_steps == 0) {
            return Err(format!(
                "train.focus_families = {:?} with train.focus_steps = {}: expected both set (families and a step count > 0) or neither",
                t.focus_families, t.focus_steps
            ));
        }
        if t.lr_decay_steps > 0 && t.lr_schedule != LrSchedule::Cosine {
            return Err(format!(
                "train.lr_decay_steps = {} with train.lr_schedule = \"constant\": the decay is the cosine's; expected lr_schedule = \"cosine\" or lr_decay_steps = 0",
                t.lr_decay_steps
            ));
        }
        if !(0.0..1.0).contains(&t.ema) {
            return Err(format!("train.ema = {}: expected a rate in [0, 1)", t.ema));
        }
        if self.sample.steps == 0 || self.sample.diffusion_steps == 0 || self.sample.diffusion_steps > 1000 {
            return Err("sample.steps must be ≥ 1 and sample.diffusion_steps in 1..=1000".into());
        }
        if !(0.0..=1.0).contains(&self.sample.mean_noise) {
            return Err(format!("sample.mean_noise = {}: expected a scale in [0, 1]", self.sample.mean_noise));
        }
        crate::student::model::sampler::check_object_prior("sample.object_prior", self.sample.object_prior)?;
        Ok(())
    }

    /// The preset with this config's overrides (token size, grid and text come later from the
    /// manifest).
    pub fn model_config(&self) -> std::result::Result<MarConfig, String> {
        let m = &self.model;
        let mut c = MarConfig::named(&m.preset).ok_or_else(|| {
            format!("model.preset = \"{}\": unknown preset; known: {}", m.preset, MarConfig::PRESETS.join(", "))
        })?;
        if let Some(w) = m.width {
            c.width = w;
        }
        if let Some(d) = m.depth {
            (c.encoder_depth, c.decoder_depth, c.cross_depth) = (d, d, d);
        }
        if let Some(h) = m.heads {
            c.heads = h;
        }
        if let Some(d) = m.text_depth {
            c.text_depth = d;
        }
        if let Some(w) = m.diffloss_width {
            c.diffloss_width = w;
        }
        if let Some(d) = m.diffloss_depth {
            c.diffloss_depth = d;
        }
        if let Some(p) = m.prediction {
            c.prediction = p;
        }
        if let Some(p) = m.pos_init {
            c.pos_init = p;
        }
        c.x0_head = self.train.x0_loss_weight > 0.0;
        if let Some(h) = m.x0_hidden {
            c.x0_hidden = h;
        }
        c.codes = if self.train.code_loss_weight > 0.0 { self.train.codes } else { 0 };
        c.labels = self.train.label_loss_weight > 0.0;
        if let Some(r) = m.rope {
            c.rope = r;
        }
        if let Some(n) = m.neighbours {
            c.neighbours = n;
        }
        if let Some(t) = m.text_prefix {
            c.text_prefix = t;
        }
        if let Some(h) = m.head_centre {
            c.head_centre = h;
        }
        if let Some(p) = m.dropout {
            (c.attn_dropout, c.proj_dropout) = (p, p);
        }
        if c.width % c.heads != 0 {
            return Err(format!("model width {} is not a multiple of heads {}", c.width, c.heads));
        }
        c.check()?;
        Ok(c)
    }

    /// lr = blr × batch / 256.
    /// The learning rate of one process (blr × batch_size × accumulate / 256).
    pub fn lr(&self) -> f64 {
        self.lr_for(1)
    }

    /// The learning rate of a job of `world` ranks: blr × global batch / 256.
    pub fn lr_for(&self, world: usize) -> f64 {
        self.train.blr * self.global_batch(world) as f64 / 256.0
    }

    /// Samples per optimiser step across `world` ranks.
    pub fn global_batch(&self, world: usize) -> usize {
        self.train.batch_size * world.max(1) * self.train.accumulate.max(1)
    }
}
