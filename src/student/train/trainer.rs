//! The training loop, explicit and plain (nanoGPT style): batch → mask → forward → masked
//! DiffLoss → backward → clip → AdamW → EMA → log / grid / checkpoint. Every random draw of
//! step s comes from (seed, s), so `--resume` continues exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::checkpoint::{self, TrainState};
use super::config::TrainConfig;
use super::data::{Batch, Dataset};
use super::optim::{AdamW, Ema};
use super::schedule::{keep_text, lr_at, mask_ratio, orders, step_rng};
use crate::error::{Error, Result};
use crate::formats::manifest::{self, Manifest};
use crate::student::dist::{Dist, Launch};
use crate::student::model::layers::{index, scalar, tensor_f32, Ctx};
use crate::student::model::text::TextInput;
use crate::student::model::{Mar, MarConfig, Mask, ParamStore, Prediction, TextSource};

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

/// The weight of the head's MSE at a timestep with cumulative alpha `ab` (SNR = ab / (1 − ab)):
/// min-SNR-γ, min(SNR, γ)/SNR for an eps head and min(SNR, γ)/(SNR + 1) for a v head (both
/// are the x0 weight min(SNR, γ), Hang et al. 2023), times the truncated high-noise weight
/// min(1 + 1/SNR, Γ) (Γ > 0, eps heads only); 1 when both are off.
pub fn loss_weight(ab: f64, gamma: f64, high: f64, prediction: Prediction) -> f64 {
    let snr = ab / (1.0 - ab);
    let norm = match prediction {
        Prediction::Eps => snr,
        Prediction::V => snr + 1.0,
    };
    let low = if gamma > 0.0 { snr.min(gamma) / norm } else { 1.0 };
    let hi = if high > 0.0 { (1.0 + 1.0 / snr).min(high) } else { 1.0 };
    low * hi
}

/// The random choices of one training step.
pub struct StepDraws {
    pub ratio: f64,
    /// Masked tokens per sample.
    pub masked: usize,
    /// Per sample, a permutation of the L positions; its first `masked` are masked.
    pub orders: Vec<Vec<usize>>,
    /// Per sample, whether its caption is kept (else the null caption).
    pub keep: Vec<bool>,
    /// Timestep of each head row (N = B · masked · diffusion_batch_mul, copy-major).
    pub t: Vec<usize>,
    /// Noise of each head row, (N · C).
    pub noise: Vec<f32>,
}

impl StepDraws {
    /// Share `k` of `parts` equal shares of the batch (the samples k·B/parts.. of it, and their
    /// head rows in each of the `mul` copies).
    pub fn share(&self, k: usize, parts: usize, mul: usize) -> StepDraws {
        let b = self.orders.len() / parts;
        let (lo, hi) = (k * b, (k + 1) * b);
        let per_copy = self.orders.len() * self.masked; // head rows of one copy
        let c = self.noise.len() / self.t.len().max(1);
        let mut t = Vec::with_capacity(mul * b * self.masked);
        let mut noise = Vec::with_capacity(mul * b * self.masked * c);
        for copy in 0..mul {
            let rows = copy * per_copy + lo * self.masked..copy * per_copy + hi * self.masked;
            t.extend_from_slice(&self.t[rows.clone()]);
            noise.extend_from_slice(&self.noise[rows.start * c..rows.end * c]);
        }
        StepDraws {
            ratio: self.ratio,
            masked: self.masked,
            orders: self.orders[lo..hi].to_vec(),
            keep: self.keep[lo..hi].to_vec(),
            t,
            noise,
        }
    }
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
}

impl Trainer {
    pub fn new(cfg: TrainConfig, model_cfg: MarConfig, grid: usize, device: Device) -> Result<Trainer> {
        let mut store = ParamStore::new(cfg.train.seed, device);
        let model = Mar::new(&model_cfg, &mut store).map_err(|e| Error::invalid("model config", e))?;
        let ema = Ema::new(&store, cfg.train.ema);
        let opt = AdamW::new(0.9, 0.95, cfg.train.weight_decay);
        Ok(Trainer { model, store, opt, ema, cfg, grid, device, dist: Dist::single() })
    }

    /// The text input of a host batch.
    pub fn text_input(&self, b: &Batch) -> TextInput {
        let cfg = &self.model.cfg;
        let channels = if let TextSource::Vocab { .. } = cfg.text { 0 } else { cfg.caption_channels };
        TextInput::from_host(&b.ids, &b.feats, b.size, cfg.text_len, channels, self.device)
    }

