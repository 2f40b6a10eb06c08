//! The built-in shapes world: a teacher that draws `prompts/shapes.toml` prompts (render.rs)
//! and an analyzer that reads them back from pixels alone (analyze.rs). It runs anywhere, fast,
//! with no weights: the embedded default for the demo, every test and controlled studies.

pub mod analyze;
pub mod color;
pub mod geometry;
mod layout;
pub mod render;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use geometry::CLASSES;

/// One GenEval `include` object of a prompt's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub class: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub color: Option<String>,
    #[serde(default)]
    pub position: Option<(String, usize)>,
}

fn one() -> u32 {
    1
}

/// A prompt's GenEval-style spec (`expand`'s `spec` column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub tag: String,
    pub include: Vec<ObjectSpec>,
    #[serde(default)]
    pub exclude: Vec<ObjectSpec>,
    #[serde(default)]
    pub prompt: String,
}

/// What the world is asked to draw: the spec plus the scene slots of the prompt.
#[derive(Debug, Clone)]
pub struct SceneRequest {
    pub spec: Spec,
    /// Sizes in the prompt, in template order (one per object, one for all, or none).
    pub sizes: Vec<String>,
    pub background: Option<String>,
    pub style: Option<String>,
}

/// An object as drawn (ground truth) or as found by the analyzer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    pub class: String,
    pub color: String,
    /// Centre and bounding box size in pixels.
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// What the teacher actually drew: the record that measures the filter, never read by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub objects: Vec<SceneObject>,
    pub background: String,
    pub style: String,
    /// The injected failure, if any: wrong_color, count, relation, missing, distractor.
    pub imperfection: Option<String>,
}

pub const SIZES: [&str; 3] = ["small", "medium", "large"];
pub const BACKGROUNDS: [&str; 3] = ["plain", "gradient", "textured"];
pub const STYLES: [&str; 2] = ["flat", "outlined"];

impl SceneRequest {
    /// Reads a prompt row's spec and slot values; says why when the world cannot draw it.
    pub fn from_prompt(spec: Option<&str>, slots: &BTreeMap<String, Vec<String>>) -> Result<SceneRequest, String> {
        let spec =
            spec.ok_or("the prompt has no GenEval spec: the shapes world draws only prompts from a shapes taxonomy")?;
        let spec: Spec = serde_json::from_str(spec).map_err(|e| format!("unreadable spec ({e})"))?;
        if spec.include.is_empty() {
            return Err("the spec includes no object".into());
        }
        for o in &spec.include {
            if geometry::class_index(&o.class).is_none() {
                return Err(format!(
                    "the shapes world cannot draw class \"{}\"; it draws: {}",
                    o.class,
                    CLASSES.join(", ")
                ));
            }
            if let Some(c) = &o.color {
                if color::index(c).is_none() {
                    return Err(format!("unknown colour \"{c}\"; known: {}", color::NAMES.join(", ")));
                }
            }
            if let Some((rel, idx)) = &o.position {
                if !analyze::RELATIONS.contains(&rel.as_str()) || *idx >= spec.include.len() {
                    return Err(format!("unsupported position [{rel:?}, {idx}]"));
                }
            }
            if o.count == 0 || o.count > 6 {
                return Err(format!("count {} of \"{}\" is outside 1..=6", o.count, o.class));
            }
        }
        let pick = |slot: &str, known: &[&str]| -> Result<Vec<String>, String> {
            let vals = slots.get(slot).cloned().unwrap_or_default();
            match vals.iter().find(|v| !known.contains(&v.as_str())) {
                Some(bad) => Err(format!("unknown {slot} \"{bad}\"; known: {}", known.join(", "))),
                None => Ok(vals),
            }
        };
        Ok(SceneRequest {
            sizes: pick("size", &SIZES)?,
            background: pick("background", &BACKGROUNDS)?.into_iter().next(),
            style: pick("style", &STYLES)?.into_iter().next(),
            spec,
        })
    }
}
