//! `lightgen study diversity-vs-volume`: the paper's Fig. 6 claim made testable. From one
//! manifest, subsets (no data copied) at several volume fractions — drawn at random, or
//! coverage-first (every slot value and value pair before any repeat) — plus a *narrow* corpus
//! of the smallest size drawn from a fraction of the shape and colour values only. Each arm
//! trains with the same budget (same steps, batch and seed) and is evaluated on the same
//! held-out prompts; the result is a table and a plot of score against images.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Error, Result};
use crate::formats::manifest::{self, Manifest};
use crate::pipeline::subset::{self, Rule, Strategy};
use crate::student::sample::{Decoder, Prompter, Student};
use crate::student::train::{checkpoint, TrainConfig, TrainOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyConfig {
    /// Volume fractions of the training samples (1.0 = the whole manifest).
    pub fractions: Vec<f64>,
    /// Share of the shape and of the colour values the narrow arm may use (a sample passes
    /// when all its shapes and colours are allowed).
    pub narrow_share: f64,
    pub eval_n: usize,
    pub seed: u64,
    pub train: TrainConfig,
}

/// One arm's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    pub strategy: String,
    pub fraction: f64,
    pub images: usize,
    /// Distinct (shape, colour) value pairs among the arm's samples: its diversity.
    pub shape_color_combos: usize,
    pub overall: f64,
    /// The eval's alignment (partial credit per image): moves before whole images pass.
    #[serde(default)]
    pub alignment: f64,
    pub tasks: BTreeMap<String, f64>,
    pub manifest: String,
    /// The arm whose samples this one drew exactly (a coverage-first draw of a size at which a
    /// random draw already covers every slot value and pair): its result, not trained again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyReport {
    pub parent: String,
    pub steps: u64,
    pub batch_size: usize,
    pub eval_images_per_prompt: usize,
    pub arms: Vec<Arm>,
}

/// The plan: (arm name, strategy label, fraction, rule).
fn arms(cfg: &StudyConfig, narrow_filters: Vec<(String, Vec<String>)>) -> Vec<(String, String, f64, Rule)> {
    let rule = |fraction: f64, strategy: Strategy, filters: Vec<(String, Vec<String>)>, count: Option<u64>| Rule {
        count,
        fraction: if count.is_some() { None } else { Some(fraction) },
        strategy,
        only_allowed: !filters.is_empty(),
        filters,
        stratum: None,
        seed: cfg.seed,
    };
    let mut out = Vec::new();
    let mut fractions = cfg.fractions.clone();
    fractions.sort_by(f64::total_cmp);
    for &f in &fractions {
        let pct = (f * 100.0).round() as u32;
        out.push((format!("random-{pct}"), "random".into(), f, rule(f, Strategy::Random, vec![], None)));
        if f < 1.0 {
            out.push((format!("coverage-{pct}"), "coverage".into(), f, rule(f, Strategy::Coverage, vec![], None)));
        }
    }
    let smallest = cfg.fractions.iter().copied().fold(f64::MAX, f64::min);
    let pct = (smallest * 100.0).round() as u32;
    out.push((
        format!("narrow-{pct}"),
        "narrow".into(),
        smallest,
        rule(smallest, Strategy::Random, narrow_filters, None),
    ));
    out
}

type Slots = BTreeMap<String, Vec<String>>;

/// The first ⌈share·k⌉ values (sorted) of the `shape` and `color` slots seen beside the
/// manifest, and every prompt's slot values.
fn narrow_filters(root: &Path, share: f64) -> Result<(Vec<(String, Vec<String>)>, BTreeMap<String, Slots>)> {
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_prompt = BTreeMap::new();
    for p in crate::formats::commit::committed_parts(&root.join("expand")).map_err(|_| {
        Error::invalid(
            root.display().to_string(),
            "no expand/ stage beside the manifest: the narrow arm needs slot values",
        )
    })? {
        for row in crate::formats::prompt_rows::read_prompts(&p)? {
            for (slot, vals) in &row.slots {
                values.entry(slot.clone()).or_default().extend(vals.iter().cloned());
            }
            by_prompt.insert(row.prompt_id, row.slots);
        }
    }
    let mut out = Vec::new();
    for slot in ["shape", "color"] {
        let all: Vec<String> = values.get(slot).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        if !all.is_empty() {
            let k = ((all.len() as f64 * share).ceil() as usize).clamp(1, all.len());
            out.push((format!("slot:{slot}"), all[..k].to_vec()));
        }
    }
    Ok((out, by_prompt))
}

