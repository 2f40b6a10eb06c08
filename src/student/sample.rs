//! Sampling from a trained student: the checkpoint (EMA weights by default), the manifest's
//! text encoder for the prompts (vocabulary ids, or the T5 export) and its image tokenizer to
//! turn tokens back into pixels (pixel patches, or the ONNX VAE decoder).

use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Device;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::formats::manifest::Manifest;
use crate::formats::t5::T5;
use crate::formats::text::Vocab;
use crate::formats::tokenizer::{ImageTokenizer, Pixels};
use crate::formats::vae::Vae;
use crate::student::model::sampler::{sample_tokens, Canvas, SampleOptions};
use crate::student::model::text::TextInput;
use crate::student::model::{Mar, ParamStore};
use crate::student::train::checkpoint::{load_checked, read_state, TrainState};
use crate::student::train::objects::PixelTokens;
use crate::student::train::run::GridHook;
use crate::student::train::TrainConfig;
use crate::world::render::ShapesTeacherConfig;

/// A trained model ready to sample.
pub struct Student {
    pub model: Mar,
    pub store: ParamStore,
    pub state: TrainState,
    pub checkpoint: PathBuf,
}

impl Student {
    /// `opts` with the token's channel count and (pixel tokens) its pixel mapping from this
    /// checkpoint's token spec, which `SampleOptions::mean_noise` and `object_prior` need
    /// (checkpoints without a spec leave them unknown).
    pub fn with_token_channels(&self, opts: &SampleOptions) -> SampleOptions {
        let l = self.state.latent.as_ref();
        let channels = l.map_or(0, |l| l.channels as usize);
        let pixels = l.and_then(|l| PixelTokens::of(l, 1));
        SampleOptions { channels, pixels, ..opts.clone() }
    }

    /// Loads `ckpt` (a checkpoint folder) with its EMA or raw weights.
    pub fn load(ckpt: &Path, ema: bool, device: Device) -> Result<Student> {
        crate::student::host_alloc::tune();
        let state = read_state(ckpt)?;
        let mut store = ParamStore::new(0, device);
        let model = Mar::new(&state.model, &mut store).map_err(|e| Error::invalid(ckpt.display().to_string(), e))?;
        let name = if ema { "ema.safetensors" } else { "model.safetensors" };
        let file = ckpt.join(name);
        store.load(&load_checked(ckpt, name)?).map_err(|m| Error::invalid(file.display().to_string(), m))?;
        Ok(Student { model, store, state, checkpoint: ckpt.to_path_buf() })
    }
}

/// The run config the manifest was built from (its model paths as resolved then).
fn lineage_config(m: &Manifest) -> Option<RunConfig> {
    toml::from_str(&m.lineage.config).ok()
}

/// The corpus's shapes teacher without its injected failures (`generate.shapes` in the lineage
/// config: object size, grid, backgrounds, styles; the defaults when the manifest was not made
/// by the shapes world), so checks that render their own scenes draw them the way the student
/// saw them: objects of the size it learned, on the token grid when the corpus was.
pub fn corpus_teacher(m: &Manifest) -> ShapesTeacherConfig {
    lineage_config(m).and_then(|c| c.generate).map(|g| g.shapes).unwrap_or_default().faithful()
}

/// Prompts → the model's text input.
pub enum Prompter {
    Vocab { vocab: Vocab, max_len: usize },
    T5 { t5: Box<T5>, max_len: usize, dim: usize },
}

impl Prompter {
    /// `encode/vocab.json` beside the manifest's held-out split (checked against the manifest's
    /// hash), or the T5 export (`t5` overrides the path recorded in the lineage).
    pub fn for_manifest(manifest_path: &Path, m: &Manifest, t5: Option<&Path>) -> Result<Prompter> {
        let root = manifest_path.parent().unwrap_or(Path::new("."));
        let max_len = m.text.max_len as usize;
        if m.text.encoder == "vocab" {
            let held = root.join(&m.splits.held_out);
            let p = held.parent().unwrap_or(root).join("vocab.json");
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            if let Some(h) = &m.text.vocab_hash {
                if blake3::hash(&bytes).to_hex().as_str() != h {
                    return Err(Error::invalid(p.display().to_string(), "vocabulary hash differs from the manifest's"));
                }
            }
            let v: Vocab =
                serde_json::from_slice(&bytes).map_err(|e| Error::invalid(p.display().to_string(), e.to_string()))?;
            return Ok(Prompter::Vocab { vocab: Vocab::from_words(v.words), max_len });
        }
        let mut cfg = lineage_config(m).and_then(|c| c.encode).and_then(|e| e.t5).ok_or_else(|| {
            Error::invalid(
                manifest_path.display().to_string(),
                "text encoder t5 but no [encode.t5] in the lineage config",
            )
        })?;
        if let Some(p) = t5 {
            cfg.model = p.to_path_buf();
        }
        let t5 = T5::load(&cfg, max_len).map_err(|e| Error::invalid("t5 (pass --t5 DIR to point at the export)", e))?;
        let dim = t5.dim;
        Ok(Prompter::T5 { t5: Box::new(t5), max_len, dim })
    }

