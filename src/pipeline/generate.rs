//! `generate`: prompts → images. For every prompt of the expand stage, `images_per_prompt`
//! samples, each with its own seed, made by the configured teacher across all cores and
//! written as Parquet parts (`runs/<name>/generate/part-NNNNN.parquet`). A rerun skips done
//! parts, and in parts with failed samples regenerates only those.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use polars::prelude::*;
use serde::Serialize;

use super::teacher::{self, PromptRow, Request, Teacher};
use crate::config::{GenerateConfig, ImageFormat, Plan};
use crate::error::{Error, Result};
use crate::formats::commit::{self, AtomicFile};
use crate::formats::prompt_rows::PromptCursor;

/// Runtime choices for the stage.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub force: bool,
    pub progress: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// A worker's share: only these parts, each published once committed; the stage is
    /// then not marked finished (`manifest merge` does that).
    pub share: Option<super::worker::Share>,
}

/// What `generate` did.
#[derive(Debug, Serialize)]
pub struct GenerateSummary {
    pub run_dir: String,
    pub teacher: String,
    pub prompts: u64,
    pub samples: u64,
    pub ok: u64,
    pub failed: u64,
    pub parts: u64,
    pub parts_reused: u64,
    pub parts_repaired: u64,
    /// Samples made in this run (not reused) and the rate.
    pub made: u64,
    pub images_per_second: f64,
    pub seconds: f64,
}

/// One sample: a row of a generate part.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub sample_id: String,
    pub prompt_id: String,
    pub prompt_index: u64,
    pub image_index: u32,
    pub prompt: String,
    pub family: String,
    pub spec: Option<String>,
    pub image: Option<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    pub teacher: String,
    pub request: String,
    pub seed: u64,
    pub status: String,
    pub error: Option<String>,
    pub blake3: Option<String>,
    pub gen_ms: f32,
    pub truth: Option<String>,
}

