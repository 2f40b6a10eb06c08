//! `lightgen study dpo`: Diffusion-DPO of one base student over a grid of β and pair-set sizes,
//! every result evaluated at the same sampling seeds as the base. One DPO run's gain is within
//! the noise of one eval (±0.03 on 396 images), so a claim about DPO is read off this grid: the
//! gain against β (the KL strength) and against how many pairs were learned from.
//!
//! The pair set is built once, for the largest count: its first parts are exactly the pair set
//! of a smaller count (the candidates are a seeded permutation's prefix and each part draws
//! from its own seed), so a cell trains on a prefix of it (`DpoConfig::candidates_used`).
//! Layout: `pairs-c<largest>/` (a grid with another largest count builds its own set),
//! `base/eval-s<seed>/`, `c<count>-b<beta>/` (checkpoints, metrics.jsonl,
//! dpo.json, eval-s<seed>/), and `sweep.json`, `sweep.md`, `sweep.png`, `sweep-alignment.png`.
//! Every finished piece is kept, so a rerun finishes only what is missing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::{DpoConfig, DpoSummary};
use crate::error::{Error, Result};
use crate::formats::commit::write_atomic;
use crate::formats::manifest::{self, Manifest};
use crate::student::eval::{self, EvalReport, TASKS};
use crate::student::sample::{Decoder, Prompter, Student};
use crate::student::train::checkpoint;

/// The grid and what every cell shares.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub betas: Vec<f64>,
    /// Candidate prompts per cell, each a multiple of `dpo.pairs.part_size`.
    pub candidates: Vec<usize>,
    /// Every cell's settings but β and the candidates used.
    pub dpo: DpoConfig,
    pub eval_n: usize,
    pub eval_seeds: Vec<u64>,
    /// Images per model call when evaluating (`lightgen eval`'s default: 32; the draws depend
    /// on it).
    pub eval_batch: usize,
}

/// Scores averaged over the eval seeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    pub overall: f64,
    /// Overall accuracy at each eval seed, in order.
    pub per_seed: Vec<f64>,
    pub alignment: f64,
    /// Objects found per image (a DPO that teaches "draw more" shows here).
    pub objects: f64,
    /// Accuracy per task.
    pub tasks: BTreeMap<String, f64>,
}

/// One DPO run of the grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub beta: f64,
    pub candidates: usize,
    /// Pairs kept from those candidates.
    pub pairs: usize,
    pub last_loss: f64,
    pub reward_accuracy: f64,
    pub scores: Scores,
    pub dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    pub base_checkpoint: String,
    pub steps: u64,
    pub eval_n: usize,
    pub eval_seeds: Vec<u64>,
    pub base: Scores,
    pub cells: Vec<Cell>,
}

/// Evaluates `ckpt` at every seed into `dir/eval-s<seed>` (kept ones are read) and averages.
fn scores(
    ckpt: &Path,
    mpath: &Path,
    m: &Manifest,
    cfg: &SweepConfig,
    dir: &Path,
    dev: Device,
    progress: bool,
) -> Result<Scores> {
    let mut reports: Vec<EvalReport> = Vec::new();
    // What an eval needs, made once on the first seed that is not yet evaluated.
    let mut ready = None;
    for &seed in &cfg.eval_seeds {
        let out = dir.join(format!("eval-s{seed}"));
        if !out.join("eval.json").exists() {
            if ready.is_none() {
                ready = Some((
                    Student::load(ckpt, true, dev)?,
                    Prompter::for_manifest(mpath, m, None)?,
                    Decoder::for_manifest(m, None)?,
                    eval::load_prompts(crate::student::sample::held_out(mpath, m)?)?,
                ));
            }
            let (s, prompter, decoder, prompts) = ready.as_ref().expect("made above");
            let label = format!("eval s{seed}");
            let pb = crate::progress::bar((prompts.len() * cfg.eval_n) as u64, &label, "images", progress);
            let (n, sample, batch) = (cfg.eval_n, &s.state.config.sample, cfg.eval_batch);
            eval::run(s, prompter, decoder, prompts, n, sample, seed, batch, &out, |k| pb.inc(k as u64))?;
            pb.finish_and_clear();
        }
        reports.push(eval::read_report(&out.join("eval.json"))?);
    }
    Ok(mean(&reports))
}

