//! `encode`: kept images → token shards the trainer memory-maps, prompts → text features.
//! Prompts are split first: a share of them (by prompt id) is held out for evaluation and
//! none of their images reach a shard. Shards are `encode/shard-NNNNN.safetensors` with a
//! Parquet index beside each (`shard-NNNNN.parquet`: row → sample, prompt); a
//! `shard-NNNNN_stats.json` marker, written last, records both files' hashes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{EncodeConfig, LatentScale, Plan};
use crate::error::{Error, Result};
use crate::formats::commit::{self, hash_file, write_atomic, AtomicFile};
use crate::formats::crop;
use crate::formats::manifest::ShardEntry;
use crate::formats::shards::{self, ShardData};
use crate::formats::t5::T5;
use crate::formats::text::{TextSpec, Vocab};
use crate::formats::tokenizer::{ImageTokenizer, LatentSpec, Pixels};
use crate::formats::vae::Vae;

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub force: bool,
    pub progress: bool,
    pub threads: usize,
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
    let tokenizer: Box<dyn ImageTokenizer> = match (cfg.tokenizer.as_str(), &cfg.vae) {
        ("vae", Some(v)) => {
            let mut vae = Vae::load(v, cfg.resolution, cfg.patch, &cfg.dtype, cfg.flip)
                .map_err(|m| Error::invalid("encode.vae", m))?;
            if matches!(v.scale, Some(LatentScale::Auto(_))) {
                let sample = load_samples(&train[..train.len().min(AUTO_SCALE_SAMPLES)], &gen_dir, &mut None)?;
                let scale = measure_scale(&vae, &sample, cfg)?;
                vae.set_scale(scale);
            }
            Box::new(vae)
        }
        _ => Box::new(
            Pixels::new(cfg.resolution, cfg.patch, &cfg.dtype, cfg.flip).map_err(|m| Error::invalid("encode", m))?,
        ),
    };
    let vocab = Vocab::from_taxonomy(&plan.taxonomy);
    let vocab_json = serde_json::to_vec_pretty(&vocab).expect("vocab serialises");
    write_atomic(&dir.join("vocab.json"), &vocab_json)?;
    let t5 = match (cfg.text.as_str(), &cfg.t5) {
        ("t5", Some(t)) => Some(T5::load(t, cfg.max_text_len as usize).map_err(|m| Error::invalid("encode.t5", m))?),
        _ => None,
    };
    let text = match (&t5, &cfg.t5) {
        (Some(t), Some(c)) => TextSpec {
            encoder: "t5".into(),
            dim: t.dim as u32,
            max_len: cfg.max_text_len,
            dtype: c.dtype.clone(),
            vocab_hash: None,
            model: Some(t.id.clone()),
        },
        _ => TextSpec {
            encoder: "vocab".into(),
            dim: vocab.len(),
            max_len: cfg.max_text_len,
            dtype: "u32".into(),
            vocab_hash: Some(blake3::hash(&vocab_json).to_hex().to_string()),
            model: None,
        },
    };
    let spec = EncodeSpec { latent: tokenizer.spec().clone(), text };
    write_atomic(&dir.join("spec.json"), &serde_json::to_vec_pretty(&spec).expect("spec serialises"))?;

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
        let batch = load_samples(&train[lo..hi], &gen_dir, &mut gen_cache)?;
        let mut data = encode_batch(&batch, tokenizer.as_ref(), &vocab, cfg, threads, &pb)?;
        if let (Some(t), Some(c)) = (&t5, &cfg.t5) {
            add_t5(&mut data, &batch, t, &c.dtype)?;
        }
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
    for p in commit::committed_parts(&super::stage_dir(run_dir, "expand")?)? {
        for row in crate::formats::prompt_rows::read_prompts(&p)? {
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
    for (k, p) in commit::committed_parts(cur_dir)?.iter().enumerate() {
        let f = crate::formats::frame::Frame::read(p, Some(&["prompt_id", "decision"]))?;
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

/// T5 ids (replacing the vocabulary ids) and features once per unique prompt of the shard.
fn add_t5(d: &mut ShardData, batch: &[super::generate::Sample], t5: &T5, dtype: &str) -> Result<()> {
    let mut unique: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut row_prompt = Vec::with_capacity(batch.len());
    d.text_ids.clear();
    d.text_len.clear();
    for s in batch {
        let p = *index.entry(s.prompt.as_str()).or_insert_with(|| {
            unique.push(s.prompt.as_str());
            unique.len() as u32 - 1
        });
        row_prompt.push(p);
        let mut ids = t5.ids(&s.prompt).map_err(|m| Error::invalid(s.sample_id.clone(), m))?;
        d.text_len.push(ids.len() as u32);
        ids.resize(d.text_len_max, 0);
        d.text_ids.extend(ids);
    }
    let (mut offsets, mut values) = (vec![0u32], Vec::new());
    for chunk in unique.chunks(t5.batch.max(1)) {
        for f in t5.features(chunk).map_err(|m| Error::invalid("encode.t5", m))? {
            offsets.push(offsets.last().copied().unwrap_or(0) + (f.len() / t5.dim) as u32);
            values.extend(f);
        }
    }
    d.text_features = Some(shards::TextFeatures { dim: t5.dim, dtype: dtype.into(), row_prompt, offsets, values });
    Ok(())
}

/// How many training images `scale = "auto"` measures.
const AUTO_SCALE_SAMPLES: usize = 256;

/// The generate rows of `picks` ((part, row), in part order), reading each part once.
fn load_samples(
    picks: &[(u64, usize)],
    gen_dir: &Path,
    cache: &mut Option<(u64, Vec<super::generate::Sample>)>,
) -> Result<Vec<super::generate::Sample>> {
    let mut batch = Vec::with_capacity(picks.len());
    for &(part, row) in picks {
        if cache.as_ref().is_none_or(|(p, _)| *p != part) {
            *cache = Some((part, super::generate::read_part(&gen_dir.join(commit::part_name(part)))?));
        }
        let rows = &cache.as_ref().expect("loaded").1;
        batch.push(rows.get(row).cloned().ok_or_else(|| {
            Error::invalid(gen_dir.display().to_string(), format!("part {part} has no row {row} that curate kept"))
        })?);
    }
    Ok(batch)
}

/// 1 / std of the latent means (after the shift) over `samples`: the `scale = "auto"` rule.
fn measure_scale(vae: &Vae, samples: &[super::generate::Sample], cfg: &EncodeConfig) -> Result<f32> {
    let mut imgs = Vec::with_capacity(samples.len());
    for s in samples {
        let bytes =
            s.image.as_deref().ok_or_else(|| Error::invalid(s.sample_id.clone(), "a kept sample has no image"))?;
        let img = image::load_from_memory(bytes).map_err(|e| Error::invalid(s.sample_id.clone(), e.to_string()))?;
        imgs.push(
            crop::center_crop(&img.to_rgb8(), cfg.resolution).map_err(|m| Error::invalid(s.sample_id.clone(), m))?,
        );
    }
    let (half, shift) = (vae.spec().token_dim as usize / 2, vae.spec().shift as f64);
    let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
    for chunk in imgs.chunks(vae.batch_size().max(1)) {
        for tokens in vae.encode_batch(chunk).map_err(|m| Error::invalid("encode.vae", m))? {
            for tok in tokens.chunks_exact(2 * half) {
                for &v in &tok[..half] {
                    let x = v as f64 - shift;
                    (n, sum, sq) = (n + 1.0, sum + x, sq + x * x);
                }
            }
        }
    }
    let var = (sq / n.max(1.0) - (sum / n.max(1.0)).powi(2)).max(0.0);
    if n == 0.0 || var <= 0.0 {
        return Err(Error::invalid("encode.vae.scale", "\"auto\" found no spread in the latents to measure"));
    }
    Ok((1.0 / var.sqrt()) as f32)
}

/// Decodes, crops and tokenizes a shard's samples across threads, in order.
fn encode_batch(
    batch: &[super::generate::Sample],
    tok: &dyn ImageTokenizer,
    vocab: &Vocab,
    cfg: &EncodeConfig,
    threads: usize,
    pb: &indicatif::ProgressBar,
) -> Result<ShardData> {
    let spec = tok.spec();
    let (tokens, dim) = ((spec.grid * spec.grid) as usize, spec.token_dim as usize);
    type Encoded = std::result::Result<(Vec<f32>, Option<Vec<f32>>), String>;
    let results: Vec<Encoded> = super::par::map_chunks(
        batch,
        threads,
        16.max(tok.batch_size()),
        || (),
        |_, chunk| {
            let crops: Vec<std::result::Result<RgbImage, String>> = chunk
                .iter()
                .map(|s| {
                    let bytes = s.image.as_deref().ok_or("a kept sample has no image")?;
                    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?.to_rgb8();
                    crop::center_crop(&img, cfg.resolution)
                })
                .collect();
            let ok: Vec<RgbImage> = crops.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
            let flips: Vec<RgbImage> =
                if cfg.flip { ok.iter().map(image::imageops::flip_horizontal).collect() } else { Vec::new() };
            let enc = tok
                .encode_batch(&ok)
                .and_then(|a| Ok((a, if cfg.flip { Some(tok.encode_batch(&flips)?) } else { None })));
            let (mut plain, mut flipped) = match enc {
                Ok((a, f)) => (a.into_iter(), f.map(Vec::into_iter)),
                Err(e) => return crops.iter().map(|_| Err(e.clone())).collect(),
            };
            crops
                .into_iter()
                .map(|c| {
                    c?;
                    let a = plain.next().ok_or("the tokenizer returned too few images")?;
                    Ok((a, flipped.as_mut().and_then(Iterator::next)))
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
        text_features: None,
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