/// The seed of sample `k` of a prompt: independent of the order samples are made in.
pub fn sample_seed(run_seed: u64, prompt_id: &str, k: u32) -> u64 {
    let h = blake3::hash(format!("{run_seed}:{prompt_id}:{k}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// How many parts the generate stage of a plan has (expand must be finished).
pub fn part_count(plan: &Plan) -> Result<u64> {
    let cfg = plan.config.generate.as_ref().ok_or_else(|| Error::invalid("config", "no [generate] section"))?;
    let expand_dir = super::finished_stage(&plan.run_dir, "expand")?;
    let n_prompts = PromptCursor::new(commit::committed_parts(&expand_dir)?).count()?;
    Ok((n_prompts * cfg.images_per_prompt as u64).div_ceil(cfg.part_size))
}

/// Runs `generate` for a plan.
pub fn run(plan: &Plan, opts: &GenerateOptions) -> Result<GenerateSummary> {
    let start = Instant::now();
    let cfg = plan.config.generate.as_ref().ok_or_else(|| {
        Error::invalid("config", "no [generate] section: add one to run the generate stage (see configs/shapes.toml)")
    })?;
    let expand_dir = super::finished_stage(&plan.run_dir, "expand")?;
    let teacher = teacher::from_config(cfg)?;
    let dir = super::open_stage(plan, "generate", opts.force)?;
    let hash = plan.stage_hash("generate").to_string();
    let mut prompts = PromptCursor::new(commit::committed_parts(&expand_dir)?);
    let n_prompts = prompts.count()?;
    let ipp = cfg.images_per_prompt as u64;
    let total = n_prompts * ipp;
    let n_parts = total.div_ceil(cfg.part_size);
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    let pb = crate::progress::bar(total, "generate", "images", opts.progress);
    let mut s = GenerateSummary {
        run_dir: plan.run_dir.display().to_string(),
        teacher: teacher.id().to_string(),
        prompts: n_prompts,
        samples: total,
        ok: 0,
        failed: 0,
        parts: n_parts,
        parts_reused: 0,
        parts_repaired: 0,
        made: 0,
        images_per_second: 0.0,
        seconds: 0.0,
    };
    let made_start = Instant::now();
    let parts: Vec<u64> = match &opts.share {
        Some(share) => share.parts.iter().copied().filter(|&k| k < n_parts).collect(),
        None => (0..n_parts).collect(),
    };
    for k in parts {
        let range = k * cfg.part_size..((k + 1) * cfg.part_size).min(total);
        let done = commit::done_part(&dir, k, &hash);
        let failed_before = done.as_ref().map(|st| st.extra["failed"].as_u64().unwrap_or(0));
        let samples = match failed_before {
            Some(0) => {
                let st = done.expect("done");
                s.ok += st.rows;
                s.parts_reused += 1;
                pb.inc(range.end - range.start);
                if let Some(share) = &opts.share {
                    (share.publish)(&dir, k)?; // it may have been made before a kill, unpublished
                }
                continue;
            }
            Some(_) => {
                // Keep the part's good samples, make its failed ones again.
                let mut rows = read_part(&dir.join(commit::part_name(k)))?;
                let todo: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].status != "ok").collect();
                let reqs =
                    todo.iter().map(|&i| rows[i].prompt_index * ipp + rows[i].image_index as u64).collect::<Vec<_>>();
                let fresh = make(&reqs, &mut prompts, plan, cfg, teacher.as_ref(), threads, &pb)?;
                pb.inc((range.end - range.start) - todo.len() as u64);
                for (i, new) in todo.into_iter().zip(fresh) {
                    rows[i] = new;
                }
                s.parts_repaired += 1;
                s.made += reqs.len() as u64;
                rows
            }
            None => {
                let reqs: Vec<u64> = range.clone().collect();
                s.made += reqs.len() as u64;
                make(&reqs, &mut prompts, plan, cfg, teacher.as_ref(), threads, &pb)?
            }
        };
        let ok = samples.iter().filter(|x| x.status == "ok").count() as u64;
        let failed = samples.len() as u64 - ok;
        write_part(&dir, k, &samples)?;
        let mut imperfections: BTreeMap<String, u64> = BTreeMap::new();
        for x in &samples {
            if let Some(kind) = x.truth.as_deref().and_then(imperfection_of) {
                *imperfections.entry(kind).or_default() += 1;
            }
        }
        let extra = serde_json::json!({ "ok": ok, "failed": failed, "imperfections": imperfections });
        commit::commit_part(&dir, k, samples.len() as u64, &hash, extra)?;
        if let Some(share) = &opts.share {
            (share.publish)(&dir, k)?;
        }
        s.ok += ok;
        s.failed += failed;
    }
    pb.finish_and_clear();
    if opts.share.is_some() {
        return Ok(s);
    }
    s.seconds = start.elapsed().as_secs_f64();
    s.images_per_second = s.made as f64 / made_start.elapsed().as_secs_f64().max(1e-9);
    let mut json = serde_json::to_value(&s).expect("summary serialises");
    for k in ["seconds", "images_per_second", "made", "parts_reused", "parts_repaired"] {
        json[k] = serde_json::Value::Null; // the file describes the data, not this run
    }
    commit::write_atomic(&dir.join("summary.json"), &serde_json::to_vec_pretty(&json).expect("json"))?;
    Ok(s)
}

fn imperfection_of(truth: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(truth).ok()?;
    v["imperfection"].as_str().map(str::to_string)
}

/// Makes the samples with global indices `reqs` (prompt = index / images_per_prompt).
fn make(
    reqs: &[u64],
    prompts: &mut PromptCursor,
    plan: &Plan,
    cfg: &GenerateConfig,
    teacher: &dyn Teacher,
    threads: usize,
    pb: &indicatif::ProgressBar,
) -> Result<Vec<Sample>> {
    let ipp = cfg.images_per_prompt as u64;
    // The prompts these samples need, loaded in order.
    let mut rows: BTreeMap<u64, PromptRow> = BTreeMap::new();
    for &r in reqs {
        let p = r / ipp;
        if let std::collections::btree_map::Entry::Vacant(e) = rows.entry(p) {
            e.insert(prompts.get(p)?);
        }
    }
    let chunk = 32.max(teacher.batch_size());
    let threads = teacher.threads().unwrap_or(threads);
    Ok(super::par::map_chunks(
        reqs,
        threads,
        chunk,
        || (),
        |_, mine| {
            mine.chunks(teacher.batch_size().max(1))
                .flat_map(|batch| one_batch(batch, &rows, plan, cfg, teacher))
                .collect()
        },
        |n| pb.inc(n),
    ))
}

fn one_batch(
    batch: &[u64],
    rows: &BTreeMap<u64, PromptRow>,
    plan: &Plan,
    cfg: &GenerateConfig,
    teacher: &dyn Teacher,
) -> Vec<Sample> {
    let ipp = cfg.images_per_prompt as u64;
    let t0 = Instant::now();
    let reqs: Vec<Request<'_>> = batch
        .iter()
        .map(|&r| {
            let prompt = &rows[&(r / ipp)];
            let k = (r % ipp) as u32;
            Request {
                prompt,
                seed: sample_seed(plan.config.run.seed, &prompt.prompt_id, k),
                width: cfg.resolution,
                height: cfg.resolution,
            }
        })
        .collect();
    let results = teacher.generate(&reqs);
    let per = t0.elapsed().as_secs_f32() * 1000.0 / batch.len().max(1) as f32;
    reqs.iter()
        .zip(batch)
        .zip(results)
        .map(|((req, &r), res)| {
            let t1 = Instant::now();
            let k = (r % ipp) as u32;
            let mut s = Sample {
                sample_id: format!("{}-{k}", req.prompt.prompt_id),
                prompt_id: req.prompt.prompt_id.clone(),
                prompt_index: req.prompt.index,
                image_index: k,
                prompt: req.prompt.text.clone(),
                family: req.prompt.family.clone(),
                spec: req.prompt.spec.clone(),
                image: None,
                width: req.width,
                height: req.height,
                teacher: teacher.id().to_string(),
                request: String::new(),
                seed: req.seed,
                status: "failed".into(),
                error: None,
                blake3: None,
                gen_ms: per,
                truth: None,
            };
            match res.and_then(|o| encode(&o.image, cfg).map(|bytes| (o, bytes))) {
                Ok((o, bytes)) => {
                    s.request = o.params.to_string();
                    s.truth = o.truth.map(|t| t.to_string());
                    s.blake3 = Some(blake3::hash(&bytes).to_hex().to_string());
                    s.image = Some(bytes);
                    s.status = "ok".into();
                }
                Err(e) => s.error = Some(e),
            }
            s.gen_ms += t1.elapsed().as_secs_f32() * 1000.0;
            s
        })
        .collect()
}

/// Encodes an image in the configured format.
pub fn encode(img: &RgbImage, cfg: &GenerateConfig) -> std::result::Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity((img.width() * img.height()) as usize);
    let (w, h) = img.dimensions();
    let res = match cfg.format {
        ImageFormat::Png => PngEncoder::new_with_quality(Cursor::new(&mut buf), CompressionType::Fast, FilterType::Sub)
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8),
        ImageFormat::Jpeg => JpegEncoder::new_with_quality(Cursor::new(&mut buf), cfg.quality).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        ),
        ImageFormat::Webp => {
            WebPEncoder::new_lossless(Cursor::new(&mut buf)).write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
        }
    };
    res.map_err(|e| format!("encoding failed: {e}"))?;
    Ok(buf)
}