    /// The random choices of step `step` for a batch of `b`: all from (seed, step), so a
    /// resumed run draws what the uninterrupted one would have.
    pub fn draws(&self, b: usize, step: u64) -> StepDraws {
        let t = &self.cfg.train;
        let (l, c) = (self.grid * self.grid, self.model.cfg.token_dim);
        let mut rng = step_rng(t.seed, step, 0);
        let ratio = mask_ratio(t.mask_ratio_min, t.mask_ratio_std, &mut rng);
        let masked = ((l as f64 * ratio).ceil() as usize).min(l);
        let orders = orders(b, l, &mut rng);
        let keep = keep_text(b, t.text_drop_prob, &mut rng);
        let n = b * masked * t.diffusion_batch_mul;
        let ts: Vec<usize> = (0..n).map(|_| rng.random_range(0..1000)).collect();
        let noise: Vec<f32> = (0..n * c).map(|_| StandardNormal.sample(&mut rng)).collect();
        StepDraws { ratio, masked, orders, keep, t: ts, noise }
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
        let mask = Mask::from_orders(&d.orders, l, d.masked);
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
        let z = m.forward_z(&tokens, &mask, &text, self.grid, ctx); // (B, L, D)
                                                                    // Only masked tokens count; each is repeated diffusion_batch_mul times.
        let dz = z.size()[2];
        let z = z.view([(b.size * l) as i64, dz]).index_select(0, &idx); // (K, D), repeated inside the head
        let target = tokens.view([(b.size * l) as i64, c as i64]).index_select(0, &idx);
        let target = target.repeat([t.diffusion_batch_mul as i64, 1]); // (N, C)
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
        let lr = lr_at(step, self.cfg.lr_for(self.dist.world), t.min_lr, t.warmup_steps, t.steps, t.lr_schedule);
        let grad_norm = self.opt.step(&self.store, &grads, lr, t.grad_clip);
        self.ema.update(&self.store);
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

    fn optim_tensors(&self) -> std::collections::BTreeMap<String, Tensor> {
        let mut o = std::collections::BTreeMap::new();
        for (k, v) in &self.opt.m {
            o.insert(format!("m.{k}"), v.shallow_clone());
        }
        for (k, v) in &self.opt.v {
            o.insert(format!("v.{k}"), v.shallow_clone());
        }
        o
    }

    fn restore(&mut self, ckpt: &Path, state: &TrainState) -> Result<()> {
        let dev = self.device;
        let model = checkpoint::load_checked(ckpt, "model.safetensors")?;
        self.store.load(&model).map_err(|m| Error::invalid(ckpt.display().to_string(), m))?;
        self.ema.weights = checkpoint::load_checked(ckpt, "ema.safetensors")?
            .into_iter()
            .map(|(k, v)| (k, v.to_device(dev)))
            .collect();
        for (k, v) in checkpoint::load_checked(ckpt, "optim.safetensors")? {
            if let Some(n) = k.strip_prefix("m.") {
                self.opt.m.insert(n.to_string(), v.to_device(dev));
            } else if let Some(n) = k.strip_prefix("v.") {
                self.opt.v.insert(n.to_string(), v.to_device(dev));
            }
        }
        self.opt.t = state.adam_t;
        Ok(())
    }
}

/// Draws the sample grid of a checkpoint (given the verified manifest, the resolved config,
/// the checkpoint folder and its step); [`crate::student::sample::grid_hook`] makes one.
/// Training itself never samples, so `train` does not depend on `sample`.
pub type GridHook = Box<dyn Fn(&Manifest, &TrainConfig, &Path, u64) -> Result<()>>;

/// Evaluates a checkpoint (given the verified manifest, the resolved config, the checkpoint
/// folder and its step) on the held-out slice `train.eval_*` names; None when the manifest
/// has nothing to judge with. [`crate::student::eval::curve_hook`] makes one.
pub type EvalHook = Box<dyn Fn(&Manifest, &TrainConfig, &Path, u64) -> Result<Option<EvalPoint>>>;

/// One point of the evaluation curve.
#[derive(Debug, Clone, Serialize)]
pub struct EvalPoint {
    /// Mean of the task accuracies.
    pub overall: f64,
    /// Accuracy per task.
    pub tasks: std::collections::BTreeMap<String, f64>,
    pub images: usize,
}

/// Runtime choices (not part of what is trained).
pub struct TrainOptions {
    pub out: PathBuf,
    pub resume: bool,
    pub device: Device,
    pub progress: bool,
    /// Stop after this step even if the config asks for more (a later `--resume` goes on).
    pub stop_at: Option<u64>,
    /// Sample grids at `sample_every` and at the end; none when absent.
    pub grid: Option<GridHook>,
    /// Evaluations at `eval_every` and at the end; none when absent.
    pub eval: Option<EvalHook>,
    /// The data-parallel job this process is a rank of (torchrun, Slurm, `--nproc`); None
    /// for a single process.
    pub launch: Option<Launch>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub seconds: f64,
    pub ms_per_step: f64,
    pub tokens_per_s: f64,
    pub parameters: usize,
    pub checkpoint: PathBuf,
}

/// The model config a manifest implies for a training config.
pub fn model_for(cfg: &TrainConfig, ds: &Dataset) -> Result<MarConfig> {
    let base = cfg.model_config().map_err(|m| Error::invalid("train config", m))?;
    let text =
        if ds.text_channels == 0 { TextSource::Vocab { vocab: ds.text.dim as usize } } else { TextSource::Features };
    Ok(base.for_data(ds.token_dim, ds.latent.grid as usize, text, ds.text_channels, ds.text_len))
}

/// Trains on a manifest (verified first) into `opts.out`.
pub fn train(manifest_path: &Path, cfg: TrainConfig, opts: &TrainOptions) -> Result<TrainSummary> {
    // Meet the other ranks first: after this every rank sees the same run folder.
    let dist = match &opts.launch {
        Some(l) => Dist::join(l)?,
        None => Dist::single(),
    };
    let main = dist.is_main();
    let m: Manifest = manifest::verify(manifest_path)?;
    let ds = Arc::new(Dataset::open(manifest_path, &m)?);
    let out = &opts.out;
    let existing = checkpoint::list(out).pop();
    let (cfg, start, resumed) = match (&existing, opts.resume) {
        (Some(ck), true) => {
            let st = checkpoint::read_state(ck)?;
            if st.manifest_id != m.id {
                return Err(Error::Conflict {
                    path: ck.clone(),
                    message: format!(
                        "the checkpoint was trained on manifest {} but {} is {}; resume with the same manifest",
                        st.manifest_id,
                        manifest_path.display(),
                        m.id
                    ),
                });
            }
            if st.world != dist.world {
                return Err(Error::Conflict {
                    path: ck.clone(),
                    message: format!(
                        "the checkpoint was trained by {} rank(s) (global batch {}); resume it with {} rank(s), or the batch, learning rate and data order would change",
                        st.world,
                        st.config.global_batch(st.world),
                        st.world
                    ),
                });
            }
            // The architecture and optimisation come from the checkpoint; the length and the
            // cadence of logs, grids and checkpoints may change.
            let mut c = st.config.clone();
            c.train.steps = cfg.train.steps;
            c.train.checkpoint_every = cfg.train.checkpoint_every;
            c.train.sample_every = cfg.train.sample_every;
            c.train.eval_every = cfg.train.eval_every;
            c.train.log_every = cfg.train.log_every;
            (c, st.step, Some((ck.clone(), st)))
        }
        (Some(ck), false) => {
            return Err(Error::Conflict {
                path: out.clone(),
                message: format!(
                    "holds checkpoint {}; pass --resume to continue it, or choose another --out",
                    ck.display()
                ),
            })
        }
        (None, _) => (cfg, 0, None),
    };
    cfg.validate().map_err(|e| Error::invalid("train config", e))?;
    let model_cfg = match &resumed {
        Some((_, st)) => st.model.clone(),
        None => model_for(&cfg, &ds)?,
    };
    let grid = m.latent.grid as usize;
    let mut tr = Trainer::new(cfg.clone(), model_cfg.clone(), grid, opts.device)?;
    if let Some((ck, st)) = &resumed {
        tr.restore(ck, st)?;
    }
    // The ranks start from rank 0's weights (they already agree: same seed or checkpoint).
    let weights: Vec<&Tensor> = tr.store.vars.values().chain(tr.ema.weights.values()).collect();
    dist.broadcast(&weights)?;
    tr.dist = dist;
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = None;
    let mut wall_before = 0.0;
    if main {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let resolved = toml::to_string(&cfg).expect("train config serialises");
        crate::formats::commit::write_atomic(&out.join("train.toml"), resolved.as_bytes())?;
        wall_before = trim_metrics(&metrics_path, start)?;
        metrics = Some(append(&metrics_path)?);
    }

    let t = cfg.train.clone();
    let end = opts.stop_at.map_or(t.steps, |s| s.min(t.steps));
    let pb = crate::progress::bar(t.steps, "train", "steps", opts.progress && main);
    pb.set_position(start);
    let state_at = |step: u64, tr: &Trainer| TrainState {
        step,
        adam_t: tr.opt.t,
        config: cfg.clone(),
        model: model_cfg.clone(),
        manifest_id: m.id.clone(),
        manifest_name: m.name.clone(),
        grid,
        world: tr.dist.world,
        tool_version: crate::VERSION.into(),
        lineage: None,
        files: Default::default(),
    };
    let global = cfg.global_batch(tr.dist.world);
    let rx = ds.stream(t.seed, (start, end), global, t.batch_size, tr.dist.shares(t.accumulate));
    let started = Instant::now();
    let (mut first, mut last, mut smooth) = (f64::NAN, f64::NAN, f64::NAN);
    let mut last_ck = existing.clone();
    for step in start..end {
        let micro = rx.recv().map_err(|_| Error::invalid("train", "the data loader stopped"))?;
        let s = tr.step_micro(&micro, step)?;
        if first.is_nan() {
            first = s.loss;
        }
        last = s.loss;
        smooth = if smooth.is_nan() { s.loss } else { 0.95 * smooth + 0.05 * s.loss };
        if let Some(metrics) = metrics.as_mut().filter(|_| (step + 1) % t.log_every.max(1) == 0 || step + 1 == end) {
            let line = serde_json::to_string(&s).expect("stats serialise");
            writeln!(metrics, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
        }
        pb.inc(1);
        pb.set_prefix(format!("loss {smooth:.3}"));
        let done = step + 1;
        let at_end = done == end;
        if !main {
            continue;
        }
        let eval_due =
            opts.eval.is_some() && t.eval_every > 0 && (done % t.eval_every == 0 || (at_end && done == t.steps));
        if (t.checkpoint_every > 0 && done % t.checkpoint_every == 0) || at_end || eval_due {
            if let Some(metrics) = metrics.as_mut() {
                metrics.flush().map_err(|e| Error::io(&metrics_path, e))?;
            }
            last_ck = Some(checkpoint::save(
                out,
                &state_at(done, &tr),
                &tr.store.tensors(),
                &tr.ema.weights,
                &tr.optim_tensors(),
                t.keep_checkpoints,
            )?);
            loss_curve(&metrics_path, &out.join("loss.png"))?;
        }
        if let (true, Some(eval), Some(ck)) = (eval_due, &opts.eval, &last_ck) {
            let wall_s = wall_before + started.elapsed().as_secs_f64();
            if let Some(p) = eval(&m, &cfg, ck, done)? {
                let line = serde_json::json!({ "step": done, "wall_s": wall_s, "eval": p });
                if let Some(metrics) = metrics.as_mut() {
                    writeln!(metrics, "{line}")
                        .and_then(|_| metrics.flush())
                        .map_err(|e| Error::io(&metrics_path, e))?;
                }
                eval_curve(&metrics_path, &out.join("eval-curve.png"))?;
            }
        }
        if (t.sample_every > 0 && done % t.sample_every == 0) || (at_end && done == t.steps) {
            if let (Some(ck), Some(grid)) = (&last_ck, &opts.grid) {
                if ck.ends_with(format!("step-{done:08}")) {
                    grid(&m, &cfg, ck, done)?;
                }
            }
        }
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let ran = end.saturating_sub(start).max(1) as f64;
    let tokens = (global * grid * grid) as f64 * ran;
    let summary = TrainSummary {
        steps: end,
        first_loss: first,
        last_loss: last,
        seconds: secs,
        ms_per_step: secs * 1e3 / ran,
        tokens_per_s: tokens / secs.max(1e-9),
        parameters: tr.store.count(),
        checkpoint: last_ck.unwrap_or_else(|| out.join("checkpoints")),
    };
    Ok(summary)
}

/// `path` opened for appending (created if absent): a run's `metrics.jsonl`.
pub(crate) fn append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))
}

