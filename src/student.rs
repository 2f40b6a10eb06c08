//! `lightgen train` and `lightgen sample`: argument handling and summaries around
//! [`lightgen::train`] and [`lightgen::sample`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::{DpoArgs, EvalArgs, InpaintArgs, SampleArgs, SampleFlags, StudyArgs, TrainArgs};
use lightgen::model::sampler::{CfgSchedule, SampleOptions};
use lightgen::pipeline::manifest::{self, Manifest};
use lightgen::sample::{generate, Decoder, Prompter, Student};
use lightgen::train::{self, checkpoint, TrainConfig, TrainOptions};

pub fn train_cmd(a: TrainArgs, progress: bool) -> Result<()> {
    let mut cfg = match (&a.config, &a.preset) {
        (Some(p), _) => TrainConfig::load(p)?,
        (None, Some(name)) => TrainConfig::preset(name)
            .with_context(|| format!("--preset {name}: unknown; known: tiny, small, base, large (or pass --config FILE)"))?,
        (None, None) => bail!("pass --config FILE or --preset tiny|small|base|large"),
    };
    if let Some(s) = a.steps {
        cfg.train.steps = s;
    }
    let device = train::device(&a.device)?;
    let opts = TrainOptions { out: a.out.clone(), resume: a.resume, device, progress, stop_at: a.stop_at };
    let s = train::train(&a.manifest, cfg, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "trained    {} steps in {:.1} s ({:.1} ms/step, {:.0} tokens/s)",
        s.steps, s.seconds, s.ms_per_step, s.tokens_per_s
    );
    println!("model      {:.2}M parameters", s.parameters as f64 / 1e6);
    println!("loss       {:.4} → {:.4}", s.first_loss, s.last_loss);
    println!("checkpoint {}", s.checkpoint.display());
    println!(
        "plots      {} (loss), {} (sample grids)",
        a.out.join("loss.png").display(),
        a.out.join("samples").display()
    );
    Ok(())
}

/// The checkpoint (resolved), its manifest (verified) and the student, as `flags` ask.
fn load(ckpt: &Path, manifest_path: &Path, flags: &SampleFlags) -> Result<(PathBuf, Manifest, Student)> {
    let ck = checkpoint::resolve(ckpt)?;
    let m = manifest::verify(manifest_path)?;
    let student = Student::load(&ck, !flags.no_ema, train::device(&flags.device)?)?;
    Ok((ck, m, student))
}

/// The checkpoint's sampling settings with the flags' overrides.
fn sample_options(student: &Student, f: &SampleFlags) -> Result<SampleOptions> {
    let mut opts = student.state.config.sample.clone();
    if let Some(v) = f.steps {
        opts.steps = v;
    }
    if let Some(v) = f.cfg {
        opts.cfg = v;
    }
    if let Some(v) = &f.cfg_schedule {
        opts.cfg_schedule = match v.as_str() {
            "constant" => CfgSchedule::Constant,
            "linear" => CfgSchedule::Linear,
            o => bail!("--cfg-schedule {o}: expected constant or linear"),
        };
    }
    if let Some(v) = f.temperature {
        opts.temperature = v;
    }
    if let Some(v) = f.diffusion_steps {
        opts.diffusion_steps = v;
    }
    if let Some(v) = f.clip_x0 {
        opts.clip_x0 = (v > 0.0).then_some(v);
    }
    Ok(opts)
}

pub fn sample_cmd(a: SampleArgs, progress: bool) -> Result<()> {
    let (ck, m, student) = load(&a.checkpoint, &a.manifest, &a.flags)?;
    if student.state.manifest_id != m.id {
        eprintln!(
            "note: {} was trained on manifest {}, not {} ({}); its tokenizer and text encoder are used as given",
            ck.display(),
            student.state.manifest_id,
            m.id,
            a.manifest.display()
        );
    }
    let mut prompts = a.prompt.clone();
    if let Some(p) = &a.prompts {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        prompts.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    if prompts.is_empty() {
        bail!("no prompts: pass --prompt TEXT or --prompts FILE");
    }
    let opts = sample_options(&student, &a.flags)?;
    let prompter = Prompter::for_manifest(&a.manifest, &m, a.t5.as_deref())?;
    let decoder = Decoder::for_manifest(&m, a.vae.as_deref())?;
    let all: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), a.n)).collect();
    let pb = lightgen::progress::bar(all.len() as u64, "sample", "images", progress);
    let t0 = std::time::Instant::now();
    let imgs = generate(&student, &prompter, &decoder, &all, &opts, a.seed, a.batch, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    write_images(&a.out, &imgs, &all)?;
    println!("sampled    {} images in {:.1} s ({:.2} images/s)", imgs.len(), secs, imgs.len() as f64 / secs);
    println!("images     {}", a.out.display());
    println!("grid       {}", a.out.join("grid.png").display());
    Ok(())
}

