//! `curate`: exact and near-duplicate removal, then a prompt–image score filter. Every sample
//! of the generate stage ends with one decision — kept, or rejected with its reason — in
//! `runs/<name>/curate/part-NNNNN.parquet`, row for row beside the generate part of the same
//! number. Nothing is deleted.
//!
//! Two phases. *Measure* (per part, across cores, resumable): decode, hash, score →
//! `curate/scores/part-NNNNN.parquet`. *Decide* (global, cheap, deterministic): duplicates
//! across the whole run, then the filter policy → the decision parts.

pub mod clip;
pub mod decide;
pub mod hashes;
pub mod score;
pub mod semdedup;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use polars::prelude::*;
use serde::Serialize;

use super::generate::{read_part, Sample};
use crate::config::Plan;
use crate::error::{Error, Result};
use crate::formats::commit::{self, AtomicFile};
use crate::formats::prompt_rows::PromptCursor;
use decide::{Decision, Record};
use hashes::ImageHashes;
use score::{ScoreInput, Scorer};

/// The scorer a config names.
pub fn scorer_from_config(cfg: &crate::config::CurateConfig) -> Result<Box<dyn Scorer>> {
    match cfg.scorer.as_str() {
        "builtin:shapes" => Ok(Box::new(score::ShapesScorer(crate::world::analyze::Analyzer::new()))),
        "clip" => {
            let c = cfg.clip.as_ref().ok_or_else(|| Error::invalid("curate.clip", "missing section"))?;
            Ok(Box::new(clip::ClipScorer::load(c)?))
        }
        other => Err(Error::invalid(
            "curate.scorer",
            format!("unknown scorer \"{other}\"; known: {}", crate::config::SCORERS.join(", ")),
        )),
    }
}

#[derive(Debug, Clone)]
pub struct CurateOptions {
    pub force: bool,
    pub progress: bool,
    pub threads: usize,
    /// A worker's share: measure only these parts and publish each score part; deciding
    /// (which needs every part) is left to `manifest merge`.
    pub share: Option<super::worker::Share>,
}

#[derive(Debug, Serialize)]
pub struct CurateSummary {
    pub run_dir: String,
    pub scorer: String,
    pub samples: u64,
    pub kept: u64,
    pub rejected: u64,
    pub reasons: BTreeMap<String, u64>,
    pub parts: u64,
    pub parts_measured: u64,
    pub images_per_second: f64,
    pub seconds: f64,
}

