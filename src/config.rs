//! Run config: serde structs 1:1 with the TOML (`configs/*.toml`), resolved into a [`Plan`]
//! that the stages see. Relative paths in a config file are relative to that file.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{from_toml, Error, Result};
use crate::paths::normalize;
use crate::taxonomy::Taxonomy;

mod curate;
mod encoders;
mod scorers;
mod teachers;
use curate::validate_curate;
pub use curate::{CurateConfig, FilterConfig, FilterPolicy, KeepRule, SCORERS};
pub use encoders::{LatentScale, T5Config, VaeConfig};
pub use scorers::{ClipConfig, SemDedupConfig};
pub use teachers::{EndpointConfig, HttpConfig, OnnxTeacherConfig, Protocol, SchedulerKind};

fn yes() -> bool {
    true
}

/// One file describes a whole run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub run: RunSection,
    pub prompts: PromptsConfig,
    /// The `generate` stage; a run without it stops after `expand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateConfig>,
    /// The `curate` stage; a run without it stops after `generate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curate: Option<CurateConfig>,
    /// The `encode` stage (latent shards); a run without it stops after `curate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode: Option<EncodeConfig>,
}

/// The `encode` stage: kept images → token shards, prompts → text features.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    /// Square crop size in pixels (ADM centre crop; default 64).
    #[serde(default = "default_resolution")]
    pub resolution: u32,
    /// `pixels`, or `vae` (needs `[encode.vae]`).
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// Patch size: tokens are patch×patch×channels values (default 4).
    #[serde(default = "default_patch")]
    pub patch: u32,
    /// f16 | bf16 | f32 (default f16).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Also store the horizontally flipped copy (default true).
    #[serde(default = "yes")]
    pub flip: bool,
    /// `vocab`, or `t5` (needs `[encode.t5]`).
    #[serde(default = "default_text")]
    pub text: String,
    /// Text tokens kept per prompt (default 32).
    #[serde(default = "default_max_text_len")]
    pub max_text_len: u32,
    /// Samples per shard (default 2048).
    #[serde(default = "default_shard_size")]
    pub shard_size: u64,
    /// Share of prompts kept out of training for evaluation, chosen by prompt id (default 0.05).
    #[serde(default = "default_held_out")]
    pub held_out: f64,
    /// The VAE tokenizer's model and latent normalisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<VaeConfig>,
    /// The T5 text encoder's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t5: Option<T5Config>,
}

fn default_tokenizer() -> String {
    "pixels".into()
}
fn default_patch() -> u32 {
    4
}
fn default_dtype() -> String {
    "f16".into()
}
fn default_text() -> String {
    "vocab".into()
}
fn default_max_text_len() -> u32 {
    32
}
fn default_shard_size() -> u64 {
    2048
}
fn default_held_out() -> f64 {
    0.05
}