    pub fn input(&self, prompts: &[&str], device: Device) -> Result<TextInput> {
        let b = prompts.len();
        match self {
            Prompter::Vocab { vocab, max_len } => {
                let ids: Vec<u32> = prompts.iter().flat_map(|p| vocab.encode(p, *max_len).0).collect();
                Ok(TextInput::from_host(&ids, &[], b, *max_len, 0, device))
            }
            Prompter::T5 { t5, max_len, dim } => {
                let feats = t5.features(prompts).map_err(|e| Error::invalid("t5", e))?;
                let mut all = vec![0.0f32; b * max_len * dim];
                for (i, f) in feats.iter().enumerate() {
                    let n = f.len().min(max_len * dim);
                    all[i * max_len * dim..i * max_len * dim + n].copy_from_slice(&f[..n]);
                }
                Ok(TextInput::from_host(&[], &all, b, *max_len, *dim, device))
            }
        }
    }
}

/// Tokens → pixels with the manifest's tokenizer.
pub struct Decoder {
    tok: Box<dyn ImageTokenizer>,
    moments: bool,
    channels: usize,
    scale: f32,
    shift: f32,
}

impl Decoder {
    pub fn for_manifest(m: &Manifest, vae: Option<&Path>) -> Result<Decoder> {
        let l = &m.latent;
        let tok: Box<dyn ImageTokenizer> = if l.tokenizer == "pixels" {
            Box::new(Pixels::new(l.resolution, l.patch, &l.dtype, false).map_err(|e| Error::invalid("latent", e))?)
        } else {
            let mut cfg = lineage_config(m)
                .and_then(|c| c.encode)
                .and_then(|e| e.vae)
                .ok_or_else(|| Error::invalid("manifest", "tokenizer vae but no [encode.vae] in the lineage config"))?;
            if let Some(p) = vae {
                cfg.model = p.to_path_buf();
            }
            Box::new(
                Vae::load(&cfg, l.resolution, l.patch, &l.dtype, false)
                    .map_err(|e| Error::invalid("vae (pass --vae DIR to point at the export)", e))?,
            )
        };
        let channels = if l.moments { l.token_dim as usize / 2 } else { l.token_dim as usize };
        Ok(Decoder { tok, moments: l.moments, channels, scale: l.scale, shift: l.shift })
    }

    /// The image side the tokenizer works at.
    pub fn resolution(&self) -> u32 {
        self.tok.spec().resolution
    }

    /// RGB (at [`Decoder::resolution`]) → normalised tokens (L · C), as training saw them:
    /// pixel patches, or the VAE posterior mean scaled and shifted.
    pub fn encode(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let raw = self.tok.encode_batch(std::slice::from_ref(img)).map_err(|e| Error::invalid("encode", e))?;
        let raw = raw.into_iter().next().unwrap_or_default();
        if !self.moments {
            return Ok(raw);
        }
        let c = self.channels;
        Ok(raw.chunks_exact(2 * c).flat_map(|t| t[..c].iter().map(|v| (v - self.shift) * self.scale)).collect())
    }

    /// One image's normalised tokens (L · C) → RGB.
    pub fn decode(&self, tokens: &[f32]) -> RgbImage {
        if !self.moments {
            return self.tok.decode(tokens);
        }
        // Back to raw latents, laid out as the stored moments (mean, then a zero log-variance).
        let c = self.channels;
        let mut raw = Vec::with_capacity(tokens.len() * 2);
        for t in tokens.chunks_exact(c) {
            raw.extend(t.iter().map(|v| v / self.scale + self.shift));
            raw.extend(std::iter::repeat_n(0.0, c));
        }
        self.tok.decode(&raw)
    }
}

