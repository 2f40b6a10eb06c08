//! Prompt statistics of an expanded run: per-slot value counts and normalised entropy,
//! pairwise coverage of values across slots, distinct-1/2/3 over the text, duplicate rate.
//! Data only: the manifest records them, `report prompts` prints and draws them.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::commit;
use crate::pipeline::stage_dir;
use crate::taxonomy::Taxonomy;

#[derive(Debug, Serialize)]
pub struct SlotStats {
    pub slot: String,
    /// Values of the slot that some template can use (positive weight, allowed by constraints).
    pub values_defined: usize,
    pub values_seen: usize,
    /// values_seen / values_defined.
    pub coverage: f64,
    /// Entropy of the value counts divided by ln(values_defined): 1 is perfectly even.
    pub normalized_entropy: f64,
    pub occurrences: u64,
    pub min_count: u64,
    pub max_count: u64,
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct PairStats {
    pub a: String,
    pub b: String,
    /// Value pairs some template allows.
    pub possible: usize,
    pub seen: usize,
    pub coverage: f64,
}

#[derive(Debug, Serialize)]
pub struct PromptReport {
    pub run_dir: String,
    pub taxonomy: String,
    pub rows: u64,
    pub unique_prompts: u64,
    pub duplicate_rate: f64,
    /// distinct-n: unique n-grams / all n-grams over the prompt text, n = 1, 2, 3.
    pub distinct_1: f64,
    pub distinct_2: f64,
    pub distinct_3: f64,
    /// Seen / possible over all slot pairs.
    pub pairwise_coverage: f64,
    pub families: BTreeMap<String, u64>,
    pub slots: Vec<SlotStats>,
    pub pairs: Vec<PairStats>,
}

/// The prompt statistics of a run folder's committed expand parts (no files written).
pub fn prompt_stats(run_dir: &Path) -> Result<PromptReport> {
    let dir = stage_dir(run_dir, "expand")?;
    let tax_path = run_dir.join("taxonomy.toml");
    let tax_text = std::fs::read_to_string(&tax_path).map_err(|e| Error::io(&tax_path, e))?;
    let tax = Taxonomy::parse(&tax_path.display().to_string(), &tax_text)?;
    let parts = commit::committed_parts(&dir)?;
    if parts.is_empty() {
        return Err(Error::invalid(dir.display().to_string(), "no committed part: run `lightgen expand` first"));
    }
    let pe = |e| Error::polars(&dir, e);
    let scans = parts
        .iter()
        .map(|p| {
            let path = PlRefPath::try_from_path(p).map_err(pe)?;
            LazyFrame::scan_parquet(path, ScanArgsParquet::default()).map_err(pe)
        })
        .collect::<Result<Vec<_>>>()?;
    let lf = concat(scans, UnionArgs::default()).map_err(pe)?;

    let head =
        lf.clone().select([len().alias("rows"), col("prompt").n_unique().alias("unique")]).collect().map_err(pe)?;
    let rows = scalar_u64(&head, "rows").map_err(pe)?;
    let unique = scalar_u64(&head, "unique").map_err(pe)?;

    let families = counts(lf.clone().select([col("family").alias("v")])).map_err(pe)?;
    let opts = ExplodeOptions { empty_as_null: false, keep_nulls: false };
    let mut slots = Vec::new();
    let usable = usable_values(&tax);
    for (si, slot) in tax.slots.iter().enumerate() {
        if usable[si].is_empty() {
            continue; // a slot no template uses
        }
        let name = format!("slot_{}", slot.name);
        let c = counts(lf.clone().select([col(name.as_str()).explode(opts).alias("v")])).map_err(pe)?;
        let defined = usable[si].len();
        let occurrences: u64 = c.values().sum();
        let entropy = if defined > 1 && occurrences > 0 {
            let h: f64 = c.values().map(|&n| n as f64 / occurrences as f64).map(|p| -p * p.ln()).sum();
            h / (defined as f64).ln()
        } else {
            1.0
        };
        let full: BTreeMap<String, u64> = usable[si]
            .iter()
            .map(|&i| &slot.values[i as usize].text)
            .map(|v| (v.clone(), c.get(v).copied().unwrap_or(0)))
            .collect();
        slots.push(SlotStats {
            slot: slot.name.clone(),
            values_defined: defined,
            values_seen: full.values().filter(|&&n| n > 0).count(),
            coverage: full.values().filter(|&&n| n > 0).count() as f64 / defined as f64,
            normalized_entropy: entropy,
            occurrences,
            min_count: full.values().copied().min().unwrap_or(0),
            max_count: full.values().copied().max().unwrap_or(0),
            counts: full,
        });
    }

    let mut pairs = Vec::new();
    for (a, b, possible) in possible_pairs(&tax) {
        let (ca, cb) = (format!("slot_{}", tax.slots[a].name), format!("slot_{}", tax.slots[b].name));
        let seen = lf
            .clone()
            .select([col(ca.as_str()), col(cb.as_str())])
            .explode(cols([ca.as_str()]), opts)
            .explode(cols([cb.as_str()]), opts)
            .drop_nulls(None)
            .unique(None, UniqueKeepStrategy::Any)
            .select([len().alias("n")])
            .collect()
            .map_err(pe)?;
        let seen = scalar_u64(&seen, "n").map_err(pe)? as usize;
        pairs.push(PairStats {
            a: tax.slots[a].name.clone(),
            b: tax.slots[b].name.clone(),
            possible,
            seen,
            coverage: seen as f64 / possible as f64,
        });
    }
    let (seen_all, possible_all) = pairs.iter().fold((0, 0), |(s, p), x| (s + x.seen, p + x.possible));

    let texts = lf.select([col("prompt")]).collect().map_err(pe)?;
    let texts = texts.column("prompt").map_err(pe)?.str().map_err(pe)?.clone();
    let d = distinct_n(texts.iter().flatten());

    let report = PromptReport {
        run_dir: run_dir.display().to_string(),
        taxonomy: format!("{}@{}", tax.name, tax.version),
        rows,
        unique_prompts: unique,
        duplicate_rate: if rows == 0 { 0.0 } else { 1.0 - unique as f64 / rows as f64 },
        distinct_1: d[0],
        distinct_2: d[1],
        distinct_3: d[2],
        pairwise_coverage: if possible_all == 0 { 1.0 } else { seen_all as f64 / possible_all as f64 },
        families,
        slots,
        pairs,
    };
    Ok(report)
}

fn scalar_u64(df: &DataFrame, name: &str) -> PolarsResult<u64> {
    let c = df.column(name)?.cast(&DataType::UInt64)?;
    Ok(c.u64()?.get(0).unwrap_or(0))
}

/// value → count of a one-column frame named `v`.
fn counts(lf: LazyFrame) -> PolarsResult<BTreeMap<String, u64>> {
    let df = lf.group_by([col("v")]).agg([len().alias("n")]).collect()?;
    let v = df.column("v")?.str()?.clone();
    let n = df.column("n")?.cast(&DataType::UInt64)?;
    let n = n.u64()?;
    Ok(v.iter().zip(n.iter()).filter_map(|(v, n)| Some((v?.to_string(), n?))).collect())
}

/// Per slot, the values some template var may take.
fn usable_values(tax: &Taxonomy) -> Vec<std::collections::BTreeSet<u32>> {
    let mut usable = vec![std::collections::BTreeSet::new(); tax.slots.len()];
    for t in &tax.templates {
        for v in &t.vars {
            usable[v.slot].extend(v.allowed.iter().copied());
        }
    }
    usable
}

/// For every pair of different slots that some template uses together: how many value
/// pairs the templates allow (their constraints included).
pub fn possible_pairs(tax: &Taxonomy) -> Vec<(usize, usize, usize)> {
    let mut sets: BTreeMap<(usize, usize), HashSet<(u32, u32)>> = BTreeMap::new();
    for t in &tax.templates {
        for (i, vi) in t.vars.iter().enumerate() {
            for vj in &t.vars[i + 1..] {
                if vi.slot == vj.slot {
                    continue;
                }
                let (x, y) = if vi.slot < vj.slot { (vi, vj) } else { (vj, vi) };
                let set = sets.entry((x.slot, y.slot)).or_default();
                for &a in &x.allowed {
                    for &b in &y.allowed {
                        set.insert((a, b));
                    }
                }
            }
        }
    }
    sets.into_iter().map(|((a, b), s)| (a, b, s.len())).collect()
}

/// distinct-1/2/3 over lowercased words (punctuation stripped).
pub fn distinct_n<'a>(texts: impl Iterator<Item = &'a str>) -> [f64; 3] {
    let mut sets: [HashSet<u64>; 3] = Default::default();
    let mut totals = [0u64; 3];
    let mut words: Vec<String> = Vec::new();
    for t in texts {
        words.clear();
        words.extend(
            t.split_whitespace()
                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
                .filter(|w| !w.is_empty()),
        );
        for n in 1..=3 {
            for g in words.windows(n) {
                let mut h = DefaultHasher::new();
                g.hash(&mut h);
                sets[n - 1].insert(h.finish());
                totals[n - 1] += 1;
            }
        }
    }
    [0, 1, 2].map(|i| if totals[i] == 0 { 0.0 } else { sets[i].len() as f64 / totals[i] as f64 })
}