/// Keeps only the metric lines up to `step` (a resumed run rewrites what came after): the
/// steps before it and the evaluations up to it. Returns the wall time the kept evaluations
/// reached (where a resumed run's curve goes on from).
fn trim_metrics(path: &Path, step: u64) -> Result<f64> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(0.0) };
    let mut wall = 0.0f64;
    let kept: String = text
        .lines()
        .filter(|l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { return false };
            let Some(s) = v["step"].as_u64() else { return false };
            let keep = if v.get("eval").is_some() { s <= step } else { s < step };
            if keep {
                wall = wall.max(v["wall_s"].as_f64().unwrap_or(0.0));
            }
            keep
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::formats::commit::write_atomic(path, kept.as_bytes())?;
    Ok(wall)
}

/// `eval-curve.png` from the evaluation lines of `metrics.jsonl`: each task's accuracy and the
/// overall score against the step (the title gives the wall time of the last point).
pub fn eval_curve(metrics: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io(metrics, e))?;
    let evals: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("eval").is_some())
        .collect();
    let Some(last) = evals.last() else { return Ok(()) };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut push = |name: &str, x: f64, y: f64| match series.iter_mut().find(|(n, _)| n == name) {
        Some((_, pts)) => pts.push((x, y)),
        None => series.push((name.to_string(), vec![(x, y)])),
    };
    for v in &evals {
        let x = v["step"].as_f64().unwrap_or(0.0);
        push("overall", x, v["eval"]["overall"].as_f64().unwrap_or(0.0));
        if let Some(tasks) = v["eval"]["tasks"].as_object() {
            for (k, a) in tasks {
                push(k, x, a.as_f64().unwrap_or(0.0));
            }
        }
    }
    // Short: the chart's font fits ~55 characters across.
    let title = format!(
        "held-out accuracy, {} images/point, {:.1} min at step {}",
        last["eval"]["images"],
        last["wall_s"].as_f64().unwrap_or(0.0) / 60.0,
        last["step"]
    );
    let series: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    crate::report::chart::lines_in(png, &title, "step", &series, Some((0.0, 1.0)))
}