/// Distinct (shape, colour) pairs of the selected rows (per parent shard).
fn combos(root: &Path, m: &Manifest, rows: &[Vec<u32>], slots: &BTreeMap<String, Slots>) -> Result<usize> {
    let mut seen = BTreeSet::new();
    for (k, sel) in rows.iter().enumerate() {
        if sel.is_empty() {
            continue;
        }
        let f = crate::formats::frame::Frame::read(&root.join(&m.shards[k].index), Some(&["row", "prompt_id"]))?;
        let (r, ids) = (f.u32("row")?, f.str("prompt_id")?);
        let by_row: BTreeMap<u32, String> =
            r.iter().zip(ids.iter()).map(|(a, b)| (a.unwrap_or(0), b.unwrap_or_default().to_string())).collect();
        for row in sel {
            let Some(s) = by_row.get(row).and_then(|id| slots.get(id)) else { continue };
            let (shapes, colors) =
                (s.get("shape").cloned().unwrap_or_default(), s.get("color").cloned().unwrap_or_default());
            for (a, b) in shapes.iter().zip(colors.iter()) {
                seen.insert((a.clone(), b.clone()));
            }
        }
    }
    Ok(seen.len())
}

/// Runs (or finishes: arms with an `eval.json` are kept) the study into `out`.
pub fn run(manifest_path: &Path, cfg: &StudyConfig, out: &Path, device: Device, progress: bool) -> Result<StudyReport> {
    let parent: Manifest = manifest::verify(manifest_path)?;
    let root = manifest::root_of(manifest_path).to_path_buf();
    let (filters, slots) = narrow_filters(&root, cfg.narrow_share)?;
    let plan = arms(cfg, filters);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut report = StudyReport {
        parent: manifest_path.display().to_string(),
        steps: cfg.train.train.steps,
        batch_size: cfg.train.train.batch_size,
        eval_images_per_prompt: cfg.eval_n,
        arms: Vec::new(),
    };
    let mut smallest: Option<usize> = None;
    // the last random arm's rows and index, to spot a coverage arm that draws the same samples
    let mut last_random: Option<(Vec<Vec<u32>>, usize)> = None;
    for (name, strategy, fraction, mut rule) in plan {
        if strategy == "narrow" {
            // as many images as the smallest random arm, from the narrow pool
            rule.count = smallest.map(|n| n as u64);
            rule.fraction = rule.count.is_none().then_some(fraction);
        }
        let rows = subset::select(manifest_path, &parent, &rule)?;
        let (mpath, m) = crate::pipeline::manifest::write_subset(
            manifest_path,
            &parent,
            &format!("study-{name}"),
            &rule.describe(),
            &rows,
        )?;
        let images: usize = rows.iter().map(Vec::len).sum();
        let shape_color_combos = combos(&root, &parent, &rows, &slots)?;
        if strategy == "random" && smallest.is_none() {
            smallest = Some(images);
        }
        match (&last_random, strategy.as_str()) {
            (Some((prev, k)), "coverage") if *prev == rows => {
                let twin = report.arms[*k].clone();
                let same_as = Some(twin.name.clone());
                report.arms.push(Arm { name, strategy, manifest: mpath.display().to_string(), same_as, ..twin });
                continue;
            }
            (_, "random") => last_random = Some((rows.clone(), report.arms.len())),
            _ => {}
        }
        let dir = out.join(&name);
        let eval_dir = dir.join("eval");
        if !eval_dir.join("eval.json").exists() {
            let grid = Some(crate::student::sample::grid_hook(&mpath, &dir.join("train"), device));
            let opts = TrainOptions {
                out: dir.join("train"),
                resume: true,
                init_from: None,
                device,
                progress,
                stop_at: None,
                grid,
                eval: None,
                launch: None,
            };
            let s = crate::student::train::train(&mpath, cfg.train.clone(), &opts)?;
            let student = Student::load(&checkpoint::resolve(&s.checkpoint)?, true, device)?;
            let prompts = crate::student::eval::load_prompts(crate::student::sample::held_out(&mpath, &m)?)?;
            let pb = crate::progress::bar((prompts.len() * cfg.eval_n) as u64, &name, "images", progress);
            crate::student::eval::run(
                &student,
                &Prompter::for_manifest(&mpath, &m, None)?,
                &Decoder::for_manifest(&m, None)?,
                &prompts,
                cfg.eval_n,
                &student.state.config.sample,
                0,
                64,
                &eval_dir,
                |n| pb.inc(n as u64),
            )?;
            pb.finish_and_clear();
        }
        let e = crate::student::eval::read_report(&eval_dir.join("eval.json"))?;
        report.arms.push(Arm {
            name,
            strategy,
            fraction,
            images,
            shape_color_combos,
            overall: e.overall,
            alignment: e.alignment,
            tasks: e.tasks.iter().map(|(k, t)| (k.clone(), t.accuracy)).collect(),
            manifest: mpath.display().to_string(),
            same_as: None,
        });
    }
    let w = crate::formats::commit::write_atomic;
    w(&out.join("study.json"), &serde_json::to_vec_pretty(&report).expect("serialises"))?;
    w(&out.join("study.md"), markdown(&report).as_bytes())?;
    plot(&report, &out.join("study.png"), false)?;
    plot(&report, &out.join("study-alignment.png"), true)?;
    Ok(report)
}