fn validate_encode(e: &EncodeConfig) -> std::result::Result<(), String> {
    match (e.tokenizer.as_str(), &e.vae) {
        ("pixels", _) => {}
        ("vae", None) => return Err("encode.tokenizer = \"vae\" needs an [encode.vae] section".into()),
        ("vae", Some(v)) => v.validate()?,
        (other, _) => return Err(format!("encode.tokenizer = \"{other}\": unknown tokenizer; known: pixels, vae")),
    }
    match (e.text.as_str(), &e.t5) {
        ("vocab", _) => {}
        ("t5", None) => return Err("encode.text = \"t5\" needs an [encode.t5] section".into()),
        ("t5", Some(t)) => t.validate()?,
        (other, _) => return Err(format!("encode.text = \"{other}\": unknown text encoder; known: vocab, t5")),
    }
    if !["f16", "bf16", "f32"].contains(&e.dtype.as_str()) {
        return Err(format!("encode.dtype = \"{}\": expected f16, bf16 or f32", e.dtype));
    }
    if !(16..=1024).contains(&e.resolution) || e.patch == 0 || e.resolution % e.patch != 0 {
        return Err(format!(
            "encode.resolution = {} and encode.patch = {}: the patch must divide a resolution of 16 to 1024",
            e.resolution, e.patch
        ));
    }
    if e.max_text_len == 0 || e.shard_size == 0 {
        return Err("encode.max_text_len and encode.shard_size must be at least 1".into());
    }
    if !(0.0..=0.5).contains(&e.held_out) {
        return Err(format!("encode.held_out = {}: expected a share from 0 to 0.5", e.held_out));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run name: the folder `<output_dir>/<name>`. Letters, digits, '.', '_' and '-'.
    pub name: String,
    /// Where runs live (default `runs`, relative to the config file).
    #[serde(default = "default_output_dir")]
    pub output_dir: PathBuf,
    /// Seed for every random choice of the run.
    #[serde(default)]
    pub seed: u64,
}

fn default_output_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// The `expand` stage.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptsConfig {
    /// Taxonomy file (relative to the config file) or `builtin:shapes|geneval|general`.
    pub taxonomy: String,
    /// How many distinct prompts to produce (capped at what the taxonomy can produce).
    pub count: u64,
    /// Rows per part file (default 100000).
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Rows per Parquet row group (default 16384); bounds the writer's memory.
    #[serde(default = "default_row_group")]
    pub row_group_size: u64,
    /// Also write GenEval's `evaluation_metadata.jsonl` and `generation_prompts.txt`.
    #[serde(default)]
    pub write_geneval: bool,
}

/// The `generate` stage: a teacher renders each prompt.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Teacher: `builtin:shapes`, `http` (needs `[generate.http]`) or `onnx` (needs `[generate.onnx]`).
    pub teacher: String,
    /// Images per prompt, each with its own seed (default 4).
    #[serde(default = "default_images_per_prompt")]
    pub images_per_prompt: u32,
    /// Width and height in pixels (default 64; 16 to 2048).
    #[serde(default = "default_resolution")]
    pub resolution: u32,
    /// Image encoding (default png).
    #[serde(default)]
    pub format: ImageFormat,
    /// JPEG quality, 1 to 100 (default 90).
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Samples per part file (default 20000).
    #[serde(default = "default_generate_part")]
    pub part_size: u64,
    /// The shapes world's teacher: failure rates and object size.
    #[serde(default)]
    pub shapes: crate::world::render::ShapesTeacherConfig,
    /// The HTTP teacher: protocol, endpoints, retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConfig>,
    /// The ONNX teacher: a diffusers-style export folder and sampling settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxTeacherConfig>,
}

impl GenerateConfig {
    /// What decides the images, for the stage hash: the fleet settings of the HTTP teacher
    /// (endpoints, rates, retries) are left out so a long run can change them and resume.
    pub fn identity(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        if let Some(h) = &self.http {
            v["http"] = h.identity();
        }
        if let Some(o) = &self.onnx {
            v["onnx"] = o.identity();
        }
        v
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    #[default]
    Png,
    Jpeg,
    /// Lossless WebP.
    Webp,
}

fn default_images_per_prompt() -> u32 {
    4
}
fn default_resolution() -> u32 {
    64
}
fn default_quality() -> u8 {
    90
}
fn default_generate_part() -> u64 {
    20_000
}

fn default_part_size() -> u64 {
    100_000
}
fn default_row_group() -> u64 {
    16_384
}

/// The validated, resolved run: what the stages read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config as resolved (overrides applied), saved next to every artifact.
    pub config: RunConfig,
    /// `<output_dir>/<name>`.
    pub run_dir: PathBuf,
    pub taxonomy: Taxonomy,
    /// blake3 over the resolved config and the taxonomy bytes.
    pub hash: String,
    /// Per stage: blake3 over what decides that stage's output (its section, the seed and the
    /// upstream stage's hash), so changing a later stage's settings keeps earlier stages.
    pub stage_hashes: std::collections::BTreeMap<String, String>,
}

/// Runtime overrides from the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub count: Option<u64>,
    pub output_dir: Option<PathBuf>,
}

/// The teachers this build knows.
pub const TEACHERS: &[&str] = &["builtin:shapes", "http", "onnx"];