/// Writes samples as part `k` (atomically; the marker comes after, from the caller).
pub fn write_part(dir: &Path, k: u64, rows: &[Sample]) -> Result<()> {
    let dest = dir.join(commit::part_name(k));
    let mut df = frame(rows).map_err(|e| Error::polars(&dest, e))?;
    let mut file = AtomicFile::create(&dest)?;
    let f = file.file().try_clone().map_err(|e| Error::io(&dest, e))?;
    ParquetWriter::new(f)
        .with_compression(ParquetCompression::Zstd(None))
        .with_row_group_size(Some(2048))
        .finish(&mut df)
        .map_err(|e| Error::polars(&dest, e))?;
    file.commit()
}

fn frame(rows: &[Sample]) -> PolarsResult<DataFrame> {
    let n = rows.len();
    let s = |f: fn(&Sample) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let o = |f: fn(&Sample) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let image: BinaryChunked = rows.iter().map(|r| r.image.as_deref()).collect();
    DataFrame::new(
        n,
        vec![
            Column::new("sample_id".into(), s(|r| &r.sample_id)),
            Column::new("prompt_id".into(), s(|r| &r.prompt_id)),
            Column::new("prompt_index".into(), rows.iter().map(|r| r.prompt_index).collect::<Vec<_>>()),
            Column::new("image_index".into(), rows.iter().map(|r| r.image_index).collect::<Vec<_>>()),
            Column::new("prompt".into(), s(|r| &r.prompt)),
            Column::new("family".into(), s(|r| &r.family)),
            Column::new("spec".into(), o(|r| r.spec.as_deref())),
            image.with_name("image".into()).into_series().into_column(),
            Column::new("width".into(), rows.iter().map(|r| r.width).collect::<Vec<_>>()),
            Column::new("height".into(), rows.iter().map(|r| r.height).collect::<Vec<_>>()),
            Column::new("teacher".into(), s(|r| &r.teacher)),
            Column::new("request".into(), s(|r| &r.request)),
            Column::new("seed".into(), rows.iter().map(|r| r.seed).collect::<Vec<_>>()),
            Column::new("status".into(), s(|r| &r.status)),
            Column::new("error".into(), o(|r| r.error.as_deref())),
            Column::new("blake3".into(), o(|r| r.blake3.as_deref())),
            Column::new("gen_ms".into(), rows.iter().map(|r| r.gen_ms).collect::<Vec<_>>()),
            Column::new("truth".into(), o(|r| r.truth.as_deref())),
        ],
    )
}