fn write_images(dir: &Path, imgs: &[image::RgbImage], prompts: &[String]) -> Result<()> {
    let mut index = String::new();
    for (i, (img, p)) in imgs.iter().zip(prompts).enumerate() {
        img.save(dir.join(format!("{i:05}.png")))?;
        index.push_str(&serde_json::to_string(&serde_json::json!({"file": format!("{i:05}.png"), "prompt": p}))?);
        index.push('\n');
    }
    std::fs::write(dir.join("prompts.jsonl"), index)?;
    let cells: Vec<(image::RgbImage, bool)> = imgs.iter().map(|i| (i.clone(), true)).collect();
    lightgen::report::chart::grid(&cells).save(dir.join("grid.png"))?;
    Ok(())
}

pub fn eval_cmd(a: EvalArgs, progress: bool) -> Result<()> {
    if let Some(pair) = &a.compare {
        let (x, y) = (lightgen::eval::read_report(&pair[0])?, lightgen::eval::read_report(&pair[1])?);
        print!("{}", lightgen::eval::compare(&x, &y));
        return Ok(());
    }
    let (Some(ckpt), Some(mpath), Some(out)) = (&a.checkpoint, &a.manifest, &a.out) else {
        bail!("pass --checkpoint, --manifest and --out (or --compare A B)");
    };
    let (_, m, student) = load(ckpt, mpath, &a.flags)?;
    let mut prompts = match &a.prompts {
        Some(p) => lightgen::eval::read_geneval(p)?,
        None => lightgen::eval::load_prompts(lightgen::sample::held_out(mpath, &m)?)?,
    };
    if let Some(n) = a.limit {
        prompts.truncate(n);
    }
    let opts = sample_options(&student, &a.flags)?;
    let prompter = Prompter::for_manifest(mpath, &m, None)?;
    let decoder = Decoder::for_manifest(&m, None)?;
    let pb = lightgen::progress::bar((prompts.len() * a.n) as u64, "eval", "images", progress);
    let t0 = std::time::Instant::now();
    let texts: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.prompt.clone(), a.n)).collect();
    let imgs = lightgen::sample::generate(&student, &prompter, &decoder, &texts, &opts, a.seed, a.batch, |n| {
        pb.inc(n as u64)
    })?;
    pb.finish_and_clear();
    if a.format == "geneval" {
        lightgen::eval::write_geneval(out, &prompts, a.n, &imgs)?;
        println!("GenEval layout: {} ({} prompts × {} images)", out.display(), prompts.len(), a.n);
        if m.lineage.teacher != "builtin:shapes" {
            println!("score it with GenEval's evaluate_images.py (the shapes analyzer judges only the shapes world)");
            return Ok(());
        }
    }
    let r = lightgen::eval::judge_all(&student, &prompts, a.n, &imgs, &opts, a.seed, out, t0)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    print!("{}", lightgen::eval::markdown(&r));
    println!("\n{} images in {:.1} s; report {}", r.images, r.seconds, out.join("eval.json").display());
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
    use lightgen::model::TextSource;
    use lightgen::train::data::Batch;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut cfg =
        TrainConfig::preset(preset).with_context(|| format!("--preset {preset}: unknown; known: tiny, small, base, large"))?;
    if let Some(b) = batch {
        cfg.train.batch_size = b;
    }
    cfg.train.steps = steps;
    cfg.train.precision = serde_json::from_value(serde_json::Value::String(precision.into()))
        .map_err(|_| anyhow::anyhow!("--precision {precision}: expected auto, f32 or bf16"))?;
    let (text_len, channels) = (128, 4096);
    let model =
        cfg.model_config().map_err(anyhow::Error::msg)?.for_data(64, grid, TextSource::Features, channels, text_len);
    let dev = train::device(device)?;
    let mut tr = lightgen::train::Trainer::new(cfg.clone(), model, grid, dev)?;
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
    println!(
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
        let per = lightgen::model::config::train_flops_per_image(
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
    println!(
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
        println!("MFU {:.1}% of {:.1} TFLOP/s (H100/H200 SXM dense peak)", 100.0 * flops / secs / peak, peak / 1e12);
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
    println!("\ntrain     tiny student, {} steps of {} → {}", cfg.train.steps, cfg.train.batch_size, out.display());
    if !done {
        let resume = !checkpoint::list(&out).is_empty();
        let opts = TrainOptions { out: out.clone(), resume, device: tch::Device::Cpu, progress, stop_at: None };
        let s = train::train(&manifest_path, cfg, &opts)?;
        println!(
            "trained   {} steps in {:.0} s ({:.0} ms/step), loss {:.3} → {:.3}",
            s.steps, s.seconds, s.ms_per_step, s.first_loss, s.last_loss
        );
    }
    let eval_out = run_dir.join("eval");
    eval_cmd(eval_args(&out, &manifest_path, eval_out.clone(), n), progress)?;
    println!("\ndemo done in {:.1} min", t0.elapsed().as_secs_f64() / 60.0);
    println!("  loss curve    {}", out.join("loss.png").display());
    println!("  sample grids  {}", out.join("samples").display());
    println!("  eval          {} (eval.md, samples.png, failures-<task>.png)", eval_out.display());
    Ok(())
}

/// `lightgen inpaint`: one edit, or the recolouring check.
pub fn inpaint_cmd(a: InpaintArgs, progress: bool) -> Result<()> {
    use lightgen::inpaint;
    let (ck, m, student) = load(&a.checkpoint, &a.manifest, &a.flags)?;
    let opts = sample_options(&student, &a.flags)?;
    let prompter = Prompter::for_manifest(&a.manifest, &m, None)?;
    let decoder = Decoder::for_manifest(&m, None)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if let Some(n) = a.check {
        let held = lightgen::sample::held_out(&a.manifest, &m)?;
        let cases = inpaint::recolor_cases(&held, n, decoder.resolution(), a.seed, a.margin);
        if cases.is_empty() {
            bail!(
                "{}: no held-out two-object colour prompts (color_attr) to build the check from",
                a.manifest.display()
            );
        }
        let pb = lightgen::progress::bar(cases.len() as u64, "inpaint", "images", progress);
        let r =
            inpaint::recolor_check(&student, &prompter, &decoder, &cases, &opts, a.seed, &a.out, |k| pb.inc(k as u64))?;
        pb.finish_and_clear();
        lightgen::pipeline::shard::write_atomic(&a.out.join("recolor.json"), &serde_json::to_vec_pretty(&r)?)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "recolouring: {}/{} accepted by the analyzer ({:.1}%), {:.1} unknown tokens per mask, {} pixels changed outside the masks",
                r.accepted,
                r.cases,
                100.0 * r.accuracy,
                r.unknown_tokens_mean,
                r.changed_outside
            );
            println!("grid (original | mask | result): {}", a.out.join("recolor.png").display());
        }
        return Ok(());
    }
    let (Some(image), Some(mask), Some(prompt)) = (&a.image, &a.mask, &a.prompt) else {
        bail!("pass --image, --mask and --prompt (or --check N)");
    };
    let img = image::open(image).with_context(|| format!("reading --image {}", image.display()))?.to_rgb8();
    let msk = image::open(mask).with_context(|| format!("reading --mask {}", mask.display()))?.to_luma8();
    let prep = lightgen::inpaint::prepare(&img, &msk, decoder.resolution(), student.state.grid as u32)?;
    let (imgs, _, _) =
        inpaint::inpaint(&student, &prompter, &decoder, &prep, prompt, a.n, &opts, a.seed, !a.no_paste_back)?;
    let mut cells = vec![(prep.image.clone(), true)];
    for (i, im) in imgs.iter().enumerate() {
        let p = a.out.join(format!("inpaint-{i:02}.png"));
        im.save(&p).with_context(|| format!("writing {}", p.display()))?;
        cells.push((im.clone(), true));
    }
    let grid = a.out.join("grid.png");
    lightgen::report::chart::grid(&cells).save(&grid).with_context(|| format!("writing {}", grid.display()))?;
    let unknown = prep.unknown.iter().filter(|u| **u).count();
    let info = serde_json::json!({
        "checkpoint": ck, "prompt": prompt, "seed": a.seed, "n": a.n, "paste_back": !a.no_paste_back,
        "unknown_tokens": unknown, "tokens": prep.unknown.len(), "sample": opts,
    });
    lightgen::pipeline::shard::write_atomic(&a.out.join("inpaint.json"), &serde_json::to_vec_pretty(&info)?)?;
    if a.json {
        println!("{info}");
    } else {
        println!("{} results ({unknown} of {} tokens repainted): {}", imgs.len(), prep.unknown.len(), grid.display());
    }
    Ok(())
}

