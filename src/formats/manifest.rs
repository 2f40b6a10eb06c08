//! The dataset manifest (`runs/<name>/manifest.json`, schema `schemas/manifest.schema.json`):
//! versioned, content-hashed, with the lineage of every stage. Immutable once written; the
//! trainer verifies it before it reads a byte. The pipeline builds it (`pipeline::manifest`);
//! this module is its format: the types, the content id, verification, `show` and `diff`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::commit::hash_file;
use crate::formats::text::TextSpec;
use crate::formats::tokenizer::LatentSpec;

pub const SCHEMA_VERSION: u32 = 1;

/// A written shard, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShardEntry {
    /// Relative to the manifest's folder.
    pub path: String,
    pub index: String,
    pub rows: u64,
    pub bytes: u64,
    pub blake3: String,
    pub index_bytes: u64,
    pub index_blake3: String,
    /// In a subset manifest: the rows of this shard it uses (else all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<RowSelection>,
}

/// A file of little-endian u32 row indices (ascending) into one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RowSelection {
    pub path: String,
    pub rows: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub version: String,
    /// blake3 over everything below except `created_at` (and `id` itself).
    pub id: String,
    /// UTC, RFC 3339.
    pub created_at: String,
    pub lineage: Lineage,
    pub counts: Counts,
    pub coverage: Coverage,
    pub latent: LatentSpec,
    pub text: TextSpec,
    pub shards: Vec<ShardEntry>,
    pub splits: Splits,
    /// For a subset: the manifest it was cut from and the rule (no data is copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Parent {
    pub id: String,
    /// Relative to this manifest's folder.
    pub path: String,
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Lineage {
    pub tool_version: String,
    pub git_commit: String,
    /// The resolved run config (TOML) and its hash.
    pub config: String,
    pub config_hash: String,
    /// Stage → the hash of what decided its output.
    pub stage_hashes: BTreeMap<String, String>,
    pub taxonomy: String,
    pub taxonomy_blake3: String,
    pub teacher: String,
    pub scorer: String,
    pub image_tokenizer: String,
    pub text_encoder: String,
    /// blake3 of every model file used (none for the built-in world).
    pub model_files: BTreeMap<String, String>,
    /// Curation thresholds as configured (JSON).
    pub thresholds: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    pub prompts: u64,
    pub samples: u64,
    pub kept: u64,
    /// Curation decisions by reason (kept included).
    pub reasons: BTreeMap<String, u64>,
    pub train_samples: u64,
    pub held_out_prompts: u64,
    pub held_out_samples: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Coverage {
    /// Slot → share of its usable values present in the prompts.
    pub slots: BTreeMap<String, f64>,
    pub pairwise: f64,
    pub families: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Splits {
    /// Every shard is training data.
    pub train_samples: u64,
    /// Held-out prompts for evaluation: a JSON-lines file (prompt_id, prompt, family, spec).
    pub held_out: String,
    pub held_out_blake3: String,
    pub held_out_prompts: u64,
}

/// blake3 over the manifest's content, `id` and `created_at` left out.
pub fn content_id(m: &Manifest) -> String {
    let mut v = serde_json::to_value(m).expect("manifest serialises");
    v["id"] = serde_json::Value::Null;
    v["created_at"] = serde_json::Value::Null;
    blake3::hash(v.to_string().as_bytes()).to_hex().to_string()
}

pub(crate) fn load_unverified(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let raw: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(path.display().to_string(), format!("not JSON: {e}")))?;
    let v = raw["schema_version"].as_u64();
    if v != Some(SCHEMA_VERSION as u64) {
        return Err(Error::invalid(
            path.display().to_string(),
            format!("schema_version {}: this lightgen reads schema_version {SCHEMA_VERSION}", raw["schema_version"]),
        ));
    }
    serde_json::from_value(raw)
        .map_err(|e| Error::invalid(path.display().to_string(), format!("does not match the manifest schema: {e}")))
}

/// A path from the manifest, checked to stay inside `root` (relative, no `..`, no link out).
fn inside(root: &Path, rel: &str, what: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let bad = |m: &str| {
        Error::invalid(format!("{} ({what})", root.join("manifest.json").display()), format!("path \"{rel}\" {m}"))
    };
    if p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad("must be relative, without '..' or '.'"));
    }
    let full = root.join(p);
    if let (Ok(real), Ok(real_root)) = (full.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&real_root) {
            return Err(bad("leads out of the manifest's folder (a symbolic link?)"));
        }
    }
    Ok(full)
}

