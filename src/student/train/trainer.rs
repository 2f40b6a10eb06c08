//! One training step, explicit and plain (nanoGPT style): batch → mask → forward → masked
//! DiffLoss → backward → (all-reduce) → clip → AdamW → EMA. Every random draw of step s comes
//! from (seed, s) (`draws.rs`), so `--resume` continues exactly. The run around it is `run.rs`.

use std::path::Path;
use std::time::Instant;

use rand::RngExt;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::checkpoint::{self, TrainState};
use super::config::{ObjectWeightTerms, TrainConfig};
use super::data::Batch;
use super::draws::StepDraws;
use super::objects::{row_weights, PixelTokens};
use super::optim::{AdamW, Ema};
use super::schedule::{lr_at, step_rng};
pub use super::timesteps::loss_weight;
use crate::error::{Error, Result};
use crate::student::dist::Dist;
use crate::student::model::config::LABEL_CLASSES;
use crate::student::model::layers::{index, scalar, tensor_f32, Ctx};
use crate::student::model::text::TextInput;
use crate::student::model::{Mar, MarConfig, ParamStore, TextSource};

/// What one step measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub mask_ratio: f64,
    pub ms: f64,
}

/// The model, its optimiser and EMA, at a step.
pub struct Trainer {
    pub model: Mar,
    pub store: ParamStore,
    pub opt: AdamW,
    pub ema: Ema,
    pub cfg: TrainConfig,
    pub grid: usize,
    pub device: Device,
    /// The data-parallel job this trainer is a rank of (a world of one by default).
    pub dist: Dist,
    /// How pixel tokens map back to pixels, for the object options (object-first masks, the
    /// object loss weight; set by `run::train`).
    pub pixels: Option<PixelTokens>,
    /// The token codebook (k, C) of `train.code_loss_weight` (set by `run::train`, see
    /// `codes.rs`; kept with the optimiser state).
    pub codebook: Option<Tensor>,
    /// Each sample's token labels (`train.label_loss_weight`), by the hash of its tokens: the
    /// analyzer reads a sample once, not at every step that draws it (it costs ~1.5 ms an
    /// image, a quarter of the demo's step when read every time).
    pub label_cache: std::sync::Mutex<std::collections::HashMap<[u8; 32], Vec<[u8; 2]>>>,
}

impl Trainer {
    pub fn new(cfg: TrainConfig, model_cfg: MarConfig, grid: usize, device: Device) -> Result<Trainer> {
        crate::student::host_alloc::tune();
        let mut store = ParamStore::new(cfg.train.seed, device);
        let model = Mar::new(&model_cfg, &mut store).map_err(|e| Error::invalid("model config", e))?;
        let ema = Ema::new(&store, cfg.train.ema);
        let [beta1, beta2] = cfg.train.adam_betas;
        let opt = AdamW::new(beta1, beta2, cfg.train.weight_decay);
        Ok(Trainer {
            model,
            store,
            opt,
            ema,
            cfg,
            grid,
            device,
            dist: Dist::single(),
            pixels: None,
            codebook: None,
            label_cache: Default::default(),
        })
    }

    /// The text input of a host batch.
    pub fn text_input(&self, b: &Batch) -> TextInput {
        let cfg = &self.model.cfg;
        let channels = if let TextSource::Vocab { .. } = cfg.text { 0 } else { cfg.caption_channels };
        TextInput::from_host(&b.ids, &b.feats, b.size, cfg.text_len, channels, self.device)
    }

    /// Per-masked-token DiffLoss terms of a batch with this step's draws: (loss rows, mse rows).
    pub fn losses(&self, b: &Batch, step: u64, ctx: &Ctx) -> Result<(Tensor, Tensor, f64)> {
        let d = self.draws(b.size, step);
        let (loss, mse) = self.losses_with(b, &d, ctx)?;
        Ok((loss, mse, d.ratio))
    }

