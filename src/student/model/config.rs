//! The student's architecture: LightGen's Fluid variant of MAR (`fluid_arbitrary.py`), with
//! named presets. `tiny`/`small` are sized for CPU training on the shapes world; `base` and
//! `large` are the reference's `fluid_base` / `fluid_large` with a DiffLoss of 8 × 1536.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Classes of `label_head`'s first half of logits: the shapes world's 10 classes, then
/// background; its second half is the 10 colours, then background (`MarConfig::labels`).
pub const LABEL_CLASSES: usize = 11;
/// `label_head`'s logits: class, then colour.
pub const LABEL_LOGITS: usize = 2 * LABEL_CLASSES;

/// Where the text condition comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TextSource {
    /// Learned word embeddings over vocabulary ids (the shapes world): a (vocab, channels)
    /// table plus learned positions, because unlike T5 features word ids carry no context.
    Vocab { vocab: usize },
    /// Stored encoder features (T5), `channels` wide.
    Features,
}

/// What the DiffLoss head outputs. The reference predicts eps. `v` (Salimans & Ho 2022,
/// v = sqrt(ᾱ)·eps − sqrt(1 − ᾱ)·x0) is for small heads: at high noise eps ≈ x_t, so an eps
/// head must reproduce its input to within sqrt(ᾱ/(1 − ᾱ)) of the x0 signal, and its error is
/// amplified by sqrt((1 − ᾱ)/ᾱ) (6× at t = 900) into the x0 the sampler steps to. A v head
/// outputs ≈ −x0 there instead. `lightgen probe` shows the difference (its "constant mean
/// token" row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    #[default]
    Eps,
    V,
}

/// How the three learned positional tables start. The reference draws them from N(0, 0.02²):
/// against O(1) token features that is a 2–3% signal, and after 450 CPU steps the tables of
/// the demo student were still that small, with neighbours no closer than any two positions
/// (cosine 0.24 both). The student was then blind to where a token is: it filled the middle of
/// a red square with grey. `sincos` starts them at MAE's fixed 2-D sin-cos table (amplitude 1,
/// nearby positions alike), still learned from there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PosInit {
    #[default]
    Normal,
    Sincos,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarConfig {
    /// Values per image token (64 for SD3.5 latents with patch 2; 48 for 4×4 pixel patches).
    pub token_dim: usize,
    /// Token grid side the positional tables are learned at (16 = 256 px in the reference).
    pub pos_grid: usize,
    /// Encoder, decoder and cross-attention width (equal in every reference preset).
    pub width: usize,
    pub encoder_depth: usize,
    pub decoder_depth: usize,
    pub cross_depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    /// Aligner blocks over the text features.
    pub text_depth: usize,
    /// Text feature channels (4096 for flan-t5-xxl).
    pub caption_channels: usize,
    /// Text tokens per caption (128 in the reference).
    pub text_len: usize,
    pub text: TextSource,
    pub diffloss_width: usize,
    pub diffloss_depth: usize,
    /// The head's output (eps in every reference preset; older checkpoints lack the field).
    #[serde(default)]
    pub prediction: Prediction,
    /// Initial positional tables (N(0, 0.02²) in every reference preset; older checkpoints lack
    /// the field).
    #[serde(default)]
    pub pos_init: PosInit,
    /// A read-out of each token's x0 from z (`x0_head`), trained by an MSE term
    /// (`train.x0_loss_weight`). Not in the reference; see that field. Sampling never uses it.
    #[serde(default)]
    pub x0_head: bool,
    /// The read-out's hidden width: 0 (and older checkpoints) = linear; N = Linear(D, N), GELU,
    /// Linear(N, C). A shapes object's pixels are its class's mask times its colour: with colours
    /// of mean ~grey, no linear function of z that encodes the class alone predicts them, so a
    /// linear read-out teaches z the class only after class × colour products; an MLP's does
    /// as soon as z holds both (the binding toy, `binding_tests.rs`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub x0_hidden: usize,
    /// A read-out of each token's code from z (`code_head`, Linear(D, codes)): the index of its
    /// nearest centre in a k-means codebook of the corpus's tokens, trained by cross-entropy
    /// (`train.code_loss_weight`). 0 (and older checkpoints) = none. Unlike the x0 read-out's
    /// MSE, which regresses on the mean of what a token may hold (a rare object averages into
    /// the background; colours around grey cancel a class's mask), a categorical read-out
    /// keeps every mode: its logits add class and colour evidence, so z is asked for both as
    /// soon as either is known. Sampling never uses it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub codes: usize,
    /// 2-D rotary positions in the encoder's and decoder's self-attention, on top of the
    /// learned tables (see `rope.rs`). Not in the reference; older checkpoints lack the field.
    #[serde(default)]
    pub rope: bool,
    /// The head's condition also reads each token's 3×3 window of visible tokens (their values
    /// and visibility, `nbr_proj`, zero at init): the pixels a token's edge must line up with,
    /// without waiting for the transformer to learn to carry them in z. Not in the reference;
    /// older checkpoints lack the field.
    #[serde(default)]
    pub neighbours: bool,
    /// The aligned caption is prepended to the decoder's self-attention (through
    /// `decoder_text_embed`), as MAR's class buffer sits in its encoder: the blocks that lay the
    /// image out see what it shows. In the reference only the cross stack after the decoder sees
    /// the text, and it has no token-to-token attention, so an object's outline must be drawn by
    /// blocks that do not know its class. Not in the reference; older checkpoints lack the field.
    #[serde(default)]
    pub text_prefix: bool,
    /// The head denoises around the x0 read-out: it sees x_t − sqrt(ᾱ_t)·x0_head(z) (the
    /// read-out detached) and still outputs eps (or v), so the loss, the sampler and guidance
    /// are unchanged. An eps head then pulls each token towards the read-out's x0 from the
    /// first, noisiest step, where a plain eps head keeps the level its starting noise gave
    /// it (its loss there is ~SNR-weighted); the level (a token's colour) comes from z. Needs
    /// `x0_head`. Not in the reference; older checkpoints lack the field.
    #[serde(default)]
    pub head_centre: bool,
    /// A read-out of each token's semantic label from z (`label_head`, Linear(D, 22)): the
    /// class of the object on the token (10 shapes-world classes, or background) and its colour
    /// (10 colours, or background), trained by cross-entropy against the shapes analyzer's
    /// reading of the training image (`train.label_loss_weight`). The shapes world's stand-in
    /// for aligning a generator's features with a frozen vision encoder's (REPA). Sampling
    /// never uses it. Not in the reference; older checkpoints lack the field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub labels: bool,
    pub attn_dropout: f32,
    pub proj_dropout: f32,
}

