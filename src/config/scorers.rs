//! Config of the CLIP scorer (`[curate.clip]`) and of semantic deduplication
//! (`[curate.semdedup]`), which works on the CLIP image embeddings.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[curate.clip]`: a CLIP ONNX export.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// The export folder, relative to the config file: `model.onnx` with both towers (as
    /// `optimum-cli export onnx` writes CLIPModel), or `text_model.onnx` + `vision_model.onnx`;
    /// with `tokenizer.json` or `vocab.json` + `merges.txt`, and `preprocessor_config.json`.
    pub model: PathBuf,
    /// Images per model call (default 32).
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// `auto` (CUDA when ONNX Runtime has it, else CPU), `cuda` or `cpu` (default auto).
    #[serde(default = "default_device")]
    pub device: String,
    /// ONNX Runtime shared library; default `ORT_DYLIB_PATH`, then discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<PathBuf>,
}

/// `[curate.semdedup]`: SemDeDup over CLIP image embeddings (spherical k-means, then within
/// each cluster a sample whose cosine to a kept one is above 1 − eps is a semantic duplicate).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemDedupConfig {
    /// Larger prunes more (default 0.05: cosine above 0.95).
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// k-means clusters; 0 = about one per 100 samples (default 0).
    #[serde(default)]
    pub clusters: u32,
    /// k-means iterations (default 20).
    #[serde(default = "default_iterations")]
    pub iterations: u32,
}

fn default_batch() -> u32 {
    32
}
fn default_device() -> String {
    "auto".into()
}
fn default_eps() -> f64 {
    0.05
}
fn default_iterations() -> u32 {
    20
}

impl ClipConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.batch == 0 {
            return Err("curate.clip.batch = 0: expected at least 1".into());
        }
        super::teachers::check_device("curate.clip.device", &self.device)?;
        Ok(())
    }
}

impl SemDedupConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.eps > 0.0 && self.eps < 1.0) {
            return Err(format!("curate.semdedup.eps = {}: expected a number between 0 and 1", self.eps));
        }
        if self.iterations == 0 {
            return Err("curate.semdedup.iterations = 0: expected at least 1".into());
        }
        Ok(())
    }
}
