//! Teachers: whatever turns a prompt into an image. The `generate` stage sees only this trait;
//! the built-in shapes world, a fleet of HTTP image servers and a diffusers-style ONNX
//! export implement it.

pub mod builtin;
pub mod diffusers;
pub mod http;

use image::RgbImage;

use crate::config::GenerateConfig;
use crate::error::{Error, Result};

pub use crate::formats::prompt_rows::PromptRow;

/// One image to make.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub prompt: &'a PromptRow,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
}

/// A teacher's answer for one request.
#[derive(Debug, Clone)]
pub struct Output {
    pub image: RgbImage,
    /// The exact request parameters as the teacher used them (recorded per sample).
    pub params: serde_json::Value,
    /// What the teacher knows it drew (the shapes world's ground truth), if anything.
    pub truth: Option<serde_json::Value>,
}

/// Makes images. One failed request is a per-sample error, never a failed batch.
pub trait Teacher: Send + Sync {
    /// Stable id recorded in every sample, e.g. `builtin:shapes`.
    fn id(&self) -> &str;
    /// How many requests the teacher prefers per call.
    fn batch_size(&self) -> usize {
        1
    }
    /// How many threads should call `generate` at once (default: one per core).
    fn threads(&self) -> Option<usize> {
        None
    }
    /// One result per request, in order.
    fn generate(&self, batch: &[Request<'_>]) -> Vec<std::result::Result<Output, String>>;
}

/// The teacher a config names.
pub fn from_config(cfg: &GenerateConfig) -> Result<Box<dyn Teacher>> {
    match cfg.teacher.as_str() {
        "builtin:shapes" => Ok(Box::new(builtin::ShapesTeacher::new(cfg.shapes.clone()))),
        "http" => {
            let h = cfg.http.as_ref().ok_or_else(|| Error::invalid("generate.http", "missing section"))?;
            Ok(Box::new(http::HttpTeacher::new(h)?))
        }
        "onnx" => {
            let o = cfg.onnx.as_ref().ok_or_else(|| Error::invalid("generate.onnx", "missing section"))?;
            Ok(Box::new(diffusers::OnnxTeacher::load(o)?))
        }
        other => Err(Error::invalid(
            "generate.teacher",
            format!("unknown teacher \"{other}\"; known: {}", crate::config::TEACHERS.join(", ")),
        )),
    }
}