/// The eval `lightgen dpo` runs before and after.
fn eval_args(ckpt: &Path, manifest: &Path, out: PathBuf, n: usize) -> EvalArgs {
    EvalArgs {
        checkpoint: Some(ckpt.to_path_buf()),
        manifest: Some(manifest.to_path_buf()),
        compare: None,
        prompts: None,
        limit: None,
        n,
        out: Some(out),
        seed: 0,
        batch: 64,
        flags: SampleFlags::default(),
        format: "shapes".into(),
        json: false,
    }
}

/// `lightgen dpo`.
pub fn dpo_cmd(a: DpoArgs, progress: bool) -> Result<()> {
    use lightgen::dpo::{self, pairs::PairsConfig, DpoConfig};
    let base = checkpoint::resolve(&a.checkpoint)?;
    let state = checkpoint::read_state(&base)?;
    let cfg = DpoConfig {
        pairs: PairsConfig {
            count: a.pairs,
            seed: a.seed,
            loser_must_fail: a.loser_must_fail,
            part_size: a.part_size,
            sample: state.config.sample.clone(),
        },
        beta: a.beta,
        lr: a.lr,
        warmup_steps: a.warmup,
        steps: a.steps,
        batch_size: a.batch,
        weight_decay: 0.0,
        grad_clip: 3.0,
        ema: 0.0,
        seed: a.seed,
        checkpoint_every: 50,
    };
    let device = train::device(&a.device)?;
    let s = dpo::run(&base, &a.manifest, &cfg, &a.out, device, progress)?;
    lightgen::pipeline::shard::write_atomic(&a.out.join("dpo.json"), &serde_json::to_vec_pretty(&s)?)?;
    if !a.json {
        println!(
            "pairs     {} of {} candidates ({} losers judged, {} rejected by the analyzer); {}/pairs.png",
            s.pairs,
            s.candidates,
            s.losers_judged,
            s.losers_failed,
            a.out.join("pairs").display()
        );
        println!(
            "dpo       {} steps, loss {:.4} → {:.4}, implicit reward accuracy {:.2}, {:.0} s → {}",
            s.steps,
            s.first_loss,
            s.last_loss,
            s.last_reward_accuracy,
            s.seconds,
            s.checkpoint.display()
        );
    }
    if a.no_eval {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        return Ok(());
    }
    let (before, after) = (a.out.join("eval-base"), a.out.join("eval-dpo"));
    for (ck, dir) in [(&base, &before), (&s.checkpoint, &after)] {
        if !dir.join("eval.json").exists() {
            eval_cmd(eval_args(ck, &a.manifest, dir.clone(), a.eval_n), progress)?;
        }
    }
    let (x, y) = (
        lightgen::eval::read_report(&before.join("eval.json"))?,
        lightgen::eval::read_report(&after.join("eval.json"))?,
    );
    let table = lightgen::eval::compare(&x, &y);
    lightgen::pipeline::shard::write_atomic(&a.out.join("compare.md"), table.as_bytes())?;
    if a.json {
        println!("{}", serde_json::json!({ "dpo": s, "before": x.overall, "after": y.overall }));
    } else {
        println!("\nbefore (base) → after (dpo), {} images per held-out prompt:\n{table}", a.eval_n);
    }
    Ok(())
}

