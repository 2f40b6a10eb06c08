//! `lightgen report curate <run>`: counts per reason, pass rates per family and per slot
//! value (a polars join with the prompts), how each slot value's share moved through
//! filtering, score histograms, a contact sheet of the borderline decisions, and — for the
//! shapes world — the filter's precision and recall against the teacher's record.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::RgbImage;
use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::commit;
use crate::pipeline::generate::read_part;
use crate::pipeline::stage_dir;
use crate::world::Scene;

#[derive(Debug, Serialize)]
pub struct SlotValueStats {
    pub slot: String,
    pub value: String,
    pub samples: u64,
    pub kept: u64,
    pub pass_rate: f64,
    /// Share among kept samples / share among all samples (1 = unchanged by filtering).
    pub share_ratio: f64,
}

/// Filter quality against the shapes teacher's record.
#[derive(Debug, Serialize)]
pub struct TruthStats {
    /// Kept images that truly show their prompt / all kept.
    pub precision: f64,
    /// Correct images kept / all correct images.
    pub correct_kept: f64,
    /// Images with an injected failure that were rejected / all such images.
    pub failures_rejected: f64,
    pub correct: u64,
    pub injected: u64,
}

#[derive(Debug, Serialize)]
pub struct CurateReport {
    pub run_dir: String,
    pub samples: u64,
    pub kept: u64,
    pub reasons: BTreeMap<String, u64>,
    pub families: BTreeMap<String, (u64, u64)>,
    pub slot_values: Vec<SlotValueStats>,
    /// The smallest share ratio over all slot values (≥ 0.9: no value lost > 10% of its share).
    pub min_share_ratio: f64,
    pub truth: Option<TruthStats>,
}

