//! `lightgen sample`, `eval` and `inpaint`: a checkpoint, its manifest and the sampler
//! settings, around [`lightgen::student::sample`], [`lightgen::student::eval`] and
//! [`lightgen::student::inpaint`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::{EvalArgs, InpaintArgs, SampleArgs, SampleFlags};
use lightgen::formats::manifest::{self, Manifest};
use lightgen::student::model::sampler::{check_object_prior, CfgSchedule, SampleOptions};
use lightgen::student::sample::{generate, Decoder, Prompter, Student};
use lightgen::student::train::{self, checkpoint};

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
    if let Some(v) = f.temperature_end {
        opts.temperature_end = Some(v);
    }
    if let Some(v) = f.diffusion_steps {
        opts.diffusion_steps = v;
    }
    if let Some(v) = f.clip_x0 {
        opts.clip_x0 = (v > 0.0).then_some(v);
    }
    if let Some(v) = f.mean_noise {
        if !(0.0..=1.0).contains(&v) {
            bail!("--mean-noise {v}: expected a scale in [0, 1]");
        }
        opts.mean_noise = v;
    }
    if let Some(v) = f.object_prior {
        check_object_prior("--object-prior", v).map_err(anyhow::Error::msg)?;
        opts.object_prior = v;
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
        let before = prompts.len();
        prompts.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
        if prompts.len() == before {
            bail!("{}: --prompts FILE holds no prompt (one per line expected)", p.display());
        }
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
    outln!("sampled    {} images in {:.1} s ({:.2} images/s)", imgs.len(), secs, imgs.len() as f64 / secs);
    outln!("images     {}", a.out.display());
    outln!("grid       {}", a.out.join("grid.png").display());
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
        let (x, y) = (lightgen::student::eval::read_report(&pair[0])?, lightgen::student::eval::read_report(&pair[1])?);
        out!("{}", lightgen::student::eval::compare(&x, &y));
        return Ok(());
    }
    let (Some(ckpt), Some(mpath), Some(out)) = (&a.checkpoint, &a.manifest, &a.out) else {
        bail!("pass --checkpoint, --manifest and --out (or --compare A B)");
    };
    let (_, m, student) = load(ckpt, mpath, &a.flags)?;
    let mut prompts = match &a.prompts {
        Some(p) => lightgen::student::eval::read_geneval(p)?,
        None => lightgen::student::eval::load_prompts(lightgen::student::sample::held_out(mpath, &m)?)?,
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
    let imgs =
        lightgen::student::sample::generate(&student, &prompter, &decoder, &texts, &opts, a.seed, a.batch, |n| {
            pb.inc(n as u64)
        })?;
    pb.finish_and_clear();
    if a.format == "geneval" {
        lightgen::student::eval::write_geneval(out, &prompts, a.n, &imgs)?;
        outln!("GenEval layout: {} ({} prompts × {} images)", out.display(), prompts.len(), a.n);
        if m.lineage.teacher != "builtin:shapes" {
            outln!("score it with GenEval's evaluate_images.py (the shapes analyzer judges only the shapes world)");
            return Ok(());
        }
    }
    let r = lightgen::student::eval::judge_all(&student, &prompts, a.n, &imgs, &opts, a.seed, out, t0)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    out!("{}", lightgen::student::eval::markdown(&r));
    outln!("\n{} images in {:.1} s; report {}", r.images, r.seconds, out.join("eval.json").display());
    Ok(())
}