/// Score (overall accuracy, or alignment) against images, one line per strategy (the full
/// manifest belongs to both). A coverage arm that drew its random arm's samples is left out of
/// the coverage line: drawn over the random line, it hid it (the table names the twin).
fn series(r: &StudyReport, alignment: bool) -> Vec<(&'static str, Vec<(f64, f64)>)> {
    let mut series = Vec::new();
    for s in ["random", "coverage", "narrow"] {
        let mut pts: Vec<(f64, f64)> = (r.arms.iter())
            .filter(|a| a.strategy == s || (s == "coverage" && a.strategy == "random" && a.fraction >= 1.0))
            .filter(|a| a.same_as.is_none())
            .map(|a| (a.images as f64, if alignment { a.alignment } else { a.overall }))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push((s, pts));
    }
    series
}

fn plot(r: &StudyReport, path: &Path, alignment: bool) -> Result<()> {
    let series = series(r, alignment);
    let what = if alignment { "alignment" } else { "overall" };
    // Short: the chart's font fits ~55 characters across.
    let title = format!("diversity vs volume: {what}, {} steps an arm", r.steps);
    // From 0, so that a gap between arms reads at its size (a min-to-max axis put the lowest
    // arm on the bottom edge).
    let top = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0f64, f64::max);
    let y_range = ((top * 10.0).floor() / 10.0 + 0.1).min(1.0);
    crate::report::chart::lines_in(path, &title, "training images", &series, Some((0.0, y_range)))
}

/// The table: one row per arm.
pub fn markdown(r: &StudyReport) -> String {
    let mut s = String::from("| arm | strategy | fraction | images | shape×colour | overall | alignment |");
    for t in crate::student::eval::TASKS {
        s.push_str(&format!(" {t} |"));
    }
    s.push_str("\n|---|---|---:|---:|---:|---:|---:|");
    s.push_str(&"---:|".repeat(crate::student::eval::TASKS.len()));
    s.push('\n');
    for a in &r.arms {
        s.push_str(&format!(
            "| {}{} | {} | {:.2} | {} | {} | **{:.3}** | {:.3} |",
            a.name,
            a.same_as.as_ref().map_or(String::new(), |t| format!(" (the samples of {t})")),
            a.strategy,
            a.fraction,
            a.images,
            a.shape_color_combos,
            a.overall,
            a.alignment
        ));
        for t in crate::student::eval::TASKS {
            s.push_str(&a.tasks.get(t).map_or(" — |".into(), |v| format!(" {v:.3} |")));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_pair_each_fraction_with_both_strategies_and_one_narrow_arm() {
        let cfg = StudyConfig {
            fractions: vec![0.25, 0.5, 1.0],
            narrow_share: 0.5,
            eval_n: 1,
            seed: 3,
            train: TrainConfig::preset("tiny").unwrap(),
        };
        let a = arms(&cfg, vec![("slot:color".into(), vec!["red".into()])]);
        let names: Vec<&str> = a.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["random-25", "coverage-25", "random-50", "coverage-50", "random-100", "narrow-25"]);
        let narrow = &a[5].3;
        assert_eq!((narrow.fraction, narrow.filters.len()), (Some(0.25), 1));
        assert!(matches!(a[1].3.strategy, Strategy::Coverage));
    }

    #[test]
    fn a_twin_arm_leaves_the_random_line_in_view() {
        // The demo corpus: a random 5% already covers every pair, so coverage-5 is random-5's
        // twin; the full manifest belongs to both lines.
        let arm = |name: &str, strategy: &str, fraction: f64, images: usize, overall: f64, twin: Option<&str>| Arm {
            name: name.into(),
            strategy: strategy.into(),
            fraction,
            images,
            shape_color_combos: 100,
            overall,
            alignment: overall / 2.0,
            tasks: BTreeMap::new(),
            manifest: String::new(),
            same_as: twin.map(String::from),
        };
        let r = StudyReport {
            parent: String::new(),
            steps: 10,
            batch_size: 4,
            eval_images_per_prompt: 1,
            arms: vec![
                arm("random-5", "random", 0.05, 646, 0.27, None),
                arm("coverage-5", "coverage", 0.05, 646, 0.27, Some("random-5")),
                arm("random-100", "random", 1.0, 12923, 0.34, None),
                arm("narrow-5", "narrow", 0.05, 646, 0.17, None),
            ],
        };
        let s = series(&r, false);
        assert_eq!(s[0], ("random", vec![(646.0, 0.27), (12923.0, 0.34)]));
        assert_eq!(s[1], ("coverage", vec![(12923.0, 0.34)]), "the twin is not drawn over random-5");
        assert_eq!(s[2], ("narrow", vec![(646.0, 0.17)]));
        assert_eq!(series(&r, true)[2].1, vec![(646.0, 0.085)], "alignment on request");
    }
}