/// Builds the report; writes `reports/curate.json`, `curate_scores.png`, `curate_borderline.png`.
pub fn run(run_dir: &Path) -> Result<(CurateReport, PathBuf)> {
    let dir = stage_dir(run_dir, "curate")?;
    let parts = commit::committed_parts(&dir)?;
    if parts.is_empty() {
        return Err(Error::invalid(dir.display().to_string(), "no committed part: run `lightgen curate` first"));
    }
    let pe = |e| Error::polars(&dir, e);
    let scan = |paths: &[PathBuf]| -> Result<LazyFrame> {
        let frames = paths
            .iter()
            .map(|p| {
                LazyFrame::scan_parquet(PlRefPath::try_from_path(p).map_err(pe)?, ScanArgsParquet::default())
                    .map_err(pe)
            })
            .collect::<Result<Vec<_>>>()?;
        concat(frames, UnionArgs::default()).map_err(pe)
    };
    let cur = scan(&parts)?.with_column(col("decision").eq(lit("kept")).cast(DataType::UInt64).alias("is_kept"));
    let reasons = counts(cur.clone(), "reason").map_err(pe)?;
    let fam = cur
        .clone()
        .group_by([col("family")])
        .agg([len().cast(DataType::UInt64).alias("n"), col("is_kept").sum().alias("k")])
        .collect()
        .map_err(pe)?;
    let families = pairs(&fam, "family").map_err(pe)?;
    let samples: u64 = families.values().map(|v| v.0).sum();
    let kept: u64 = families.values().map(|v| v.1).sum();

    // Per slot value: join decisions with the prompts' slot lists.
    let expand = scan(&commit::committed_parts(&stage_dir(run_dir, "expand")?)?)?;
    let slot_cols: Vec<String> = expand
        .clone()
        .collect_schema()
        .map_err(pe)?
        .iter_names()
        .filter(|n| n.starts_with("slot_"))
        .map(|n| n.to_string())
        .collect();
    let joined = cur.clone().select([col("prompt_index"), col("is_kept")]).join(
        expand
            .select(std::iter::once(col("index")).chain(slot_cols.iter().map(|c| col(c.as_str()))).collect::<Vec<_>>()),
        [col("prompt_index")],
        [col("index")],
        JoinArgs::new(JoinType::Left),
    );
    let mut slot_values = Vec::new();
    let opts = ExplodeOptions { empty_as_null: false, keep_nulls: false };
    for c in &slot_cols {
        let df = joined
            .clone()
            .select([col(c.as_str()).alias("v"), col("is_kept")])
            .explode(cols(["v"]), opts)
            .drop_nulls(None)
            .group_by([col("v")])
            .agg([len().cast(DataType::UInt64).alias("n"), col("is_kept").sum().alias("k")])
            .collect()
            .map_err(pe)?;
        let stats = pairs(&df, "v").map_err(pe)?;
        let (all_n, all_k): (u64, u64) = stats.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        for (value, (n, k)) in stats {
            let share_all = n as f64 / all_n.max(1) as f64;
            let share_kept = k as f64 / all_k.max(1) as f64;
            slot_values.push(SlotValueStats {
                slot: c.trim_start_matches("slot_").to_string(),
                value,
                samples: n,
                kept: k,
                pass_rate: k as f64 / n.max(1) as f64,
                share_ratio: if share_all > 0.0 { share_kept / share_all } else { 1.0 },
            });
        }
    }
    let min_share_ratio = slot_values.iter().map(|s| s.share_ratio).fold(f64::INFINITY, f64::min);

    // Truth, scores and borderline images: generate parts are row-aligned with curate parts.
    let gen_dir = stage_dir(run_dir, "generate")?;
    let (mut correct, mut injected, mut kept_correct, mut rejected_injected) = (0u64, 0u64, 0u64, 0u64);
    let mut have_truth = false;
    let mut scores: (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    let mut lowest_kept: Vec<(f32, RgbImage)> = Vec::new();
    let mut highest_rejected: Vec<(f32, RgbImage)> = Vec::new();
    for (k, p) in parts.iter().enumerate() {
        let decisions = crate::pipeline::curate::read_records(p)?;
        let kept_flags = kept_column(p)?;
        let gen = read_part(&gen_dir.join(commit::part_name(k as u64)))?;
        for ((rec, is_kept), sample) in decisions.iter().zip(kept_flags).zip(&gen) {
            if let Some(score) = rec.score {
                if is_kept {
                    scores.0.push(score as f64)
                } else {
                    scores.1.push(score as f64)
                }
                let keep_img = |v: &mut Vec<(f32, RgbImage)>, better: fn(f32, f32) -> bool| {
                    if v.len() < 16 || better(score, v.last().map_or(0.0, |x| x.0)) {
                        if let Some(img) = sample.image.as_deref().and_then(|b| image::load_from_memory(b).ok()) {
                            v.push((score, img.to_rgb8()));
                            v.sort_by(|a, b| if better(1.0, 0.0) { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) });
                            v.truncate(16);
                        }
                    }
                };
                if is_kept {
                    keep_img(&mut lowest_kept, |a, b| a < b);
                } else {
                    keep_img(&mut highest_rejected, |a, b| a > b);
                }
            }
            if let Some(truth) = sample.truth.as_deref().and_then(|t| serde_json::from_str::<Scene>(t).ok()) {
                have_truth = true;
                if truth.imperfection.is_none() {
                    correct += 1;
                    kept_correct += u64::from(is_kept);
                } else {
                    injected += 1;
                    rejected_injected += u64::from(!is_kept);
                }
            }
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let truth = have_truth.then(|| TruthStats {
        precision: ratio(kept_correct, kept_correct + (injected - rejected_injected)),
        correct_kept: ratio(kept_correct, correct),
        failures_rejected: ratio(rejected_injected, injected),
        correct,
        injected,
    });
    let report = CurateReport {
        run_dir: run_dir.display().to_string(),
        samples,
        kept,
        reasons,
        families,
        slot_values,
        min_share_ratio,
        truth,
    };

    let out = run_dir.join("reports");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    commit::write_atomic(&out.join("curate.json"), &serde_json::to_vec_pretty(&report).expect("report serialises"))?;
    let hist = histogram(&scores.0, &scores.1);
    super::chart::bars(
        &out.join("curate_scores.png"),
        "score histogram (share of each group per bin)",
        &["kept", "rejected"],
        &hist,
    )?;
    let sheet: Vec<(RgbImage, bool)> = lowest_kept
        .into_iter()
        .map(|(_, i)| (i, true))
        .chain(highest_rejected.into_iter().map(|(_, i)| (i, false)))
        .collect();
    let path = out.join("curate_borderline.png");
    super::chart::grid(&sheet).save(&path).map_err(|e| Error::Image { path, source: e })?;
    Ok((report, out))
}

fn kept_column(path: &Path) -> Result<Vec<bool>> {
    let f = crate::formats::frame::Frame::read(path, Some(&["decision"]))?;
    Ok(f.str("decision")?.iter().map(|d| d == Some("kept")).collect())
}

/// Ten bins over [0, 1]: each group's share per bin.
fn histogram(kept: &[f64], rejected: &[f64]) -> Vec<(String, Vec<f64>)> {
    let share = |v: &[f64], b: usize| {
        let n = v.iter().filter(|&&x| ((x.clamp(0.0, 1.0) * 10.0) as usize).min(9) == b).count();
        n as f64 / v.len().max(1) as f64
    };
    (0..10)
        .map(|b| {
            (format!("{:.1}-{:.1}", b as f64 / 10.0, (b + 1) as f64 / 10.0), vec![share(kept, b), share(rejected, b)])
        })
        .collect()
}

fn counts(lf: LazyFrame, c: &str) -> PolarsResult<BTreeMap<String, u64>> {
    let df = lf.group_by([col(c)]).agg([len().cast(DataType::UInt64).alias("n")]).collect()?;
    let keys = df.column(c)?.str()?.clone();
    let n = df.column("n")?.u64()?.clone();
    Ok(keys.iter().zip(n.iter()).filter_map(|(k, n)| Some((k?.to_string(), n?))).collect())
}

/// key → (n, k) from a frame with columns key, n, k.
fn pairs(df: &DataFrame, key: &str) -> PolarsResult<BTreeMap<String, (u64, u64)>> {
    let keys = df.column(key)?.str()?.clone();
    let n = df.column("n")?.cast(&DataType::UInt64)?;
    let k = df.column("k")?.cast(&DataType::UInt64)?;
    let (n, k) = (n.u64()?.clone(), k.u64()?.clone());
    Ok(keys
        .iter()
        .zip(n.iter())
        .zip(k.iter())
        .filter_map(|((key, n), k)| Some((key?.to_string(), (n?, k.unwrap_or(0)))))
        .collect())
}

/// The one-screen table.
pub fn table(r: &CurateReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "curated   {} samples, {} kept ({:.2}%)",
        r.samples,
        r.kept,
        100.0 * r.kept as f64 / r.samples.max(1) as f64
    );
    let reasons: Vec<String> = r.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "reasons   {}", reasons.join(", "));
    let _ = writeln!(s, "\n{:<16} {:>9} {:>9} {:>9}", "family", "samples", "kept", "pass");
    for (f, (n, k)) in &r.families {
        let _ = writeln!(s, "{f:<16} {n:>9} {k:>9} {:>8.1}%", 100.0 * *k as f64 / (*n).max(1) as f64);
    }
    if let Some(worst) = r.slot_values.iter().min_by(|a, b| a.share_ratio.total_cmp(&b.share_ratio)) {
        let _ = writeln!(
            s,
            "\nslot values: {} ; smallest share kept: {} = {} at {:.3}× its share before filtering",
            r.slot_values.len(),
            worst.slot,
            worst.value,
            worst.share_ratio
        );
    }
    if let Some(t) = &r.truth {
        let _ = writeln!(
            s,
            "\nagainst the teacher's record ({} correct images, {} with an injected failure)",
            t.correct, t.injected
        );
        let _ = writeln!(s, "  precision of the kept set     {:>7.2}%", t.precision * 100.0);
        let _ = writeln!(s, "  correct images kept           {:>7.2}%", t.correct_kept * 100.0);
        let _ = writeln!(s, "  injected failures rejected    {:>7.2}%", t.failures_rejected * 100.0);
    }
    s
}
