//! `vae`: an ONNX VAE encoder (diffusers export: `vae_encoder/model.onnx`, input `sample`
//! (B, 3, H, W) in [-1, 1]) as an image tokenizer. Exports that output `latent_parameters`
//! (B, 2C, h, w) give the posterior moments, which are stored as they are (mean, then
//! log-variance, per token) so the trainer can resample each epoch as MAR does; exports that
//! only output `latent_sample` store that sample as the mean with a log-variance of −30.
//! Decoding uses `vae_decoder/model.onnx` (`latent_sample` → `sample`) when present.

use image::RgbImage;
use serde_json::Value;

use super::tokenizer::{patchify, unpatchify, ImageTokenizer, LatentSpec};
use crate::config::{LatentScale, VaeConfig};
use crate::onnx::model::{port, Feed, Model};

pub struct Vae {
    spec: LatentSpec,
    enc: Model,
    dec: Option<Model>,
    /// Latent channels (C) and pixels per latent cell.
    channels: usize,
    factor: u32,
    moments: bool,
    batch: usize,
}

impl Vae {
    /// Loads the encoder (and decoder) and works out the grid; `scale` "auto" leaves 1.0 in the
    /// spec until [`Vae::set_scale`] is called with the measured value.
    pub fn load(cfg: &VaeConfig, resolution: u32, patch: u32, dtype: &str, flip: bool) -> Result<Vae, String> {
        let root = &cfg.model;
        let rt = crate::onnx::runtime::get(cfg.runtime.as_deref())?;
        let enc_path = root.join("vae_encoder/model.onnx");
        let enc = Model::load(rt, &enc_path, &cfg.device, &[port("sample", 4)], &[])?;
        let moments = enc.outputs.iter().any(|p| p.name == "latent_parameters");
        if !moments && !enc.outputs.iter().any(|p| p.name == "latent_sample") {
            return Err(format!(
                "{}: expected an output latent_parameters (posterior moments) or latent_sample; found {}",
                enc_path.display(),
                enc.outputs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        let dec_path = root.join("vae_decoder/model.onnx");
        let dec = if dec_path.is_file() {
            Some(Model::load(rt, &dec_path, &cfg.device, &[port("latent_sample", 4)], &[port("sample", 4)])?)
        } else {
            None
        };
        let conf: Value = std::fs::read(root.join("vae_encoder/config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let factor = conf["block_out_channels"].as_array().map_or(8, |b| 1u32 << b.len().saturating_sub(1));
        let out_ch = enc
            .outputs
            .iter()
            .find(|p| p.name == "latent_parameters" || p.name == "latent_sample")
            .and_then(|p| p.shape.get(1).copied())
            .filter(|c| *c > 0);
        let channels = match out_ch {
            Some(c) if moments => c as usize / 2,
            Some(c) => c as usize,
            None => conf["latent_channels"].as_u64().unwrap_or(4) as usize,
        };
        if resolution % (factor * patch) != 0 {
            return Err(format!(
                "encode.resolution = {resolution} must be a multiple of the VAE's {factor} px per latent × encode.patch = {patch}"
            ));
        }
        let scale = match &cfg.scale {
            Some(LatentScale::Value(v)) => *v,
            Some(LatentScale::Auto(_)) => 1.0,
            None => conf["scaling_factor"].as_f64().unwrap_or(1.0) as f32,
        };
        let shift = cfg.shift.unwrap_or(conf["shift_factor"].as_f64().unwrap_or(0.0) as f32);
        let grid = resolution / (factor * patch);
        Ok(Vae {
            spec: LatentSpec {
                tokenizer: "vae".into(),
                channels: channels as u32,
                patch,
                grid,
                token_dim: 2 * channels as u32 * patch * patch,
                resolution,
                scale,
                shift,
                dtype: dtype.into(),
                flip,
                moments: true,
                model: Some(crate::onnx::model_id("vae", root)?),
            },
            enc,
            dec,
            channels,
            factor,
            moments,
            batch: cfg.batch as usize,
        })
    }

    /// Records the measured scale (for `scale = "auto"`).
    pub fn set_scale(&mut self, scale: f32) {
        self.spec.scale = scale;
    }

    fn latent_side(&self) -> usize {
        (self.spec.resolution / self.factor) as usize
    }
}

impl ImageTokenizer for Vae {
    fn spec(&self) -> &LatentSpec {
        &self.spec
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn encode(&self, img: &RgbImage) -> Vec<f32> {
        self.encode_batch(std::slice::from_ref(img)).map(|mut v| v.remove(0)).unwrap_or_default()
    }

    fn encode_batch(&self, imgs: &[RgbImage]) -> Result<Vec<Vec<f32>>, String> {
        let r = self.spec.resolution as usize;
        let plane = r * r;
        // (B, 3, H, W) in [-1, 1].
        let mut x = Vec::with_capacity(imgs.len() * 3 * plane);
        for img in imgs {
            if img.dimensions() != (r as u32, r as u32) {
                return Err(format!("expected a {r}x{r} image, got {}x{}", img.width(), img.height()));
            }
            for c in 0..3 {
                x.extend(img.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
            }
        }
        let want = if self.moments { "latent_parameters" } else { "latent_sample" };
        let shape = vec![imgs.len() as i64, 3, r as i64, r as i64];
        let (s, v) = self.enc.run(vec![("sample", Feed::F32(shape, x).into())], &[want])?.remove(0);
        let (c, side) = (self.channels, self.latent_side());
        let per_out = if self.moments { 2 * c } else { c } * side * side;
        if v.len() != imgs.len() * per_out {
            return Err(format!(
                "{}: {want} has shape {s:?}, expected [{}, {}, {side}, {side}]",
                self.enc.path.display(),
                imgs.len(),
                per_out / (side * side)
            ));
        }
        let p = self.spec.patch as usize;
        Ok(v.chunks_exact(per_out)
            .map(|one| {
                let planes: Vec<f32> = if self.moments {
                    one.to_vec()
                } else {
                    let mut m = one.to_vec();
                    m.resize(2 * c * side * side, -30.0);
                    m
                };
                patchify(&planes, 2 * c, side, side, p)
            })
            .collect())
    }

    /// The mean latent through the decoder; a grey image when the export has no decoder.
    fn decode(&self, tokens: &[f32]) -> RgbImage {
        let r = self.spec.resolution;
        let (c, side, p) = (self.channels, self.latent_side(), self.spec.patch as usize);
        let Some(dec) = &self.dec else { return RgbImage::from_pixel(r, r, image::Rgb([128, 128, 128])) };
        let planes = unpatchify(tokens, 2 * c, side, side, p);
        let mean = planes[..c * side * side].to_vec();
        let shape = vec![1, c as i64, side as i64, side as i64];
        let out = dec.run_with(vec![("latent_sample", Feed::F32(shape, mean).into())], "sample", |s, px| {
            let plane = (r * r) as usize;
            if s.len() != 4 || px.len() < 3 * plane {
                return RgbImage::from_pixel(r, r, image::Rgb([128, 128, 128]));
            }
            let byte = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
            RgbImage::from_fn(r, r, |x, y| {
                let k = (y * r + x) as usize;
                image::Rgb([byte(px[k]), byte(px[plane + k]), byte(px[2 * plane + k])])
            })
        });
        out.unwrap_or_else(|_| RgbImage::from_pixel(r, r, image::Rgb([128, 128, 128])))
    }
}
