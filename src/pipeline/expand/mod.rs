//! `expand`: taxonomy → diverse, deduplicated prompts in Parquet parts
//! (`runs/<name>/expand/part-NNNNN.parquet`). Deterministic for a seed; a rerun regenerates
//! the stream (cheap) and rewrites only the parts whose done-marker is missing or stale.

pub mod generator;
pub mod rows;
pub mod sampler;
pub mod stats;

use std::collections::BTreeMap;
use std::time::Instant;

use polars::io::parquet::write::BatchedWriter as ParquetBatchedWriterOf;
use polars::prelude::*;

type ParquetBatchedWriter = ParquetBatchedWriterOf<std::fs::File>;
use serde::Serialize;

use crate::config::Plan;
use crate::error::{Error, Result};
use crate::formats::commit::{self, AtomicFile};
use generator::{Generator, Prompt};

/// How to run the stage (runtime choices, not data).
#[derive(Debug, Clone, Default)]
pub struct ExpandOptions {
    /// Discard an existing stage folder made by another config.
    pub force: bool,
    pub progress: bool,
}

/// What `expand` did: printed at the end and written as `expand/summary.json`.
#[derive(Debug, Serialize)]
pub struct ExpandSummary {
    pub run_dir: String,
    pub taxonomy: String,
    pub requested: u64,
    pub produced: u64,
    /// Distinct prompts the taxonomy can produce (sum of template capacities).
    pub capacity: f64,
    /// True when `requested` exceeded what the taxonomy can produce.
    pub capped: bool,
    pub parts: u64,
    pub parts_reused: u64,
    /// Draws dropped because their text had been produced already.
    pub duplicates_dropped: u64,
    pub per_family: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Runs `expand` for a plan.
pub fn run(plan: &Plan, opts: &ExpandOptions) -> Result<ExpandSummary> {
    let start = Instant::now();
    let dir = super::open_stage(plan, "expand", opts.force)?;
    let tax = &plan.taxonomy;
    let cfg = &plan.config.prompts;
    let mut generator = Generator::new(tax, cfg.count, plan.config.run.seed);
    let target = generator.target();
    let capped = target < cfg.count;
    if capped {
        tracing::warn!(
            "{}: asked for {} prompts, but taxonomy \"{}\" can produce only {} distinct ones; stopping there",
            tax.source,
            cfg.count,
            tax.name,
            target
        );
    }
    let pb = crate::progress::bar(target, "expand", "prompts", opts.progress);
    let (mut part, mut reused, mut emitted) = (0u64, 0u64, 0u64);
    let mut batch: Vec<Prompt> = Vec::with_capacity(cfg.row_group_size as usize);
    let mut per_family: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let done = commit::done_part(&dir, part, plan.stage_hash("expand")).is_some();
        let mut writer: Option<(AtomicFile, Option<ParquetBatchedWriter>)> = None;
        let mut rows = 0u64;
        let mut fam_counts: BTreeMap<String, u64> = BTreeMap::new();
        while rows < cfg.part_size {
            let Some(p) = generator.next() else { break };
            rows += 1;
            *fam_counts.entry(tax.families[tax.templates[p.template].family].name.clone()).or_default() += 1;
            if done {
                continue; // regenerate to keep the stream's state, write nothing
            }
            batch.push(p);
            if batch.len() as u64 == cfg.row_group_size {
                write_batch(&dir, part, tax, &mut batch, &mut writer, cfg.row_group_size)?;
            }
            if rows % 4096 == 0 {
                pb.set_position(emitted + rows);
            }
        }
        if rows == 0 {
            break;
        }
        emitted += rows;
        pb.set_position(emitted);
        for (k, v) in &fam_counts {
            *per_family.entry(k.clone()).or_default() += v;
        }
        if done {
            reused += 1;
        } else {
            write_batch(&dir, part, tax, &mut batch, &mut writer, cfg.row_group_size)?;
            let (file, bw) = writer.take().expect("a part with rows has a writer");
            let path = file.path().to_path_buf();
            bw.expect("writer was opened").finish().map_err(|e| Error::polars(&path, e))?;
            file.commit()?;
            commit::commit_part(
                &dir,
                part,
                rows,
                plan.stage_hash("expand"),
                serde_json::json!({ "families": fam_counts }),
            )?;
        }
        part += 1;
    }
    pb.finish_and_clear();
    if cfg.write_geneval {
        export_geneval(&dir)?;
    }
    let summary = ExpandSummary {
        run_dir: plan.run_dir.display().to_string(),
        taxonomy: format!("{}@{} ({})", tax.name, tax.version, tax.source),
        requested: cfg.count,
        produced: emitted,
        capacity: tax.total_capacity(),
        capped,
        parts: part,
        parts_reused: reused,
        duplicates_dropped: generator.duplicates,
        per_family,
        seconds: start.elapsed().as_secs_f64(),
    };
    let mut json = serde_json::to_value(&summary).expect("summary serialises");
    json["seconds"] = serde_json::Value::Null; // keep the file identical across reruns
    commit::write_atomic(&dir.join("summary.json"), &serde_json::to_vec_pretty(&json).expect("json"))?;
    Ok(summary)
}

/// Writes the buffered prompts as one row group, opening the part's writer on first use.
fn write_batch(
    dir: &std::path::Path,
    part: u64,
    tax: &crate::taxonomy::Taxonomy,
    batch: &mut Vec<Prompt>,
    writer: &mut Option<(AtomicFile, Option<ParquetBatchedWriter>)>,
    row_group: u64,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let dest = dir.join(commit::part_name(part));
    let df = rows::frame(tax, batch).map_err(|e| Error::polars(&dest, e))?;
    batch.clear();
    if writer.is_none() {
        *writer = Some((AtomicFile::create(&dest)?, None));
    }
    let (file, bw) = writer.as_mut().expect("just set");
    if bw.is_none() {
        let f = file.file().try_clone().map_err(|e| Error::io(file.path(), e))?;
        let w = ParquetWriter::new(f)
            .with_compression(ParquetCompression::Zstd(None))
            .with_row_group_size(Some(row_group as usize))
            .batched(df.schema())
            .map_err(|e| Error::polars(&dest, e))?;
        *bw = Some(w);
    }
    bw.as_mut().expect("just set").write_batch(&df).map_err(|e| Error::polars(&dest, e))
}

/// Writes GenEval's `evaluation_metadata.jsonl` (one spec per line) and
/// `generation_prompts.txt` beside the parts, reading the parts back one at a time.
fn export_geneval(dir: &std::path::Path) -> Result<()> {
    let mut meta = String::new();
    let mut prompts = String::new();
    for path in commit::committed_parts(dir)? {
        let f = crate::formats::frame::Frame::read(&path, Some(&["prompt", "spec"]))?;
        let (texts, specs) = (f.str("prompt")?, f.str("spec")?);
        for (t, s) in texts.iter().zip(specs.iter()) {
            if let (Some(t), Some(s)) = (t, s) {
                meta.push_str(s);
                meta.push('\n');
                prompts.push_str(t);
                prompts.push('\n');
            }
        }
    }
    commit::write_atomic(&dir.join("evaluation_metadata.jsonl"), meta.as_bytes())?;
    commit::write_atomic(&dir.join("generation_prompts.txt"), prompts.as_bytes())
}
