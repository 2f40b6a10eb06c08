//! A training run on a manifest: join the data-parallel job, verify the manifest, resume or
//! start, then step → log → checkpoint → evaluation curve / sample grid until the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Tensor};

use super::checkpoint::{self, TrainState};
use super::config::TrainConfig;
use super::data::Dataset;
use super::metrics::{append, eval_curve, loss_curve, trim_metrics};
use super::objects::PixelTokens;
use super::trainer::Trainer;
use crate::error::{Error, Result};
use crate::formats::manifest::{self, Manifest};
use crate::student::dist::{Dist, Launch};
use crate::student::model::{MarConfig, TextSource};

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
    /// Mean of the task alignments (the analyzer's partial credit).
    pub alignment: f64,
    /// Accuracy per task.
    pub tasks: std::collections::BTreeMap<String, f64>,
    pub images: usize,
    /// Objects found per image, and the number the prompts ask for (see
    /// [`crate::student::eval::TaskScore::objects`]).
    pub objects: f64,
    pub asked: f64,
}

/// Runtime choices (not part of what is trained).
pub struct TrainOptions {
    pub out: PathBuf,
    pub resume: bool,
    /// Start a new run from this checkpoint's weights and EMA (a checkpoint or a training
    /// folder); a resumed run must name the same one, or none.
    pub init_from: Option<PathBuf>,
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
    let mut ds = Dataset::open(manifest_path, &m)?;
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
    let t = &cfg.train;
    let focus = ds.focus_on(manifest_path, &m, &t.focus_families, t.focus_steps)?;
    if focus > 0 && main {
        tracing::info!(samples = focus, steps = t.focus_steps, families = ?t.focus_families, "focus");
    }
    let ds = Arc::new(ds);
    let model_cfg = match &resumed {
        Some((_, st)) => st.model.clone(),
        None => model_for(&cfg, &ds)?,
    };
    let init = opts.init_from.as_deref().map(|p| super::init::prepare(p, &model_cfg, &m)).transpose()?;
    if let Some((ck, st)) = &resumed {
        super::init::check_resume(ck, st, init.as_ref())?;
    }
    let lineage = match &resumed {
        Some((_, st)) => st.lineage.clone(),
        None => init.as_ref().map(|i| i.lineage.clone()),
    };
    let grid = m.latent.grid as usize;
    let mut tr = Trainer::new(cfg.clone(), model_cfg.clone(), grid, opts.device)?;
    let object_options = [
        ("object_mask_prob", cfg.train.object_mask_prob, 0.0),
        ("object_keep_prob", cfg.train.object_keep_prob, 0.0),
        ("object_loss_weight", cfg.train.object_loss_weight, 1.0),
        ("label_loss_weight", cfg.train.label_loss_weight, 0.0),
    ];
    if let Some((name, value, off)) = object_options.into_iter().find(|(_, v, off)| v != off) {
        let l = &m.latent;
        tr.pixels = Some(PixelTokens::of(l, grid).ok_or_else(|| {
            Error::invalid(
                format!("train.{name}"),
                format!("{value}: objects are found in pixel tokens; the manifest's tokenizer is \"{}\" (expected \"pixels\", or {off})", l.tokenizer),
            )
        })?);
    }
    if cfg.train.code_loss_weight > 0.0 && resumed.is_none() {
        // Seeded by train.seed: a rerun fits the same codes (a resume reads them back).
        let x = super::codes::sample_tokens(&ds, cfg.train.code_images, cfg.train.seed);
        tr.codebook = Some(super::codes::kmeans(&x, cfg.train.codes, cfg.train.seed).to_device(opts.device));
    }
    match (&resumed, &init) {
        (Some((ck, st)), _) => tr.restore(ck, st)?,
        (None, Some(i)) => tr.load_weights(&i.ckpt)?,
        (None, None) => {}
    }
    // The ranks start from rank 0's weights (they already agree: same seed or checkpoint).
    // The codebook too: k-means' float sums may round differently on another machine.
    let weights: Vec<&Tensor> =
        tr.store.vars.values().chain(tr.ema.weights.values()).chain(tr.codebook.as_ref()).collect();
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
        latent: Some(m.latent.clone()),
        text: Some(m.text.clone()),
        lineage: lineage.clone(),
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
