//! `onnx`: a diffusers-style ONNX export (SD 1.x/2.x/Turbo or SDXL/SDXL-Turbo) run by ONNX
//! Runtime: CLIP tokenization, text encoder(s), the UNet under a diffusers scheduler with
//! classifier-free guidance, then the VAE decoder. Noise comes from each sample's seed, so an
//! image depends on its seed only, not on the batch it was made in.

pub mod folder;
pub mod scheduler;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use image::RgbImage;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use super::{Output, Request, Teacher};
use crate::config::OnnxTeacherConfig;
use crate::error::{Error, Result};
use crate::onnx::clip_tokenizer::ClipTokenizer;
use crate::onnx::model::{port, Arg, Feed, Model, Tensor32};
use folder::{Family, Folder};
use scheduler::{Schedule, SchedulerConfig};

pub struct OnnxTeacher {
    cfg: OnnxTeacherConfig,
    folder: Folder,
    sched: SchedulerConfig,
    tok: ClipTokenizer,
    tok2: Option<ClipTokenizer>,
    text: Model,
    text2: Option<Model>,
    unet: Model,
    vae: Model,
    runtime: String,
    device: &'static str,
    /// The negative prompt's encoding, computed once.
    uncond: std::sync::Mutex<Option<Cond>>,
    /// Nanoseconds in all of `generate`, and in the denoising loops.
    total_ns: AtomicU64,
    loop_ns: AtomicU64,
}

/// Seconds spent so far (see [`OnnxTeacher::timing`]).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Inside ONNX Runtime's `run`, all models.
    pub models_s: f64,
    /// In `generate`, everything.
    pub total_s: f64,
    /// Inside the UNet's `run`.
    pub unet_s: f64,
    /// In the denoising loops (UNet calls plus guidance, scheduler steps, tensor conversion).
    pub steps_s: f64,
}

/// Text conditioning for a batch of 2B (guided: uncond then cond) or B rows.
struct Cond {
    /// (rows, L, D)
    hidden: Tensor32,
    /// SDXL: (rows, P) pooled text embeddings.
    pooled: Option<Tensor32>,
}

impl OnnxTeacher {
    pub fn load(cfg: &OnnxTeacherConfig) -> Result<OnnxTeacher> {
        let bad = |m: String| Error::invalid("generate.onnx", m);
        let folder = Folder::open(&cfg.model).map_err(bad)?;
        let rt = crate::onnx::runtime::get(cfg.runtime.as_deref()).map_err(bad)?;
        let sched = SchedulerConfig::from_json(&folder.scheduler, cfg.scheduler)
            .map_err(|m| bad(format!("{}: {m}", folder.path("scheduler/scheduler_config.json").display())))?;
        let dev = cfg.device.as_str();
        let tok = ClipTokenizer::load(&folder.path("tokenizer")).map_err(bad)?;
        let ids = [port("input_ids", 2)];
        let (text, text2, tok2) = match folder.family {
            Family::Sd => {
                let m = Model::load(
                    rt,
                    &folder.path("text_encoder/model.onnx"),
                    dev,
                    &ids,
                    &[port("last_hidden_state", 3)],
                );
                (m.map_err(bad)?, None, None)
            }
            Family::Sdxl => {
                let m1 = Model::load(
                    rt,
                    &folder.path("text_encoder/model.onnx"),
                    dev,
                    &ids,
                    &[port("last_hidden_state", 3)],
                )
                .map_err(bad)?;
                let want2 = [port("text_embeds", 2), port("last_hidden_state", 3)];
                let m2 = Model::load(rt, &folder.path("text_encoder_2/model.onnx"), dev, &ids, &want2).map_err(bad)?;
                for m in [&m1, &m2] {
                    penultimate(m).map_err(bad)?;
                }
                (m1, Some(m2), Some(ClipTokenizer::load(&folder.path("tokenizer_2")).map_err(bad)?))
            }
        };
        let mut unet_in = vec![port("sample", 4), port("timestep", 0), port("encoder_hidden_states", 3)];
        if folder.family == Family::Sdxl {
            unet_in.extend([port("text_embeds", 2), port("time_ids", 2)]);
        }
        let unet =
            Model::load(rt, &folder.path("unet/model.onnx"), dev, &unet_in, &[port("out_sample", 4)]).map_err(bad)?;
        let vae = Model::load(
            rt,
            &folder.path("vae_decoder/model.onnx"),
            dev,
            &[port("latent_sample", 4)],
            &[port("sample", 4)],
        )
        .map_err(bad)?;
        let device = if dev != "cpu" && rt.providers.contains(&"CUDA") { "cuda" } else { "cpu" };
        Ok(OnnxTeacher {
            cfg: cfg.clone(),
            folder,
            sched,
            tok,
            tok2,
            text,
            text2,
            unet,
            vae,
            runtime: rt.version.clone(),
            device,
            uncond: std::sync::Mutex::new(None),
            total_ns: AtomicU64::new(0),
            loop_ns: AtomicU64::new(0),
        })
    }

