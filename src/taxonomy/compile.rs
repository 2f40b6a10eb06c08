//! Validation: taxonomy file → [`Taxonomy`]. Every error names the file, the line and
//! column where it can (template text and vars carry spans), and what was expected.

use std::collections::{BTreeMap, HashMap};

use super::format::{CategoryDef, CountDef, SpecObjectDef, TaxonomyFile, TemplateDef, ValueDef, VarDef};
use super::{english, template, Family, Piece, Slot, SpecObject, Taxonomy, Template, Value, Var};
use crate::error::{from_toml, locate, Error, Result};

pub(super) fn compile(source: &str, text: &str) -> Result<Taxonomy> {
    let file: TaxonomyFile = toml::from_str(text).map_err(|e| from_toml(source, text, &e))?;
    let at = |offset: usize| locate(source, text, offset);
    if file.taxonomy.name.trim().is_empty() || file.taxonomy.version.trim().is_empty() {
        return Err(Error::invalid(source, "[taxonomy] needs a non-empty name and version"));
    }

    let mut interner: HashMap<String, u32> = HashMap::new();
    let mut slots = Vec::new();
    for (name, def) in &file.slots {
        let mut flat = Vec::new();
        flatten(name, &def.values, &def.categories, "", 1.0, &mut flat).map_err(|m| Error::invalid(source, m))?;
        if flat.is_empty() {
            return Err(Error::invalid(source, format!("slot \"{name}\" has no value with a positive weight")));
        }
        let mut seen = HashMap::new();
        for v in &flat {
            if let Some(prev) = seen.insert(v.text.clone(), v.path.clone()) {
                return Err(Error::invalid(
                    source,
                    format!(
                        "slot \"{name}\": value \"{}\" appears twice (under \"{prev}\" and \"{}\")",
                        v.text, v.path
                    ),
                ));
            }
        }
        for v in &mut flat {
            let next = interner.len() as u32;
            v.id = *interner.entry(v.text.clone()).or_insert(next);
        }
        slots.push(Slot { name: name.clone(), values: flat });
    }
    let slot_index: HashMap<&str, usize> = slots.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let known_slots = || slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");

    if file.families.is_empty() {
        return Err(Error::invalid(source, "no [[families]]: a taxonomy needs at least one task family"));
    }
    let family_total = positive_sum(file.families.iter().map(|f| f.weight))
        .ok_or_else(|| Error::invalid(source, "family weights must be finite, ≥ 0 and not all 0"))?;
    let mut families = Vec::new();
    let mut templates: Vec<Template> = Vec::new();
    for (fi, fam) in file.families.iter().enumerate() {
        families.push(Family { name: fam.name.clone(), share: fam.weight / family_total });
        let tpl_total = positive_sum(fam.templates.iter().map(|t| t.weight)).ok_or_else(|| {
            Error::invalid(
                source,
                format!("family \"{}\": needs templates with finite, ≥ 0, not all 0 weights", fam.name),
            )
        })?;
        for def in &fam.templates {
            if templates.iter().any(|t| t.id == def.id) {
                return Err(Error::invalid(
                    at(def.text.span().start),
                    format!("template id \"{}\" is used twice", def.id),
                ));
            }
            let share = families[fi].share * def.weight / tpl_total;
            let mut t = compile_template(def, fi, share, &slots, &slot_index, &known_slots, &at)?;
            t.capacity = super::capacity(&t, &slots);
            if t.capacity == 0.0 && share > 0.0 {
                return Err(Error::invalid(at(def.vars.span().start), impossible_reason(&t, &slots)));
            }
            templates.push(t);
        }
    }

    Ok(Taxonomy {
        name: file.taxonomy.name.clone(),
        version: file.taxonomy.version.clone(),
        source: source.to_string(),
        hash: blake3::hash(text.as_bytes()).to_hex().to_string(),
        text: text.to_string(),
        slots,
        families,
        templates,
    })
}

fn positive_sum(weights: impl Iterator<Item = f64>) -> Option<f64> {
    let mut total = 0.0;
    for w in weights {
        if !w.is_finite() || w < 0.0 {
            return None;
        }
        total += w;
    }
    (total > 0.0).then_some(total)
}

