//! GenEval-style evaluation on the shapes world: N images per held-out prompt, each judged by
//! the shapes analyzer; per-task accuracy for the six families and the overall score (the mean
//! of the task accuracies, as GenEval's `summary_scores.py`). Writes `eval.json`, `eval.md`
//! and a PNG grid of failures per task.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::student::model::sampler::SampleOptions;
use crate::student::sample::{generate, Decoder, Prompter, Student};
use crate::student::train::run::{EvalHook, EvalPoint};
use crate::world::analyze::Analyzer;
use crate::world::Spec;

/// The six GenEval tasks, in its table order.
pub const TASKS: [&str; 6] = ["single_object", "two_object", "counting", "colors", "position", "color_attr"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    pub prompts: usize,
    pub images: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Mean of the analyzer's exact-scene alignment (matched objects / (matched + every
    /// missing, extra, miscoloured or misplaced one)): partial credit, so a curve moves before
    /// whole images pass. Reports written before it read 0.
    #[serde(default)]
    pub alignment: f64,
    /// Mean objects the analyzer finds per image, and the mean the prompts ask for: a student
    /// that scatters specks can pass GenEval-style checks (extra objects of other classes do
    /// not fail an image) while finding 12 objects where 1.6 are asked. Older reports read 0.
    #[serde(default)]
    pub objects: f64,
    #[serde(default)]
    pub asked: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub checkpoint: String,
    pub manifest_id: String,
    pub images_per_prompt: usize,
    pub seed: u64,
    pub sample: SampleOptions,
    pub tasks: BTreeMap<String, TaskScore>,
    /// Mean of the task accuracies.
    pub overall: f64,
    /// Mean of the task alignments.
    #[serde(default)]
    pub alignment: f64,
    /// Objects found and asked for per image, over all images (see `TaskScore::objects`).
    #[serde(default)]
    pub objects: f64,
    #[serde(default)]
    pub asked: f64,
    pub images: usize,
    pub seconds: f64,
}

/// One evaluation prompt: the text and its GenEval spec.
pub struct EvalPrompt {
    pub prompt: String,
    pub spec: Spec,
}

/// Prompts from the manifest's held-out split or from a GenEval `evaluation_metadata.jsonl`.
pub fn load_prompts(held: Vec<(String, String, String)>) -> Result<Vec<EvalPrompt>> {
    held.into_iter()
        .map(|(prompt, _, spec)| {
            let spec: Spec = serde_json::from_str(&spec)
                .map_err(|e| Error::invalid(format!("held-out spec of \"{prompt}\""), e.to_string()))?;
            Ok(EvalPrompt { prompt, spec })
        })
        .collect()
}

pub fn read_geneval(path: &Path) -> Result<Vec<EvalPrompt>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let spec: Spec = serde_json::from_str(l)
                .map_err(|e| Error::invalid(format!("{}:{}", path.display(), i + 1), e.to_string()))?;
            Ok(EvalPrompt { prompt: spec.prompt.clone(), spec })
        })
        .collect()
}

