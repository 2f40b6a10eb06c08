//! `encode`: kept images → token shards the trainer memory-maps, prompts → text features.
//! Prompts are split first: a share of them (by prompt id) is held out for evaluation and
//! none of their images reach a shard. Shards are `encode/shard-NNNNN.safetensors` with a
//! Parquet index beside each (`shard-NNNNN.parquet`: row → sample, prompt); a
//! `shard-NNNNN_stats.json` marker, written last, records both files' hashes.

pub mod crop;
pub mod shards;
pub mod text;
pub mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::shard::{self, hash_file, write_atomic, AtomicFile};
use crate::config::{EncodeConfig, Plan};
use crate::error::{Error, Result};
use shards::ShardData;
use text::{TextSpec, Vocab};
use tokenizer::{ImageTokenizer, LatentSpec, Pixels};

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub force: bool,
    pub progress: bool,
    pub threads: usize,
}

/// A written shard, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShardEntry {
    /// Relative to the manifest's folder.
    pub path: String,
    pub index: String,
    pub rows: u64,
    pub bytes: u64,
    pub blake3: String,
    pub index_bytes: u64,
    pub index_blake3: String,
    /// In a subset manifest: the rows of this shard it uses (else all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<RowSelection>,
}

/// A file of little-endian u32 row indices (ascending) into one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RowSelection {
    pub path: String,
    pub rows: u64,
    pub blake3: String,
}

/// A held-out prompt (evaluation split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub prompt_id: String,
    pub prompt: String,
    pub family: String,
    pub spec: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EncodeSummary {
    pub run_dir: String,
    pub kept: u64,
    pub train_samples: u64,
    pub held_out_prompts: u64,
    pub held_out_samples: u64,
    pub shards: u64,
    pub shards_reused: u64,
    pub images_per_second: f64,
    pub seconds: f64,
}

/// `encode/spec.json`: the latent and text specs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncodeSpec {
    pub latent: LatentSpec,
    pub text: TextSpec,
}