    /// The same with given draws (the reference-parity test passes the reference's).
    pub fn losses_with(&self, b: &Batch, d: &StepDraws, ctx: &Ctx) -> Result<(Tensor, Tensor)> {
        let t = &self.cfg.train;
        let m = &self.model;
        let (l, c) = (self.grid * self.grid, m.cfg.token_dim);
        let weighted = d.object_weight != 1.0;
        let x0_bg = t.x0_background_weight as f32;
        let objects = match (d.mask_option(), weighted, x0_bg != 1.0) {
            (None, false, false) => None,
            (Some(field), ..) => Some(self.objects(b, field)?),
            (None, true, _) => Some(self.objects(b, "train.object_loss_weight")?),
            (None, false, true) => Some(self.objects(b, "train.x0_background_weight")?),
        };
        let mask = self.mask_with(d, objects.as_deref());
        let rows = mask.rows(true);
        let n = rows.len() * t.diffusion_batch_mul;
        if d.t.len() != n || d.noise.len() != n * c {
            return Err(Error::invalid("train", format!("draws for {} rows, the batch has {n}", d.t.len())));
        }
        // Every host → device copy before the first kernel (see `Mar::forward_z`).
        let tokens = tensor_f32(&b.tokens, &[b.size, l, c], self.device); // (B, L, C)
        let input = self.text_input(b);
        let idx = index(&rows, self.device);
        let noise = tensor_f32(&d.noise, &[n, c], self.device); // (N, C)
        let ts = m.diffloss.timesteps(&d.t, self.device);
        let keep = m.keep_mask(&d.keep, self.device);
        let text = m.text.forward(&input, ctx).map_err(|e| Error::invalid("train", e))?;
        let text = m.drop_text_with(&text, &keep); // (B, T, D)

        // Only masked tokens count; each is repeated diffusion_batch_mul times (in the head).
        let z = m.forward_z_rows(&tokens, &mask, &text, self.grid, ctx, &rows); // (K, D)
        let tk = tokens.view([(b.size * l) as i64, c as i64]).index_select(0, &idx); // (K, C)
        let target = tk.repeat([t.diffusion_batch_mul as i64, 1]); // (N, C)

        // Each masked token's code (K), when the code read-out is on.
        let code = match (&self.codebook, t.code_loss_weight > 0.0) {
            (Some(book), true) => Some(super::codes::assign(&tk, book)),
            _ => None,
        };
        let terms = m.diffloss.terms_at(&target, &z, &ts, &noise);
        let loss = if t.min_snr_gamma > 0.0 || t.high_noise_weight > 0.0 {
            // loss = w·mse + vb; the variance term is unchanged.
            let ab = &m.diffloss.train_diffusion.alphas_cumprod;
            let w: Vec<f32> =
                d.t.iter()
                    .map(|&i| loss_weight(ab[i], t.min_snr_gamma, t.high_noise_weight, m.cfg.prediction) as f32)
                    .collect();
            let w = tensor_f32(&w, &[n], self.device);
            (&terms.loss - &terms.mse) + &terms.mse * w
        } else {
            terms.loss.shallow_clone()
        };
        let w = match (&objects, weighted) {
            (Some(obj), true) => {
                // Object rows weigh object_loss_weight, background rows 1, normalised to a mean
                // of 1 over the batch's rows (the lr keeps its meaning); copy-major as the rows.
                let w = row_weights(&rows, obj, d.object_weight as f32, 1.0);
                let mean = w.iter().sum::<f32>() / w.len().max(1) as f32;
                let w: Vec<f32> = w.iter().map(|v| v / mean).collect::<Vec<_>>().repeat(t.diffusion_batch_mul);
                Some(tensor_f32(&w, &[n], self.device)) // (N)
            }
            _ => None,
        };
        let x0_only = t.object_loss_weight_terms == ObjectWeightTerms::X0;
        let loss = match (&w, t.object_loss_weight_terms) {
            (Some(w), ObjectWeightTerms::Head) => loss * w,
            _ => loss,
        };
        let loss = match (&m.x0_head, t.x0_loss_weight > 0.0) {
            (Some(head), true) => {
                // (K, C) → per-row MSE (K), repeated as the head's rows so the mean is exact.
                let pred = head.forward(&z).to_kind(tch::Kind::Float);
                let aux = (pred - &tk).square().mean_dim(-1, false, tch::Kind::Float); // (K)
                let aux = aux.repeat([t.diffusion_batch_mul as i64]).view([n as i64]);
                let aux = match (&w, x0_only) {
                    (Some(w), true) => aux * w,
                    _ => aux,
                };
                // Background rows at x0_background_weight (copy-major as the rows).
                let aux = match (&objects, x0_bg != 1.0) {
                    (Some(obj), true) => {
                        let bw = row_weights(&rows, obj, 1.0, x0_bg).repeat(t.diffusion_batch_mul);
                        aux * tensor_f32(&bw, &[n], self.device)
                    }
                    _ => aux,
                };
                loss + aux * t.x0_loss_weight
            }
            _ => loss,
        };
        let loss = match (&m.code_head, &code, t.code_loss_weight > 0.0) {
            (Some(head), Some(code), true) => {
                // Each masked token's code against the read-out's logits (K, k) → CE (K).
                let logits = head.forward(&z).to_kind(Kind::Float); // (K, k)
                let ce = logits.cross_entropy_loss::<Tensor>(code, None, tch::Reduction::None, -100, 0.0); // (K)
                let ce = ce.repeat([t.diffusion_batch_mul as i64]).view([n as i64]);
                let ce = match (&w, x0_only) {
                    (Some(w), true) => ce * w,
                    _ => ce,
                };
                loss + ce * t.code_loss_weight
            }
            (_, _, false) => loss,
            _ => {
                return Err(Error::invalid("train.code_loss_weight", "the code read-out needs its head and a codebook"))
            }
        };
        let loss = match (&m.label_head, t.label_loss_weight > 0.0) {
            (Some(head), true) => {
                // Each masked token's [class, colour] against the read-out's two halves (K, 11 + 11).
                let labels = self.labels(b)?;
                let target = |k: usize| rows.iter().map(|&r| labels[r as usize][k]).collect::<Vec<i64>>();
                let logits = head.forward(&z).to_kind(Kind::Float); // (K, 22)
                let k = LABEL_CLASSES as i64;
                let ce = |half: i64, y: Vec<i64>| {
                    let y = Tensor::from_slice(&y).to_device(self.device); // (K)
                    logits.narrow(1, half * k, k).cross_entropy_loss::<Tensor>(
                        &y,
                        None,
                        tch::Reduction::None,
                        -100,
                        0.0,
                    )
                };
                let ce = ce(0, target(0)) + ce(1, target(1)); // (K)
                let ce = ce.repeat([t.diffusion_batch_mul as i64]).view([n as i64]);
                loss + ce * t.label_loss_weight
            }
            (_, false) => loss,
            (None, true) => {
                return Err(Error::invalid(
                    "train.label_loss_weight",
                    "the label read-out needs its head (model.labels)",
                ))
            }
        };
        // Weighted after the sum, as before the x0-only option (the same floats, step by step).
        let loss = match (&w, t.object_loss_weight_terms) {
            (Some(w), ObjectWeightTerms::All) => loss * w,
            _ => loss,
        };
        Ok((loss, terms.mse))
    }