/// The eval `lightgen dpo` runs before and after.
pub fn eval_args(ckpt: &Path, manifest: &Path, out: PathBuf, n: usize) -> EvalArgs {
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

/// `lightgen inpaint`: one edit, or the recolouring check.
pub fn inpaint_cmd(a: InpaintArgs, progress: bool) -> Result<()> {
    use lightgen::student::inpaint;
    let (ck, m, student) = load(&a.checkpoint, &a.manifest, &a.flags)?;
    let opts = sample_options(&student, &a.flags)?;
    let prompter = Prompter::for_manifest(&a.manifest, &m, None)?;
    let decoder = Decoder::for_manifest(&m, None)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if let Some(n) = a.check {
        let held = lightgen::student::sample::held_out(&a.manifest, &m)?;
        let teacher = lightgen::student::sample::corpus_teacher(&m);
        let cases = inpaint::recolor_cases(&held, n, decoder.resolution(), a.seed, a.margin, &teacher);
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
        lightgen::formats::commit::write_atomic(&a.out.join("recolor.json"), &serde_json::to_vec_pretty(&r)?)?;
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            outln!(
                "recolouring: {}/{} accepted by the analyzer ({:.1}%), {:.1} unknown tokens per mask, {} pixels changed outside the masks",
                r.accepted,
                r.cases,
                100.0 * r.accuracy,
                r.unknown_tokens_mean,
                r.changed_outside
            );
            outln!("grid (original | mask | result): {}", a.out.join("recolor.png").display());
        }
        return Ok(());
    }
    if let Some(n) = a.completion {
        return completion_cmd(&a, n, &m, &student, &prompter, &decoder, &opts, progress);
    }
    let (Some(image), Some(mask), Some(prompt)) = (&a.image, &a.mask, &a.prompt) else {
        bail!("pass --image, --mask and --prompt (or --check N, or --completion N)");
    };
    let img = image::open(image).with_context(|| format!("reading --image {}", image.display()))?.to_rgb8();
    let msk = image::open(mask).with_context(|| format!("reading --mask {}", mask.display()))?.to_luma8();
    let prep = lightgen::student::inpaint::prepare(&img, &msk, decoder.resolution(), student.state.grid as u32)?;
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
    lightgen::formats::commit::write_atomic(&a.out.join("inpaint.json"), &serde_json::to_vec_pretty(&info)?)?;
    if a.json {
        outln!("{info}");
    } else {
        outln!("{} results ({unknown} of {} tokens repainted): {}", imgs.len(), prep.unknown.len(), grid.display());
    }
    Ok(())
}

/// `lightgen inpaint --completion N`: the completion curve (`student::completion`).
#[allow(clippy::too_many_arguments)]
fn completion_cmd(
    a: &InpaintArgs,
    n: usize,
    m: &lightgen::formats::manifest::Manifest,
    student: &Student,
    prompter: &Prompter,
    decoder: &Decoder,
    opts: &SampleOptions,
    progress: bool,
) -> Result<()> {
    use lightgen::student::completion;
    if let Some(f) = a.fractions.iter().find(|f| !(0.0..=1.0).contains(*f)) {
        bail!("--fractions: {f} is not a share in [0, 1]");
    }
    let held = lightgen::student::sample::held_out(&a.manifest, m)?;
    let teacher = lightgen::student::sample::corpus_teacher(m);
    let (res, grid) = (decoder.resolution(), student.state.grid as u32);
    let cases = completion::completion_cases(&held, n, res, grid, a.seed, &teacher);
    if cases.is_empty() {
        bail!("{}: no held-out prompt the shapes world can draw", a.manifest.display());
    }
    let pb = lightgen::progress::bar((cases.len() * a.fractions.len()) as u64, "inpaint", "images", progress);
    let points = completion::completion_curve(
        student,
        prompter,
        decoder,
        &cases,
        a.hide,
        &a.fractions,
        opts,
        a.seed,
        &a.out,
        |k| pb.inc(k as u64),
    )?;
    pb.finish_and_clear();
    let md = completion::markdown(&points);
    lightgen::formats::commit::write_atomic(&a.out.join("completion.json"), &serde_json::to_vec_pretty(&points)?)?;
    lightgen::formats::commit::write_atomic(&a.out.join("completion.md"), md.as_bytes())?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&points)?);
    } else {
        out!("{md}");
        outln!(
            "grid (original | hidden tokens | result, 8 scenes per share): {}",
            a.out.join("completion.png").display()
        );
    }
    Ok(())
}

/// `lightgen probe`: what the student uses (caption, positions) on training samples.
pub fn probe_cmd(a: crate::cli::ProbeArgs) -> Result<()> {
    let r = lightgen::student::probe::run(&a.checkpoint, &a.manifest, a.samples, a.seed, &a.device)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", r.markdown());
    }
    Ok(())
}
