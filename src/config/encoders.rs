//! Config of the ONNX VAE image tokenizer (`[encode.vae]`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A latent scale: a number, or `"auto"` (1/std of the latent means over a sample of the
/// corpus, recorded in the manifest).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LatentScale {
    Value(f32),
    Auto(String),
}

/// `[encode.vae]`: a VAE from a diffusers ONNX export (`vae_encoder/model.onnx`, and
/// `vae_decoder/model.onnx` for decoding back).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// The export folder, relative to the config file.
    pub model: PathBuf,
    /// Token value = (latent − shift) · scale. Default: `scaling_factor` of
    /// `vae_encoder/config.json` (SD 0.18215; SD3.5 1.5305; MAR KL-16 0.2325), else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<LatentScale>,
    /// Default: `shift_factor` of `vae_encoder/config.json` (SD3.5 0.0609), else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f32>,
    /// Images per model call (default 16).
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// `auto`, `cuda` or `cpu` (default auto).
    #[serde(default = "default_device")]
    pub device: String,
    /// ONNX Runtime shared library; default `ORT_DYLIB_PATH`, then discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<PathBuf>,
}

fn default_batch() -> u32 {
    16
}
fn default_device() -> String {
    "auto".into()
}

impl VaeConfig {
    pub fn validate(&self) -> Result<(), String> {
        match &self.scale {
            Some(LatentScale::Auto(s)) if s != "auto" => {
                return Err(format!("encode.vae.scale = \"{s}\": expected a number or \"auto\""))
            }
            Some(LatentScale::Value(v)) if !(v.is_finite() && *v > 0.0) => {
                return Err(format!("encode.vae.scale = {v}: expected a number above 0"))
            }
            _ => {}
        }
        if self.batch == 0 {
            return Err("encode.vae.batch = 0: expected at least 1".into());
        }
        super::teachers::check_device("encode.vae.device", &self.device)?;
        Ok(())
    }
}

/// `[encode.t5]`: a T5 encoder export (`model.onnx` or `encoder_model.onnx`: `input_ids`,
/// `attention_mask` → `last_hidden_state`) with its `tokenizer.json`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct T5Config {
    /// The export folder, relative to the config file.
    pub model: PathBuf,
    /// Feature dtype on disk: bf16 | f16 | f32 (default bf16).
    #[serde(default = "default_t5_dtype")]
    pub dtype: String,
    /// Prompts per model call (default 32).
    #[serde(default = "default_t5_batch")]
    pub batch: u32,
    /// `auto`, `cuda` or `cpu` (default auto).
    #[serde(default = "default_device")]
    pub device: String,
    /// ONNX Runtime shared library; default `ORT_DYLIB_PATH`, then discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<PathBuf>,
}

fn default_t5_dtype() -> String {
    "bf16".into()
}
fn default_t5_batch() -> u32 {
    32
}

impl T5Config {
    pub fn validate(&self) -> Result<(), String> {
        if !["bf16", "f16", "f32"].contains(&self.dtype.as_str()) {
            return Err(format!("encode.t5.dtype = \"{}\": expected bf16, f16 or f32", self.dtype));
        }
        if self.batch == 0 {
            return Err("encode.t5.batch = 0: expected at least 1".into());
        }
        super::teachers::check_device("encode.t5.device", &self.device)?;
        Ok(())
    }
}