/// Samples one image per prompt, `batch` at a time; batch k draws from (seed, k), so the same
/// prompts, seed and batch size give the same images.
pub fn generate(
    student: &Student,
    prompter: &Prompter,
    decoder: &Decoder,
    prompts: &[String],
    opts: &SampleOptions,
    seed: u64,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<RgbImage>> {
    let dev = student.model.device();
    let grid = student.state.grid;
    let (l, c) = (grid * grid, student.model.cfg.token_dim);
    let opts = student.with_token_channels(opts);
    let mut out = Vec::with_capacity(prompts.len());
    for (k, chunk) in prompts.chunks(batch.max(1)).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let text = prompter.input(&refs, dev)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let v = sample_tokens(&student.model, &text, Canvas::blank(chunk.len(), l, c), grid, &opts, &mut rng)
            .map_err(|e| Error::invalid("sample", e))?;
        for i in 0..chunk.len() {
            out.push(decoder.decode(&v[i * l * c..(i + 1) * l * c]));
        }
        progress(chunk.len());
    }
    Ok(out)
}

/// Held-out prompts of a manifest: (prompt, family, spec JSON).
pub fn held_out(manifest_path: &Path, m: &Manifest) -> Result<Vec<(String, String, String)>> {
    let p = manifest_path.parent().unwrap_or(Path::new(".")).join(&m.splits.held_out);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .map_err(|e| Error::invalid(format!("{}:{}", p.display(), i + 1), e.to_string()))?;
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Ok((s("prompt"), s("family"), s("spec")))
        })
        .collect()
}

/// The trainer's sample grids: `out/samples/step-N.png` for each checkpoint it asks for.
pub fn grid_hook(manifest_path: &Path, out: &Path, device: Device) -> GridHook {
    let (manifest_path, dir) = (manifest_path.to_path_buf(), out.join("samples"));
    Box::new(move |m, cfg, ck, step| grid_for(&manifest_path, m, ck, cfg, &dir, step, device))
}

/// A PNG grid of samples for the first held-out prompts, framed green where the shapes
/// analyzer accepts the image (shapes world) — `samples/step-N.png`.
pub fn grid_for(
    manifest_path: &Path,
    m: &Manifest,
    ck: &Path,
    cfg: &TrainConfig,
    dir: &Path,
    step: u64,
    device: Device,
) -> Result<()> {
    let prompts: Vec<(String, String, String)> =
        held_out(manifest_path, m)?.into_iter().take(cfg.train.grid_prompts).collect();
    if prompts.is_empty() {
        return Ok(());
    }
    let Ok(prompter) = Prompter::for_manifest(manifest_path, m, None) else {
        tracing::warn!("no text encoder available for the sample grid; skipped");
        return Ok(());
    };
    let decoder = Decoder::for_manifest(m, None)?;
    let student = Student::load(ck, true, device)?;
    let texts: Vec<String> = prompts.iter().map(|p| p.0.clone()).collect();
    let imgs = generate(&student, &prompter, &decoder, &texts, &cfg.sample, cfg.train.seed, 16, |_| {})?;
    let judge = crate::world::analyze::Analyzer::new();
    let cells: Vec<(image::RgbImage, bool)> = imgs
        .into_iter()
        .zip(&prompts)
        .map(|(img, (_, _, spec))| {
            let ok = serde_json::from_str::<crate::world::Spec>(spec).is_ok_and(|s| judge.judge(&img, &s).verdict.pass);
            (img, ok)
        })
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(format!("step-{step:08}.png"));
    let sheet = crate::report::chart::grid(&cells);
    let tmp = dir.join(format!(".tmp-step-{step:08}.png"));
    sheet.save(&tmp).map_err(|e| Error::Image { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_teacher_is_read_from_the_lineage_config_without_its_failures() {
        let mut m = crate::formats::manifest::load(Path::new("manifests/shapes-tiny/manifest.json")).unwrap();
        let t = corpus_teacher(&m);
        assert_eq!((t.object_scale, t.grid), (1.0, 0), "the tiny fixture is drawn at the default size, off-grid");
        // the fixture's lineage has a [generate.shapes] table with failure rates (wrong_color
        // 0.05 ...) but without object_scale or grid
        let cfg = m.lineage.config.clone();
        assert!(cfg.contains("[generate.shapes]\nwrong_color = 0.05\n") && !cfg.contains("object_scale"));
        assert!(!cfg.contains("grid"));
        m.lineage.config = cfg.replace("[generate.shapes]\n", "[generate.shapes]\nobject_scale = 1.6\ngrid = 8\n");
        let t = corpus_teacher(&m);
        assert_eq!((t.object_scale, t.grid), (1.6, 8));
        assert_eq!(t, ShapesTeacherConfig { object_scale: 1.6, grid: 8, ..ShapesTeacherConfig::none() }, "no failures");
        m.lineage.config = "not toml [".into();
        assert_eq!(corpus_teacher(&m), ShapesTeacherConfig::none(), "an unreadable lineage falls back to the default");
    }
}
