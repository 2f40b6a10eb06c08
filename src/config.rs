//! Run config: serde structs 1:1 with the TOML (`configs/*.toml`), resolved into a [`Plan`]
//! that the stages see. Relative paths in a config file are relative to that file.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{from_toml, Error, Result};
use crate::taxonomy::Taxonomy;

/// One file describes a whole run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub run: RunSection,
    pub prompts: PromptsConfig,
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
}

/// Runtime overrides from the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub count: Option<u64>,
    pub output_dir: Option<PathBuf>,
}

/// Lexically removes `.` and `name/..` from a path, so `configs/../runs` prints as `runs`.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
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

impl Plan {
    /// Validates `config` (read from `config_path`) and resolves paths and the taxonomy.
    pub fn resolve(
        mut config: RunConfig,
        config_path: &Path,
        overrides: &Overrides,
    ) -> Result<Plan> {
        let src = config_path.display().to_string();
        let base = config_path.parent().unwrap_or(Path::new("."));
        if let Some(c) = overrides.count {
            config.prompts.count = c;
        }
        let name = &config.run.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            || name.starts_with('.')
        {
            return Err(Error::invalid(
                &src,
                format!("run.name = \"{name}\": expected letters, digits, '.', '_' or '-' (not starting with '.')"),
            ));
        }
        let p = &config.prompts;
        if p.count == 0 {
            return Err(Error::invalid(
                &src,
                "prompts.count = 0: expected at least 1",
            ));
        }
        if p.part_size == 0 || p.row_group_size == 0 {
            return Err(Error::invalid(
                &src,
                "prompts.part_size and prompts.row_group_size must be at least 1",
            ));
        }
        let output_dir = match &overrides.output_dir {
            Some(d) => d.clone(),
            None => normalize(&base.join(&config.run.output_dir)),
        };
        let taxonomy = Taxonomy::load(&p.taxonomy, base)?;
        let output_dir = normalize(&output_dir);
        let run_dir = output_dir.join(name);
        let mut h = blake3::Hasher::new();
        h.update(
            serde_json::to_string(&config)
                .expect("config serialises")
                .as_bytes(),
        );
        h.update(taxonomy.hash.as_bytes());
        let hash = h.finalize().to_hex().to_string();
        Ok(Plan {
            config,
            run_dir,
            taxonomy,
            hash,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("configs/../runs")),
            PathBuf::from("runs")
        );
        assert_eq!(normalize(Path::new("./a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(normalize(Path::new("../x")), PathBuf::from("../x"));
        assert_eq!(normalize(Path::new("a/..")), PathBuf::from("."));
    }
}