/// Loads a manifest and checks everything: schema, id, every path, size and hash, and the
/// rows of every shard. The error names the file and the problem.
pub fn verify(path: &Path) -> Result<Manifest> {
    let m = load_unverified(path)?;
    let root = path.parent().unwrap_or(Path::new("."));
    let fail = |what: &str, m: String| Err(Error::invalid(what.to_string(), m));
    if content_id(&m) != m.id {
        return fail(
            &path.display().to_string(),
            format!("id {} does not match its content ({}): the manifest was changed", m.id, content_id(&m)),
        );
    }
    for s in &m.shards {
        for (rel, bytes, blake3) in [(&s.path, s.bytes, &s.blake3), (&s.index, s.index_bytes, &s.index_blake3)] {
            let full = inside(root, rel, "shard")?;
            let (h, n) = match hash_file(&full) {
                Ok(x) => x,
                Err(e) => return fail(&full.display().to_string(), format!("missing or unreadable shard file: {e}")),
            };
            if n != bytes {
                return fail(&full.display().to_string(), format!("{n} bytes, the manifest says {bytes}"));
            }
            if &h != blake3 {
                return fail(
                    &full.display().to_string(),
                    format!("blake3 {h}, the manifest says {blake3}: the shard was changed"),
                );
            }
        }
        let full = inside(root, &s.path, "shard")?;
        let shard = crate::formats::shards::Shard::open(&full)?;
        if shard.rows as u64 != s.rows {
            return fail(&full.display().to_string(), format!("{} rows, the manifest says {}", shard.rows, s.rows));
        }
        if let Some(sel) = &s.selection {
            let sp = inside(root, &sel.path, "selection")?;
            let bytes = match std::fs::read(&sp) {
                Ok(b) => b,
                Err(e) => return fail(&sp.display().to_string(), format!("missing row selection: {e}")),
            };
            if blake3::hash(&bytes).to_hex().as_str() != sel.blake3 {
                return fail(&sp.display().to_string(), "the row selection was changed (blake3 mismatch)".into());
            }
            let rows = selection_rows(&bytes);
            if rows.len() as u64 != sel.rows
                || rows.iter().any(|&r| r as u64 >= s.rows)
                || rows.windows(2).any(|w| w[0] >= w[1])
            {
                return fail(
                    &sp.display().to_string(),
                    format!("expected {} ascending rows below {}", sel.rows, s.rows),
                );
            }
        }
    }
    cross_check(&m, root, path)?;
    let held = inside(root, &m.splits.held_out, "split")?;
    match hash_file(&held) {
        Ok((h, _)) if h == m.splits.held_out_blake3 => {}
        Ok((h, _)) => {
            return fail(
                &held.display().to_string(),
                format!("blake3 {h}, the manifest says {}", m.splits.held_out_blake3),
            )
        }
        Err(e) => return fail(&held.display().to_string(), format!("missing held-out split: {e}")),
    }
    Ok(m)
}

/// What the manifest claims against what its shards hold (the id is an unkeyed hash, so a
/// changed manifest can carry a recomputed one): the training counts against the shards' rows,
/// each index against its shard (row count, row numbers, and, with vocabulary text, every
/// prompt's word ids against the ids stored in the shard), and sample ids unique across shards.
fn cross_check(m: &Manifest, root: &Path, path: &Path) -> Result<()> {
    let fail = |what: &Path, msg: String| Err(Error::invalid(what.display().to_string(), msg));
    let rows: u64 = m.shards.iter().map(|s| s.selection.as_ref().map_or(s.rows, |sel| sel.rows)).sum();
    for (field, claimed) in
        [("counts.train_samples", m.counts.train_samples), ("splits.train_samples", m.splits.train_samples)]
    {
        if claimed != rows {
            return fail(path, format!("{field} is {claimed}, but the shards hold {rows} training rows"));
        }
    }
    let vocab = if m.text.encoder == "vocab" {
        let held = inside(root, &m.splits.held_out, "split")?;
        let vp = held.parent().unwrap_or(root).join("vocab.json");
        match std::fs::read(&vp) {
            Ok(bytes) if m.text.vocab_hash.as_deref() == Some(blake3::hash(&bytes).to_hex().as_str()) => {
                let v: crate::formats::text::Vocab = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::invalid(vp.display().to_string(), e.to_string()))?;
                Some(crate::formats::text::Vocab::from_words(v.words))
            }
            Ok(_) => return fail(&vp, "vocabulary hash differs from the manifest's".into()),
            Err(e) => return fail(&vp, format!("missing vocabulary: {e}")),
        }
    } else {
        None
    };
    let mut seen = std::collections::HashSet::new();
    for s in &m.shards {
        let ip = inside(root, &s.index, "index")?;
        let f = crate::formats::frame::Frame::read(&ip, Some(&["row", "sample_id", "prompt"]))?;
        if f.height() as u64 != s.rows {
            return fail(&ip, format!("{} rows, but its shard {} has {}", f.height(), s.path, s.rows));
        }
        let (row, id, prompt) = (f.u32("row")?, f.str("sample_id")?, f.str("prompt")?);
        let shard = crate::formats::shards::Shard::open(&inside(root, &s.path, "shard")?)?;
        for i in 0..f.height() {
            if row.get(i) != Some(i as u32) {
                return fail(&ip, format!("row {i} is numbered {:?}", row.get(i)));
            }
            let sid = crate::formats::frame::text(&id, i);
            if !seen.insert(sid.clone()) {
                return fail(&ip, format!("sample {sid} appears in more than one shard"));
            }
            if let Some(v) = &vocab {
                let text = crate::formats::frame::text(&prompt, i);
                if v.encode(&text, m.text.max_len as usize) != shard.text(i) {
                    return fail(
                        &ip,
                        format!("row {i} ({sid}) is not the prompt stored in {} at that row: the index belongs to another shard", s.path),
                    );
                }
            }
        }
    }
    Ok(())
}