/// Reads a generate part back into samples.
pub fn read_part(path: &Path) -> Result<Vec<Sample>> {
    use crate::formats::frame::{opt_text as opt, text as st, Frame};
    let f = Frame::read(path, None)?;
    let (sid, pid, prompt, family, spec) =
        (f.str("sample_id")?, f.str("prompt_id")?, f.str("prompt")?, f.str("family")?, f.str("spec")?);
    let (teacher, request, status, error, hash, truth) =
        (f.str("teacher")?, f.str("request")?, f.str("status")?, f.str("error")?, f.str("blake3")?, f.str("truth")?);
    let (pidx, seed) = (f.u64("prompt_index")?, f.u64("seed")?);
    let (iidx, width, height) = (f.u32("image_index")?, f.u32("width")?, f.u32("height")?);
    let (image, gen_ms) = (f.binary("image")?, f.f32("gen_ms")?);
    (0..f.df.height())
        .map(|i| {
            Ok(Sample {
                sample_id: f.required("sample_id", i, sid.get(i))?.to_string(),
                prompt_id: st(&pid, i),
                prompt_index: f.required("prompt_index", i, pidx.get(i))?,
                image_index: f.required("image_index", i, iidx.get(i))?,
                prompt: st(&prompt, i),
                family: st(&family, i),
                spec: opt(&spec, i),
                image: image.get(i).map(<[u8]>::to_vec),
                width: f.required("width", i, width.get(i))?,
                height: f.required("height", i, height.get(i))?,
                teacher: st(&teacher, i),
                request: st(&request, i),
                seed: f.required("seed", i, seed.get(i))?,
                status: f.required("status", i, status.get(i))?.to_string(),
                error: opt(&error, i),
                blake3: opt(&hash, i),
                gen_ms: f.required("gen_ms", i, gen_ms.get(i))?,
                truth: opt(&truth, i),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(k: u32) -> Sample {
        Sample {
            sample_id: format!("s{k}"),
            prompt_id: "p".into(),
            prompt_index: 3,
            image_index: k,
            prompt: "a red circle".into(),
            family: "single_object".into(),
            spec: None,
            image: Some(vec![1, 2, 3]),
            width: 32,
            height: 32,
            teacher: "builtin:shapes".into(),
            request: "{}".into(),
            seed: 7,
            status: "ok".into(),
            error: None,
            blake3: None,
            gen_ms: 0.5,
            truth: None,
        }
    }

    #[test]
    fn a_part_reads_back_and_a_missing_value_names_the_file_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        write_part(dir.path(), 0, &[sample(0), sample(1)]).unwrap();
        let path = dir.path().join(commit::part_name(0));
        let back = read_part(&path).unwrap();
        assert_eq!((back[1].sample_id.as_str(), back[1].width, back[1].seed), ("s1", 32, 7));
        // Damage it: row 1 loses its width (a hand-edited or half-written part).
        let mut df = frame(&[sample(0), sample(1)]).unwrap();
        let width = Series::new("width".into(), [Some(32u32), None]);
        df.replace("width", width.into()).unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap()).finish(&mut df).unwrap();
        let e = read_part(&path).unwrap_err().to_string();
        assert!(e.contains("part-00000") && e.contains("row 1") && e.contains("`width`"), "{e}");
    }
}