/// The seed-mean of some reports of the same prompts.
fn mean(r: &[EvalReport]) -> Scores {
    let n = r.len().max(1) as f64;
    let avg = |f: &dyn Fn(&EvalReport) -> f64| r.iter().map(f).sum::<f64>() / n;
    let tasks = TASKS
        .iter()
        .filter(|t| r.iter().all(|e| e.tasks.contains_key(**t)))
        .map(|t| (t.to_string(), avg(&|e| e.tasks[*t].accuracy)))
        .collect();
    Scores {
        overall: avg(&|e| e.overall),
        per_seed: r.iter().map(|e| e.overall).collect(),
        alignment: avg(&|e| e.alignment),
        objects: avg(&|e| e.objects),
        tasks,
    }
}

/// The β label of a folder name: `200`, `0.5`.
fn beta_label(b: f64) -> String {
    format!("{b}")
}

/// Runs (or finishes) the sweep into `out`.
pub fn run(
    base: &Path,
    mpath: &Path,
    cfg: &SweepConfig,
    out: &Path,
    dev: Device,
    progress: bool,
) -> Result<SweepReport> {
    let part = cfg.dpo.pairs.part_size.max(1);
    let bad = |what: &str, why: String| Err(Error::invalid(format!("study dpo {what}"), why));
    if cfg.betas.is_empty() || cfg.betas.iter().any(|b| !(b.is_finite() && *b > 0.0)) {
        return bad("--betas", format!("{:?}: expected positive values", cfg.betas));
    }
    if cfg.candidates.is_empty() || cfg.candidates.iter().any(|&c| c == 0 || c % part != 0) {
        return bad("--pairs", format!("{:?}: expected multiples of the part size {part}", cfg.candidates));
    }
    if cfg.eval_seeds.is_empty() || cfg.eval_n == 0 {
        return bad("--eval-seeds", "expected at least one seed and one image per prompt".into());
    }
    let m: Manifest = manifest::verify(mpath)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let largest = *cfg.candidates.iter().max().expect("checked non-empty");
    let base_scores = scores(base, mpath, &m, cfg, &out.join("base"), dev, progress)?;
    let mut cells = Vec::new();
    let mut counts = cfg.candidates.clone();
    counts.sort_unstable();
    counts.dedup();
    for &c in &counts {
        for &beta in &cfg.betas {
            let dir = out.join(format!("c{c}-b{}", beta_label(beta)));
            let summary_path = dir.join("dpo.json");
            let s: DpoSummary = match std::fs::read(&summary_path) {
                Ok(b) => serde_json::from_slice(&b)
                    .map_err(|e| Error::invalid(summary_path.display().to_string(), e.to_string()))?,
                Err(_) => {
                    let mut d = cfg.dpo.clone();
                    d.pairs.count = largest;
                    d.candidates_used = (c < largest).then_some(c);
                    d.beta = beta;
                    let pairs = out.join(format!("pairs-c{largest}"));
                    let s = super::run(base, mpath, &d, &pairs, &dir, dev, progress, None)?;
                    write_atomic(&summary_path, &serde_json::to_vec_pretty(&s).expect("serialises"))?;
                    s
                }
            };
            let ck = checkpoint::resolve(&s.checkpoint)?;
            let scores = scores(&ck, mpath, &m, cfg, &dir, dev, progress)?;
            cells.push(Cell {
                beta,
                candidates: c,
                pairs: s.pairs,
                last_loss: s.last_loss,
                reward_accuracy: s.last_reward_accuracy,
                scores,
                dir: dir.display().to_string(),
            });
        }
    }
    let report = SweepReport {
        base_checkpoint: base.display().to_string(),
        steps: cfg.dpo.steps,
        eval_n: cfg.eval_n,
        eval_seeds: cfg.eval_seeds.clone(),
        base: base_scores,
        cells,
    };
    write_atomic(&out.join("sweep.json"), &serde_json::to_vec_pretty(&report).expect("serialises"))?;
    write_atomic(&out.join("sweep.md"), markdown(&report).as_bytes())?;
    plot(&report, &out.join("sweep.png"), false)?;
    plot(&report, &out.join("sweep-alignment.png"), true)?;
    Ok(report)
}

