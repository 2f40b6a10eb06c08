//! `lightgen report generate <run>`: what the teacher made, and — for the shapes world — how
//! well the analyzer (the curation filter to come) sees the teacher's injected failures,
//! measured against the ground-truth record. Table, `reports/generate.json`, and an image grid.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::commit;
use crate::pipeline::generate::{read_part, Sample};
use crate::pipeline::stage_dir;
use crate::world::analyze::{agrees, Analyzer};
use crate::world::{Scene, Spec};

/// Analyzer figures against the teacher's record.
#[derive(Debug, Default, Serialize)]
pub struct FilterStats {
    /// Images judged (ok samples with a spec and a ground-truth record).
    pub judged: u64,
    /// Images the teacher drew correctly / with an injected failure.
    pub correct: u64,
    pub injected: u64,
    /// Of the injected failures, the share the analyzer rejects (recall of the filter).
    pub recall: f64,
    /// Of the images it accepts, the share that are truly correct (precision of the kept set).
    pub precision: f64,
    /// Of the correct images, the share it wrongly rejects.
    pub false_reject_rate: f64,
    /// On correct images: detections equal the drawn scene (class and colour of every object).
    pub agreement: f64,
    /// Recall per failure kind.
    pub recall_by_kind: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct GenerateReport {
    pub run_dir: String,
    pub samples: u64,
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub per_family: BTreeMap<String, u64>,
    pub mean_gen_ms: f64,
    pub filter: Option<FilterStats>,
}

struct Judged {
    injected: Option<String>,
    accepted: bool,
    agrees: bool,
}

/// Builds the report, writes `reports/generate.json` and `reports/generate_grid.png`.
pub fn run(run_dir: &Path) -> Result<(GenerateReport, PathBuf)> {
    let dir = stage_dir(run_dir, "generate")?;
    let parts = commit::committed_parts(&dir)?;
    if parts.is_empty() {
        return Err(Error::invalid(dir.display().to_string(), "no committed part: run `lightgen generate` first"));
    }
    let mut r = GenerateReport {
        run_dir: run_dir.display().to_string(),
        samples: 0,
        ok: 0,
        failed: 0,
        errors: BTreeMap::new(),
        per_family: BTreeMap::new(),
        mean_gen_ms: 0.0,
        filter: None,
    };
    let mut judged: Vec<Judged> = Vec::new();
    let mut grid: Vec<(RgbImage, bool)> = Vec::new();
    let mut ms = 0.0;
    for p in &parts {
        let samples = read_part(p)?;
        for s in &samples {
            r.samples += 1;
            ms += s.gen_ms as f64;
            *r.per_family.entry(s.family.clone()).or_default() += 1;
            if s.status == "ok" {
                r.ok += 1;
            } else {
                r.failed += 1;
                *r.errors.entry(s.error.clone().unwrap_or_default()).or_default() += 1;
            }
        }
        let results = judge_all(&samples);
        for (s, j) in samples.iter().zip(results) {
            if let Some((j, img)) = j {
                if grid.len() < 64 {
                    grid.push((img, j.accepted));
                }
                judged.push(j);
            } else if grid.len() < 64 {
                if let Some(img) = s.image.as_deref().and_then(|b| image::load_from_memory(b).ok()) {
                    grid.push((img.to_rgb8(), true));
                }
            }
        }
    }
    r.mean_gen_ms = ms / r.samples.max(1) as f64;
    if !judged.is_empty() {
        r.filter = Some(filter_stats(&judged));
    }
    let out = run_dir.join("reports");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    commit::write_atomic(&out.join("generate.json"), &serde_json::to_vec_pretty(&r).expect("report serialises"))?;
    let grid_path = out.join("generate_grid.png");
    super::chart::grid(&grid.iter().map(|(i, ok)| (i.clone(), *ok)).collect::<Vec<_>>())
        .save(&grid_path)
        .map_err(|e| Error::Image { path: grid_path, source: e })?;
    Ok((r, out))
}

/// Judges every ok sample that has a spec and a ground-truth record, across cores.
fn judge_all(samples: &[Sample]) -> Vec<Option<(Judged, RgbImage)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = samples.len().div_ceil(threads).max(1);
    let analyzer = Analyzer::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .map(|c| scope.spawn(move || c.iter().map(|s| judge_one(&analyzer, s)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn judge_one(analyzer: &Analyzer, s: &Sample) -> Option<(Judged, RgbImage)> {
    let img = image::load_from_memory(s.image.as_deref()?).ok()?.to_rgb8();
    let spec: Spec = serde_json::from_str(s.spec.as_deref()?).ok()?;
    let truth: Scene = serde_json::from_str(s.truth.as_deref()?).ok()?;
    let j = analyzer.judge(&img, &spec);
    let judged = Judged {
        injected: truth.imperfection.clone(),
        accepted: j.score >= 1.0,
        agrees: agrees(&j.detections, &truth.objects),
    };
    Some((judged, img))
}

fn filter_stats(judged: &[Judged]) -> FilterStats {
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let bad: Vec<&Judged> = judged.iter().filter(|j| j.injected.is_some()).collect();
    let good: Vec<&Judged> = judged.iter().filter(|j| j.injected.is_none()).collect();
    let accepted: Vec<&Judged> = judged.iter().filter(|j| j.accepted).collect();
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for j in &bad {
        let e = kinds.entry(j.injected.clone().unwrap_or_default()).or_default();
        e.1 += 1;
        e.0 += usize::from(!j.accepted);
    }
    FilterStats {
        judged: judged.len() as u64,
        correct: good.len() as u64,
        injected: bad.len() as u64,
        recall: ratio(bad.iter().filter(|j| !j.accepted).count(), bad.len()),
        precision: ratio(accepted.iter().filter(|j| j.injected.is_none()).count(), accepted.len()),
        false_reject_rate: 1.0 - ratio(good.iter().filter(|j| j.accepted).count(), good.len()),
        agreement: ratio(good.iter().filter(|j| j.agrees).count(), good.len()),
        recall_by_kind: kinds.into_iter().map(|(k, (c, n))| (k, ratio(c, n))).collect(),
    }
}

/// The one-screen table.
pub fn table(r: &GenerateReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "samples   {} ({} ok, {} failed), mean {:.2} ms per image",
        r.samples, r.ok, r.failed, r.mean_gen_ms
    );
    let fams: Vec<String> = r.per_family.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "families  {}", fams.join(", "));
    for (e, n) in &r.errors {
        let _ = writeln!(s, "failed    {n} × {e}");
    }
    if let Some(f) = &r.filter {
        let _ = writeln!(
            s,
            "\nanalyzer vs the teacher's record ({} images: {} correct, {} with an injected failure)",
            f.judged, f.correct, f.injected
        );
        let _ = writeln!(s, "  agreement on correct images  {:>7.2}%", f.agreement * 100.0);
        let _ = writeln!(s, "  recall (failures caught)     {:>7.2}%", f.recall * 100.0);
        let _ = writeln!(s, "  precision of accepted images {:>7.2}%", f.precision * 100.0);
        let _ = writeln!(s, "  correct images rejected      {:>7.2}%", f.false_reject_rate * 100.0);
        for (k, v) in &f.recall_by_kind {
            let _ = writeln!(s, "  caught {k:<12} {:>7.2}%", v * 100.0);
        }
    }
    s
}