/// Runs `curate` for a plan.
pub fn run(plan: &Plan, opts: &CurateOptions) -> Result<CurateSummary> {
    let start = Instant::now();
    let cfg = plan.config.curate.as_ref().ok_or_else(|| {
        Error::invalid("config", "no [curate] section: add one to run the curate stage (see configs/shapes.toml)")
    })?;
    let gen_dir = match opts.share {
        Some(_) => super::stage_dir(&plan.run_dir, "generate")?,
        None => super::finished_stage(&plan.run_dir, "generate")?,
    };
    let scorer = scorer_from_config(cfg)?;
    let dir = super::open_stage(plan, "curate", opts.force)?;
    let scores_dir = dir.join("scores");
    std::fs::create_dir_all(&scores_dir).map_err(|e| Error::io(&scores_dir, e))?;
    commit::clean_temporaries(&scores_dir)?;
    let hash = plan.stage_hash("curate").to_string();
    let gen_parts = commit::committed_parts(&gen_dir)?;
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };

    // Measure.
    let todo: Vec<(u64, &std::path::PathBuf)> = match &opts.share {
        Some(share) => gen_parts
            .iter()
            .filter_map(|p| Some((part_number(p)?, p)))
            .filter(|(k, _)| share.parts.contains(k))
            .collect(),
        None => gen_parts.iter().enumerate().map(|(k, p)| (k as u64, p)).collect(),
    };
    let total: u64 = todo.iter().map(|(_, p)| commit::read_stats(p).map(|s| s.rows)).sum::<Result<u64>>()?;
    let pb = crate::progress::bar(total, "curate", "images", opts.progress);
    let (mut measured, mut made) = (0u64, 0u64);
    let measure_start = Instant::now();
    for (k, path) in todo {
        // scores belong to one version of their generate part (a rerun may repair it)
        let source = commit::read_stats(path)?.blake3;
        let done = commit::done_part(&scores_dir, k, &hash).filter(|st| st.extra["source"].as_str() == Some(&source));
        if let Some(st) = done {
            pb.inc(st.rows);
        } else {
            let samples = read_part(path)?;
            let records = measure(&samples, scorer.as_ref(), threads, &pb);
            write_frame(&scores_dir.join(commit::part_name(k)), records_frame(&records, scorer.id(), None))?;
            commit::commit_part(&scores_dir, k, records.len() as u64, &hash, serde_json::json!({ "source": source }))?;
            measured += 1;
            made += records.len() as u64;
        }
        if let Some(share) = &opts.share {
            (share.publish)(&scores_dir, k)?;
        }
    }
    let rate = made as f64 / measure_start.elapsed().as_secs_f64().max(1e-9);
    pb.finish_and_clear();
    if opts.share.is_some() {
        return Ok(CurateSummary {
            run_dir: plan.run_dir.display().to_string(),
            scorer: scorer.id().to_string(),
            samples: made,
            kept: 0,
            rejected: 0,
            reasons: BTreeMap::new(),
            parts: 0,
            parts_measured: measured,
            images_per_second: rate,
            seconds: start.elapsed().as_secs_f64(),
        });
    }

    // Decide, over the whole run.
    let mut records = Vec::new();
    let mut sizes = Vec::new();
    for k in 0..gen_parts.len() as u64 {
        let r = read_records(&scores_dir.join(commit::part_name(k)))?;
        sizes.push(r.len());
        records.extend(r);
    }
    let mut ids = blake3::Hasher::new();
    for k in 0..gen_parts.len() as u64 {
        ids.update(commit::read_stats(&scores_dir.join(commit::part_name(k)))?.blake3.as_bytes());
    }
    let scores_id = ids.finalize().to_hex().to_string();
    let strata = strata(&records, &cfg.filter.stratum, &plan.run_dir)?;
    let decisions = decide::decide(&records, cfg, &strata);
    let mut s = CurateSummary {
        run_dir: plan.run_dir.display().to_string(),
        scorer: scorer.id().to_string(),
        samples: records.len() as u64,
        kept: 0,
        rejected: 0,
        reasons: BTreeMap::new(),
        parts: gen_parts.len() as u64,
        parts_measured: measured,
        images_per_second: rate,
        seconds: 0.0,
    };
    let mut offset = 0;
    for (k, n) in sizes.into_iter().enumerate() {
        let (recs, decs) = (&records[offset..offset + n], &decisions[offset..offset + n]);
        offset += n;
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for d in decs {
            *reasons.entry(d.reason.clone()).or_default() += 1;
        }
        let kept = reasons.get("kept").copied().unwrap_or(0);
        s.kept += kept;
        s.rejected += n as u64 - kept;
        for (r, c) in &reasons {
            *s.reasons.entry(r.clone()).or_default() += c;
        }
        // decisions are global: any changed score part (a repaired image) redoes them all
        let extra = serde_json::json!({ "kept": kept, "reasons": reasons, "scores": scores_id });
        if commit::done_part(&dir, k as u64, &hash).is_none_or(|st| st.extra != extra) {
            write_frame(&dir.join(commit::part_name(k as u64)), records_frame(recs, scorer.id(), Some(decs)))?;
            commit::commit_part(&dir, k as u64, n as u64, &hash, extra)?;
        }
    }
    s.seconds = start.elapsed().as_secs_f64();
    let mut json = serde_json::to_value(&s).expect("summary serialises");
    for k in ["seconds", "images_per_second", "parts_measured"] {
        json[k] = serde_json::Value::Null;
    }
    commit::write_atomic(&dir.join("summary.json"), &serde_json::to_vec_pretty(&json).expect("json"))?;
    Ok(s)
}

/// `part-00042.parquet` → 42.
fn part_number(p: &std::path::Path) -> Option<u64> {
    p.file_name()?.to_str()?.strip_prefix("part-")?.strip_suffix(".parquet")?.parse().ok()
}