/// Score against pairs learned from, one line per β, and the base as a flat line.
fn plot(r: &SweepReport, path: &Path, alignment: bool) -> Result<()> {
    let pick = |s: &Scores| if alignment { s.alignment } else { s.overall };
    let mut betas: Vec<f64> = r.cells.iter().map(|c| c.beta).collect();
    betas.sort_by(f64::total_cmp);
    betas.dedup();
    let mut series: Vec<(String, Vec<(f64, f64)>)> = betas
        .iter()
        .map(|&b| {
            let mut pts: Vec<(f64, f64)> =
                r.cells.iter().filter(|c| c.beta == b).map(|c| (c.pairs as f64, pick(&c.scores))).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (format!("beta {}", beta_label(b)), pts)
        })
        .collect();
    let xs = r.cells.iter().map(|c| c.pairs as f64);
    let (lo, hi) = xs.clone().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if lo <= hi {
        series.push(("base".into(), vec![(lo, pick(&r.base)), (hi, pick(&r.base))]));
    }
    let named: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    let what = if alignment { "alignment" } else { "overall" };
    // Short: the chart's font fits ~55 characters across.
    let title = format!("DPO {what}, mean of {} eval seeds, {} steps", r.eval_seeds.len(), r.steps);
    crate::report::chart::lines(path, &title, "pairs learned from", &named)
}

/// The table: the base, then one row per cell with its change against the base.
pub fn markdown(r: &SweepReport) -> String {
    let mut s = String::from(
        "| β | candidates | pairs | reward acc. | overall (per seed) | Δ overall | alignment | Δ alignment | objects |",
    );
    for t in TASKS {
        s.push_str(&format!(" {t} |"));
    }
    s.push_str("\n|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    s.push_str(&"---:|".repeat(TASKS.len()));
    s.push('\n');
    let seeds = |x: &Scores| x.per_seed.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(" / ");
    let tasks = |x: &Scores| {
        TASKS.iter().map(|t| x.tasks.get(*t).map_or(" — |".into(), |v| format!(" {v:.3} |"))).collect::<String>()
    };
    let b = &r.base;
    s.push_str(&format!(
        "| base | | | | **{:.3}** ({}) | | {:.3} | | {:.2} |{}\n",
        b.overall,
        seeds(b),
        b.alignment,
        b.objects,
        tasks(b)
    ));
    for c in &r.cells {
        let x = &c.scores;
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | **{:.3}** ({}) | {:+.3} | {:.3} | {:+.3} | {:.2} |{}\n",
            beta_label(c.beta),
            c.candidates,
            c.pairs,
            c.reward_accuracy,
            x.overall,
            seeds(x),
            x.overall - b.overall,
            x.alignment,
            x.alignment - b.alignment,
            x.objects,
            tasks(x)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(overall: f64, single: f64, objects: f64) -> EvalReport {
        let mut tasks = BTreeMap::new();
        for t in TASKS {
            let accuracy = if t == "single_object" { single } else { 0.0 };
            tasks.insert(
                t.to_string(),
                eval::TaskScore { prompts: 1, images: 1, correct: 0, accuracy, alignment: 0.0, objects, asked: 1.0 },
            );
        }
        EvalReport {
            checkpoint: String::new(),
            manifest_id: String::new(),
            images_per_prompt: 1,
            seed: 0,
            sample: Default::default(),
            tasks,
            overall,
            alignment: overall / 2.0,
            objects,
            asked: 1.0,
            images: 6,
            seconds: 0.0,
        }
    }

    #[test]
    fn scores_are_seed_means_and_the_table_shows_the_change_against_the_base() {
        let base = mean(&[report(0.1, 0.2, 2.0), report(0.2, 0.4, 3.0)]);
        assert!((base.overall - 0.15).abs() < 1e-12 && (base.objects - 2.5).abs() < 1e-12);
        assert_eq!(base.per_seed, [0.1, 0.2]);
        assert!((base.tasks["single_object"] - 0.3).abs() < 1e-12);
        let after = mean(&[report(0.3, 0.5, 2.0)]);
        let r = SweepReport {
            base_checkpoint: "b".into(),
            steps: 3,
            eval_n: 1,
            eval_seeds: vec![0, 1],
            base,
            cells: vec![Cell {
                beta: 200.0,
                candidates: 64,
                pairs: 9,
                last_loss: 0.5,
                reward_accuracy: 0.75,
                scores: after,
                dir: "c64-b200".into(),
            }],
        };
        let md = markdown(&r);
        assert!(md.contains("| base | | | | **0.150** (0.100 / 0.200) |"), "{md}");
        assert!(
            md.contains("| 200 | 64 | 9 | 0.75 | **0.300** (0.300) | +0.150 | 0.150 | +0.075 | 2.00 | 0.500 |"),
            "{md}"
        );
    }
}
