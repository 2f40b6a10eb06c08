//! Config of the real teachers: `[generate.http]` (a fleet of image servers) and
//! `[generate.onnx]` (a diffusers-style ONNX export run by ONNX Runtime).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Wire protocols of an HTTP teacher (request and answer shapes in `teacher/http/protocol.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `POST /v1/images/generations`, answer `data[0].b64_json` (or `url`).
    Openai,
    /// AUTOMATIC1111 `POST /sdapi/v1/txt2img`, answer `images[0]` (base64).
    A1111,
    /// Hugging Face text-to-image: `{"inputs", "parameters"}`, answer raw image bytes.
    Hf,
}

/// `[generate.http]`: where and how to ask. Only `protocol`, `model`, `steps`, `guidance`,
/// `negative_prompt` and `extra` change the data; the fleet settings can change between
/// reruns of a stage (add an endpoint, lower a rate) without invalidating it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub protocol: Protocol,
    /// At least one endpoint.
    pub endpoints: Vec<EndpointConfig>,
    /// `model` field of OpenAI requests (e.g. `gpt-image-1`); omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Denoising steps (a1111 `steps`, hf `num_inference_steps`); omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// Classifier-free guidance (a1111 `cfg_scale`, hf `guidance_scale`); omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f32>,
    /// Negative prompt (a1111 and hf); omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// OpenAI protocol: also send `seed` (self-hosted servers honour it; the OpenAI API
    /// rejects it). a1111 and hf always send the seed.
    #[serde(default)]
    pub send_seed: bool,
    /// Also send the prompt's structure (`lightgen: {spec, slots}`), which `lightgen serve`
    /// needs to serve the shapes world.
    #[serde(default)]
    pub send_structure: bool,
    /// Extra JSON fields merged into every request body (e.g. `quality = "low"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Seconds one request may take, body included (default 120).
    #[serde(default = "default_deadline")]
    pub deadline_s: f64,
    /// Failed attempts a sample may retry before it is recorded as failed (default 6).
    /// 429 answers do not count: they wait, up to `patience_s`.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff in milliseconds; doubles per failed attempt, with full jitter (default 250).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest backoff in milliseconds (default 10000).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Consecutive failures after which an endpoint is set aside (default 5).
    #[serde(default = "default_bench_after")]
    pub bench_after: u32,
    /// Seconds an endpoint stays set aside before it is tried again (default 30).
    #[serde(default = "default_bench_s")]
    pub bench_s: f64,
    /// Longest time in seconds one sample may spend waiting out 429s (default 600).
    #[serde(default = "default_patience")]
    pub patience_s: f64,
}

/// One server of the fleet.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URL (`http://gpu-3:8080`) or full URL with path; the protocol's path is
    /// appended when the URL has none.
    pub url: String,
    /// Share of the traffic relative to the others (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Requests in flight at once (default 8).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Requests per second at most; 0 = no limit (default 0).
    #[serde(default)]
    pub rate: f64,
    /// Environment variable that holds the API key (sent as `Authorization: Bearer`).
    /// The key itself is never printed, logged or stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

fn default_deadline() -> f64 {
    120.0
}
fn default_retries() -> u32 {
    6
}
fn default_backoff_ms() -> u64 {
    250
}
fn default_backoff_max_ms() -> u64 {
    10_000
}
fn default_bench_after() -> u32 {
    5
}
fn default_bench_s() -> f64 {
    30.0
}
fn default_patience() -> f64 {
    600.0
}
fn one() -> f64 {
    1.0
}
fn default_concurrency() -> u32 {
    8
}

