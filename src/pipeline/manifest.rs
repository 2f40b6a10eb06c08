//! Building the dataset manifest of a run whose data stages are done, and subset manifests
//! (selection files over a parent's shards). The format itself is `formats::manifest`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::encode;
use crate::config::Plan;
use crate::error::{Error, Result};
use crate::formats::commit::{hash_file, write_atomic};
use crate::formats::manifest::*;

/// Builds and writes `manifest.json` for a run whose data stages are done; returns it.
pub fn build(plan: &Plan) -> Result<Manifest> {
    let run = &plan.run_dir;
    let enc_dir = encode::dir_of(run);
    let summary = |stage: &str| -> Result<serde_json::Value> {
        let p = run.join(stage).join("summary.json");
        let bytes = std::fs::read(&p).map_err(|_| {
            Error::invalid(
                p.display().to_string(),
                format!("the {stage} stage has not finished: run `lightgen {stage}` first"),
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(p.display().to_string(), e.to_string()))
    };
    let (exp, gen, cur, enc) = (summary("expand")?, summary("generate")?, summary("curate")?, summary("encode")?);
    let spec: encode::EncodeSpec = serde_json::from_slice(
        &std::fs::read(enc_dir.join("spec.json")).map_err(|e| Error::io(enc_dir.join("spec.json"), e))?,
    )
    .map_err(|e| Error::invalid("encode/spec.json", e.to_string()))?;
    let shards = encode::committed_shards(&enc_dir, plan.stage_hash("encode"))?;
    let (held_hash, _) =
        hash_file(&enc_dir.join("held_out.jsonl")).map_err(|e| Error::io(enc_dir.join("held_out.jsonl"), e))?;
    let prompt_report = super::expand::stats::prompt_stats(run)?;
    let g = plan.config.generate.as_ref();
    let c = plan.config.curate.as_ref();
    let u = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut m = Manifest {
        schema_version: SCHEMA_VERSION,
        name: plan.config.run.name.clone(),
        version: "1".into(),
        id: String::new(),
        created_at: now_rfc3339(),
        lineage: Lineage {
            tool_version: crate::VERSION.into(),
            git_commit: env!("LIGHTGEN_GIT_COMMIT").into(),
            config: toml::to_string_pretty(&plan.config).expect("config serialises"),
            config_hash: plan.hash.clone(),
            stage_hashes: plan.stage_hashes.clone(),
            taxonomy: format!("{}@{}", plan.taxonomy.name, plan.taxonomy.version),
            taxonomy_blake3: plan.taxonomy.hash.clone(),
            teacher: g.map(|g| g.teacher.clone()).unwrap_or_default(),
            scorer: c.map(|c| c.scorer.clone()).unwrap_or_default(),
            image_tokenizer: spec.latent.tokenizer.clone(),
            text_encoder: spec.text.encoder.clone(),
            model_files: BTreeMap::new(),
            thresholds: c.map(|c| serde_json::to_value(c).expect("config serialises")).unwrap_or_default(),
        },
        counts: Counts {
            prompts: u(&exp, "produced"),
            samples: u(&gen, "samples"),
            kept: u(&cur, "kept"),
            reasons: encode::reject_counts(&run.join("curate"))?,
            train_samples: u(&enc, "train_samples"),
            held_out_prompts: u(&enc, "held_out_prompts"),
            held_out_samples: u(&enc, "held_out_samples"),
        },
        coverage: Coverage {
            slots: prompt_report.slots.iter().map(|s| (s.slot.clone(), s.coverage)).collect(),
            pairwise: prompt_report.pairwise_coverage,
            families: prompt_report.families.clone(),
        },
        latent: spec.latent,
        text: spec.text,
        shards,
        splits: Splits {
            train_samples: u(&enc, "train_samples"),
            held_out: "encode/held_out.jsonl".into(),
            held_out_blake3: held_hash,
            held_out_prompts: u(&enc, "held_out_prompts"),
        },
        parent: None,
    };
    m.id = content_id(&m);
    // Rewriting an identical manifest keeps its first creation time.
    let path = run.join("manifest.json");
    if let Ok(old) = load_unverified(&path) {
        if old.id == m.id {
            return Ok(old);
        }
    }
    write_atomic(&path, &serde_json::to_vec_pretty(&m).expect("manifest serialises"))?;
    Ok(m)
}

/// Writes a subset manifest of `parent` (at `parent_path`) that uses `rows[k]` of shard k:
/// selection files under `subsets/<name>/`, the manifest as `manifest-<name>.json`, both in
/// the parent's folder. No shard is copied.
pub fn write_subset(
    parent_path: &Path,
    parent: &Manifest,
    name: &str,
    rule: &str,
    rows: &[Vec<u32>],
) -> Result<(PathBuf, Manifest)> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
        return Err(Error::invalid("--name", format!("\"{name}\": expected letters, digits, '_' or '-'")));
    }
    let root = root_of(parent_path);
    let dir = root.join("subsets").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut m = parent.clone();
    m.shards.clear();
    let mut total = 0;
    for (k, (s, sel)) in parent.shards.iter().zip(rows).enumerate() {
        if sel.is_empty() {
            continue;
        }
        let bytes: Vec<u8> = sel.iter().flat_map(|r| r.to_le_bytes()).collect();
        let rel = format!("subsets/{name}/shard-{k:05}.rows");
        write_atomic(&root.join(&rel), &bytes)?;
        let mut e = s.clone();
        e.selection =
            Some(RowSelection { path: rel, rows: sel.len() as u64, blake3: blake3::hash(&bytes).to_hex().to_string() });
        total += sel.len() as u64;
        m.shards.push(e);
    }
    m.name = format!("{}-{name}", parent.name);
    m.counts.train_samples = total;
    m.splits.train_samples = total;
    m.created_at = now_rfc3339();
    let parent_rel = parent_path.file_name().map_or("manifest.json".into(), |f| f.to_string_lossy().into_owned());
    m.parent = Some(Parent { id: parent.id.clone(), path: parent_rel, rule: rule.to_string() });
    m.id = content_id(&m);
    let path = root.join(format!("manifest-{name}.json"));
    write_atomic(&path, &serde_json::to_vec_pretty(&m).expect("manifest serialises"))?;
    Ok((path, m))
}
