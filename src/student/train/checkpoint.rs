//! Checkpoints: `<out>/checkpoints/step-NNNNNNNN/` holding `model.safetensors`, `ema.safetensors`,
//! `optim.safetensors` (AdamW moments) and `state.json` (step, optimiser count, seed, the
//! resolved configs and the manifest id). Written under a temporary name, each file fsynced,
//! `state.json` last, then the folder is renamed: a checkpoint that exists is complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::config::TrainConfig;
use crate::error::{Error, Result};
use crate::formats::text::TextSpec;
use crate::formats::tokenizer::LatentSpec;
use crate::student::model::MarConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    /// AdamW updates so far.
    pub adam_t: u64,
    pub config: TrainConfig,
    pub model: MarConfig,
    pub manifest_id: String,
    pub manifest_name: String,
    /// Grid side the model was trained at.
    pub grid: usize,
    /// Ranks of the data-parallel job that trained it (1 before multi-process training).
    #[serde(default = "one")]
    pub world: usize,
    pub tool_version: String,
    /// The manifest's token and text specs (checked by `train --init-from`; absent in
    /// checkpoints written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<LatentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextSpec>,
    /// For a DPO checkpoint: the checkpoint it started from and its pair set; for a run started
    /// with `--init-from`, that checkpoint (`init.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<serde_json::Value>,
    /// blake3 of each weights file of the checkpoint, checked on load (checkpoints written
    /// before this field load unchecked).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

fn one() -> usize {
    1
}

fn tmp_err(p: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(p.display().to_string(), e.to_string())
}

/// Writes `t` as safetensors (host copies, contiguous) and fsyncs the file.
pub(crate) fn save_tensors(path: &Path, t: &BTreeMap<String, Tensor>) -> Result<()> {
    let host: Vec<(&str, Tensor)> =
        t.iter().map(|(k, v)| (k.as_str(), v.detach().to_device(Device::Cpu).contiguous())).collect();
    Tensor::write_safetensors(&host, path).map_err(|e| tmp_err(path, e))?;
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Reads `name` (`model`, `ema` or `optim.safetensors`) of checkpoint `ckpt`, after checking it
/// against the blake3 its `state.json` records: a changed byte is refused, naming the file.
pub fn load_checked(ckpt: &Path, name: &str) -> Result<BTreeMap<String, Tensor>> {
    let path = ckpt.join(name);
    let state = read_state(ckpt)?;
    match state.files.get(name) {
        Some(want) => {
            let (got, _) = crate::formats::commit::hash_file(&path).map_err(|e| Error::io(&path, e))?;
            if &got != want {
                return Err(Error::invalid(
                    path.display().to_string(),
                    format!(
                        "blake3 {}… differs from the {}… that state.json records: the file changed after the \
                         checkpoint was written",
                        &got[..12],
                        &want[..12.min(want.len())]
                    ),
                ));
            }
        }
        None if !state.files.is_empty() => {
            return Err(Error::invalid(path.display().to_string(), "not listed in the checkpoint's state.json"));
        }
        None => tracing::warn!("{}: written before checkpoints recorded hashes; loaded unchecked", path.display()),
    }
    load_tensors(&path)
}

/// Reads a safetensors file onto the host. Checkpoints written before the text path took the
/// reference's names (`text_emb.caption_projection`, `.blocks`, `.norm`) load under the new ones.
pub fn load_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let m = Tensor::read_safetensors(path)
        .map_err(|e| Error::invalid(path.display().to_string(), format!("not a readable safetensors file: {e}")))?;
    Ok(m.into_iter().map(|(k, v)| (legacy_rename(&k), v)).collect())
}

fn legacy_rename(name: &str) -> String {
    for (old, new) in crate::student::model::text::LEGACY_NAMES {
        if let Some(rest) = name.strip_prefix(old) {
            return format!("{new}{rest}");
        }
    }
    name.to_string()
}

/// Writes a checkpoint atomically and removes the oldest beyond `keep` (never `step_final`).
pub fn save(
    out: &Path,
    state: &TrainState,
    model: &BTreeMap<String, Tensor>,
    ema: &BTreeMap<String, Tensor>,
    optim: &BTreeMap<String, Tensor>,
    keep: usize,
) -> Result<PathBuf> {
    let dir = out.join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = format!("step-{:08}", state.step);
    let tmp = dir.join(format!(".tmp-{name}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut state = state.clone();
    for (name, tensors) in [("model.safetensors", model), ("ema.safetensors", ema), ("optim.safetensors", optim)] {
        let path = tmp.join(name);
        save_tensors(&path, tensors)?;
        let (hash, _) = crate::formats::commit::hash_file(&path).map_err(|e| Error::io(&path, e))?;
        state.files.insert(name.to_string(), hash);
    }
    // state.json last: a checkpoint folder with it is complete, and it vouches for the rest.
    let json = serde_json::to_vec_pretty(&state).expect("state serialises");
    crate::formats::commit::write_atomic(&tmp.join("state.json"), &json)?;
    let fin = dir.join(&name);
    let _ = std::fs::remove_dir_all(&fin);
    std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    let all = list(out);
    if all.len() > keep.max(1) {
        for old in &all[..all.len() - keep.max(1)] {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(fin)
}

/// Complete checkpoints of a training folder, oldest first.
pub fn list(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-"))
                && p.join("state.json").exists()
        })
        .collect();
    v.sort();
    v
}

/// A checkpoint folder, or a training folder (its latest checkpoint).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").exists() {
        return Ok(path.to_path_buf());
    }
    list(path).pop().ok_or_else(|| {
        Error::invalid(path.display().to_string(), "no checkpoint here (expected state.json or checkpoints/step-*/)")
    })
}

pub fn read_state(ckpt: &Path) -> Result<TrainState> {
    let p = ckpt.join("state.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(p.display().to_string(), e.to_string()))
}
