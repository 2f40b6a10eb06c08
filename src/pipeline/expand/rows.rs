//! Prompt rows → Parquet columns. One row group at a time, so memory is bounded by the
//! row-group size, not the corpus size.

use polars::prelude::*;
use serde_json::{json, Map, Value as Json};

use super::generator::Prompt;
use crate::taxonomy::{Piece, SpecObject, Taxonomy, Template};

/// Column names, in file order. Slot columns follow as `slot_<name>` (list of strings).
pub const COLUMNS: &[&str] =
    &["index", "prompt_id", "prompt", "family", "template", "vars", "spec", "taxonomy_version"];

/// The GenEval-style metadata of a prompt, or `None` for templates without a spec.
pub fn spec_json(tax: &Taxonomy, t: &Template, values: &[u32], text: &str) -> Option<Json> {
    if t.include.is_empty() && t.exclude.is_empty() {
        return None;
    }
    let render = |pieces: &[Piece]| {
        let mut s = String::new();
        tax.render(t, pieces, values, &mut s);
        s
    };
    let object = |o: &SpecObject| {
        let mut m = Map::new();
        m.insert("class".into(), json!(render(&o.class)));
        // "{n}+1" renders as "3+1": a sum of whole numbers (validated at compile time).
        let count: u64 =
            o.count.as_ref().map_or(1, |c| render(c).split('+').filter_map(|x| x.trim().parse::<u64>().ok()).sum());
        m.insert("count".into(), json!(count));
        if let Some(c) = &o.color {
            m.insert("color".into(), json!(render(c)));
        }
        if let Some((rel, idx)) = &o.position {
            m.insert("position".into(), json!([render(rel), idx]));
        }
        Json::Object(m)
    };
    Some(json!({
        "tag": tax.families[t.family].name,
        "include": t.include.iter().map(object).collect::<Vec<_>>(),
        "exclude": t.exclude.iter().map(object).collect::<Vec<_>>(),
        "prompt": text,
    }))
}

/// slot name → the values a prompt took from it, in var order (the `slot_*` columns).
pub fn slot_values(tax: &Taxonomy, p: &Prompt) -> std::collections::BTreeMap<String, Vec<String>> {
    let t = &tax.templates[p.template];
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (v, &i) in t.vars.iter().zip(&p.values) {
        m.entry(tax.slots[v.slot].name.clone()).or_default().push(tax.slots[v.slot].values[i as usize].text.clone());
    }
    m
}

/// Builds one row group's DataFrame.
pub fn frame(tax: &Taxonomy, batch: &[Prompt]) -> PolarsResult<DataFrame> {
    let n = batch.len();
    let mut index = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut texts = Vec::with_capacity(n);
    let mut families = Vec::with_capacity(n);
    let mut templates = Vec::with_capacity(n);
    let mut vars = Vec::with_capacity(n);
    let mut specs: Vec<Option<String>> = Vec::with_capacity(n);
    let mut slot_lists: Vec<ListStringChunkedBuilder> =
        tax.slots.iter().map(|s| ListStringChunkedBuilder::new(format!("slot_{}", s.name).into(), n, n)).collect();
    for p in batch {
        let t = &tax.templates[p.template];
        index.push(p.index);
        ids.push(p.prompt_id.as_str());
        texts.push(p.text.as_str());
        families.push(tax.families[t.family].name.as_str());
        templates.push(t.id.as_str());
        let mut m = Map::new();
        for (var, v) in t.vars.iter().enumerate() {
            m.insert(v.name.clone(), json!(tax.value(t, var, &p.values).text));
        }
        vars.push(Json::Object(m).to_string());
        specs.push(spec_json(tax, t, &p.values, &p.text).map(|j| j.to_string()));
        for (s, builder) in slot_lists.iter_mut().enumerate() {
            let vals = t.vars.iter().zip(&p.values).filter(|(v, _)| v.slot == s);
            builder.append_values_iter(vals.map(|(v, &i)| tax.slots[v.slot].values[i as usize].text.as_str()));
        }
    }
    let version = format!("{}@{}", tax.name, tax.version);
    let mut columns = vec![
        Column::new("index".into(), index),
        Column::new("prompt_id".into(), ids),
        Column::new("prompt".into(), texts),
        Column::new("family".into(), families),
        Column::new("template".into(), templates),
        Column::new("vars".into(), vars),
        Column::new("spec".into(), specs),
        Column::new("taxonomy_version".into(), vec![version.as_str(); n]),
    ];
    columns.extend(slot_lists.iter_mut().map(|b| b.finish().into_series().into_column()));
    DataFrame::new(n, columns)
}
