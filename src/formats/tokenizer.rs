//! Image tokenizers: image → a grid of token vectors, and back. `pixels` is the embedded
//! default (lossless patches); `vae` (`vae.rs`) is an ONNX VAE encoder.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// What the tokens are: recorded in the manifest, read by the trainer and the sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LatentSpec {
    /// `pixels` or `vae`.
    pub tokenizer: String,
    /// Channels before patchify (3 for pixels, the VAE's latent channels).
    pub channels: u32,
    pub patch: u32,
    /// Tokens per side: resolution / (stride · patch).
    pub grid: u32,
    /// Values per token: channels · patch².
    pub token_dim: u32,
    pub resolution: u32,
    /// Token value = (x − shift) · scale.
    pub scale: f32,
    pub shift: f32,
    /// f16 | bf16 | f32 on disk.
    pub dtype: String,
    /// Whether each sample also stores its horizontally flipped copy.
    pub flip: bool,
    /// VAE posterior moments: each token is the mean's `token_dim / 2` values, then the
    /// log-variance's, so the trainer can draw a fresh latent every epoch (as MAR does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moments: bool,
    /// The model that made the tokens, with its folder's blake3 (`vae:<name>@<hash>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Turns images into tokens and back.
pub trait ImageTokenizer: Send + Sync {
    fn spec(&self) -> &LatentSpec;
    /// (grid², token_dim) values, row-major, tokens in raster order.
    fn encode(&self, img: &RgbImage) -> Vec<f32>;
    /// Several images at once (one model call for the VAE); an error fails the whole batch.
    fn encode_batch(&self, imgs: &[RgbImage]) -> Result<Vec<Vec<f32>>, String> {
        Ok(imgs.iter().map(|i| self.encode(i)).collect())
    }
    fn decode(&self, tokens: &[f32]) -> RgbImage;
    /// How many images `encode_batch` prefers.
    fn batch_size(&self) -> usize {
        1
    }
}

/// (C, H, W) planes → (grid², C·p²) tokens, each (c, py, px) channel-major, raster order.
pub fn patchify(planes: &[f32], c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(c * h * w);
    for ty in 0..gh {
        for tx in 0..gw {
            for ch in 0..c {
                for py in 0..p {
                    let row = ch * h * w + (ty * p + py) * w + tx * p;
                    out.extend_from_slice(&planes[row..row + p]);
                }
            }
        }
    }
    out
}

/// The inverse of [`patchify`].
pub fn unpatchify(tokens: &[f32], c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let (gh, gw) = (h / p, w / p);
    let mut out = vec![0f32; c * h * w];
    let mut i = 0;
    for ty in 0..gh {
        for tx in 0..gw {
            for ch in 0..c {
                for py in 0..p {
                    let row = ch * h * w + (ty * p + py) * w + tx * p;
                    out[row..row + p].copy_from_slice(&tokens[i..i + p]);
                    i += p;
                }
            }
        }
    }
    out
}

/// `pixels`: [-1, 1] values patchified as the reference does (`lightgen.md` §2.2): each token is
/// a p×p×3 patch ordered (c, py, px), channel-major; tokens in raster order. Lossless: decode
/// gives back the exact pixels (f32 and f16; bf16 is within one grey level).
pub struct Pixels {
    spec: LatentSpec,
}

impl Pixels {
    pub fn new(resolution: u32, patch: u32, dtype: &str, flip: bool) -> Result<Pixels, String> {
        if patch == 0 || resolution % patch != 0 {
            return Err(format!("encode.patch = {patch} must divide encode.resolution = {resolution}"));
        }
        Ok(Pixels {
            spec: LatentSpec {
                tokenizer: "pixels".into(),
                channels: 3,
                patch,
                grid: resolution / patch,
                token_dim: 3 * patch * patch,
                resolution,
                scale: 1.0 / 127.5,
                shift: 127.5,
                dtype: dtype.into(),
                flip,
                moments: false,
                model: None,
            },
        })
    }
}

impl ImageTokenizer for Pixels {
    fn spec(&self) -> &LatentSpec {
        &self.spec
    }

    fn encode(&self, img: &RgbImage) -> Vec<f32> {
        let (p, g) = (self.spec.patch, self.spec.grid);
        let mut out = Vec::with_capacity((g * g * self.spec.token_dim) as usize);
        for ty in 0..g {
            for tx in 0..g {
                // (c, py, px) inside each token: (C, H/p, p, W/p, p) → (H/p, W/p, C, p, p).
                for c in 0..3 {
                    for py in 0..p {
                        for px in 0..p {
                            let v = img.get_pixel(tx * p + px, ty * p + py)[c] as f32;
                            out.push((v - self.spec.shift) * self.spec.scale);
                        }
                    }
                }
            }
        }
        out
    }

    fn decode(&self, tokens: &[f32]) -> RgbImage {
        let (p, g) = (self.spec.patch, self.spec.grid);
        let r = self.spec.resolution;
        let mut img = RgbImage::new(r, r);
        let mut i = 0;
        for ty in 0..g {
            for tx in 0..g {
                for c in 0..3 {
                    for py in 0..p {
                        for px in 0..p {
                            let v = tokens.get(i).copied().unwrap_or(0.0) / self.spec.scale + self.spec.shift;
                            img.get_pixel_mut(tx * p + px, ty * p + py)[c] = v.round().clamp(0.0, 255.0) as u8;
                            i += 1;
                        }
                    }
                }
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patchify_order_is_channel_major_and_decode_inverts_it() {
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 200]));
        let t = Pixels::new(8, 2, "f32", false).unwrap();
        let tokens = t.encode(&img);
        assert_eq!(tokens.len(), 16 * 12);
        // Token (0, 1) covers x 2..4, y 0..2; its first 4 values are red at (2,0),(3,0),(2,1),(3,1).
        let tok = &tokens[12..24];
        let red = |x: u32| (x as f32 * 30.0 - 127.5) / 127.5;
        assert_eq!(&tok[..4], &[red(2), red(3), red(2), red(3)]);
        assert!(tokens.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(t.decode(&tokens), img);
    }

    #[test]
    fn patchify_inverts_and_matches_the_pixel_order() {
        let (c, h, w, p) = (2, 4, 6, 2);
        let planes: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let t = patchify(&planes, c, h, w, p);
        // Token 0: channel 0 rows 0..2 cols 0..2, then channel 1.
        assert_eq!(&t[..8], &[0.0, 1.0, 6.0, 7.0, 24.0, 25.0, 30.0, 31.0]);
        assert_eq!(unpatchify(&t, c, h, w, p), planes);
    }

    #[test]
    fn f16_round_trip_is_lossless() {
        let img =
            RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 16 + y) as u8, (255 - x * 16) as u8, (y * 16) as u8]));
        let t = Pixels::new(16, 4, "f16", false).unwrap();
        let back: Vec<f32> = t.encode(&img).iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(t.decode(&back), img);
    }
}