/// A readable summary.
pub fn show(m: &Manifest) -> String {
    let rows: u64 = m.shards.iter().map(|s| s.rows).sum();
    let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
    let reasons: Vec<String> = m.counts.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "manifest  {} v{} (schema {}), id {}\ncreated   {} by lightgen {} ({})\ntaxonomy  {}; teacher {}; scorer {}\ncounts    {} prompts → {} images → {} kept → {} training samples; {} prompts held out\nreasons   {}\nlatents   {} {}x{} tokens of {} ({} px, patch {}, {}{})\ntext      {} (dim {}, max {} tokens)\nshards    {} ({} rows, {:.1} MiB)\ncoverage  pairwise {:.1}%\n",
        m.name,
        m.version,
        m.schema_version,
        m.id,
        m.created_at,
        m.lineage.tool_version,
        &m.lineage.git_commit[..m.lineage.git_commit.len().min(12)],
        m.lineage.taxonomy,
        m.lineage.teacher,
        m.lineage.scorer,
        m.counts.prompts,
        m.counts.samples,
        m.counts.kept,
        m.counts.train_samples,
        m.counts.held_out_prompts,
        reasons.join(", "),
        m.latent.tokenizer,
        m.latent.grid,
        m.latent.grid,
        m.latent.token_dim,
        m.latent.resolution,
        m.latent.patch,
        m.latent.dtype,
        if m.latent.flip { ", with flips" } else { "" },
        m.text.encoder,
        m.text.dim,
        m.text.max_len,
        m.shards.len(),
        rows,
        bytes as f64 / (1024.0 * 1024.0),
        m.coverage.pairwise * 100.0,
    )
}

/// Now, UTC, as RFC 3339 (days to civil date: Howard Hinnant's algorithm).
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        assert!(inside(dir.path(), "encode/shard-00000.safetensors", "x").is_ok());
        for bad in ["/etc/passwd", "../x", "encode/../../x", "./x"] {
            assert!(inside(dir.path(), bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn floats_round_trip_exactly_through_json() {
        // The manifest id hashes its JSON value; a float that parsed back one ULP off made a
        // written manifest fail its own verification (serde_json needs float_roundtrip).
        for x in [0.9982014388489209f64, 0.1, 1.0 / 3.0, 2.0f64.sqrt()] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x}");
        }
    }

    #[test]
    fn rfc3339_shape() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}

/// What changed from manifest `a` to `b`: lineage fields, counts, shards. Empty when the ids match.
pub fn diff(a: &Manifest, b: &Manifest) -> Vec<String> {
    if a.id == b.id {
        return vec![];
    }
    let mut out = Vec::new();
    let flat = |m: &Manifest, part: &str| -> BTreeMap<String, String> {
        let v = serde_json::to_value(m).expect("manifest serialises");
        let mut map = BTreeMap::new();
        flatten(part, &v[part], &mut map);
        map
    };
    for part in ["lineage", "counts", "coverage", "latent", "text", "splits"] {
        let (x, y) = (flat(a, part), flat(b, part));
        for k in x.keys().chain(y.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (vx, vy) = (x.get(k), y.get(k));
            if vx != vy {
                let show = |v: Option<&String>| {
                    v.map_or(
                        "(absent)".to_string(),
                        |s| if s.len() > 60 { format!("{}…", &s[..60]) } else { s.clone() },
                    )
                };
                out.push(format!("{k}: {} → {}", show(vx), show(vy)));
            }
        }
    }
    let shards = |m: &Manifest| {
        m.shards.iter().map(|s| (s.path.clone(), (s.rows, s.blake3.clone()))).collect::<BTreeMap<_, _>>()
    };
    let (sa, sb) = (shards(a), shards(b));
    for (p, (rows, h)) in &sa {
        match sb.get(p) {
            None => out.push(format!("shard {p}: removed ({rows} rows)")),
            Some((r2, h2)) if h2 != h => out.push(format!("shard {p}: changed ({rows} → {r2} rows)")),
            _ => {}
        }
    }
    for (p, (rows, _)) in &sb {
        if !sa.contains_key(p) {
            out.push(format!("shard {p}: added ({rows} rows)"));
        }
    }
    out
}

pub(crate) fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Loads a manifest for reading (schema checked; files not verified).
pub fn load(path: &Path) -> Result<Manifest> {
    load_unverified(path)
}

/// Row indices of a selection file.
pub fn selection_rows(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The root folder a manifest's paths are relative to.
pub fn root_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}