impl MarConfig {
    fn preset(width: usize, depth: usize, heads: usize, dl: (usize, usize), drop: f32) -> MarConfig {
        MarConfig {
            token_dim: 64,
            pos_grid: 16,
            width,
            encoder_depth: depth,
            decoder_depth: depth,
            cross_depth: depth,
            heads,
            mlp_ratio: 4,
            text_depth: 6,
            caption_channels: 4096,
            text_len: 128,
            text: TextSource::Features,
            diffloss_width: dl.0,
            diffloss_depth: dl.1,
            prediction: Prediction::Eps,
            pos_init: PosInit::Normal,
            x0_head: false,
            x0_hidden: 0,
            codes: 0,
            rope: false,
            neighbours: false,
            text_prefix: false,
            labels: false,
            head_centre: false,
            attn_dropout: drop,
            proj_dropout: drop,
        }
    }

    /// CPU preset for the shapes world: a few minutes of training on 2 cores. Dropout is off:
    /// short runs under-fit rather than over-fit, and every dropout mask costs CPU time.
    pub fn tiny() -> MarConfig {
        MarConfig { text_depth: 1, ..Self::preset(128, 2, 4, (192, 2), 0.0) }
    }

    /// CPU preset for longer runs (up to an hour on 2 cores).
    pub fn small() -> MarConfig {
        MarConfig { text_depth: 2, ..Self::preset(192, 3, 6, (384, 3), 0.0) }
    }

    /// `fluid_base` (width 768, 12+12+12 blocks, 12 heads) with DiffLoss 8 × 1536.
    pub fn base() -> MarConfig {
        Self::preset(768, 12, 12, (1536, 8), 0.1)
    }

    /// `fluid_large` (width 1024, 16+16+16 blocks, 16 heads) with DiffLoss 8 × 1536: the
    /// configuration of every LightGen script (792.2M parameters with T5-XXL features).
    pub fn large() -> MarConfig {
        Self::preset(1024, 16, 16, (1536, 8), 0.1)
    }

    pub fn named(name: &str) -> Option<MarConfig> {
        match name {
            "tiny" => Some(Self::tiny()),
            "small" => Some(Self::small()),
            "base" => Some(Self::base()),
            "large" => Some(Self::large()),
            _ => None,
        }
    }

