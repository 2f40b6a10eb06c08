//! A diffusers-style ONNX export folder, as `optimum` writes it:
//!
//! ```text
//! model_index.json
//! scheduler/scheduler_config.json
//! tokenizer/{vocab.json, merges.txt | tokenizer.json, …}
//! text_encoder/model.onnx
//! tokenizer_2/, text_encoder_2/model.onnx      (SDXL family)
//! unet/model.onnx
//! vae_decoder/{model.onnx, config.json}
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// SD 1.x / 2.x / SD-Turbo: one CLIP text encoder.
    Sd,
    /// SDXL / SDXL-Turbo: two text encoders, pooled embeddings and time ids.
    Sdxl,
}

pub struct Folder {
    pub root: PathBuf,
    pub family: Family,
    pub scheduler: Value,
    /// Latents are divided by this before decoding.
    pub vae_scaling: f64,
    /// Pixels per latent cell along each side.
    pub vae_factor: u32,
    /// SDXL: an empty negative prompt means zero embeddings.
    pub zeros_for_empty_prompt: bool,
    /// blake3 over every file of the export (names, sizes and bytes).
    pub hash: String,
}

const LAYOUT: &str = "a diffusers ONNX export has model_index.json, scheduler/scheduler_config.json, tokenizer/, \
                      text_encoder/model.onnx, unet/model.onnx and vae_decoder/model.onnx (SDXL adds tokenizer_2/ \
                      and text_encoder_2/model.onnx)";

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{}: missing or unreadable ({e}); {LAYOUT}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))
}

impl Folder {
    pub fn open(root: &Path) -> Result<Folder, String> {
        if !root.is_dir() {
            return Err(format!("{}: not a folder; {LAYOUT}", root.display()));
        }
        let index = read_json(&root.join("model_index.json"))?;
        let class = index["_class_name"].as_str().unwrap_or("");
        let family =
            if index.get("text_encoder_2").is_some() || class.contains("XL") { Family::Sdxl } else { Family::Sd };
        let mut parts = vec!["tokenizer", "text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"];
        if family == Family::Sdxl {
            parts.extend(["tokenizer_2", "text_encoder_2/model.onnx"]);
        }
        for p in parts {
            if !root.join(p).exists() {
                return Err(format!("{}: missing; {LAYOUT}", root.join(p).display()));
            }
        }
        let scheduler = read_json(&root.join("scheduler/scheduler_config.json"))?;
        let vae: Value = std::fs::read(root.join("vae_decoder/config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let default_scaling = if family == Family::Sdxl { 0.13025 } else { 0.18215 };
        let vae_scaling = vae["scaling_factor"].as_f64().unwrap_or(default_scaling);
        let vae_factor = vae["block_out_channels"].as_array().map_or(8, |b| 1u32 << b.len().saturating_sub(1));
        let zeros_for_empty_prompt = index["force_zeros_for_empty_prompt"].as_bool().unwrap_or(family == Family::Sdxl);
        Ok(Folder {
            root: root.to_path_buf(),
            family,
            scheduler,
            vae_scaling,
            vae_factor,
            zeros_for_empty_prompt,
            hash: crate::onnx::hash_tree(root)?,
        })
    }

    pub fn path(&self, part: &str) -> PathBuf {
        self.root.join(part)
    }
}