/// The held-out slice the trainer's evaluation curve uses: up to `n` prompts, taken in turn
/// from each task in the held-out order, so every task is in it and it is the same each time.
pub fn balanced_slice(prompts: Vec<EvalPrompt>, n: usize) -> Vec<EvalPrompt> {
    let mut by_task: BTreeMap<String, std::collections::VecDeque<EvalPrompt>> = BTreeMap::new();
    for p in prompts {
        by_task.entry(p.spec.tag.clone()).or_default().push_back(p);
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n && by_task.values().any(|q| !q.is_empty()) {
        for q in by_task.values_mut() {
            if let Some(p) = q.pop_front().filter(|_| out.len() < n) {
                out.push(p);
            }
        }
    }
    out
}

/// The trainer's evaluation curve: each checkpoint it asks for is evaluated (EMA weights,
/// the config's sampler and seed) on [`balanced_slice`] of the held-out prompts, and the
/// report files go to `out/evals/step-N/`. Manifests without held-out specs (not the shapes
/// world) give no point.
pub fn curve_hook(manifest_path: &Path, out: &Path, device: tch::Device) -> EvalHook {
    let (manifest_path, dir) = (manifest_path.to_path_buf(), out.join("evals"));
    Box::new(move |m, cfg, ck, step| {
        let t = &cfg.train;
        let Ok(prompts) = crate::student::sample::held_out(&manifest_path, m).and_then(load_prompts) else {
            tracing::warn!("no held-out prompts with specs beside the manifest: no evaluation curve");
            return Ok(None);
        };
        let prompts = balanced_slice(prompts, t.eval_prompts);
        if prompts.is_empty() || t.eval_images == 0 {
            return Ok(None);
        }
        let student = Student::load(ck, true, device)?;
        let prompter = Prompter::for_manifest(&manifest_path, m, None)?;
        let decoder = Decoder::for_manifest(m, None)?;
        let out = dir.join(format!("step-{step:08}"));
        let r = run(&student, &prompter, &decoder, &prompts, t.eval_images, &cfg.sample, t.seed, 64, &out, |_| {})?;
        Ok(Some(EvalPoint {
            overall: r.overall,
            alignment: r.alignment,
            tasks: r.tasks.iter().map(|(k, v)| (k.clone(), v.accuracy)).collect(),
            images: r.images,
            objects: r.objects,
            asked: r.asked,
        }))
    })
}

/// Samples and judges; writes the report files into `out`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    student: &Student,
    prompter: &Prompter,
    decoder: &Decoder,
    prompts: &[EvalPrompt],
    per_prompt: usize,
    opts: &SampleOptions,
    seed: u64,
    batch: usize,
    out: &Path,
    progress: impl FnMut(usize),
) -> Result<EvalReport> {
    let t0 = std::time::Instant::now();
    let texts: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.prompt.clone(), per_prompt)).collect();
    let imgs = generate(student, prompter, decoder, &texts, opts, seed, batch, progress)?;
    judge_all(student, prompts, per_prompt, &imgs, opts, seed, out, t0)
}