/// `lightgen study diversity-vs-volume`.
pub fn study_cmd(a: StudyArgs, progress: bool) -> Result<()> {
    let mut train = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::preset(&a.preset)
            .with_context(|| format!("--preset {}: unknown; known: tiny, small, base, large", a.preset))?,
    };
    if let Some(s) = a.steps {
        train.train.steps = s;
    }
    train.train.sample_every = 0; // one grid per arm is not worth its time here
    anyhow::ensure!(
        !a.fractions.is_empty() && a.fractions.iter().all(|f| *f > 0.0 && *f <= 1.0),
        "--fractions: expected values in (0, 1]"
    );
    anyhow::ensure!(a.narrow_share > 0.0 && a.narrow_share <= 1.0, "--narrow-share: expected a value in (0, 1]");
    let cfg = lightgen::study::StudyConfig {
        fractions: a.fractions.clone(),
        narrow_share: a.narrow_share,
        eval_n: a.eval_n,
        seed: a.seed,
        train,
    };
    let r = lightgen::study::run(&a.manifest, &cfg, &a.out, train::device(&a.device)?, progress)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", lightgen::study::markdown(&r));
        println!("\nplot {}; table {}", a.out.join("study.png").display(), a.out.join("study.md").display());
    }
    Ok(())
}
