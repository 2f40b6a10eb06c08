//! `lightgen train`, `train-check` and the training half of `lightgen demo`: argument handling
//! and summaries around [`lightgen::student::train`].

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::sample::{eval_args, eval_cmd};
use crate::cli::TrainArgs;
use lightgen::student::dist::Launch;
use lightgen::student::train::{self, checkpoint, TrainConfig, TrainOptions};

pub fn train_cmd(a: TrainArgs, progress: bool) -> Result<()> {
    let mut cfg = match (&a.config, &a.preset) {
        (Some(p), _) => TrainConfig::load(p)?,
        (None, Some(name)) => TrainConfig::preset(name).with_context(|| {
            format!("--preset {name}: unknown; known: {} (or pass --config FILE)", TrainConfig::PRESETS.join(", "))
        })?,
        (None, None) => bail!("pass --config FILE or --preset {}", TrainConfig::PRESETS.join("|")),
    };
    if let Some(s) = a.steps {
        cfg.train.steps = s;
    }
    anyhow::ensure!(a.nproc != Some(0), "--nproc 0: expected at least 1 rank");
    if let Some(n) = a.nproc.filter(|&n| n > 1) {
        return spawn_ranks(n);
    }
    let launch = Launch::from_process(a.dist_timeout)?;
    let device = match (&launch, a.device.as_str()) {
        // Each rank of a job on GPUs trains on its own.
        (Some(l), "cuda") => train::device(&format!("cuda:{}", l.local_rank))?,
        _ => train::device(&a.device)?,
    };
    let grid = Some(lightgen::student::sample::grid_hook(&a.manifest, &a.out, device));
    let rank = launch.as_ref().map_or(0, |l| l.rendezvous.rank);
    let eval = Some(lightgen::student::eval::curve_hook(&a.manifest, &a.out, device));
    let opts = TrainOptions {
        out: a.out.clone(),
        resume: a.resume,
        init_from: a.init_from.clone(),
        device,
        progress,
        stop_at: a.stop_at,
        grid,
        eval,
        launch,
    };
    let s = train::train(&a.manifest, cfg, &opts)?;
    if rank != 0 {
        return Ok(()); // rank 0 prints the summary
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    outln!(
        "trained    {} steps in {:.1} s ({:.1} ms/step, {:.0} tokens/s)",
        s.steps,
        s.seconds,
        s.ms_per_step,
        s.tokens_per_s
    );
    outln!("model      {:.2}M parameters", s.parameters as f64 / 1e6);
    if let Some(p) = &a.init_from {
        outln!("started    from {} (its weights and EMA; a fresh optimiser and schedule)", p.display());
    }
    outln!("loss       {:.4} → {:.4}", s.first_loss, s.last_loss);
    outln!("checkpoint {}", s.checkpoint.display());
    outln!(
        "plots      {} (loss), {} (sample grids)",
        a.out.join("loss.png").display(),
        a.out.join("samples").display()
    );
    Ok(())
}

/// `--nproc N`: this command (train or dpo) again as N local ranks, without `--nproc`.
pub(super) fn spawn_ranks(n: usize) -> Result<()> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        if a == "--nproc" {
            it.next();
        } else if !a.to_string_lossy().starts_with("--nproc=") {
            args.push(a);
        }
    }
    lightgen::student::dist::spawn::run_local(n, &args)?;
    Ok(())
}

