//! `clip`: prompt–image cosine from a CLIP ONNX export, and the image embedding that SemDeDup
//! clusters. Layouts: `model.onnx` with both towers (what `optimum-cli export onnx` writes for
//! CLIPModel: `input_ids`, `attention_mask`, `pixel_values` → `text_embeds`, `image_embeds`),
//! or `text_model.onnx` + `vision_model.onnx` (at the root or under `onnx/`). Preprocessing
//! as CLIPImageProcessor: bicubic resize of the short side, centre crop, /255, CLIP mean/std.
//! The score is the raw cosine, recorded with the model id; scales are never mixed.

use std::path::{Path, PathBuf};

use fast_image_resize::FilterType;
use image::RgbImage;
use serde_json::Value;

use super::score::{ScoreInput, Scored, Scorer};
use crate::config::ClipConfig;
use crate::error::{Error, Result};
use crate::onnx::clip_tokenizer::ClipTokenizer;
use crate::onnx::model::{port, Feed, Model};

const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// One unit vector per row.
type Embeddings = Vec<Vec<f32>>;

enum Towers {
    Joint(Model),
    Split { text: Model, vision: Model },
}

/// How CLIPImageProcessor prepares an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub shortest_edge: u32,
    pub crop: (u32, u32),
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// From `preprocessor_config.json` (CLIP's values where it is silent or absent).
    pub fn from_json(v: &Value) -> Preprocess {
        let num = |x: &Value| x.as_u64().map(|n| n as u32);
        let shortest_edge = num(&v["size"]).or(num(&v["size"]["shortest_edge"])).unwrap_or(224);
        let crop = match (num(&v["crop_size"]), num(&v["crop_size"]["height"]), num(&v["crop_size"]["width"])) {
            (Some(s), _, _) => (s, s),
            (None, Some(h), Some(w)) => (w, h),
            _ => (shortest_edge, shortest_edge),
        };
        let triple = |x: &Value, d: [f32; 3]| -> [f32; 3] {
            let a: Vec<f32> = x
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).map(|f| f as f32).collect())
                .unwrap_or_default();
            a.try_into().unwrap_or(d)
        };
        Preprocess {
            shortest_edge,
            crop,
            mean: triple(&v["image_mean"], CLIP_MEAN),
            std: triple(&v["image_std"], CLIP_STD),
        }
    }

    /// (3, H, W) normalised pixels.
    pub fn apply(&self, img: &RgbImage) -> std::result::Result<Vec<f32>, String> {
        let (w, h) = img.dimensions();
        let s = self.shortest_edge;
        // transformers: the short side becomes `s`, the long side int(s · long / short).
        let (nw, nh) = if w <= h {
            (s, (s as u64 * h as u64 / w.max(1) as u64) as u32)
        } else {
            ((s as u64 * w as u64 / h.max(1) as u64) as u32, s)
        };
        let resized = if (nw, nh) == (w, h) {
            img.clone()
        } else {
            crate::formats::crop::resize(img, nw, nh, FilterType::CatmullRom)?
        };
        let (cw, ch) = self.crop;
        if cw > nw || ch > nh {
            return Err(format!("crop {cw}x{ch} is larger than the resized {nw}x{nh}"));
        }
        let (left, top) = ((nw - cw) / 2, (nh - ch) / 2);
        let plane = (cw * ch) as usize;
        let mut out = vec![0f32; 3 * plane];
        for y in 0..ch {
            for x in 0..cw {
                let p = resized.get_pixel(left + x, top + y).0;
                let k = (y * cw + x) as usize;
                for c in 0..3 {
                    out[c * plane + k] = (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(out)
    }
}

pub struct ClipScorer {
    id: String,
    towers: Towers,
    tok: ClipTokenizer,
    pre: Preprocess,
    batch: usize,
}

fn find(root: &Path, name: &str) -> Option<PathBuf> {
    [root.join(name), root.join("onnx").join(name)].into_iter().find(|p| p.is_file())
}

impl ClipScorer {
    pub fn load(cfg: &ClipConfig) -> Result<ClipScorer> {
        let bad = |m: String| Error::invalid("curate.clip", m);
        let root = &cfg.model;
        if !root.is_dir() {
            return Err(bad(format!("{}: not a folder (expected a CLIP ONNX export)", root.display())));
        }
        let rt = crate::onnx::runtime::get(cfg.runtime.as_deref()).map_err(bad)?;
        let dev = cfg.device.as_str();
        let ids = port("input_ids", 2);
        let towers = if let Some(joint) = find(root, "model.onnx") {
            let ins = [ids, port("pixel_values", 4)];
            let outs = [port("text_embeds", 2), port("image_embeds", 2)];
            Towers::Joint(Model::load(rt, &joint, dev, &ins, &outs).map_err(bad)?)
        } else {
            let (Some(t), Some(v)) = (find(root, "text_model.onnx"), find(root, "vision_model.onnx")) else {
                return Err(bad(format!(
                    "{}: no model.onnx (both towers) and no text_model.onnx + vision_model.onnx (at the root or under onnx/)",
                    root.display()
                )));
            };
            Towers::Split {
                text: Model::load(rt, &t, dev, &[ids], &[port("text_embeds", 2)]).map_err(bad)?,
                vision: Model::load(rt, &v, dev, &[port("pixel_values", 4)], &[port("image_embeds", 2)])
                    .map_err(bad)?,
            }
        };
        let tok = ClipTokenizer::load(root).map_err(bad)?;
        let pre: Value = std::fs::read(root.join("preprocessor_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(ClipScorer {
            id: crate::onnx::model_id("clip", root).map_err(bad)?,
            towers,
            tok,
            pre: Preprocess::from_json(&pre),
            batch: cfg.batch as usize,
        })
    }

    /// (text embeddings, image embeddings), each (B, D), L2-normalised.
    fn embed(&self, batch: &[ScoreInput<'_>]) -> std::result::Result<(Embeddings, Embeddings), String> {
        let b = batch.len() as i64;
        let mut ids = Vec::with_capacity(batch.len() * self.tok.max_len);
        for x in batch {
            ids.extend(self.tok.encode(x.prompt)?);
        }
        // Real tokens are bos … eos; padding follows the first eos.
        let mask: Vec<i64> = ids
            .chunks(self.tok.max_len)
            .flat_map(|row| {
                let end = row.iter().position(|&t| t == self.tok.eos as i64).map_or(row.len(), |p| p + 1);
                (0..row.len()).map(move |i| (i < end) as i64)
            })
            .collect();
        let mut pixels = Vec::new();
        for x in batch {
            pixels.extend(self.pre.apply(x.image)?);
        }
        let (cw, ch) = self.pre.crop;
        let len = self.tok.max_len as i64;
        let id_feed = || Feed::I64(vec![b, len], ids.clone());
        let px_feed = Feed::F32(vec![b, 3, ch as i64, cw as i64], pixels);
        let mask_feed = Feed::I64(vec![b, len], mask);
        let (t, v) = match &self.towers {
            Towers::Joint(m) => {
                let mut feeds = vec![("input_ids", id_feed().into()), ("pixel_values", px_feed.into())];
                if m.has_input("attention_mask") {
                    feeds.push(("attention_mask", mask_feed.into()));
                }
                let mut out = m.run(feeds, &["text_embeds", "image_embeds"])?;
                let v = out.remove(1);
                (out.remove(0), v)
            }
            Towers::Split { text, vision } => {
                let mut feeds = vec![("input_ids", id_feed().into())];
                if text.has_input("attention_mask") {
                    feeds.push(("attention_mask", mask_feed.into()));
                }
                let t = text.run(feeds, &["text_embeds"])?.remove(0);
                let v = vision.run(vec![("pixel_values", px_feed.into())], &["image_embeds"])?.remove(0);
                (t, v)
            }
        };
        Ok((rows(&t.1, batch.len())?, rows(&v.1, batch.len())?))
    }
}

/// (B · D) values → B unit vectors.
fn rows(values: &[f32], b: usize) -> std::result::Result<Embeddings, String> {
    if b == 0 || values.len() % b != 0 {
        return Err(format!("embeddings of {} values do not split into {b} rows", values.len()));
    }
    Ok(values.chunks(values.len() / b).map(normalize).collect())
}

fn normalize(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

impl Scorer for ClipScorer {
    fn id(&self) -> &str {
        &self.id
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn score(&self, batch: &[ScoreInput<'_>]) -> Vec<std::result::Result<Scored, String>> {
        if batch.is_empty() {
            return Vec::new();
        }
        match self.embed(batch) {
            Ok((t, v)) => t
                .iter()
                .zip(v)
                .map(|(t, v)| {
                    let cos: f32 = t.iter().zip(&v).map(|(a, b)| a * b).sum();
                    Ok(Scored { score: cos, verdict: None, embedding: Some(v) })
                })
                .collect(),
            // One bad sample must not fail the batch: score one by one to find it.
            Err(_) if batch.len() > 1 => batch.iter().flat_map(|x| self.score(std::slice::from_ref(x))).collect(),
            Err(e) => vec![Err(e)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessing_reads_both_config_shapes() {
        let p = Preprocess::from_json(
            &serde_json::json!({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}),
        );
        assert_eq!((p.shortest_edge, p.crop, p.mean), (224, (224, 224), CLIP_MEAN));
        let p = Preprocess::from_json(&serde_json::json!({"size": 32, "crop_size": 32, "image_mean": [0.5, 0.5, 0.5]}));
        assert_eq!((p.shortest_edge, p.crop, p.mean), (32, (32, 32), [0.5; 3]));
        // A 64x32 image: the short side to 32 (no resize), the centre 32 columns.
        let img = RgbImage::from_fn(64, 32, |x, _| image::Rgb([x as u8 * 4, 0, 0]));
        let px = p.apply(&img).unwrap();
        assert_eq!(px.len(), 3 * 32 * 32);
        let first = (16.0 * 4.0 / 255.0 - 0.5) / CLIP_STD[0];
        assert!((px[0] - first).abs() < 1e-6, "{} vs {first}", px[0]);
    }
}