    /// One optimisation step on `b` as step `step`.
    pub fn step(&mut self, b: &Batch, step: u64) -> Result<StepStats> {
        self.step_micro(std::slice::from_ref(b), step)
    }

    /// One optimisation step of a data-parallel job: `bs` are this rank's micro-batches (its
    /// shares of the global batch, see [`Dist::shares`]); the draws are the global batch's.
    pub fn step_micro(&mut self, bs: &[Batch], step: u64) -> Result<StepStats> {
        let parts = self.dist.world * bs.len();
        let d = self.draws(bs[0].size * parts, step);
        let mul = self.cfg.train.diffusion_batch_mul;
        let ds: Vec<StepDraws> = self.dist.shares(bs.len()).into_iter().map(|k| d.share(k, parts, mul)).collect();
        self.step_shares(bs, step, &ds)
    }

    /// One optimisation step with given draws: forward, backward, clip, AdamW, EMA. The host
    /// waits for the device once, at the end, to read the loss and the gradient norm.
    pub fn step_with(&mut self, b: &Batch, step: u64, d: &StepDraws) -> Result<StepStats> {
        self.step_shares(std::slice::from_ref(b), step, std::slice::from_ref(d))
    }

    /// The step over micro-batches with their draws: gradients summed over them, averaged
    /// across ranks, then one clip, AdamW and EMA update.
    fn step_shares(&mut self, bs: &[Batch], step: u64, ds: &[StepDraws]) -> Result<StepStats> {
        let t0 = Instant::now();
        let t = self.cfg.train.clone();
        let seed: u64 = step_rng(t.seed, step, 2).random();
        let ctx = Ctx::train(seed).with_dtype(t.precision.dtype(self.device));
        let mut acc: Option<(Tensor, std::collections::BTreeMap<String, Tensor>)> = None;
        for (b, d) in bs.iter().zip(ds) {
            let (rows, _) = self.losses_with(b, d, &ctx)?;
            let loss = rows.mean(Kind::Float);
            let grads = self.store.grads(&loss);
            acc = Some(match acc {
                None => (loss.detach(), grads),
                Some((l, mut g)) => {
                    let _guard = tch::no_grad_guard();
                    for (k, v) in g.iter_mut() {
                        let _ = v.g_add_(&grads[k]);
                    }
                    (l + loss.detach(), g)
                }
            });
        }
        let (mut loss, mut grads) = acc.ok_or_else(|| Error::invalid("train", "a step with no micro-batches"))?;
        if bs.len() > 1 {
            let _guard = tch::no_grad_guard();
            let k = 1.0 / bs.len() as f64;
            for v in grads.values_mut() {
                let _ = v.g_mul_scalar_(k);
            }
            loss *= k;
        }
        self.dist.average(&mut grads, &mut [&mut loss])?;
        let lr = lr_at(
            step,
            self.cfg.lr_for(self.dist.world),
            t.min_lr,
            t.warmup_steps,
            t.steps,
            t.lr_decay_steps,
            t.lr_schedule,
        );
        let grad_norm = self.opt.step(&self.store, &grads, lr, t.grad_clip)?;
        self.ema.update(&self.store)?;
        let value = scalar(&loss);
        if !value.is_finite() {
            return Err(Error::invalid(
                format!("train step {step}"),
                format!("the loss is {value}; lower train.blr or check the data"),
            ));
        }
        let grad_norm = scalar(&grad_norm);
        Ok(StepStats {
            step,
            loss: value,
            lr,
            grad_norm,
            mask_ratio: ds[0].ratio,
            ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    pub(crate) fn optim_tensors(&self) -> std::collections::BTreeMap<String, Tensor> {
        let mut o = std::collections::BTreeMap::new();
        for (k, v) in &self.opt.m {
            o.insert(format!("m.{k}"), v.shallow_clone());
        }
        for (k, v) in &self.opt.v {
            o.insert(format!("v.{k}"), v.shallow_clone());
        }
        if let Some(b) = &self.codebook {
            o.insert("codebook".into(), b.shallow_clone());
        }
        o
    }

    /// Weights, EMA and optimiser state of checkpoint `ckpt` (`--resume`).
    pub(crate) fn restore(&mut self, ckpt: &Path, state: &TrainState) -> Result<()> {
        let dev = self.device;
        self.load_weights(ckpt)?;
        for (k, v) in checkpoint::load_checked(ckpt, "optim.safetensors")? {
            if let Some(n) = k.strip_prefix("m.") {
                self.opt.m.insert(n.to_string(), v.to_device(dev));
            } else if let Some(n) = k.strip_prefix("v.") {
                self.opt.v.insert(n.to_string(), v.to_device(dev));
            } else if k == "codebook" {
                self.codebook = Some(v.to_device(dev));
            }
        }
        self.opt.t = state.adam_t;
        Ok(())
    }

    /// The weights and EMA of checkpoint `ckpt` (not its optimiser state): `--init-from`.
    pub(crate) fn load_weights(&mut self, ckpt: &Path) -> Result<()> {
        let dev = self.device;
        let model = checkpoint::load_checked(ckpt, "model.safetensors")?;
        self.store.load(&model).map_err(|m| Error::invalid(ckpt.display().to_string(), m))?;
        self.ema.weights = checkpoint::load_checked(ckpt, "ema.safetensors")?
            .into_iter()
            .map(|(k, v)| (k, v.to_device(dev)))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::student::model::diffusion::Diffusion;
    use crate::student::model::Prediction;

    pub(in crate::student::train) fn micro() -> TrainConfig {
        TrainConfig::parse(include_str!("../../../tests/fixtures/train-micro.toml"), "micro").unwrap()
    }

    #[test]
    fn loss_is_finite_and_falls_over_50_steps_on_one_batch() {
        // Seeded everywhere (train.seed = 0): 4 images of 16 tokens, 12 values each, whose
        // tokens depend on the caption — learnable, so the loss must fall.
        let mut cfg = micro();
        cfg.train.steps = 50;
        cfg.train.warmup_steps = 5;
        cfg.train.blr = 0.64; // lr 0.01 at batch 4
        cfg.train.text_drop_prob = 0.0;
        let model = cfg.model_config().unwrap().for_data(12, 4, TextSource::Vocab { vocab: 10 }, 0, 3);
        let mut tr = Trainer::new(cfg, model, 4, Device::Cpu).unwrap();
        let tokens: Vec<f32> = (0..4 * 16 * 12).map(|i| if (i / 192 + i % 12) % 2 == 0 { 0.8 } else { -0.8 }).collect();
        let batch = Batch { step: 0, size: 4, tokens, ids: vec![2, 3, 0, 4, 5, 0, 2, 5, 0, 3, 4, 0], feats: vec![] };
        let losses: Vec<f64> = (0..50).map(|s| tr.step(&batch, s).unwrap().loss).collect();
        assert!(losses.iter().all(|l| l.is_finite()));
        let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
        let last: f64 = losses[40..].iter().sum::<f64>() / 10.0;
        assert!(last < 0.7 * first, "first 10 {first:.3}, last 10 {last:.3}");
    }

    pub(in crate::student::train) fn micro_trainer(
        precision: super::super::config::Precision,
        min_snr: f64,
    ) -> (Trainer, Batch) {
        let mut cfg = micro();
        cfg.train.precision = precision;
        cfg.train.min_snr_gamma = min_snr;
        cfg.train.text_drop_prob = 0.0;
        let model = cfg.model_config().unwrap().for_data(12, 4, TextSource::Vocab { vocab: 10 }, 0, 3);
        let tr = Trainer::new(cfg, model, 4, Device::Cpu).unwrap();
        let tokens: Vec<f32> = (0..4 * 16 * 12).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let batch = Batch { step: 0, size: 4, tokens, ids: vec![2, 3, 0, 4, 5, 0, 2, 5, 0, 3, 4, 0], feats: vec![] };
        (tr, batch)
    }

    #[test]
    fn adam_betas_reach_the_optimiser_and_change_the_path() {
        // Seeded (train.seed = 0): the same weights, batch and draws, three steps each. Adam's
        // first step is lr·sign(g) whatever the betas; from the second the averages differ.
        let losses = |betas: [f64; 2]| {
            let (plain, batch) = micro_trainer(super::super::config::Precision::F32, 0.0);
            let mut cfg = plain.cfg.clone();
            cfg.train.adam_betas = betas;
            let mut tr = Trainer::new(cfg, plain.model.cfg.clone(), 4, Device::Cpu).unwrap();
            assert_eq!([tr.opt.beta1, tr.opt.beta2], betas, "Trainer::new takes the config's betas");
            (0..3).map(|s| tr.step(&batch, s).unwrap().loss).collect::<Vec<f64>>()
        };
        let (a, b) = (losses([0.9, 0.95]), losses([0.5, 0.95]));
        assert_eq!(a[..2], b[..2], "the same first update");
        assert_ne!(a[2], b[2], "β1 changes the second update");
        assert_eq!(a, losses([0.9, 0.95]), "deterministic by seed");
    }

    #[test]
    fn bf16_autocast_matches_f32_and_grads_land_on_f32_masters() {
        // Seeded (train.seed = 0): the same weights, batch, mask, timesteps and noise in f32
        // and in bf16 (oneDNN's bf16 matmuls on CPU; `precision = "auto"` picks bf16 on CUDA).
        let (tr, batch) = micro_trainer(super::super::config::Precision::F32, 0.0);
        let head = "diffloss.net.final_layer.linear.weight";
        let run = |dtype: Kind| {
            let ctx = Ctx::train(5).with_dtype(dtype);
            let (rows, _, _) = tr.losses(&batch, 1, &ctx).unwrap();
            assert_eq!(rows.kind(), Kind::Float, "the loss math runs in f32");
            let loss = rows.mean(Kind::Float);
            let g = tr.store.grads(&loss).remove(head).expect("a gradient for the head");
            (scalar(&loss), g)
        };
        let (la, ga) = run(Kind::Float);
        let (lb, gb) = run(Kind::BFloat16);
        assert!(la.is_finite() && (la - lb).abs() < 0.02 * la, "f32 {la} vs bf16 {lb}");
        assert_eq!(gb.kind(), Kind::Float, "gradients reach the f32 master weights");
        let rel = (scalar(&(&ga - &gb).square().sum(Kind::Float)) / scalar(&ga.square().sum(Kind::Float))).sqrt();
        assert!(rel < 0.1, "relative gradient error {rel}");
        assert_eq!(super::super::config::Precision::Auto.dtype(Device::Cpu), Kind::Float);
        assert_eq!(super::super::config::Precision::Bf16.dtype(Device::Cpu), Kind::BFloat16);
    }

    #[test]
    fn the_x0_term_adds_weight_times_the_read_outs_mse_to_every_row() {
        // Seeded (train.seed 0): the same weights and draws with x0_loss_weight 1 and 3; the
        // rows differ by 2 × the read-out's MSE against the masked tokens, which is positive.
        let rows = |w: f64| {
            let mut cfg = micro();
            cfg.train.x0_loss_weight = w;
            cfg.train.text_drop_prob = 0.0;
            cfg.model.dropout = Some(0.0);
            let model = cfg.model_config().unwrap().for_data(12, 4, TextSource::Vocab { vocab: 10 }, 0, 3);
            assert!(model.x0_head, "a weight > 0 builds the read-out");
            let tr = Trainer::new(cfg, model, 4, Device::Cpu).unwrap();
            let tokens: Vec<f32> = (0..4 * 16 * 12).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let batch =
                Batch { step: 0, size: 4, tokens, ids: vec![2, 3, 0, 4, 5, 0, 2, 5, 0, 3, 4, 0], feats: vec![] };
            let (loss, mse, _) = tr.losses(&batch, 1, &Ctx::eval()).unwrap();
            (crate::student::model::layers::to_host(&loss), crate::student::model::layers::to_host(&mse))
        };
        let ((a, ma), (b, mb)) = (rows(1.0), rows(3.0));
        assert_eq!(ma, mb, "the DiffLoss terms do not change");
        let aux: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (y - x) / 2.0).collect();
        assert!(aux.iter().all(|v| *v > 1e-3), "{aux:?}");
        assert!(!micro().model_config().unwrap().x0_head, "off by default, as the reference");
        let mut bad = micro();
        bad.train.x0_loss_weight = -1.0;
        assert!(bad.validate().unwrap_err().contains("x0_loss_weight"));
    }

    #[test]
    fn min_snr_weighting_down_weights_low_noise_only() {
        let ab = Diffusion::training().alphas_cumprod;
        // SNR(0) is huge: weight γ/SNR; at the last step SNR < 1 < γ: weight 1.
        let eps = Prediction::Eps;
        assert!((loss_weight(ab[0], 5.0, 0.0, eps) - 5.0 * (1.0 - ab[0]) / ab[0]).abs() < 1e-12);
        assert_eq!(loss_weight(ab[999], 5.0, 0.0, eps), 1.0);
        // A v head's MSE is the eps-MSE × (1 + 1/SNR): its min-SNR weight is min(SNR, γ)/(SNR + 1),
        // so both weigh x0 errors by min(SNR, γ).
        for i in [0, 300, 700, 999] {
            let snr = ab[i] / (1.0 - ab[i]);
            let v = loss_weight(ab[i], 5.0, 0.0, Prediction::V) * (1.0 + 1.0 / snr);
            assert!((v / loss_weight(ab[i], 5.0, 0.0, eps) - 1.0).abs() < 1e-9, "t = {i}");
        }
        // Γ caps the high-noise weight, which is 1 + 1/SNR below the cap.
        assert_eq!(loss_weight(ab[999], 0.0, 50.0, eps), 50.0);
        assert!((loss_weight(ab[500], 0.0, 50.0, eps) - (1.0 + (1.0 - ab[500]) / ab[500])).abs() < 1e-12);
        assert_eq!(loss_weight(ab[500], 0.0, 0.0, eps), 1.0);
        // Same step, same draws: the weighted loss is below the plain one (every weight ≤ 1).
        let (a, batch) = micro_trainer(super::super::config::Precision::F32, 0.0);
        let (b, _) = micro_trainer(super::super::config::Precision::F32, 5.0);
        let ctx = Ctx::eval();
        let (la, ma, _) = a.losses(&batch, 3, &ctx).unwrap();
        let (lb, mb, _) = b.losses(&batch, 3, &ctx).unwrap();
        let sum = |t: &Tensor| scalar(&t.sum(Kind::Float));
        assert_eq!(sum(&ma), sum(&mb));
        assert!(sum(&lb) < sum(&la), "{} vs {}", sum(&lb), sum(&la));
    }
}