/// Random latents (64-d tokens) and T5-XXL-sized features (128 × 4096): the reference's shapes.
pub fn train_check(
    preset: &str,
    steps: u64,
    batch: Option<usize>,
    grid: usize,
    device: &str,
    precision: &str,
) -> Result<()> {
    use lightgen::student::model::TextSource;
    use lightgen::student::train::data::Batch;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut cfg = TrainConfig::preset(preset)
        .with_context(|| format!("--preset {preset}: unknown; known: {}", TrainConfig::PRESETS.join(", ")))?;
    if let Some(b) = batch {
        cfg.train.batch_size = b;
    }
    cfg.train.steps = steps;
    // Random latents hold no objects to find: the pixel-only object options are off here.
    (cfg.train.object_loss_weight, cfg.train.object_mask_prob, cfg.train.label_loss_weight) = (1.0, 0.0, 0.0);
    cfg.train.precision = serde_json::from_value(serde_json::Value::String(precision.into()))
        .map_err(|_| anyhow::anyhow!("--precision {precision}: expected auto, f32 or bf16"))?;
    let (text_len, channels) = (128, 4096);
    let model =
        cfg.model_config().map_err(anyhow::Error::msg)?.for_data(64, grid, TextSource::Features, channels, text_len);
    let dev = train::device(device)?;
    let mut tr = lightgen::student::train::Trainer::new(cfg.clone(), model, grid, dev)?;
    let b = cfg.train.batch_size;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| StandardNormal.sample(&mut rng)).collect() };
    let batch = Batch {
        step: 0,
        size: b,
        tokens: draw(b * grid * grid * 64),
        ids: vec![],
        feats: draw(b * text_len * channels),
    };
    outln!(
        "preset {preset}: {:.1}M parameters, batch {b}, {} tokens per image, device {device}, {:?} matmuls",
        tr.store.count() as f64 / 1e6,
        grid * grid,
        cfg.train.precision.dtype(dev)
    );
    let warm = 3.min(steps);
    for s in 0..warm {
        tr.step(&batch, s)?;
    }
    let t0 = std::time::Instant::now();
    let (mut last, mut flops) = (0.0, 0.0);
    let l = grid * grid;
    for s in warm..steps {
        let st = tr.step(&batch, s)?;
        last = st.loss;
        let masked = ((l as f64 * st.mask_ratio).ceil() as usize).min(l);
        let per = lightgen::student::model::config::train_flops_per_image(
            &tr.model.cfg,
            l,
            text_len,
            masked,
            cfg.train.diffusion_batch_mul,
        );
        flops += per * b as f64;
    }
    let n = steps.saturating_sub(warm).max(1) as f64;
    let secs = t0.elapsed().as_secs_f64();
    outln!(
        "{} steps: {:.1} ms/step, {:.0} tokens/s, {:.1} images/s, {:.1} TFLOP/s of model FLOPs, last loss {last:.4}",
        n,
        secs * 1e3 / n,
        n * (b * l) as f64 / secs,
        n * b as f64 / secs,
        flops / secs / 1e12
    );
    if dev.is_cuda() {
        // H100/H200 SXM datasheets: 989.4 TFLOP/s dense bf16; 66.9 TFLOP/s f32 (libtorch's
        // default keeps f32 matmuls off TF32).
        let peak = if cfg.train.precision.dtype(dev) == tch::Kind::BFloat16 { 989.4e12 } else { 66.9e12 };
        outln!("MFU {:.1}% of {:.1} TFLOP/s (H100/H200 SXM dense peak)", 100.0 * flops / secs / peak, peak / 1e12);
    }
    Ok(())
}

/// The demo after `distill`: train (or resume) the tiny student, then evaluate it.
pub fn demo_rest(run_dir: &Path, n: usize, steps: Option<u64>, progress: bool, t0: std::time::Instant) -> Result<()> {
    let manifest_path = run_dir.join("manifest.json");
    let out = run_dir.join("train");
    let mut cfg = TrainConfig::load(Path::new("configs/train-tiny.toml"))?;
    if let Some(s) = steps {
        cfg.train.steps = s;
    }
    let done = checkpoint::list(&out)
        .last()
        .and_then(|c| checkpoint::read_state(c).ok())
        .is_some_and(|s| s.step >= cfg.train.steps);
    let t = &cfg.train;
    let focus = match t.focus_steps.min(t.steps) {
        0 => String::new(),
        n => format!(" (the first {n} on {} only)", t.focus_families.join(", ")),
    };
    outln!("\ntrain     tiny student, {} steps of {}{focus} → {}", t.steps, t.batch_size, out.display());
    if !done {
        let resume = !checkpoint::list(&out).is_empty();
        let grid = Some(lightgen::student::sample::grid_hook(&manifest_path, &out, tch::Device::Cpu));
        let opts = TrainOptions {
            out: out.clone(),
            resume,
            init_from: None,
            device: tch::Device::Cpu,
            progress,
            stop_at: None,
            grid,
            eval: Some(lightgen::student::eval::curve_hook(&manifest_path, &out, tch::Device::Cpu)),
            launch: None,
        };
        let s = train::train(&manifest_path, cfg, &opts)?;
        outln!(
            "trained   {} steps in {:.0} s ({:.0} ms/step), loss {:.3} → {:.3}",
            s.steps,
            s.seconds,
            s.ms_per_step,
            s.first_loss,
            s.last_loss
        );
    }
    let eval_out = run_dir.join("eval");
    eval_cmd(eval_args(&out, &manifest_path, eval_out.clone(), n), progress)?;
    outln!("\ndemo done in {:.1} min", t0.elapsed().as_secs_f64() / 60.0);
    outln!("  loss curve    {}", out.join("loss.png").display());
    outln!("  eval curve    {} (held-out slice every train.eval_every steps)", out.join("eval-curve.png").display());
    outln!("  sample grids  {}", out.join("samples").display());
    outln!("  eval          {} (eval.md, samples.png, failures-<task>.png)", eval_out.display());
    Ok(())
}