/// Whether a prompt is held out: a hash of (seed, prompt id) below the share.
pub fn is_held_out(seed: u64, prompt_id: &str, share: f64) -> bool {
    let h = blake3::hash(format!("held-out:{seed}:{prompt_id}").as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    (x as f64 / u64::MAX as f64) < share
}

/// Runs `encode` for a plan.
pub fn run(plan: &Plan, opts: &EncodeOptions) -> Result<EncodeSummary> {
    let start = Instant::now();
    let cfg = plan.config.encode.as_ref().ok_or_else(|| {
        Error::invalid("config", "no [encode] section: add one to run the encode stage (see configs/shapes.toml)")
    })?;
    let cur_dir = super::finished_stage(&plan.run_dir, "curate")?;
    let gen_dir = super::stage_dir(&plan.run_dir, "generate")?;
    let dir = super::open_stage(plan, "encode", opts.force)?;
    let hash = plan.stage_hash("encode").to_string();
    let seed = plan.config.run.seed;
    let tokenizer =
        Pixels::new(cfg.resolution, cfg.patch, &cfg.dtype, cfg.flip).map_err(|m| Error::invalid("encode", m))?;
    let vocab = Vocab::from_taxonomy(&plan.taxonomy);
    let vocab_json = serde_json::to_vec_pretty(&vocab).expect("vocab serialises");
    write_atomic(&dir.join("vocab.json"), &vocab_json)?;
    let spec = EncodeSpec {
        latent: tokenizer.spec().clone(),
        text: TextSpec {
            encoder: "vocab".into(),
            dim: vocab.len(),
            max_len: cfg.max_text_len,
            dtype: "u32".into(),
            vocab_hash: Some(blake3::hash(&vocab_json).to_hex().to_string()),
        },
    };
    write_atomic(&dir.join("spec.json"), &serde_json::to_vec_pretty(&spec).expect("spec serialises"))?;

    // The split, over every prompt, and the training samples in order.
    let held = held_out_prompts(&plan.run_dir, seed, cfg.held_out)?;
    let mut held_lines = String::new();
    for h in &held {
        held_lines.push_str(&serde_json::to_string(h).expect("held-out serialises"));
        held_lines.push('\n');
    }
    write_atomic(&dir.join("held_out.jsonl"), held_lines.as_bytes())?;
    let held_ids: std::collections::HashSet<&str> = held.iter().map(|h| h.prompt_id.as_str()).collect();
    let (train, kept, held_samples) = train_samples(&cur_dir, &held_ids)?;

    let n_shards = (train.len() as u64).div_ceil(cfg.shard_size);
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    let pb = crate::progress::bar(train.len() as u64, "encode", "images", opts.progress);
    let (mut reused, mut made) = (0u64, 0u64);
    let made_start = Instant::now();
    let mut gen_cache: Option<(u64, Vec<super::generate::Sample>)> = None;
    for k in 0..n_shards {
        let lo = (k * cfg.shard_size) as usize;
        let hi = (((k + 1) * cfg.shard_size) as usize).min(train.len());
        if done_shard(&dir, k, &hash).is_some() {
            reused += 1;
            pb.inc((hi - lo) as u64);
            continue;
        }
        // The samples of this shard (they come in generate-part order).
        let mut batch = Vec::with_capacity(hi - lo);
        for &(part, row) in &train[lo..hi] {
            if gen_cache.as_ref().is_none_or(|(p, _)| *p != part) {
                gen_cache = Some((part, super::generate::read_part(&gen_dir.join(shard::part_name(part)))?));
            }
            let rows = &gen_cache.as_ref().expect("loaded").1;
            batch.push(rows.get(row).cloned().ok_or_else(|| {
                Error::invalid(gen_dir.display().to_string(), format!("part {part} has no row {row} that curate kept"))
            })?);
        }
        let data = encode_batch(&batch, &tokenizer, &vocab, cfg, threads, &pb)?;
        write_shard(&dir, k, &batch, &data, cfg, &hash)?;
        made += batch.len() as u64;
    }
    pb.finish_and_clear();
    let s = EncodeSummary {
        run_dir: plan.run_dir.display().to_string(),
        kept,
        train_samples: train.len() as u64,
        held_out_prompts: held.len() as u64,
        held_out_samples: held_samples,
        shards: n_shards,
        shards_reused: reused,
        images_per_second: made as f64 / made_start.elapsed().as_secs_f64().max(1e-9),
        seconds: start.elapsed().as_secs_f64(),
    };
    let mut json = serde_json::to_value(&s).expect("summary serialises");
    for k in ["seconds", "images_per_second", "shards_reused"] {
        json[k] = serde_json::Value::Null;
    }
    write_atomic(&dir.join("summary.json"), &serde_json::to_vec_pretty(&json).expect("json"))?;
    Ok(s)
}

/// Prompts held out, in prompt order, read from the expand parts.
fn held_out_prompts(run_dir: &Path, seed: u64, share: f64) -> Result<Vec<HeldOut>> {
    let mut out = Vec::new();
    for p in shard::committed_parts(&super::stage_dir(run_dir, "expand")?)? {
        for row in super::prompts::read_prompts(&p)? {
            if is_held_out(seed, &row.prompt_id, share) {
                out.push(HeldOut { prompt_id: row.prompt_id, prompt: row.text, family: row.family, spec: row.spec });
            }
        }
    }
    Ok(out)
}

/// (generate part, row) of every kept sample whose prompt is not held out; and counts.
fn train_samples(cur_dir: &Path, held: &std::collections::HashSet<&str>) -> Result<(Vec<(u64, usize)>, u64, u64)> {
    let (mut train, mut kept, mut held_samples) = (Vec::new(), 0u64, 0u64);
    for (k, p) in shard::committed_parts(cur_dir)?.iter().enumerate() {
        let f = super::frame::Frame::read(p, Some(&["prompt_id", "decision"]))?;
        let (ids, dec) = (f.str("prompt_id")?, f.str("decision")?);
        for (row, (id, d)) in ids.iter().zip(dec.iter()).enumerate() {
            if d != Some("kept") {
                continue;
            }
            kept += 1;
            if held.contains(id.unwrap_or_default()) {
                held_samples += 1;
            } else {
                train.push((k as u64, row));
            }
        }
    }
    Ok((train, kept, held_samples))
}

/// Decodes, crops and tokenizes a shard's samples across threads, in order.
fn encode_batch(
    batch: &[super::generate::Sample],
    tok: &Pixels,
    vocab: &Vocab,
    cfg: &EncodeConfig,
    threads: usize,
    pb: &indicatif::ProgressBar,
) -> Result<ShardData> {
    let spec = tok.spec();
    let (tokens, dim) = ((spec.grid * spec.grid) as usize, spec.token_dim as usize);
    let results = super::par::map_chunks(
        batch,
        threads,
        16,
        || (),
        |_, chunk| {
            chunk
                .iter()
                .map(|s| -> std::result::Result<(Vec<f32>, Option<Vec<f32>>), String> {
                    let bytes = s.image.as_deref().ok_or("a kept sample has no image")?;
                    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?.to_rgb8();
                    let img = crop::center_crop(&img, cfg.resolution)?;
                    let flip = cfg.flip.then(|| tok.encode(&image::imageops::flip_horizontal(&img)));
                    Ok((tok.encode(&img), flip))
                })
                .collect()
        },
        |n| pb.inc(n),
    );
    let mut d = ShardData {
        rows: batch.len(),
        tokens,
        token_dim: dim,
        text_len_max: cfg.max_text_len as usize,
        latents: Vec::with_capacity(batch.len() * tokens * dim),
        latents_flip: cfg.flip.then(|| Vec::with_capacity(batch.len() * tokens * dim)),
        text_ids: Vec::with_capacity(batch.len() * cfg.max_text_len as usize),
        text_len: Vec::with_capacity(batch.len()),
    };
    for (r, s) in results.into_iter().zip(batch) {
        let (lat, flip) =
            r.map_err(|m| Error::invalid(s.sample_id.clone(), format!("cannot encode a kept image: {m}")))?;
        d.latents.extend(lat);
        if let (Some(all), Some(f)) = (d.latents_flip.as_mut(), flip) {
            all.extend(f);
        }
        let (ids, n) = vocab.encode(&s.prompt, cfg.max_text_len as usize);
        d.text_ids.extend(ids);
        d.text_len.push(n);
    }
    Ok(d)
}

pub fn shard_name(k: u64) -> String {
    format!("shard-{k:05}.safetensors")
}

pub fn index_name(k: u64) -> String {
    format!("shard-{k:05}.parquet")
}

fn marker_name(k: u64) -> String {
    format!("shard-{k:05}_stats.json")
}

#[derive(Debug, Serialize, Deserialize)]
struct ShardMarker {
    plan: String,
    entry: ShardEntry,
}

/// Writes shard k (tensors, then index, then the marker).
fn write_shard(
    dir: &Path,
    k: u64,
    batch: &[super::generate::Sample],
    d: &ShardData,
    cfg: &EncodeConfig,
    plan: &str,
) -> Result<()> {
    let meta = HashMap::from([("format".to_string(), "lightgen-shard-1".to_string())]);
    let bytes = shards::serialize(d, &cfg.dtype, meta)?;
    let path = dir.join(shard_name(k));
    write_atomic(&path, &bytes)?;
    let index = dir.join(index_name(k));
    let mut df = DataFrame::new(
        batch.len(),
        vec![
            Column::new("row".into(), (0..batch.len() as u32).collect::<Vec<_>>()),
            Column::new("sample_id".into(), batch.iter().map(|s| s.sample_id.as_str()).collect::<Vec<_>>()),
            Column::new("prompt_id".into(), batch.iter().map(|s| s.prompt_id.as_str()).collect::<Vec<_>>()),
            Column::new("prompt".into(), batch.iter().map(|s| s.prompt.as_str()).collect::<Vec<_>>()),
            Column::new("family".into(), batch.iter().map(|s| s.family.as_str()).collect::<Vec<_>>()),
        ],
    )
    .map_err(|e| Error::polars(&index, e))?;
    let mut file = AtomicFile::create(&index)?;
    let f = file.file().try_clone().map_err(|e| Error::io(&index, e))?;
    ParquetWriter::new(f).finish(&mut df).map_err(|e| Error::polars(&index, e))?;
    file.commit()?;
    let (ih, ib) = hash_file(&index).map_err(|e| Error::io(&index, e))?;
    let entry = ShardEntry {
        path: format!("encode/{}", shard_name(k)),
        index: format!("encode/{}", index_name(k)),
        rows: batch.len() as u64,
        bytes: bytes.len() as u64,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
        index_bytes: ib,
        index_blake3: ih,
        selection: None,
    };
    let marker = ShardMarker { plan: plan.to_string(), entry };
    write_atomic(&dir.join(marker_name(k)), &serde_json::to_vec_pretty(&marker).expect("marker serialises"))
}

/// Shard k's entry if it is done: marker of this plan, both files matching it.
fn done_shard(dir: &Path, k: u64, plan: &str) -> Option<ShardEntry> {
    let m: ShardMarker = serde_json::from_slice(&std::fs::read(dir.join(marker_name(k))).ok()?).ok()?;
    if m.plan != plan {
        return None;
    }
    let (h, b) = hash_file(&dir.join(shard_name(k))).ok()?;
    let (ih, ib) = hash_file(&dir.join(index_name(k))).ok()?;
    (h == m.entry.blake3 && b == m.entry.bytes && ih == m.entry.index_blake3 && ib == m.entry.index_bytes)
        .then_some(m.entry)
}

/// Every committed shard's entry, in order (for the manifest).
pub fn committed_shards(dir: &Path, plan: &str) -> Result<Vec<ShardEntry>> {
    let mut out = Vec::new();
    for k in 0.. {
        if !dir.join(marker_name(k)).exists() {
            break;
        }
        out.push(done_shard(dir, k, plan).ok_or_else(|| {
            Error::invalid(
                dir.join(shard_name(k)).display().to_string(),
                "shard does not match its marker: rerun `lightgen encode`",
            )
        })?);
    }
    Ok(out)
}

/// The folder holding shards of a run (`<run>/encode`).
pub fn dir_of(run_dir: &Path) -> PathBuf {
    run_dir.join("encode")
}

/// Reasons counts from curate parts (for the manifest).
pub fn reject_counts(cur_dir: &Path) -> Result<BTreeMap<String, u64>> {
    let summary = cur_dir.join("summary.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).map_err(|e| Error::io(&summary, e))?)
        .map_err(|e| Error::invalid(summary.display().to_string(), e.to_string()))?;
    Ok(v["reasons"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default())
}
