//! `train --init-from CHECKPOINT`: a new run (step 0, a fresh optimiser and learning-rate
//! schedule, this manifest's data) that starts from another run's weights and EMA. For a
//! curriculum (single objects first, then every family) or fine-tuning on a new corpus.
//! The checkpoint's architecture and token/text specs must be this run's: a mismatch is
//! refused naming each field, since loading would otherwise fail halfway or, worse, succeed
//! on tokens that mean something else. The run's checkpoints record where it started
//! (`state.json` `lineage`), and a resumed run checks it was started from the same weights.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::checkpoint::{self, TrainState};
use crate::error::{Error, Result};
use crate::formats::manifest::{flatten, Manifest};
use crate::student::model::MarConfig;

/// A checkpoint to start from, checked against this run.
pub struct Init {
    pub ckpt: PathBuf,
    pub state: TrainState,
    /// Recorded in every checkpoint of the run.
    pub lineage: Value,
}

/// Resolves `path` (a checkpoint, or a training folder: its latest) and checks that its model
/// is `model` (this config on this manifest) and that it was trained on tokens and text of
/// the same kind as `m`'s.
pub fn prepare(path: &Path, model: &MarConfig, m: &Manifest) -> Result<Init> {
    let ckpt = checkpoint::resolve(path)?;
    let state = checkpoint::read_state(&ckpt)?;
    let mut diffs = differences("model", &json!(state.model), &json!(model));
    match (&state.latent, &state.text) {
        (Some(l), Some(t)) => {
            diffs.extend(differences("latent", &json!(l), &json!(m.latent)));
            diffs.extend(differences("text", &json!(t), &json!(m.text)));
        }
        _ => tracing::warn!(
            "{}: written before checkpoints recorded their token and text specs; only the model is checked",
            ckpt.display()
        ),
    }
    if !diffs.is_empty() {
        return Err(Error::invalid(
            ckpt.display().to_string(),
            format!("cannot start this run from it (checkpoint → this config and manifest): {}", diffs.join("; ")),
        ));
    }
    let file = |name: &str| state.files.get(name).cloned().unwrap_or_default();
    let mut lineage = json!({
        "kind": "init",
        "checkpoint": ckpt.display().to_string(),
        "step": state.step,
        "manifest_id": state.manifest_id,
        "manifest_name": state.manifest_name,
        "model_weights": file("model.safetensors"),
        "ema_weights": file("ema.safetensors"),
    });
    if let Some(parent) = &state.lineage {
        lineage["from"] = parent.clone();
    }
    Ok(Init { ckpt, state, lineage })
}

/// The fields where `a` and `b` differ, as `part.field: a → b`.
fn differences(part: &str, a: &Value, b: &Value) -> Vec<String> {
    let (mut x, mut y) = (Default::default(), Default::default());
    flatten(part, a, &mut x);
    flatten(part, b, &mut y);
    let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
    keys.into_iter()
        .filter(|k| x.get(*k) != y.get(*k))
        .map(|k| format!("{k}: {} → {}", show(x.get(k)), show(y.get(k))))
        .collect()
}

/// A resumed run that was started with `--init-from` must name the same weights again (or
/// none): its checkpoints say where it started.
pub fn check_resume(ck: &Path, resumed: &TrainState, init: Option<&Init>) -> Result<()> {
    let Some(init) = init else { return Ok(()) };
    let same = resumed.lineage.as_ref().is_some_and(|l| {
        l["kind"] == "init" && l["model_weights"] == init.lineage["model_weights"] && l["step"] == init.lineage["step"]
    });
    if same {
        return Ok(());
    }
    let was = match &resumed.lineage {
        Some(l) if l["kind"] == "init" => format!("was started from {}", l["checkpoint"]),
        _ => "was not started from a checkpoint".to_string(),
    };
    Err(Error::Conflict {
        path: ck.to_path_buf(),
        message: format!(
            "{was}, not from {}; resume without --init-from, or choose another --out",
            init.ckpt.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field_with_both_values() {
        let a = json!({"width": 128, "text": {"kind": "vocab", "vocab": 94}, "x0_head": true});
        let b = json!({"width": 256, "text": {"kind": "vocab", "vocab": 94}});
        assert_eq!(differences("model", &a, &b), vec!["model.width: 128 → 256", "model.x0_head: true → (absent)"]);
        assert!(differences("model", &a, &a).is_empty());
    }
}