impl HttpConfig {
    /// The part that decides the images (what the stage hash covers).
    pub fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "protocol": self.protocol,
            "model": self.model,
            "steps": self.steps,
            "guidance": self.guidance,
            "negative_prompt": self.negative_prompt,
            "send_seed": self.send_seed,
            "extra": self.extra,
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("generate.http.endpoints is empty: expected at least one [[generate.http.endpoints]]".into());
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = format!("generate.http.endpoints[{i}]");
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                return Err(format!("{at}.url = \"{}\": expected an http:// or https:// URL", e.url));
            }
            if !(e.weight > 0.0 && e.weight.is_finite()) {
                return Err(format!("{at}.weight = {}: expected a number above 0", e.weight));
            }
            if e.concurrency == 0 {
                return Err(format!("{at}.concurrency = 0: expected at least 1"));
            }
            if !(e.rate >= 0.0 && e.rate.is_finite()) {
                return Err(format!("{at}.rate = {}: expected 0 (no limit) or more", e.rate));
            }
        }
        if !(self.deadline_s > 0.0 && self.deadline_s.is_finite()) {
            return Err(format!("generate.http.deadline_s = {}: expected seconds above 0", self.deadline_s));
        }
        if self.backoff_max_ms < self.backoff_ms {
            return Err("generate.http.backoff_max_ms is below backoff_ms".into());
        }
        if !(self.bench_s >= 0.0 && self.patience_s >= 0.0) {
            return Err("generate.http.bench_s and patience_s must be 0 or more".into());
        }
        for key in self.extra.keys() {
            if ["prompt", "seed", "lightgen"].contains(&key.as_str()) {
                return Err(format!("generate.http.extra.{key}: lightgen sets this field itself"));
            }
        }
        Ok(())
    }
}

/// An ONNX execution device: `auto`, `cuda` or `cpu`.
pub fn check_device(field: &str, device: &str) -> Result<(), String> {
    if ["auto", "cuda", "cpu"].contains(&device) {
        Ok(())
    } else {
        Err(format!("{field} = \"{device}\": expected auto, cuda or cpu"))
    }
}

/// Schedulers the ONNX teacher implements; `auto` follows `scheduler/scheduler_config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    #[default]
    Auto,
    Euler,
    EulerAncestral,
    Ddim,
    Lcm,
}

/// `[generate.onnx]`: a diffusers-style ONNX export folder (the layout `optimum` writes).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnnxTeacherConfig {
    /// The export folder (with `model_index.json`), relative to the config file.
    pub model: PathBuf,
    /// Denoising steps (default 4: turbo models need 1–4, SD 1.x/2.x want 25–50).
    #[serde(default = "default_steps")]
    pub steps: u32,
    /// Classifier-free guidance; 1 or less runs no unconditional pass (default 1, as turbo).
    #[serde(default = "one_f32")]
    pub guidance: f32,
    /// Scheduler (default: what `scheduler_config.json` names).
    #[serde(default)]
    pub scheduler: SchedulerKind,
    /// Negative prompt for guidance (default empty).
    #[serde(default)]
    pub negative_prompt: String,
    /// Images per model call (default 1).
    #[serde(default = "one_u32")]
    pub batch: u32,
    /// `auto` (CUDA when ONNX Runtime has it, else CPU), `cuda` or `cpu` (default auto).
    #[serde(default = "default_device")]
    pub device: String,
    /// ONNX Runtime shared library; default `ORT_DYLIB_PATH`, then discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<PathBuf>,
}

fn default_steps() -> u32 {
    4
}
fn one_f32() -> f32 {
    1.0
}
fn one_u32() -> u32 {
    1
}
fn default_device() -> String {
    "auto".into()
}

impl OnnxTeacherConfig {
    /// The part that decides the images (what the stage hash covers).
    pub fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model,
            "steps": self.steps,
            "guidance": self.guidance,
            "scheduler": self.scheduler,
            "negative_prompt": self.negative_prompt,
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0 || self.steps > 1000 {
            return Err(format!("generate.onnx.steps = {}: expected 1 to 1000", self.steps));
        }
        if self.batch == 0 {
            return Err("generate.onnx.batch = 0: expected at least 1".into());
        }
        check_device("generate.onnx.device", &self.device)?;
        if !self.guidance.is_finite() || self.guidance < 0.0 {
            return Err(format!("generate.onnx.guidance = {}: expected 0 or more", self.guidance));
        }
        Ok(())
    }
}
