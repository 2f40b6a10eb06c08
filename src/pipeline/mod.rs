//! The staged data pipeline. Each stage writes `runs/<name>/<stage>/` through the commit
//! protocol of [`shard`]; a stage folder remembers the plan that made it and refuses another.

pub mod curate;
pub mod distill;
pub mod distribute;
pub mod encode;
pub mod expand;
pub mod generate;
pub mod lock;
pub mod manifest;
pub mod par;
pub mod store;
pub mod subset;
pub mod teacher;
pub mod worker;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Plan;
use crate::error::{Error, Result};
use crate::formats::commit;

/// `stage.json`: which plan a stage folder belongs to.
#[derive(Debug, Serialize, Deserialize)]
pub struct StageMarker {
    pub stage: String,
    pub plan: String,
    pub tool_version: String,
}

/// Opens (creating) a stage folder for `plan`: refuses one made by another plan unless
/// `force`, which discards it. Cleans temporaries left by a killed run.
pub fn open_stage(plan: &Plan, stage: &str, force: bool) -> Result<PathBuf> {
    let dir = plan.run_dir.join(stage);
    if force && dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let marker_path = dir.join("stage.json");
    match fs::read(&marker_path) {
        Ok(bytes) => {
            let marker: StageMarker = serde_json::from_slice(&bytes).map_err(|e| Error::Conflict {
                path: marker_path.clone(),
                message: format!("unreadable stage marker ({e}); use --force to discard this stage"),
            })?;
            if marker.plan != plan.stage_hash(stage) {
                return Err(Error::Conflict {
                    path: dir,
                    message: format!(
                        "was written by another config (plan {}), this config is plan {}; use a new run name, or --force to discard it",
                        short(&marker.plan),
                        short(plan.stage_hash(stage))
                    ),
                });
            }
        }
        Err(_) => {
            let marker = StageMarker {
                stage: stage.into(),
                plan: plan.stage_hash(stage).into(),
                tool_version: crate::VERSION.into(),
            };
            commit::write_atomic(&marker_path, &serde_json::to_vec_pretty(&marker).expect("marker serialises"))?;
        }
    }
    commit::clean_temporaries(&dir)?;
    save_config(plan)?;
    Ok(dir)
}

/// Saves the resolved config (and the taxonomy it names) in the run folder.
fn save_config(plan: &Plan) -> Result<()> {
    let text = toml::to_string_pretty(&plan.config).expect("config serialises");
    commit::write_atomic(&plan.run_dir.join("config.toml"), format!("# plan {}\n{text}", plan.hash).as_bytes())?;
    commit::write_atomic(&plan.run_dir.join("taxonomy.toml"), plan.taxonomy.text.as_bytes())
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The folder of a stage that has finished (its `summary.json` is written last).
pub fn finished_stage(run_dir: &Path, stage: &str) -> Result<PathBuf> {
    let dir = stage_dir(run_dir, stage)?;
    if !dir.join("summary.json").exists() {
        return Err(Error::invalid(
            dir.display().to_string(),
            format!("the {stage} stage has not finished: run `lightgen {stage}` first"),
        ));
    }
    Ok(dir)
}

/// The stage folder of a run folder, checked to exist.
pub fn stage_dir(run_dir: &Path, stage: &str) -> Result<PathBuf> {
    let dir = run_dir.join(stage);
    if !dir.is_dir() {
        return Err(Error::invalid(
            run_dir.display().to_string(),
            format!("no '{stage}' stage here (expected {}); run `lightgen {stage}` first", dir.display()),
        ));
    }
    Ok(dir)
}
