//! Config of the `curate` stage (`[curate]`, `[curate.filter]`): deduplication, the scorer and
//! the score filter. The CLIP scorer and SemDeDup sections are in `scorers.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{yes, ClipConfig, SemDedupConfig};

/// The `curate` stage: duplicates out, then a prompt–image score filter. Every sample ends
/// kept or rejected with its reason; nothing is deleted.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CurateConfig {
    /// Scorer id: `builtin:shapes`, or `clip` (needs `[curate.clip]`).
    pub scorer: String,
    /// Remove near duplicates by perceptual hash (default true).
    #[serde(default = "yes")]
    pub near_dup: bool,
    /// Hamming distance (0–64) at or below which both pHash and dHash call two images near
    /// duplicates (default 10, as imagededup).
    #[serde(default = "default_near_dup_distance")]
    pub near_dup_distance: u32,
    /// Which member of a duplicate group stays (default highest_score).
    #[serde(default)]
    pub keep: KeepRule,
    #[serde(default)]
    pub filter: FilterConfig,
    /// The CLIP scorer's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipConfig>,
    /// Semantic deduplication on CLIP image embeddings (needs scorer = "clip").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semdedup: Option<SemDedupConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeepRule {
    #[default]
    HighestScore,
    FirstSeen,
}

/// The score filter, applied after deduplication.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// threshold | top_fraction | top_fraction_per_stratum (default threshold).
    #[serde(default)]
    pub policy: FilterPolicy,
    /// Keep scores at or above this (policy threshold). Raw scorer scale: [0, 1] for the
    /// shapes analyzer, cosine for CLIP.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Share to keep, in (0, 1] (policies top_fraction*).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// What a stratum is: `family` or `slot:<name>` (default family).
    #[serde(default = "default_stratum")]
    pub stratum: String,
    /// Reject images whose GenEval-style verdict fails, when the scorer gives one (default true).
    #[serde(default = "yes")]
    pub require_verdict: bool,
    /// Smallest width and height kept (default 0).
    #[serde(default)]
    pub min_size: u32,
    /// Largest aspect ratio kept, long side / short side (default 3).
    #[serde(default = "default_max_aspect")]
    pub max_aspect: f64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            policy: FilterPolicy::Threshold,
            threshold: None,
            fraction: None,
            stratum: default_stratum(),
            require_verdict: true,
            min_size: 0,
            max_aspect: default_max_aspect(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FilterPolicy {
    #[default]
    Threshold,
    TopFraction,
    TopFractionPerStratum,
}

fn default_near_dup_distance() -> u32 {
    10
}
fn default_stratum() -> String {
    "family".into()
}
fn default_max_aspect() -> f64 {
    3.0
}

/// The scorers this build knows.
pub const SCORERS: &[&str] = &["builtin:shapes", "clip"];

pub(super) fn validate_curate(c: &CurateConfig) -> std::result::Result<(), String> {
    if !SCORERS.contains(&c.scorer.as_str()) {
        return Err(format!("curate.scorer = \"{}\": unknown scorer; known: {}", c.scorer, SCORERS.join(", ")));
    }
    match (c.scorer.as_str(), &c.clip) {
        ("clip", None) => return Err("curate.scorer = \"clip\" needs a [curate.clip] section".into()),
        (_, Some(clip)) => clip.validate()?,
        _ => {}
    }
    if let Some(s) = &c.semdedup {
        if c.scorer != "clip" {
            return Err("curate.semdedup needs CLIP image embeddings: set curate.scorer = \"clip\"".into());
        }
        s.validate()?;
    }
    if c.near_dup_distance > 64 {
        return Err(format!(
            "curate.near_dup_distance = {}: expected 0 to 64 (bits of a 64-bit hash)",
            c.near_dup_distance
        ));
    }
    let f = &c.filter;
    match (f.policy, f.threshold, f.fraction) {
        (FilterPolicy::Threshold, None, _) => {
            return Err("curate.filter.threshold is needed by policy \"threshold\"".into())
        }
        (FilterPolicy::TopFraction | FilterPolicy::TopFractionPerStratum, _, None) => {
            return Err("curate.filter.fraction is needed by the top_fraction policies".into())
        }
        _ => {}
    }
    if let Some(t) = f.threshold {
        if !(-1.0..=1.0).contains(&t) {
            return Err(format!("curate.filter.threshold = {t}: expected a raw score from -1 to 1"));
        }
    }
    if let Some(x) = f.fraction {
        if !(x > 0.0 && x <= 1.0) {
            return Err(format!("curate.filter.fraction = {x}: expected more than 0 and at most 1"));
        }
    }
    if f.stratum != "family" && !f.stratum.starts_with("slot:") {
        return Err(format!("curate.filter.stratum = \"{}\": expected \"family\" or \"slot:<name>\"", f.stratum));
    }
    if f.max_aspect < 1.0 {
        return Err(format!("curate.filter.max_aspect = {}: expected at least 1", f.max_aspect));
    }
    Ok(())
}