    /// Where the time went so far; what is not inside ONNX Runtime is lightgen's own work
    /// (tokenizing, tensor conversion, scheduling, pixels).
    pub fn timing(&self) -> Timing {
        let models = [Some(&self.text), self.text2.as_ref(), Some(&self.unet), Some(&self.vae)];
        Timing {
            models_s: models.into_iter().flatten().map(Model::run_seconds).sum(),
            total_s: self.total_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            unet_s: self.unet.run_seconds(),
            steps_s: self.loop_ns.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }

    fn call(
        &self,
        m: &Model,
        feeds: Vec<(&str, Arg<'_>)>,
        want: &[&str],
    ) -> std::result::Result<Vec<Tensor32>, String> {
        m.run(feeds, want)
    }

    fn ids(tok: &ClipTokenizer, texts: &[&str]) -> std::result::Result<Feed, String> {
        let mut all = Vec::with_capacity(texts.len() * tok.max_len);
        for t in texts {
            all.extend(tok.encode(t)?);
        }
        Ok(Feed::I64(vec![texts.len() as i64, tok.max_len as i64], all))
    }

    /// Encodes `texts`, one row each.
    fn encode(&self, texts: &[&str]) -> std::result::Result<Cond, String> {
        let cond = match (self.folder.family, &self.text2, &self.tok2) {
            (Family::Sdxl, Some(text2), Some(tok2)) => {
                let p1 = penultimate(&self.text)?;
                let p2 = penultimate(text2)?;
                let mut a =
                    self.call(&self.text, vec![("input_ids", Self::ids(&self.tok, texts)?.into())], &[p1.as_str()])?;
                let mut b = self.call(
                    text2,
                    vec![("input_ids", Self::ids(tok2, texts)?.into())],
                    &[p2.as_str(), "text_embeds"],
                )?;
                let (s1, h1) = a.remove(0);
                let (s2, h2) = b.remove(0);
                let pooled = b.remove(0);
                // Concatenate on the feature axis: (rows, L, D1) ++ (rows, L, D2).
                let (rows, len, d1, d2) = (s1[0] as usize, s1[1] as usize, s1[2] as usize, s2[2] as usize);
                if s2[0] as usize != rows || s2[1] as usize != len {
                    return Err(format!("text encoders disagree on shape: {s1:?} vs {s2:?}"));
                }
                let mut h = Vec::with_capacity(rows * len * (d1 + d2));
                for r in 0..rows * len {
                    h.extend_from_slice(&h1[r * d1..(r + 1) * d1]);
                    h.extend_from_slice(&h2[r * d2..(r + 1) * d2]);
                }
                Cond { hidden: (vec![rows as i64, len as i64, (d1 + d2) as i64], h), pooled: Some(pooled) }
            }
            _ => {
                let mut a = self.call(
                    &self.text,
                    vec![("input_ids", Self::ids(&self.tok, texts)?.into())],
                    &["last_hidden_state"],
                )?;
                Cond { hidden: a.remove(0), pooled: None }
            }
        };
        Ok(cond)
    }

    /// The unconditional row (the negative prompt), encoded once: zeros for an empty prompt
    /// where the pipeline says so (SDXL's `force_zeros_for_empty_prompt`).
    fn uncond(&self) -> std::result::Result<Cond, String> {
        let mut cache = self.uncond.lock().expect("uncond lock");
        if let Some(c) = cache.as_ref() {
            return Ok(Cond { hidden: c.hidden.clone(), pooled: c.pooled.clone() });
        }
        let mut c = self.encode(&[self.cfg.negative_prompt.as_str()])?;
        if self.folder.zeros_for_empty_prompt && self.cfg.negative_prompt.is_empty() {
            c.hidden.1.fill(0.0);
            if let Some(p) = c.pooled.as_mut() {
                p.1.fill(0.0);
            }
        }
        *cache = Some(Cond { hidden: c.hidden.clone(), pooled: c.pooled.clone() });
        Ok(c)
    }

    /// (2B rows: B unconditional, then B conditional) when guided, else the B conditional rows.
    fn conditioning(&self, reqs: &[&Request<'_>], guided: bool) -> std::result::Result<Cond, String> {
        let texts: Vec<&str> = reqs.iter().map(|r| r.prompt.text.as_str()).collect();
        let cond = self.encode(&texts)?;
        if !guided {
            return Ok(cond);
        }
        let u = self.uncond()?;
        let stack = |u: &Tensor32, c: &Tensor32| -> Tensor32 {
            let mut shape = c.0.clone();
            shape[0] *= 2;
            let mut v = Vec::with_capacity(2 * c.1.len());
            for _ in 0..reqs.len() {
                v.extend_from_slice(&u.1);
            }
            v.extend_from_slice(&c.1);
            (shape, v)
        };
        let pooled = match (&u.pooled, &cond.pooled) {
            (Some(up), Some(cp)) => Some(stack(up, cp)),
            _ => None,
        };
        Ok(Cond { hidden: stack(&u.hidden, &cond.hidden), pooled })
    }

    /// One batch of same-size requests.
    fn batch(&self, reqs: &[&Request<'_>]) -> std::result::Result<Vec<RgbImage>, String> {
        let (w, h) = (reqs[0].width, reqs[0].height);
        let f = self.folder.vae_factor;
        if w % f != 0 || h % f != 0 {
            return Err(format!("{w}x{h}: this model makes sizes that are multiples of {f}"));
        }
        let b = reqs.len();
        let guided = self.cfg.guidance > 1.0;
        let rows = if guided { 2 * b } else { b };
        let cond = self.conditioning(reqs, guided)?;
        let channels =
            self.unet.input("sample").and_then(|p| p.shape.get(1).copied()).filter(|c| *c > 0).unwrap_or(4) as usize;
        let (lh, lw) = ((h / f) as usize, (w / f) as usize);
        let per = channels * lh * lw;
        let schedule = Schedule::new(&self.sched, self.cfg.steps as usize);
        // Each sample's own noise stream: initial latents, then ancestral noise.
        let mut rngs: Vec<rand_chacha::ChaCha8Rng> =
            reqs.iter().map(|r| rand_chacha::ChaCha8Rng::seed_from_u64(r.seed)).collect();
        let sigma0 = schedule.init_noise_sigma();
        let mut latents: Vec<f32> = Vec::with_capacity(b * per); // (B, C, h, w)
        for rng in rngs.iter_mut() {
            latents.extend((0..per).map(|_| (gauss(rng) * sigma0) as f32));
        }
        // The step-invariant inputs, converted to the UNet's types once: (rows, L, D) text,
        // SDXL's (rows, P) pooled text and (rows, 6) time ids, LCM's guidance embedding.
        let mut fixed: Vec<(&str, ort::value::DynValue)> = vec![(
            "encoder_hidden_states",
            self.unet.value("encoder_hidden_states", Feed::F32(cond.hidden.0, cond.hidden.1))?,
        )];
        if let Some(p) = cond.pooled {
            let ids: Vec<f32> = (0..rows).flat_map(|_| [h as f32, w as f32, 0.0, 0.0, h as f32, w as f32]).collect();
            fixed.push(("text_embeds", self.unet.value("text_embeds", Feed::F32(p.0, p.1))?));
            fixed.push(("time_ids", self.unet.value("time_ids", Feed::F32(vec![rows as i64, 6], ids))?));
        }
        if let Some(d) = self.unet.input("timestep_cond").and_then(|p| p.shape.get(1).copied()).filter(|d| *d > 0) {
            let e = scheduler::guidance_embedding(self.cfg.guidance, d as usize);
            fixed.push((
                "timestep_cond",
                self.unet.value("timestep_cond", Feed::F32(vec![rows as i64, d], e.repeat(rows)))?,
            ));
        }
        let ts_port = self.unet.input("timestep").expect("checked at load");
        let ts_shape: Vec<i64> = match ts_port.shape.len() {
            0 => vec![],
            _ if ts_port.shape[0] == 1 => vec![1],
            _ => vec![rows as i64],
        };
        let n_ts = ts_shape.first().copied().unwrap_or(1) as usize;
        let loop_start = Instant::now();
        for (i, &t) in schedule.timesteps.iter().enumerate() {
            let mut input: Vec<f32> = vec![0.0; rows * per]; // (rows, C, h, w)
            let scale = schedule.input_scale(i) as f32;
            for (chunk, _) in input.chunks_exact_mut(b * per).zip(0..if guided { 2 } else { 1 }) {
                for (d, x) in chunk.iter_mut().zip(&latents) {
                    *d = x * scale;
                }
            }
            let mut feeds: Vec<(&str, Arg<'_>)> = vec![
                ("sample", Feed::F32(vec![rows as i64, channels as i64, lh as i64, lw as i64], input).into()),
                ("timestep", Feed::F32(ts_shape.clone(), vec![t as f32; n_ts]).into()),
            ];
            feeds.extend(fixed.iter().map(|(n, v)| (*n, Arg::Ready(v))));
            let (_, out) = self.call(&self.unet, feeds, &["out_sample"])?.remove(0);
            if out.len() != rows * per {
                return Err(format!("unet/model.onnx: out_sample has {} values, expected {}", out.len(), rows * per));
            }
            // Guidance: uncond + g · (cond − uncond).
            let g = self.cfg.guidance;
            let eps: Vec<f32> = if guided {
                let (u, c) = out.split_at(b * per);
                u.iter().zip(c).map(|(u, c)| u + g * (c - u)).collect()
            } else {
                out
            };
            for (j, rng) in rngs.iter_mut().enumerate() {
                let s = j * per..(j + 1) * per;
                schedule.step(i, &eps[s.clone()], &mut latents[s], &mut || gauss(rng));
            }
        }
        self.loop_ns.fetch_add(loop_start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let inv = (1.0 / self.folder.vae_scaling) as f32;
        let z: Vec<f32> = latents.iter().map(|x| x * inv).collect();
        // (B, 3, H, W) in [-1, 1] → interleaved RGB bytes, read in place from the output.
        let plane = (w * h) as usize;
        let shape_z = vec![b as i64, channels as i64, lh as i64, lw as i64];
        self.vae.run_with(vec![("latent_sample", Feed::F32(shape_z, z).into())], "sample", |shape, px| {
            if shape.len() != 4 || shape[1] != 3 || shape[2] != h as i64 || shape[3] != w as i64 {
                return Err(format!("vae_decoder/model.onnx: sample has shape {shape:?}, expected [{b}, 3, {h}, {w}]"));
            }
            Ok(px.chunks_exact(3 * plane).take(b).map(|planes| planar_to_rgb(planes, w, h)).collect())
        })?
    }

    fn params(&self, r: &Request<'_>) -> serde_json::Value {
        json!({
            "teacher": "onnx",
            "model": self.folder.root.display().to_string(),
            "model_hash": self.folder.hash,
            "family": self.folder.family,
            "scheduler": format!("{:?}", self.sched.kind),
            "steps": self.cfg.steps,
            "guidance": self.cfg.guidance,
            "negative_prompt": self.cfg.negative_prompt,
            "prompt": r.prompt.text,
            "seed": r.seed,
            "width": r.width,
            "height": r.height,
            "onnxruntime": self.runtime,
            "device": self.device,
        })
    }
}

/// The name of a text encoder's penultimate hidden state (`hidden_states.{N-1}`), which SDXL
/// conditions on.
fn penultimate(m: &Model) -> std::result::Result<String, String> {
    let last = m.outputs.iter().filter_map(|p| p.name.strip_prefix("hidden_states.")?.parse::<usize>().ok()).max();
    match last {
        Some(n) if n >= 1 => Ok(format!("hidden_states.{}", n - 1)),
        _ => Err(format!(
            "{}: an SDXL text encoder must output hidden_states.0 … hidden_states.N (export with \
             output_hidden_states); found {}",
            m.path.display(),
            m.outputs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// (3, H, W) floats in [-1, 1] → an RGB image.
fn planar_to_rgb(planes: &[f32], w: u32, h: u32) -> RgbImage {
    let plane = (w * h) as usize;
    let (r, g, b) = (&planes[..plane], &planes[plane..2 * plane], &planes[2 * plane..3 * plane]);
    let mut raw = vec![0u8; 3 * plane];
    for (k, px) in raw.chunks_exact_mut(3).enumerate() {
        px[0] = to_u8(r[k]);
        px[1] = to_u8(g[k]);
        px[2] = to_u8(b[k]);
    }
    RgbImage::from_raw(w, h, raw).expect("3 bytes per pixel")
}

/// [-1, 1] → 0..=255, rounded; NaN → 0. Branch-free (min/max), so noisy pixels cost no
/// mispredictions.
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    (v * 127.5 + 128.0).clamp(0.0, 255.0) as u8
}

/// A standard normal draw (ziggurat).
fn gauss(rng: &mut rand_chacha::ChaCha8Rng) -> f64 {
    rng.sample(rand_distr::StandardNormal)
}

impl Teacher for OnnxTeacher {
    fn id(&self) -> &str {
        "onnx"
    }

    fn batch_size(&self) -> usize {
        self.cfg.batch as usize
    }

    /// ONNX Runtime spreads one call over the cores itself.
    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn generate(&self, batch: &[Request<'_>]) -> Vec<std::result::Result<Output, String>> {
        let t = Instant::now();
        let mut out: Vec<Option<std::result::Result<Output, String>>> = vec![None; batch.len()];
        // Same-size requests run together.
        let mut sizes: Vec<(u32, u32)> = batch.iter().map(|r| (r.width, r.height)).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for (w, h) in sizes {
            let idx: Vec<usize> = (0..batch.len()).filter(|&i| (batch[i].width, batch[i].height) == (w, h)).collect();
            let reqs: Vec<&Request<'_>> = idx.iter().map(|&i| &batch[i]).collect();
            match self.batch(&reqs) {
                Ok(images) => {
                    for (&i, image) in idx.iter().zip(images) {
                        out[i] = Some(Ok(Output { image, params: self.params(&batch[i]), truth: None }));
                    }
                }
                Err(e) => {
                    for &i in &idx {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        self.total_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out.into_iter().map(|o| o.expect("every request answered")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_map_minus_one_to_one_onto_bytes() {
        assert_eq!(
            [to_u8(-1.0), to_u8(0.0), to_u8(1.0), to_u8(-7.0), to_u8(3.0), to_u8(f32::NAN)],
            [0, 128, 255, 0, 255, 0]
        );
        // (3, 1, 2): R plane, G plane, B plane.
        let img = planar_to_rgb(&[-1.0, 1.0, 0.0, 0.0, 1.0, -1.0], 2, 1);
        assert_eq!(img.as_raw(), &[0, 128, 255, 255, 128, 0]);
    }
}