    pub const PRESETS: [&'static str; 4] = ["tiny", "small", "base", "large"];

    /// Sets what the manifest decides: token size, grid and text input.
    pub fn for_data(mut self, token_dim: usize, grid: usize, text: TextSource, channels: usize, len: usize) -> Self {
        self.token_dim = token_dim;
        self.pos_grid = grid;
        self.text = text;
        self.text_len = len;
        if let TextSource::Features = self.text {
            self.caption_channels = channels;
        } else if self.caption_channels > self.width {
            // Word embeddings need no 4096-wide table: the width is plenty.
            self.caption_channels = self.width;
        }
        self
    }

    pub fn check(&self) -> Result<(), String> {
        if self.width % self.heads != 0 {
            return Err(format!("width {} is not a multiple of heads {}", self.width, self.heads));
        }
        if self.pos_init == PosInit::Sincos && self.width % 4 != 0 {
            return Err(format!("model.pos_init = \"sincos\" needs a width divisible by 4, not {}", self.width));
        }
        if self.rope && (self.width / self.heads) % 4 != 0 {
            return Err(format!("model.rope needs a head width divisible by 4, not {}", self.width / self.heads));
        }
        if self.head_centre && !self.x0_head {
            return Err(
                "model.head_centre centres the head on the x0 read-out: it needs one (train.x0_loss_weight > 0)".into(),
            );
        }
        if self.token_dim == 0 || self.pos_grid == 0 || self.text_len == 0 {
            return Err("token_dim, pos_grid and text_len must be positive".into());
        }
        Ok(())
    }

    /// Parameters, counted from the shapes the model creates (no allocation), as
    /// (backbone incl. text aligner, DiffLoss head).
    pub fn parameter_count(&self) -> (u64, u64) {
        let (d, c, p) = (self.width as u64, self.caption_channels as u64, (self.pos_grid * self.pos_grid) as u64);
        let lin = |i: u64, o: u64| i * o + o;
        let ln = |n: u64| 2 * n;
        let mlp = |n: u64| lin(n, n * self.mlp_ratio as u64) + lin(n * self.mlp_ratio as u64, n);
        let block = ln(d) + lin(d, 3 * d) + lin(d, d) + ln(d) + mlp(d);
        let cross = 2 * ln(d) + lin(d, d) + lin(d, 2 * d) + lin(d, d) + ln(d) + mlp(d);
        let text_in = match self.text {
            TextSource::Vocab { vocab } => vocab as u64 * c + self.text_len as u64 * c,
            TextSource::Features => 0,
        };
        let text = text_in + lin(c, d) + lin(d, d) + self.text_depth as u64 * block + ln(d);
        let enc = lin(self.token_dim as u64, d) + p * d + ln(d) + self.encoder_depth as u64 * block + ln(d);
        let dec = lin(d, d) + d + p * d + self.decoder_depth as u64 * block + ln(d);
        let crs = lin(d, d) + p * d + self.cross_depth as u64 * cross + ln(d) + d; // + fake_latent
        let x0 = match (self.x0_head, self.x0_hidden as u64) {
            (false, _) => 0,
            (true, 0) => lin(d, self.token_dim as u64),
            (true, h) => lin(d, h) + lin(h, self.token_dim as u64),
        };
        let code = if self.codes > 0 { lin(d, self.codes as u64) } else { 0 };
        let nbr = if self.neighbours { lin(9 * (self.token_dim as u64 + 1), d) } else { 0 };
        let prefix = if self.text_prefix { lin(d, d) } else { 0 };
        let labels = if self.labels { lin(d, LABEL_LOGITS as u64) } else { 0 };
        let (w, t) = (self.diffloss_width as u64, self.token_dim as u64);
        let head = lin(256, w)
            + lin(w, w)
            + lin(d, w)
            + lin(t, w)
            + self.diffloss_depth as u64 * (ln(w) + 2 * lin(w, w) + lin(w, 3 * w))
            + lin(w, 2 * w)
            + lin(w, 2 * t);
        (text + enc + dec + crs + x0 + code + nbr + prefix + labels, head)
    }
}

/// Model FLOPs of one training step per image (forward + backward = 3 × forward, multiply-adds
/// counted as 2), counted analytically from the shapes the model runs: `l` image tokens of which
/// `masked` are masked, `t` caption tokens, `mul` DiffLoss copies of each masked token. The
/// encoder sees only the visible tokens; attention counts QKᵀ and AV. Used for MFU.
pub fn train_flops_per_image(cfg: &MarConfig, l: usize, t: usize, masked: usize, mul: usize) -> f64 {
    let (d, r) = (cfg.width as f64, cfg.mlp_ratio as f64);
    let (l, t, lv) = (l as f64, t as f64, (l - masked.min(l)) as f64);
    let block = |n: f64| n * (4.0 + 2.0 * r) * d * d * 2.0 + 2.0 * 2.0 * n * n * d; // qkv, proj, mlp; attention
    let text = t * (cfg.caption_channels as f64 * d + d * d) * 2.0 + cfg.text_depth as f64 * block(t);
    let enc = l * cfg.token_dim as f64 * d * 2.0 + cfg.encoder_depth as f64 * block(lv);
    // With the caption prepended, the decoder's blocks run over t more tokens (+ their projection).
    let prefix = if cfg.text_prefix { t } else { 0.0 };
    let dec = (lv + prefix) * d * d * 2.0 + cfg.decoder_depth as f64 * block(l + prefix);
    let cross = l * d * d * 2.0
        + cfg.cross_depth as f64 * (l * (2.0 + 2.0 * r) * d * d * 2.0 + t * 2.0 * d * d * 2.0 + 2.0 * 2.0 * l * t * d);
    let (w, c, n) = (cfg.diffloss_width as f64, cfg.token_dim as f64, (masked * mul) as f64);
    let head = masked as f64 * d * w * 2.0
        + n * (c * w + cfg.diffloss_depth as f64 * 5.0 * w * w + 2.0 * w * w + w * 2.0 * c) * 2.0;
    3.0 * (text + enc + dec + cross + head)
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_flops_are_six_per_parameter_per_token_plus_attention() {
        // With every token visible and masked alike, the matmul FLOPs of a transformer are
        // 6 × (matmul parameters) × tokens; `large` at 256 tokens, T = 128: the blocks hold
        // 12·d² each (48 blocks + 6 aligner), so the count must exceed 6·12·d²·(48·256 + 6·128).
        let cfg = MarConfig::large();
        let f = train_flops_per_image(&cfg, 256, 128, 256, 4);
        let d2 = (cfg.width * cfg.width) as f64;
        let blocks = 6.0 * 12.0 * d2 * (48.0 * 256.0 + 6.0 * 128.0);
        assert!(f > blocks && f < 2.0 * blocks, "{f:e} vs {blocks:e}");
        // All visible vs all masked (no head copies): the difference is the encoder blocks and
        // decoder_embed on 256 tokens, less the head's condition projection of 256 rows.
        let (d, l) = (cfg.width as f64, 256.0);
        let block = l * 12.0 * d * d * 2.0 + 4.0 * l * l * d;
        let want = 3.0 * (16.0 * block + l * d * d * 2.0 - l * d * cfg.diffloss_width as f64 * 2.0);
        let got = train_flops_per_image(&cfg, 256, 128, 0, 0) - train_flops_per_image(&cfg, 256, 128, 256, 0);
        assert!((got / want - 1.0).abs() < 1e-9, "{got:e} vs {want:e}");
        // The caption prefix: its projection and 16 decoder blocks over 128 more tokens.
        let with = MarConfig { text_prefix: true, ..cfg.clone() };
        let (t, lt) = (128.0, 384.0);
        let extra = |n: f64| n * 12.0 * d * d * 2.0 + 4.0 * n * n * d;
        let want = 3.0 * (t * d * d * 2.0 + 16.0 * (extra(lt) - extra(l)));
        let got = train_flops_per_image(&with, 256, 128, 128, 4) - train_flops_per_image(&cfg, 256, 128, 128, 4);
        assert!((got / want - 1.0).abs() < 1e-9, "{got:e} vs {want:e}");
    }

    #[test]
    fn large_with_t5_xxl_counts_792m_as_the_reference() {
        // lightgen.md §2.5: fluid_large + DiffLoss 8×1536, T5-XXL (4096) features, 256 pos
        // slots → 792.2M in all, 688M without the MLP head.
        let (body, head) = MarConfig::large().parameter_count();
        assert_eq!(((body + head) as f64 / 1e5).round() / 10.0, 792.2);
        assert_eq!((body as f64 / 1e6).round(), 688.0);
        assert_eq!(((head as f64) / 1e5).round() / 10.0, 103.8);
        let (b, h) = MarConfig::base().parameter_count();
        assert_eq!(((b + h) as f64 / 1e5).round() / 10.0, 406.7);
    }
}