fn validate_generate(g: &GenerateConfig) -> std::result::Result<(), String> {
    if !TEACHERS.contains(&g.teacher.as_str()) {
        return Err(format!("generate.teacher = \"{}\": unknown teacher; known: {}", g.teacher, TEACHERS.join(", ")));
    }
    match (g.teacher.as_str(), &g.http, &g.onnx) {
        ("http", None, _) => return Err("generate.teacher = \"http\" needs a [generate.http] section".into()),
        ("onnx", _, None) => return Err("generate.teacher = \"onnx\" needs a [generate.onnx] section".into()),
        _ => {}
    }
    if let Some(h) = &g.http {
        h.validate()?;
    }
    if let Some(o) = &g.onnx {
        o.validate()?;
    }
    if !(16..=2048).contains(&g.resolution) {
        return Err(format!("generate.resolution = {}: expected 16 to 2048", g.resolution));
    }
    if g.images_per_prompt == 0 || g.part_size == 0 {
        return Err("generate.images_per_prompt and generate.part_size must be at least 1".into());
    }
    if !(1..=100).contains(&g.quality) {
        return Err(format!("generate.quality = {}: expected 1 to 100", g.quality));
    }
    let mut total = 0.0;
    for (name, rate) in g.shapes.rates() {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("generate.shapes.{name} = {rate}: expected a rate from 0 to 1"));
        }
        total += rate;
    }
    if total > 1.0 {
        return Err(format!("generate.shapes: the failure rates add up to {total}, more than 1"));
    }
    let scale = g.shapes.object_scale;
    if !(0.5..=2.0).contains(&scale) {
        return Err(format!("generate.shapes.object_scale = {scale}: expected 0.5 to 2"));
    }
    let grid = g.shapes.grid;
    if grid != 0 && (!grid.is_multiple_of(2) || grid > g.resolution / 4) {
        return Err(format!(
            "generate.shapes.grid = {grid}: expected 0 (off) or an even number of pixels up to a quarter of \
             generate.resolution ({}); set it to encode.patch",
            g.resolution / 4
        ));
    }
    for (field, given, known) in [
        ("backgrounds", &g.shapes.backgrounds, &crate::world::BACKGROUNDS[..]),
        ("styles", &g.shapes.styles, &crate::world::STYLES[..]),
    ] {
        if given.is_empty() {
            return Err(format!("generate.shapes.{field} is empty: expected one or more of {}", known.join(", ")));
        }
        if let Some(bad) = given.iter().find(|v| !known.contains(&v.as_str())) {
            return Err(format!(
                "generate.shapes.{field}: unknown \"{bad}\"; expected one or more of {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

impl RunConfig {
    pub fn from_file(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        RunConfig::from_str(&path.display().to_string(), &text)
    }

    pub fn from_str(source: &str, text: &str) -> Result<RunConfig> {
        toml::from_str(text).map_err(|e| from_toml(source, text, &e))
    }
}

/// Canonical JSON of a config section, for hashing.
mod erased {
    pub trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("config serialises")
        }
    }
}

impl Plan {
    /// The hash of one stage (see `stage_hashes`); the whole plan's hash for an unknown stage.
    pub fn stage_hash(&self, stage: &str) -> &str {
        self.stage_hashes.get(stage).map_or(&self.hash, String::as_str)
    }

    /// Validates `config` (read from `config_path`) and resolves paths and the taxonomy.
    pub fn resolve(mut config: RunConfig, config_path: &Path, overrides: &Overrides) -> Result<Plan> {
        let src = config_path.display().to_string();
        let base = config_path.parent().unwrap_or(Path::new("."));
        if let Some(c) = overrides.count {
            config.prompts.count = c;
        }
        let name = &config.run.name;
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            || name.starts_with('.')
        {
            return Err(Error::invalid(
                &src,
                format!("run.name = \"{name}\": expected letters, digits, '.', '_' or '-' (not starting with '.')"),
            ));
        }
        let p = &config.prompts;
        if p.count == 0 {
            return Err(Error::invalid(&src, "prompts.count = 0: expected at least 1"));
        }
        if p.part_size == 0 || p.row_group_size == 0 {
            return Err(Error::invalid(&src, "prompts.part_size and prompts.row_group_size must be at least 1"));
        }
        if let Some(g) = &config.generate {
            validate_generate(g).map_err(|m| Error::invalid(&src, m))?;
        }
        if let Some(c) = &config.curate {
            validate_curate(c).map_err(|m| Error::invalid(&src, m))?;
        }
        if let Some(e) = &config.encode {
            validate_encode(e).map_err(|m| Error::invalid(&src, m))?;
        }
        // Model folders and runtime libraries are relative to the config file.
        let rebase = |model: &mut PathBuf, runtime: &mut Option<PathBuf>| {
            *model = normalize(&base.join(&*model));
            if let Some(r) = runtime.as_mut() {
                *r = normalize(&base.join(&*r));
            }
        };
        if let Some(t) = config.encode.as_mut().and_then(|e| e.t5.as_mut()) {
            rebase(&mut t.model, &mut t.runtime);
        }
        if let Some(v) = config.encode.as_mut().and_then(|e| e.vae.as_mut()) {
            rebase(&mut v.model, &mut v.runtime);
        }
        if let Some(c) = config.curate.as_mut().and_then(|c| c.clip.as_mut()) {
            rebase(&mut c.model, &mut c.runtime);
        }
        if let Some(o) = config.generate.as_mut().and_then(|g| g.onnx.as_mut()) {
            rebase(&mut o.model, &mut o.runtime);
        }
        let output_dir = match &overrides.output_dir {
            Some(d) => d.clone(),
            None => normalize(&base.join(&config.run.output_dir)),
        };
        let taxonomy = Taxonomy::load(&p.taxonomy, base)?;
        let output_dir = normalize(&output_dir);
        let run_dir = output_dir.join(name);
        let mut h = blake3::Hasher::new();
        h.update(serde_json::to_string(&config).expect("config serialises").as_bytes());
        h.update(taxonomy.hash.as_bytes());
        let hash = h.finalize().to_hex().to_string();
        let json = |v: &dyn erased::Ser| v.json();
        let mut stage_hashes = std::collections::BTreeMap::new();
        let expand =
            blake3::hash(format!("{}|{}|{}", config.run.seed, json(&config.prompts), taxonomy.hash).as_bytes());
        stage_hashes.insert("expand".to_string(), expand.to_hex().to_string());
        if let Some(g) = &config.generate {
            let gen = blake3::hash(format!("{}|{}", expand.to_hex(), json(&g.identity())).as_bytes());
            stage_hashes.insert("generate".to_string(), gen.to_hex().to_string());
            if let Some(c) = &config.curate {
                let cur = blake3::hash(format!("{}|{}", gen.to_hex(), json(c)).as_bytes());
                stage_hashes.insert("curate".to_string(), cur.to_hex().to_string());
                if let Some(e) = &config.encode {
                    let enc = blake3::hash(format!("{}|{}", cur.to_hex(), json(e)).as_bytes());
                    stage_hashes.insert("encode".to_string(), enc.to_hex().to_string());
                }
            }
        }
        Ok(Plan { config, run_dir, taxonomy, hash, stage_hashes })
    }

    /// Loads and resolves a config file.
    pub fn load(config_path: &Path, overrides: &Overrides) -> Result<Plan> {
        Plan::resolve(RunConfig::from_file(config_path)?, config_path, overrides)
    }

    /// The resolved plan as TOML, for `--show-config`.
    pub fn show(&self) -> String {
        let config = toml::to_string_pretty(&self.config).expect("config serialises");
        format!(
            "# resolved plan {}\n# run dir: {}\n# taxonomy: {} v{} ({}), {} slots, {} templates, capacity {:.0}\n{config}",
            &self.hash[..16],
            self.run_dir.display(),
            self.taxonomy.name,
            self.taxonomy.version,
            self.taxonomy.source,
            self.taxonomy.slots.len(),
            self.taxonomy.templates.len(),
            self.taxonomy.total_capacity(),
        )
    }
}