/// Decodes, hashes and scores samples across threads, in order.
fn measure(samples: &[Sample], scorer: &dyn Scorer, threads: usize, pb: &indicatif::ProgressBar) -> Vec<Record> {
    super::par::map_chunks(
        samples,
        threads,
        64.max(scorer.batch_size()),
        ImageHashes::default,
        |hasher, chunk| {
            let mut measured: Vec<(Record, Option<RgbImage>)> =
                chunk.iter().map(|s| decode_and_hash(s, hasher)).collect();
            let todo: Vec<usize> = (0..chunk.len()).filter(|&i| measured[i].1.is_some()).collect();
            for batch in todo.chunks(scorer.batch_size().max(1)) {
                let inputs: Vec<ScoreInput<'_>> = batch
                    .iter()
                    .map(|&i| ScoreInput {
                        image: measured[i].1.as_ref().expect("decoded"),
                        prompt: &chunk[i].prompt,
                        spec: chunk[i].spec.as_deref(),
                    })
                    .collect();
                let scored = scorer.score(&inputs);
                drop(inputs);
                for (k, &i) in batch.iter().enumerate() {
                    apply_score(&mut measured[i].0, scored.get(k).cloned());
                }
            }
            measured.into_iter().map(|(r, _)| r).collect()
        },
        |n| pb.inc(n),
    )
}

/// A record with its decoded image, or a record that says why there is none.
fn decode_and_hash(s: &Sample, hasher: &ImageHashes) -> (Record, Option<RgbImage>) {
    let mut r = Record {
        sample_id: s.sample_id.clone(),
        prompt_id: s.prompt_id.clone(),
        prompt_index: s.prompt_index,
        family: s.family.clone(),
        status: "ok".into(),
        error: None,
        width: s.width,
        height: s.height,
        exact: None,
        phash: None,
        dhash: None,
        score: None,
        verdict_pass: None,
        verdict_reason: None,
        embedding: None,
    };
    let Some(bytes) = s.image.as_deref().filter(|_| s.status == "ok") else {
        r.status = "generate_failed".into();
        r.error = s.error.clone();
        return (r, None);
    };
    let img = match image::load_from_memory(bytes) {
        Ok(i) => i.to_rgb8(),
        Err(e) => {
            r.status = "decode_failed".into();
            r.error = Some(e.to_string());
            return (r, None);
        }
    };
    (r.width, r.height) = img.dimensions();
    let h = hasher.hash(&img);
    r.exact = Some(blake3::Hash::from_bytes(h.exact).to_hex().to_string());
    (r.phash, r.dhash) = (Some(h.phash), Some(h.dhash));
    (r, Some(img))
}

fn apply_score(r: &mut Record, scored: Option<std::result::Result<score::Scored, String>>) {
    match scored {
        Some(Ok(sc)) => {
            r.score = Some(sc.score);
            r.embedding = sc.embedding;
            if let Some((pass, reason)) = sc.verdict {
                r.verdict_pass = Some(pass);
                r.verdict_reason = Some(reason);
            }
        }
        Some(Err(e)) => {
            r.status = "score_failed".into();
            r.error = Some(e);
        }
        None => {
            r.status = "score_failed".into();
            r.error = Some("the scorer returned nothing".into());
        }
    }
}

/// Each record's stratum: its family, or the values it took from a slot (`slot:<name>`).
fn strata(records: &[Record], stratum: &str, run_dir: &Path) -> Result<Vec<String>> {
    let Some(slot) = stratum.strip_prefix("slot:") else {
        return Ok(records.iter().map(|r| r.family.clone()).collect());
    };
    let mut prompts = PromptCursor::new(commit::committed_parts(&super::stage_dir(run_dir, "expand")?)?);
    prompts.count()?;
    let mut cache: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        if let Some(s) = cache.get(&r.prompt_index) {
            out.push(s.clone());
            continue;
        }
        let p = prompts.get(r.prompt_index)?;
        let s = p.slots.get(slot).map(|v| v.join("+")).unwrap_or_default();
        cache.insert(r.prompt_index, s.clone());
        out.push(s);
    }
    Ok(out)
}

