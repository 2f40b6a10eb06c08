//! Prompt taxonomies: slots of weighted values (flat or hierarchical), word forms, and task
//! families of templates with constraints and GenEval-style specs. `format.rs` is the file
//! format, `compile.rs` validates it into the [`Taxonomy`] that the expander samples from.

mod capacity;
mod compile;
pub mod english;
pub mod format;
pub mod template;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

pub use capacity::capacity;

/// The taxonomies shipped inside the binary, usable as `builtin:<name>`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("shapes", include_str!("../../prompts/shapes.toml")),
    ("geneval", include_str!("../../prompts/geneval.toml")),
    ("general", include_str!("../../prompts/general.toml")),
];

/// A validated taxonomy, ready to sample from.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    pub name: String,
    pub version: String,
    /// Where it came from: a path, or `builtin:<name>`.
    pub source: String,
    /// blake3 (hex) of the file's bytes.
    pub hash: String,
    /// The file's text, kept so a run can store an exact copy.
    pub text: String,
    pub slots: Vec<Slot>,
    pub families: Vec<Family>,
    pub templates: Vec<Template>,
}

#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Value {
    pub text: String,
    /// Category path, `animals/pets`; empty for values directly under the slot.
    pub path: String,
    /// Probability within its slot, from the weights along its category path.
    pub prob: f64,
    /// Word forms: always `article` and `plural`, plus any declared ones.
    pub forms: BTreeMap<String, String>,
    /// Interned id of `text`, shared by equal texts across slots (for `distinct`).
    pub id: u32,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    /// Share of all prompts (family weights normalised).
    pub share: f64,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub family: usize,
    /// Share of all prompts: family share × share within the family.
    pub share: f64,
    pub pieces: Vec<Piece>,
    pub vars: Vec<Var>,
    /// Pairs of var indices that must differ.
    pub distinct: Vec<(usize, usize)>,
    pub include: Vec<SpecObject>,
    pub exclude: Vec<SpecObject>,
    /// Number of distinct valid assignments (exact; f64 because it can be astronomically large).
    pub capacity: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Lit(String),
    Var { var: usize, form: Option<String> },
}

#[derive(Debug, Clone)]
pub struct Var {
    pub name: String,
    pub slot: usize,
    /// Indices into the slot's values that this var may take.
    pub allowed: Vec<u32>,
    /// Sampling probabilities of `allowed`, normalised.
    pub probs: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct SpecObject {
    pub class: Vec<Piece>,
    pub count: Option<Vec<Piece>>,
    pub color: Option<Vec<Piece>>,
    pub position: Option<(Vec<Piece>, usize)>,
}

impl Taxonomy {
    /// Loads `spec`: `builtin:<name>` or a path (relative paths against `base`).
    pub fn load(spec: &str, base: &Path) -> Result<Taxonomy> {
        if let Some(name) = spec.strip_prefix("builtin:") {
            let text = BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| {
                let known: Vec<_> = BUILTIN.iter().map(|(n, _)| format!("builtin:{n}")).collect();
                Error::invalid(spec, format!("unknown built-in taxonomy; known: {}", known.join(", ")))
            })?;
            return Taxonomy::parse(spec, text);
        }
        let path = crate::paths::normalize(&base.join(spec));
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Taxonomy::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates taxonomy text; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Taxonomy> {
        compile::compile(source, text)
    }

    /// Renders a piece list for an assignment (value index per var).
    pub fn render(&self, t: &Template, pieces: &[Piece], assignment: &[u32], out: &mut String) {
        for p in pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var { var, form } => {
                    let v = &self.slots[t.vars[*var].slot].values[assignment[*var] as usize];
                    match form {
                        None => out.push_str(&v.text),
                        // Validated at compile time: every allowed value has every used form.
                        Some(f) => out.push_str(v.forms.get(f).map(String::as_str).unwrap_or(&v.text)),
                    }
                }
            }
        }
    }

    /// The value a var takes under an assignment.
    pub fn value(&self, t: &Template, var: usize, assignment: &[u32]) -> &Value {
        &self.slots[t.vars[var].slot].values[assignment[var] as usize]
    }

    /// Upper bound on distinct prompts over all templates.
    pub fn total_capacity(&self) -> f64 {
        self.templates.iter().map(|t| t.capacity).sum()
    }
}
