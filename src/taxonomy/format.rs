//! The taxonomy file format (`prompts/*.toml`), exactly as written by a user.
//! `compile.rs` validates it and turns it into a [`super::Taxonomy`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

fn one() -> f64 {
    1.0
}

/// A whole taxonomy file.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxonomyFile {
    pub taxonomy: TaxonomyMeta,
    /// Named slots: the vocabularies templates draw from.
    #[serde(default)]
    pub slots: BTreeMap<String, SlotDef>,
    /// Task families, each a weighted group of templates.
    #[serde(default)]
    pub families: Vec<FamilyDef>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxonomyMeta {
    /// Short name, e.g. `shapes`.
    pub name: String,
    /// Version string; part of every prompt id, so bump it when the meaning of values changes.
    pub version: String,
    #[serde(default)]
    pub description: String,
}

/// A slot: a flat list of values, hierarchical categories, or both.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotDef {
    #[serde(default)]
    pub description: String,
    /// Values directly under the slot.
    #[serde(default)]
    pub values: Vec<ValueDef>,
    /// category → values and sub-categories. A category's weight is shared among its members.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryDef>,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryDef {
    /// Relative weight among the siblings of this category. Default: the sum of its
    /// members' weights, so that default weights make every value equally likely.
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub values: Vec<ValueDef>,
    #[serde(default)]
    pub subcategories: BTreeMap<String, CategoryDef>,
}

/// A value: a plain string, or a table with weight and word forms.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ValueDef {
    Plain(String),
    Full(ValueFull),
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueFull {
    pub value: String,
    /// Relative weight among its siblings (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Indefinite article; default "an" before a vowel letter, else "a".
    #[serde(default)]
    pub article: Option<String>,
    /// Plural form; default from English spelling rules on the last word.
    #[serde(default)]
    pub plural: Option<String>,
    /// Further named forms usable as `{var.form}`, e.g. `word = "three"` for a count.
    #[serde(default)]
    pub forms: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FamilyDef {
    /// Task family tag, e.g. `two_object` (GenEval's `tag`).
    pub name: String,
    /// Share of the prompts this family gets, relative to the other families.
    #[serde(default = "one")]
    pub weight: f64,
    pub templates: Vec<TemplateDef>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    /// Unique id, e.g. `two_object.photo`; part of every prompt id.
    pub id: String,
    /// Text with placeholders: `{var}` or `{var.form}` (forms: `article`, `plural`, or one of the value's `forms`).
    #[schemars(with = "String")]
    pub text: Spanned<String>,
    /// Share among the family's templates (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// var → slot name, or a table with the slot and constraints.
    #[schemars(with = "BTreeMap<String, VarDef>")]
    pub vars: Spanned<BTreeMap<String, VarDef>>,
    /// Groups of vars that must take pairwise different values.
    #[serde(default)]
    pub distinct: Vec<Vec<String>>,
    /// GenEval-style objects the image must contain; strings may hold placeholders.
    #[serde(default)]
    pub include: Vec<SpecObjectDef>,
    /// GenEval-style objects the image must not contain (e.g. count N+1 for counting).
    #[serde(default)]
    pub exclude: Vec<SpecObjectDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum VarDef {
    Slot(String),
    Constrained(VarConstraint),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VarConstraint {
    pub slot: String,
    /// Keep values whose number is at least this (values must parse as numbers).
    #[serde(default)]
    pub min: Option<f64>,
    /// Keep values whose number is at most this.
    #[serde(default)]
    pub max: Option<f64>,
    /// Keep only these values.
    #[serde(default)]
    pub only: Vec<String>,
    /// Drop these values (e.g. GenEval's no coloured "person").
    #[serde(default)]
    pub except: Vec<String>,
    /// Keep only values under this category path, e.g. `animals` or `animals/pets`.
    #[serde(default)]
    pub category: Option<String>,
}

/// One object of a GenEval `include`/`exclude` list.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecObjectDef {
    pub class: String,
    /// An integer, or a string such as `"{n}"` or `"{n}+1"`.
    #[serde(default)]
    pub count: Option<CountDef>,
    #[serde(default)]
    pub color: Option<String>,
    /// `[relation, index of the include object it is relative to]`.
    #[serde(default)]
    pub position: Option<(String, usize)>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CountDef {
    Fixed(u32),
    Expr(String),
}