/// Judges `imgs` (`per_prompt` consecutive images per prompt) and writes the report files.
#[allow(clippy::too_many_arguments)]
pub fn judge_all(
    student: &Student,
    prompts: &[EvalPrompt],
    per_prompt: usize,
    imgs: &[image::RgbImage],
    opts: &SampleOptions,
    seed: u64,
    out: &Path,
    t0: std::time::Instant,
) -> Result<EvalReport> {
    let judge = Analyzer::new();
    let mut tasks: BTreeMap<String, TaskScore> = BTreeMap::new();
    let mut failures: BTreeMap<String, Vec<(image::RgbImage, bool)>> = BTreeMap::new();
    let mut lines = String::new();
    for (k, img) in imgs.iter().enumerate() {
        let p = &prompts[k / per_prompt];
        let j = judge.judge(img, &p.spec);
        let t = tasks.entry(p.spec.tag.clone()).or_insert(TaskScore {
            prompts: 0,
            images: 0,
            correct: 0,
            accuracy: 0.0,
            alignment: 0.0,
            objects: 0.0,
            asked: 0.0,
        });
        if k % per_prompt == 0 {
            t.prompts += 1;
        }
        t.images += 1;
        t.correct += usize::from(j.verdict.pass);
        t.alignment += f64::from(j.score);
        t.objects += j.detections.len() as f64;
        t.asked += p.spec.include.iter().map(|o| f64::from(o.count)).sum::<f64>();
        if !j.verdict.pass {
            let f = failures.entry(p.spec.tag.clone()).or_default();
            if f.len() < 32 {
                f.push((img.clone(), false));
            }
        }
        lines.push_str(
            &serde_json::to_string(&serde_json::json!({
                "index": k, "prompt": p.prompt, "tag": p.spec.tag, "pass": j.verdict.pass, "reason": j.verdict.reason,
                "score": j.score,
                "found": j.detections.iter().map(|d| format!("{} {}", d.color, d.class)).collect::<Vec<_>>(),
            }))
            .expect("serialises"),
        );
        lines.push('\n');
    }
    let per_image = |f: fn(&TaskScore) -> f64| tasks.values().map(f).sum::<f64>() / imgs.len().max(1) as f64;
    let (objects, asked) = (per_image(|t| t.objects), per_image(|t| t.asked));
    for t in tasks.values_mut() {
        t.accuracy = t.correct as f64 / t.images.max(1) as f64;
        t.alignment /= t.images.max(1) as f64;
        t.objects /= t.images.max(1) as f64;
        t.asked /= t.images.max(1) as f64;
    }
    let mean = |f: fn(&TaskScore) -> f64| {
        if tasks.is_empty() {
            0.0
        } else {
            tasks.values().map(f).sum::<f64>() / tasks.len() as f64
        }
    };
    let (overall, alignment) = (mean(|t| t.accuracy), mean(|t| t.alignment));
    let report = EvalReport {
        checkpoint: student.checkpoint.display().to_string(),
        manifest_id: student.state.manifest_id.clone(),
        images_per_prompt: per_prompt,
        seed,
        sample: opts.clone(),
        tasks,
        overall,
        alignment,
        objects,
        asked,
        images: imgs.len(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let w = crate::formats::commit::write_atomic;
    w(&out.join("eval.json"), &serde_json::to_vec_pretty(&report).expect("serialises"))?;
    w(&out.join("judgements.jsonl"), lines.as_bytes())?;
    w(&out.join("eval.md"), markdown(&report).as_bytes())?;
    for (task, cells) in &failures {
        let p = out.join(format!("failures-{task}.png"));
        crate::report::chart::grid(cells).save(&p).map_err(|e| Error::Image { path: p.clone(), source: e })?;
    }
    let ok: Vec<(image::RgbImage, bool)> = imgs
        .iter()
        .take(64)
        .enumerate()
        .map(|(k, i)| {
            let p = &prompts[k / per_prompt];
            (i.clone(), judge.judge(i, &p.spec).verdict.pass)
        })
        .collect();
    let p = out.join("samples.png");
    crate::report::chart::grid(&ok).save(&p).map_err(|e| Error::Image { path: p.clone(), source: e })?;
    Ok(report)
}

/// Writes GenEval's folder layout for its official evaluator: `<out>/<00000>/metadata.jsonl`
/// (the prompt's metadata line) and `<out>/<00000>/samples/0000.png …`, one folder per
/// prompt in order, `per_prompt` consecutive images each.
pub fn write_geneval(out: &Path, prompts: &[EvalPrompt], per_prompt: usize, imgs: &[image::RgbImage]) -> Result<()> {
    if imgs.len() != prompts.len() * per_prompt {
        return Err(Error::invalid(
            out.display().to_string(),
            format!("{} images for {} prompts × {per_prompt}", imgs.len(), prompts.len()),
        ));
    }
    for (i, p) in prompts.iter().enumerate() {
        let dir = out.join(format!("{i:05}"));
        let samples = dir.join("samples");
        std::fs::create_dir_all(&samples).map_err(|e| Error::io(&samples, e))?;
        let mut meta = p.spec.clone();
        meta.prompt = p.prompt.clone();
        // GenEval's evaluator tests `"color" in req`: absent keys, never nulls
        let mut v = serde_json::to_value(&meta).expect("spec serialises");
        for key in ["include", "exclude"] {
            for o in v[key].as_array_mut().into_iter().flatten() {
                if let Some(obj) = o.as_object_mut() {
                    obj.retain(|_, x| !x.is_null());
                }
            }
        }
        let line = v.to_string() + "\n";
        for (j, img) in imgs[i * per_prompt..(i + 1) * per_prompt].iter().enumerate() {
            let path = samples.join(format!("{j:04}.png"));
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| Error::Image { path: path.clone(), source: e })?;
            crate::formats::commit::write_atomic(&path, &png)?;
        }
        // metadata last: a folder with it is complete
        crate::formats::commit::write_atomic(&dir.join("metadata.jsonl"), line.as_bytes())?;
    }
    Ok(())
}

/// The report as a Markdown table (GenEval's column order).
pub fn markdown(r: &EvalReport) -> String {
    let mut s = String::from(
        "| task | prompts | images | accuracy | alignment | objects found (asked) |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for t in TASKS.iter().map(|t| t.to_string()).chain(r.tasks.keys().filter(|k| !TASKS.contains(&k.as_str())).cloned())
    {
        if let Some(v) = r.tasks.get(&t) {
            s.push_str(&format!(
                "| {t} | {} | {} | {:.3} | {:.3} | {:.1} ({:.1}) |\n",
                v.prompts, v.images, v.accuracy, v.alignment, v.objects, v.asked
            ));
        }
    }
    s.push_str(&format!(
        "| **overall** | | {} | **{:.3}** | {:.3} | {:.1} ({:.1}) |\n",
        r.images, r.overall, r.alignment, r.objects, r.asked
    ));
    s
}

/// Per-task differences between two reports (B − A) in accuracy and in alignment (the partial
/// credit that moves before whole images pass), as a Markdown table.
pub fn compare(a: &EvalReport, b: &EvalReport) -> String {
    let mut s = String::from(
        "| task | A | B | B − A | alignment A | alignment B | B − A |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut keys: Vec<&String> = a.tasks.keys().chain(b.tasks.keys()).collect();
    keys.sort_by_key(|k| TASKS.iter().position(|t| t == k).unwrap_or(TASKS.len()));
    keys.dedup();
    let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
    let d = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => format!("{:+.3}", y - x),
        _ => "—".into(),
    };
    for k in keys {
        let (x, y) = (a.tasks.get(k).map(|t| t.accuracy), b.tasks.get(k).map(|t| t.accuracy));
        let (p, q) = (a.tasks.get(k).map(|t| t.alignment), b.tasks.get(k).map(|t| t.alignment));
        s.push_str(&format!("| {k} | {} | {} | {} | {} | {} | {} |\n", f(x), f(y), d(x, y), f(p), f(q), d(p, q)));
    }
    s.push_str(&format!(
        "| **overall** | {:.3} | {:.3} | **{:+.3}** | {:.3} | {:.3} | **{:+.3}** |\n",
        a.overall,
        b.overall,
        b.overall - a.overall,
        a.alignment,
        b.alignment,
        b.alignment - a.alignment
    ));
    s
}

pub fn read_report(path: &Path) -> Result<EvalReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(path.display().to_string(), format!("not an eval.json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(tag: &str, i: usize) -> EvalPrompt {
        let spec: Spec =
            serde_json::from_value(serde_json::json!({ "tag": tag, "prompt": format!("{tag} {i}"), "include": [] }))
                .unwrap();
        EvalPrompt { prompt: spec.prompt.clone(), spec }
    }

    #[test]
    fn the_curve_slice_takes_each_task_in_turn() {
        let mut all: Vec<EvalPrompt> = (0..5).map(|i| prompt("counting", i)).collect();
        all.extend((0..2).map(|i| prompt("position", i)));
        all.extend((0..5).map(|i| prompt("colors", i)));
        let names = |v: &[EvalPrompt]| v.iter().map(|p| p.prompt.clone()).collect::<Vec<_>>();
        // Tasks in name order, each task's prompts in held-out order; a short task runs out.
        assert_eq!(
            names(&balanced_slice(all, 8)),
            ["colors 0", "counting 0", "position 0", "colors 1", "counting 1", "position 1", "colors 2", "counting 2"]
        );
        let s = balanced_slice((0..3).map(|i| prompt("colors", i)).collect(), 10);
        assert_eq!(s.len(), 3, "never more than there are");
    }

    fn report(acc: &[(&str, f64)]) -> EvalReport {
        let tasks: BTreeMap<String, TaskScore> = acc
            .iter()
            .map(|(t, a)| {
                let s = TaskScore {
                    prompts: 1,
                    images: 4,
                    correct: (a * 4.0) as usize,
                    accuracy: *a,
                    alignment: a / 2.0,
                    objects: 2.0,
                    asked: 1.0,
                };
                (t.to_string(), s)
            })
            .collect();
        let overall = tasks.values().map(|t| t.accuracy).sum::<f64>() / tasks.len() as f64;
        let alignment = overall / 2.0;
        EvalReport {
            checkpoint: "c".into(),
            manifest_id: "m".into(),
            images_per_prompt: 4,
            seed: 0,
            sample: SampleOptions::default(),
            tasks,
            overall,
            alignment,
            objects: 2.0,
            asked: 1.0,
            images: 4 * acc.len(),
            seconds: 0.0,
        }
    }

    #[test]
    fn overall_is_the_mean_of_tasks_and_compare_shows_differences() {
        let a = report(&[("single_object", 1.0), ("position", 0.25)]);
        let b = report(&[("single_object", 0.75), ("position", 0.5), ("counting", 0.5)]);
        assert_eq!(a.overall, 0.625);
        let md = markdown(&a);
        let last = md.lines().last().unwrap();
        assert!(last.starts_with("| **overall** |") && last.ends_with("| 2.0 (1.0) |"), "objects found (asked): {md}");
        let t = compare(&a, &b);
        assert!(t.contains("| single_object | 1.000 | 0.750 | -0.250 | 0.500 | 0.375 | -0.125 |"), "{t}");
        assert!(t.contains("| position | 0.250 | 0.500 | +0.250 | 0.125 | 0.250 | +0.125 |"), "{t}");
        assert!(t.contains("| counting | — | 0.500 | — | — | 0.250 | — |"), "{t}");
        assert!(t.contains("| **overall** | 0.625 | 0.583 | **-0.042** | 0.312 | 0.292 | **-0.021** |"), "{t}");
        assert!(markdown(&a).contains("| position | 1 | 4 | 0.250 | 0.125 |"), "{}", markdown(&a));
        assert!(markdown(&a).contains("| **overall** | | 8 | **0.625** | 0.312 |"), "{}", markdown(&a));
    }

    #[test]
    fn geneval_layout_has_one_folder_per_prompt_with_its_metadata_and_samples() {
        let dir = tempfile::tempdir().unwrap();
        let line = r#"{"tag": "counting", "include": [{"class": "circle", "count": 2}], "exclude": [{"class": "circle", "count": 3}], "prompt": "a photo of two circles"}"#;
        let path = dir.path().join("meta.jsonl");
        std::fs::write(&path, format!("{line}\n{line}\n")).unwrap();
        let prompts = read_geneval(&path).unwrap();
        let imgs: Vec<image::RgbImage> =
            (0..6).map(|i| image::RgbImage::from_pixel(8, 8, image::Rgb([i as u8 * 40, 0, 0]))).collect();
        let out = dir.path().join("geneval");
        write_geneval(&out, &prompts, 3, &imgs).unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(out.join("00001/metadata.jsonl")).unwrap().trim()).unwrap();
        assert_eq!(meta["tag"], "counting");
        assert_eq!(meta["prompt"], "a photo of two circles");
        assert_eq!(meta["include"][0]["count"], 2);
        assert!(meta["include"][0].get("color").is_none(), "no null keys: {meta}");
        // image 2 of prompt 1 is the 6th image overall
        let back = image::open(out.join("00001/samples/0002.png")).unwrap().to_rgb8();
        assert_eq!(back.get_pixel(0, 0).0, [200, 0, 0]);
        assert!(!out.join("00002").exists());
        assert!(write_geneval(&out, &prompts, 4, &imgs).is_err(), "a count mismatch is refused");
    }
}