/// `loss.png` from `metrics.jsonl`: the logged loss and its running mean.
pub fn loss_curve(metrics: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io(metrics, e))?;
    let pts: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()? + 1.0, v["loss"].as_f64()?)))
        .collect();
    let mut mean = Vec::with_capacity(pts.len());
    let mut acc = f64::NAN;
    for &(x, y) in &pts {
        acc = if acc.is_nan() { y } else { 0.9 * acc + 0.1 * y };
        mean.push((x, acc));
    }
    crate::report::chart::lines(
        png,
        "training loss (DiffLoss: eps-MSE + VB)",
        "step",
        &[("loss", pts), ("running mean", mean)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::model::diffusion::Diffusion;

    fn micro() -> TrainConfig {
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

    fn micro_trainer(precision: super::super::config::Precision, min_snr: f64) -> (Trainer, Batch) {
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
    fn shares_of_a_steps_draws_partition_it_per_copy() {
        // Seeded (train.seed = 0): 8 samples, 2 copies per masked token, cut into 4 shares.
        let (mut tr, _) = micro_trainer(super::super::config::Precision::F32, 0.0);
        tr.cfg.train.diffusion_batch_mul = 2;
        let d = tr.draws(8, 3);
        let (k_rows, c) = (8 * d.masked, d.noise.len() / d.t.len());
        let parts: Vec<StepDraws> = (0..4).map(|k| d.share(k, 4, 2)).collect();
        for (k, p) in parts.iter().enumerate() {
            assert_eq!((p.orders.len(), p.masked, p.ratio), (2, d.masked, d.ratio));
            assert_eq!(p.orders[..], d.orders[2 * k..2 * k + 2]);
            assert_eq!(p.keep[..], d.keep[2 * k..2 * k + 2]);
            let per = 2 * d.masked; // this share's head rows in one copy
            for copy in 0..2 {
                let at = copy * k_rows + k * per;
                assert_eq!(p.t[copy * per..(copy + 1) * per], d.t[at..at + per], "share {k}, copy {copy}");
                assert_eq!(p.noise[copy * per * c..(copy + 1) * per * c], d.noise[at * c..(at + per) * c]);
            }
        }
        // One share of one is the whole step.
        let whole = d.share(0, 1, 2);
        assert_eq!((whole.t, whole.noise, whole.orders), (d.t.clone(), d.noise.clone(), d.orders.clone()));
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