fn records_frame(recs: &[Record], scorer: &str, decisions: Option<&[Decision]>) -> PolarsResult<DataFrame> {
    let n = recs.len();
    let st = |f: fn(&Record) -> &str| recs.iter().map(f).collect::<Vec<_>>();
    let op = |f: fn(&Record) -> Option<&str>| recs.iter().map(f).collect::<Vec<_>>();
    let mut cols = vec![
        Column::new("sample_id".into(), st(|r| &r.sample_id)),
        Column::new("prompt_id".into(), st(|r| &r.prompt_id)),
        Column::new("prompt_index".into(), recs.iter().map(|r| r.prompt_index).collect::<Vec<_>>()),
        Column::new("family".into(), st(|r| &r.family)),
        Column::new("status".into(), st(|r| &r.status)),
        Column::new("error".into(), op(|r| r.error.as_deref())),
        Column::new("width".into(), recs.iter().map(|r| r.width).collect::<Vec<_>>()),
        Column::new("height".into(), recs.iter().map(|r| r.height).collect::<Vec<_>>()),
        Column::new("exact".into(), op(|r| r.exact.as_deref())),
        Column::new("phash".into(), recs.iter().map(|r| r.phash).collect::<Vec<_>>()),
        Column::new("dhash".into(), recs.iter().map(|r| r.dhash).collect::<Vec<_>>()),
        Column::new("score".into(), recs.iter().map(|r| r.score).collect::<Vec<_>>()),
        Column::new("scorer".into(), vec![scorer; n]),
        Column::new("verdict_pass".into(), recs.iter().map(|r| r.verdict_pass).collect::<Vec<_>>()),
        Column::new("verdict_reason".into(), op(|r| r.verdict_reason.as_deref())),
        // Unit image embeddings (CLIP) as little-endian f32, for SemDeDup.
        recs.iter()
            .map(|r| r.embedding.as_ref().map(|e| e.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
            .collect::<BinaryChunked>()
            .with_name("embedding".into())
            .into_series()
            .into_column(),
    ];
    if let Some(d) = decisions {
        cols.extend([
            Column::new(
                "decision".into(),
                d.iter().map(|x| if x.kept { "kept" } else { "rejected" }).collect::<Vec<_>>(),
            ),
            Column::new("reason".into(), d.iter().map(|x| x.reason.as_str()).collect::<Vec<_>>()),
            Column::new("detail".into(), d.iter().map(|x| x.detail.as_str()).collect::<Vec<_>>()),
            Column::new("dup_of".into(), d.iter().map(|x| x.dup_of.as_deref()).collect::<Vec<_>>()),
            Column::new("distance".into(), d.iter().map(|x| x.distance).collect::<Vec<_>>()),
        ]);
    }
    DataFrame::new(n, cols)
}

fn write_frame(dest: &Path, df: PolarsResult<DataFrame>) -> Result<()> {
    let mut df = df.map_err(|e| Error::polars(dest, e))?;
    let mut file = AtomicFile::create(dest)?;
    let f = file.file().try_clone().map_err(|e| Error::io(dest, e))?;
    ParquetWriter::new(f)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(|e| Error::polars(dest, e))?;
    file.commit()
}

/// Reads a scores or decisions part back into records.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    use crate::formats::frame::{opt_text as opt, text as txt, Frame};
    let f = Frame::read(path, None)?;
    let (sid, pid, fam, status, error, exact, vr) = (
        f.str("sample_id")?,
        f.str("prompt_id")?,
        f.str("family")?,
        f.str("status")?,
        f.str("error")?,
        f.str("exact")?,
        f.str("verdict_reason")?,
    );
    let (pidx, ph, dh) = (f.u64("prompt_index")?, f.u64("phash")?, f.u64("dhash")?);
    let (w, h) = (f.u32("width")?, f.u32("height")?);
    let (score, vp) = (f.f32("score")?, f.bool("verdict_pass")?);
    let emb = f.binary("embedding")?;
    (0..f.df.height())
        .map(|i| {
            Ok(Record {
                sample_id: f.required("sample_id", i, sid.get(i))?.to_string(),
                prompt_id: txt(&pid, i),
                prompt_index: f.required("prompt_index", i, pidx.get(i))?,
                family: txt(&fam, i),
                status: f.required("status", i, status.get(i))?.to_string(),
                error: opt(&error, i),
                width: f.required("width", i, w.get(i))?,
                height: f.required("height", i, h.get(i))?,
                exact: opt(&exact, i),
                phash: ph.get(i),
                dhash: dh.get(i),
                score: score.get(i),
                verdict_pass: vp.get(i),
                verdict_reason: opt(&vr, i),
                embedding: emb
                    .get(i)
                    .map(|b| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()),
            })
        })
        .collect()
}