/// Flattens values and categories into values with their probability within the slot.
fn flatten(
    slot: &str,
    values: &[ValueDef],
    categories: &BTreeMap<String, CategoryDef>,
    path: &str,
    mass: f64,
    out: &mut Vec<Value>,
) -> Result<(), String> {
    let weight_of = |v: &ValueDef| match v {
        ValueDef::Plain(_) => 1.0,
        ValueDef::Full(f) => f.weight,
    };
    let weights = values.iter().map(weight_of).chain(categories.values().map(category_weight));
    let Some(total) = positive_sum(weights) else {
        if values.is_empty() && categories.is_empty() {
            return Ok(());
        }
        return Err(format!("slot \"{slot}\" at \"{path}\": weights must be finite, ≥ 0 and not all 0"));
    };
    for v in values {
        let (text, weight) = match v {
            ValueDef::Plain(s) => (s.as_str(), 1.0),
            ValueDef::Full(f) => (f.value.as_str(), f.weight),
        };
        if text.trim().is_empty() {
            return Err(format!("slot \"{slot}\" at \"{path}\": empty value"));
        }
        if weight == 0.0 {
            continue;
        }
        let mut forms = BTreeMap::new();
        forms.insert("article".to_string(), english::article(text).to_string());
        forms.insert("plural".to_string(), english::plural(text));
        if let ValueDef::Full(f) = v {
            if let Some(a) = &f.article {
                forms.insert("article".into(), a.clone());
            }
            if let Some(p) = &f.plural {
                forms.insert("plural".into(), p.clone());
            }
            forms.extend(f.forms.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.push(Value { text: text.to_string(), path: path.to_string(), prob: mass * weight / total, forms, id: 0 });
    }
    for (name, cat) in categories {
        let sub = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
        let w = category_weight(cat);
        if w > 0.0 {
            flatten(slot, &cat.values, &cat.subcategories, &sub, mass * w / total, out)?;
        }
    }
    Ok(())
}

/// A category's weight: explicit, or the sum of its members' weights.
fn category_weight(c: &CategoryDef) -> f64 {
    c.weight.unwrap_or_else(|| {
        let own: f64 = c
            .values
            .iter()
            .map(|v| match v {
                ValueDef::Plain(_) => 1.0,
                ValueDef::Full(f) => f.weight,
            })
            .sum();
        own + c.subcategories.values().map(category_weight).sum::<f64>()
    })
}

fn compile_template(
    def: &TemplateDef,
    family: usize,
    share: f64,
    slots: &[Slot],
    slot_index: &HashMap<&str, usize>,
    known_slots: &dyn Fn() -> String,
    at: &dyn Fn(usize) -> String,
) -> Result<Template> {
    let id = &def.id;
    let text_at = def.text.span().start;
    let vars_at = at(def.vars.span().start);
    let mut vars = Vec::new();
    for (name, vdef) in def.vars.get_ref() {
        let (slot_name, c) = match vdef {
            VarDef::Slot(s) => (s.as_str(), None),
            VarDef::Constrained(c) => (c.slot.as_str(), Some(c)),
        };
        let Some(&slot) = slot_index.get(slot_name) else {
            return Err(Error::invalid(
                &vars_at,
                format!("template \"{id}\" uses unknown slot \"{slot_name}\"; known slots: {}", known_slots()),
            ));
        };
        let values = &slots[slot].values;
        let mut allowed = Vec::new();
        for (i, v) in values.iter().enumerate() {
            if let Some(c) = c {
                if !c.only.is_empty() && !c.only.contains(&v.text) || c.except.contains(&v.text) {
                    continue;
                }
                if let Some(cat) = &c.category {
                    if v.path != *cat && !v.path.starts_with(&format!("{cat}/")) {
                        continue;
                    }
                }
                if c.min.is_some() || c.max.is_some() {
                    let n: f64 = v.text.parse().map_err(|_| {
                        Error::invalid(
                            &vars_at,
                            format!("template \"{id}\" var \"{name}\": min/max need numeric values, but slot \"{slot_name}\" has \"{}\"", v.text),
                        )
                    })?;
                    if c.min.is_some_and(|m| n < m) || c.max.is_some_and(|m| n > m) {
                        continue;
                    }
                }
            }
            allowed.push(i as u32);
        }
        if let Some(c) = c {
            for listed in c.only.iter().chain(&c.except) {
                if !values.iter().any(|v| &v.text == listed) {
                    return Err(Error::invalid(
                        &vars_at,
                        format!(
                            "template \"{id}\" var \"{name}\": \"{listed}\" is not a value of slot \"{slot_name}\""
                        ),
                    ));
                }
            }
        }
        if allowed.is_empty() {
            return Err(Error::invalid(
                &vars_at,
                format!("template \"{id}\" var \"{name}\": its constraints leave no value of slot \"{slot_name}\""),
            ));
        }
        let total: f64 = allowed.iter().map(|&i| values[i as usize].prob).sum();
        let probs = allowed.iter().map(|&i| values[i as usize].prob / total).collect();
        vars.push(Var { name: name.clone(), slot, allowed, probs });
    }

    let var_index = |name: &str| vars.iter().position(|v| v.name == name);
    let declared = || vars.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ");
    // Parses a string with placeholders, checking vars and forms; `offset` locates errors.
    let pieces_of = |s: &str, offset: usize| -> Result<Vec<Piece>> {
        let parsed =
            template::parse(s).map_err(|(i, m)| Error::invalid(at(offset + i), format!("template \"{id}\": {m}")))?;
        parsed
            .into_iter()
            .map(|p| match p {
                template::Piece::Lit(l) => Ok(Piece::Lit(l)),
                template::Piece::Var { name, form } => {
                    let var = var_index(&name).ok_or_else(|| {
                        Error::invalid(
                            at(offset),
                            format!("template \"{id}\" uses undeclared var \"{name}\"; declared vars: {}", declared()),
                        )
                    })?;
                    if let Some(f) = &form {
                        let v = &vars[var];
                        let slot = &slots[v.slot];
                        if let Some(&miss) = v.allowed.iter().find(|&&i| !slot.values[i as usize].forms.contains_key(f)) {
                            return Err(Error::invalid(
                                at(offset),
                                format!(
                                    "template \"{id}\": form \"{f}\" of var \"{name}\" is missing for value \"{}\" of slot \"{}\"",
                                    slot.values[miss as usize].text, slot.name
                                ),
                            ));
                        }
                    }
                    Ok(Piece::Var { var, form })
                }
            })
            .collect()
    };
    // Spans of the text string include the quote; +1 points inside it.
    let pieces = pieces_of(def.text.get_ref(), text_at + 1)?;
    for v in &vars {
        if !pieces.iter().any(|p| matches!(p, Piece::Var { var, .. } if vars[*var].name == v.name)) {
            return Err(Error::invalid(
                at(text_at),
                format!("template \"{id}\" declares var \"{}\" but its text never uses it", v.name),
            ));
        }
    }

    let mut distinct = Vec::new();
    for group in &def.distinct {
        let idx: Vec<usize> = group
            .iter()
            .map(|n| {
                var_index(n).ok_or_else(|| {
                    Error::invalid(
                        &vars_at,
                        format!("template \"{id}\": distinct names unknown var \"{n}\"; declared vars: {}", declared()),
                    )
                })
            })
            .collect::<Result<_>>()?;
        for (k, &a) in idx.iter().enumerate() {
            for &b in &idx[k + 1..] {
                distinct.push((a.min(b), a.max(b)));
            }
        }
    }

    let spec = |objs: &[SpecObjectDef]| -> Result<Vec<SpecObject>> {
        objs.iter()
            .map(|o| {
                let count = match &o.count {
                    None => None,
                    Some(CountDef::Fixed(n)) => Some(vec![Piece::Lit(n.to_string())]),
                    Some(CountDef::Expr(e)) => Some(pieces_of(e, def.vars.span().start)?),
                };
                Ok(SpecObject {
                    class: pieces_of(&o.class, def.vars.span().start)?,
                    count,
                    color: o.color.as_deref().map(|c| pieces_of(c, def.vars.span().start)).transpose()?,
                    position: match &o.position {
                        Some((rel, idx)) => Some((pieces_of(rel, def.vars.span().start)?, *idx)),
                        None => None,
                    },
                })
            })
            .collect()
    };
    let include = spec(&def.include)?;
    let exclude = spec(&def.exclude)?;
    if let Some((_, idx)) = include.iter().filter_map(|o| o.position.as_ref()).find(|(_, i)| *i >= include.len()) {
        return Err(Error::invalid(
            &vars_at,
            format!("template \"{id}\": position refers to include object {idx}, but there are {}", include.len()),
        ));
    }

    let t = Template { id: id.clone(), family, share, pieces, vars, distinct, include, exclude, capacity: 0.0 };
    check_counts(&t, slots).map_err(|m| Error::invalid(&vars_at, m))?;
    Ok(t)
}

/// Spec counts must evaluate to integers for every allowed value.
fn check_counts(t: &Template, slots: &[Slot]) -> Result<(), String> {
    for obj in t.include.iter().chain(&t.exclude) {
        for p in obj.count.iter().flatten() {
            if let Piece::Var { var, .. } = p {
                let v = &t.vars[*var];
                if let Some(&bad) =
                    v.allowed.iter().find(|&&i| slots[v.slot].values[i as usize].text.parse::<u32>().is_err())
                {
                    return Err(format!(
                        "template \"{}\": a spec count uses var \"{}\", whose value \"{}\" is not a whole number",
                        t.id, v.name, slots[v.slot].values[bad as usize].text
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Says why a template admits no prompt at all, naming the distinct group that cannot be met.
fn impossible_reason(t: &Template, slots: &[Slot]) -> String {
    for &(a, b) in &t.distinct {
        let (va, vb) = (&t.vars[a], &t.vars[b]);
        let ids = |v: &Var| v.allowed.iter().map(|&i| slots[v.slot].values[i as usize].id).collect::<Vec<_>>();
        let (ia, ib) = (ids(va), ids(vb));
        if ia.len() == 1 && ib == ia {
            let only = &slots[va.slot].values[va.allowed[0] as usize].text;
            return format!(
                "template \"{}\": vars \"{}\" and \"{}\" must be distinct, but both can only be \"{only}\" (slot \"{}\" allows 1 value here)",
                t.id, va.name, vb.name, slots[va.slot].name
            );
        }
    }
    format!("template \"{}\": its constraints (distinct groups) admit no prompt at all", t.id)
}

#[cfg(test)]
mod tests {
    use crate::taxonomy::Taxonomy;

    fn parse(body: &str) -> Result<Taxonomy, String> {
        let text = format!("[taxonomy]\nname = \"t\"\nversion = \"1\"\n{body}");
        Taxonomy::parse("t.toml", &text).map_err(|e| e.to_string())
    }

    const FAMILY: &str =
        "[[families]]\nname = \"f\"\n[[families.templates]]\nid = \"t\"\ntext = \"{a}\"\nvars = { a = \"x\" }\n";

    #[test]
    fn default_weights_make_values_equally_likely_across_categories() {
        let t = parse(&format!(
            "[slots.x.categories.big]\nvalues = [\"a\", \"b\", \"c\"]\n[slots.x.categories.small]\nvalues = [\"d\"]\n{FAMILY}"
        ))
        .unwrap();
        for v in &t.slots[0].values {
            assert!((v.prob - 0.25).abs() < 1e-12, "{} {}", v.text, v.prob);
        }
        assert_eq!(t.slots[0].values[3].path, "small");
    }

    #[test]
    fn explicit_weights_split_along_the_path() {
        let t = parse(&format!(
            "[slots.x]\nvalues = [{{ value = \"a\", weight = 2 }}]\n[slots.x.categories.c]\nweight = 2\nvalues = [\"b\", {{ value = \"c\", weight = 3 }}]\n{FAMILY}"
        ))
        .unwrap();
        let p: Vec<f64> = t.slots[0].values.iter().map(|v| v.prob).collect();
        // a: 2/4; category c: 2/4 split 1:3.
        assert_eq!(p, vec![0.5, 0.125, 0.375]);
    }

    #[test]
    fn missing_form_is_named() {
        let err = parse(
            "[slots.x]\nvalues = [{ value = \"2\", forms = { word = \"two\" } }, \"3\"]\n[[families]]\nname = \"f\"\n[[families.templates]]\nid = \"t\"\ntext = \"{a.word}\"\nvars = { a = \"x\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("form \"word\"") && err.contains("\"3\""), "{err}");
    }

    #[test]
    fn numeric_range_needs_numbers() {
        let err = parse(
            "[slots.x]\nvalues = [\"two\"]\n[[families]]\nname = \"f\"\n[[families.templates]]\nid = \"t\"\ntext = \"{a}\"\nvars = { a = { slot = \"x\", min = 2 } }\n",
        )
        .unwrap_err();
        assert!(err.contains("min/max need numeric values") && err.contains("\"two\""), "{err}");
    }

    #[test]
    fn unused_var_and_duplicate_values_are_errors() {
        let err = parse(
            "[slots.x]\nvalues = [\"a\"]\n[[families]]\nname = \"f\"\n[[families.templates]]\nid = \"t\"\ntext = \"{a}\"\nvars = { a = \"x\", b = \"x\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("declares var \"b\" but its text never uses it"), "{err}");
        let err = parse(&format!("[slots.x]\nvalues = [\"a\", \"a\"]\n{FAMILY}")).unwrap_err();
        assert!(err.contains("value \"a\" appears twice"), "{err}");
    }

    #[test]
    fn typo_in_except_is_caught() {
        let err = parse(
            "[slots.x]\nvalues = [\"a\", \"b\"]\n[[families]]\nname = \"f\"\n[[families.templates]]\nid = \"t\"\ntext = \"{a}\"\nvars = { a = { slot = \"x\", except = [\"c\"] } }\n",
        )
        .unwrap_err();
        assert!(err.contains("\"c\" is not a value of slot \"x\""), "{err}");
    }
}
