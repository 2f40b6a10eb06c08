//! Multi-machine runs: `distill --worker I/N --store URL` makes and publishes one worker's
//! share of the expensive per-part work (teacher images, then their curate measurements);
//! `manifest merge --store URL` checks that every part is there, names the workers to rerun
//! if not, and finishes the run (global dedup and filter, encode, manifest) exactly as a
//! single process would — the manifest `id` is the same.
//!
//! Workers share nothing but the store. Each works in its own scratch copy of the run folder
//! (disposable: a rerun on a fresh machine fetches what it needs), and a part is done when
//! its marker is in the store, so running a worker twice, or killing and rerunning it,
//! redoes only what was not published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::curate::{self, CurateOptions};
use super::distill::{distill, DistillOptions};
use super::expand::{self, ExpandOptions};
use super::generate::{self, GenerateOptions};

use super::store::Store;
use super::worker::{Share, Worker};
use super::StageMarker;
use crate::config::Plan;
use crate::error::{Error, Result};
use crate::formats::commit;
use crate::formats::manifest::Manifest;

const PLAN_MARKER: &str = "plan.json";
const GENERATE: &str = "generate";
const SCORES: &str = "curate/scores";

/// Options shared by the worker and the merge.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub progress: bool,
    pub threads: usize,
}

/// What one worker did.
#[derive(Debug, Serialize)]
pub struct WorkerSummary {
    pub worker: String,
    pub store: String,
    pub parts: (u64, u64),
    /// Parts already complete in the store (skipped).
    pub parts_published_before: u64,
    pub parts_made: u64,
    pub samples_made: u64,
    pub seconds: f64,
}

/// `workers/I-of-N.done.json`: written when a worker has published its whole share.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerDone {
    worker: String,
    plan: String,
    parts: (u64, u64),
    tool_version: String,
}

/// Refuses a store that holds another plan's run; claims an empty one.
fn check_plan(store: &Store, plan: &Plan, create: bool) -> Result<()> {
    let marker = StageMarker { stage: "run".into(), plan: plan.hash.clone(), tool_version: crate::VERSION.into() };
    match store.get(PLAN_MARKER)? {
        Some(bytes) => {
            let found: StageMarker = serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(format!("{}/{PLAN_MARKER}", store.url()), format!("unreadable run marker: {e}"))
            })?;
            if found.plan != plan.hash {
                return Err(Error::Conflict {
                    path: store.url().into(),
                    message: format!(
                        "holds a run of another config (plan {}), this config is plan {}: use another store prefix",
                        &found.plan[..12.min(found.plan.len())],
                        &plan.hash[..12]
                    ),
                });
            }
            Ok(())
        }
        None if create => store.put(PLAN_MARKER, serde_json::to_vec_pretty(&marker).expect("marker serialises")),
        None => {
            Err(Error::invalid(store.url(), "no run here yet: run `lightgen distill --worker I/N --store …` first"))
        }
    }
}

/// Which of `parts` are complete in the store: images without failures, and their
/// measurements taken from that very file.
fn published(store: &Store, plan: &Plan, parts: &[u64], with_scores: bool) -> Result<Vec<bool>> {
    let gen = store.parts_stats(GENERATE, parts, plan.stage_hash(GENERATE))?;
    let scores = match with_scores {
        true => store.parts_stats(SCORES, parts, plan.stage_hash("curate"))?,
        false => vec![None; parts.len()],
    };
    Ok(gen
        .iter()
        .zip(&scores)
        .map(|(g, sc)| match g {
            // a part with failed samples is redone, as a local rerun retries them
            Some(g) if g.extra["failed"].as_u64().unwrap_or(0) == 0 => {
                !with_scores || sc.as_ref().is_some_and(|sc| sc.extra["source"].as_str() == Some(g.blake3.as_str()))
            }
            _ => false,
        })
        .collect())
}

/// Expand runs in every worker (it is cheap and deterministic); its parts are published once.
fn expand_and_publish(plan: &Plan, store: &Store, opts: Options) -> Result<()> {
    expand::run(plan, &ExpandOptions { force: false, progress: opts.progress })?;
    let dir = plan.run_dir.join("expand");
    let hash = plan.stage_hash("expand");
    for path in commit::committed_parts(&dir)? {
        let k = commit::read_stats(&path)?.part;
        if store.part_stats("expand", k, hash)?.is_none() {
            store.publish_part(&dir, "expand", k)?;
        }
    }
    Ok(())
}

/// Runs worker `w`'s share of a run.
pub fn run_worker(plan: &Plan, store: &Arc<Store>, w: Worker, opts: Options) -> Result<WorkerSummary> {
    let start = Instant::now();
    if plan.config.generate.is_none() {
        return Err(Error::invalid("config", "no [generate] section: nothing to distribute"));
    }
    check_plan(store, plan, true)?;
    expand_and_publish(plan, store, opts)?;
    let n_parts = generate::part_count(plan)?;
    let range = w.parts(n_parts);
    let with_scores = plan.config.curate.is_some();
    let gen_dir = plan.run_dir.join(GENERATE);
    let owned: Vec<u64> = range.clone().collect();
    let done = published(store, plan, &owned, with_scores)?;
    let todo: Vec<u64> = owned.iter().zip(done).filter(|(_, d)| !d).map(|(&k, _)| k).collect();
    // their images may be in the store already (a worker killed before measuring them)
    store.fetch_parts(GENERATE, &todo, plan.stage_hash(GENERATE), &gen_dir)?;
    let before = (range.end - range.start) - todo.len() as u64;
    let mut made = 0;
    if !todo.is_empty() {
        let share = |dir: &'static str| Share {
            parts: todo.clone(),
            publish: {
                let s = store.clone();
                Arc::new(move |local: &std::path::Path, k: u64| s.publish_part(local, dir, k))
            },
        };
        let g = GenerateOptions {
            force: false,
            progress: opts.progress,
            threads: opts.threads,
            share: Some(share(GENERATE)),
        };
        made = generate::run(plan, &g)?.made;
        if with_scores {
            let c = CurateOptions {
                force: false,
                progress: opts.progress,
                threads: opts.threads,
                share: Some(share(SCORES)),
            };
            curate::run(plan, &c)?;
        }
    }
    let done = WorkerDone {
        worker: w.to_string(),
        plan: plan.hash.clone(),
        parts: (range.start, range.end),
        tool_version: crate::VERSION.into(),
    };
    store.put(&done_name(w), serde_json::to_vec_pretty(&done).expect("marker serialises"))?;
    Ok(WorkerSummary {
        worker: w.to_string(),
        store: store.url().into(),
        parts: (range.start, range.end),
        parts_published_before: before,
        parts_made: todo.len() as u64,
        samples_made: made,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn done_name(w: Worker) -> String {
    format!("workers/{}-of-{}.done.json", w.index, w.count)
}

/// The worker counts the store's done markers mention.
fn worker_counts(store: &Store) -> Result<Vec<u32>> {
    let mut counts: Vec<u32> = store
        .list("workers")?
        .iter()
        .filter_map(|n| n.strip_suffix(".done.json")?.split_once("-of-")?.1.parse().ok())
        .collect();
    counts.sort();
    counts.dedup();
    Ok(counts)
}

/// Says which parts are missing, grouped by the worker to rerun.
fn missing_message(store: &Store, missing: &[u64], n_parts: u64, workers: Option<u32>) -> Result<String> {
    let counts = match workers {
        Some(n) => vec![n],
        None => worker_counts(store)?,
    };
    let mut msg = format!("{} of {n_parts} parts are missing or incomplete", missing.len());
    if let [n] = counts[..] {
        let mut by: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for &k in missing {
            by.entry(Worker::owner(k, n_parts, n).index).or_default().push(k);
        }
        for (i, parts) in by {
            let w = Worker { index: i, count: n };
            msg.push_str(&format!(
                "\n  worker {w}: parts {} — rerun `lightgen distill -c <config> --worker {w} --store {}`",
                ranges(&parts),
                store.url()
            ));
        }
    } else {
        msg.push_str(&format!(": parts {} (pass --workers N to name the workers to rerun)", ranges(missing)));
    }
    Ok(msg)
}

/// `[1, 2, 3, 7]` → `1–3, 7`.
fn ranges(parts: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let mut j = i;
        while j + 1 < parts.len() && parts[j + 1] == parts[j] + 1 {
            j += 1;
        }
        out.push(if i == j { parts[i].to_string() } else { format!("{}–{}", parts[i], parts[j]) });
        i = j + 1;
    }
    out.join(", ")
}

/// Checks the store holds every part, then finishes the run in `plan.run_dir` and publishes
/// the result (curate decisions, encode shards, manifest) to the store.
pub fn merge(plan: &Plan, store: &Store, workers: Option<u32>, opts: Options) -> Result<Manifest> {
    let t0 = Instant::now();
    let phase = |what: &str| tracing::info!("merge: {what} done at {:.2}s", t0.elapsed().as_secs_f64());
    check_plan(store, plan, false)?;
    expand_and_publish(plan, store, opts)?;
    let n_parts = generate::part_count(plan)?;
    let with_scores = plan.config.curate.is_some();
    let all: Vec<u64> = (0..n_parts).collect();
    let done = published(store, plan, &all, with_scores)?;
    let missing: Vec<u64> = all.iter().zip(done).filter(|(_, d)| !d).map(|(&k, _)| k).collect();
    phase("checking the store");
    if !missing.is_empty() {
        return Err(Error::invalid(store.url(), missing_message(store, &missing, n_parts, workers)?));
    }
    store.fetch_parts(GENERATE, &all, plan.stage_hash(GENERATE), &plan.run_dir.join(GENERATE))?;
    if with_scores {
        store.fetch_parts(SCORES, &all, plan.stage_hash("curate"), &plan.run_dir.join(SCORES))?;
    }
    phase("fetching the parts");
    if !with_scores {
        return Err(Error::invalid(
            "config",
            "no [curate] section: merge builds a manifest, which needs curate and encode",
        ));
    }
    if plan.config.encode.is_none() {
        return Err(Error::invalid("config", "no [encode] section: merge builds a manifest, which needs encode"));
    }
    // Every part is local now: the chain reuses them (expand and generate are done) and does
    // the global work (curate over the whole run, encode, the manifest).
    let chain = DistillOptions { force: false, progress: opts.progress, threads: opts.threads };
    let m = distill(plan, &chain, |_| Ok(()))?.manifest.expect("the config has every stage (checked above)");
    phase("curate, encode and manifest");
    // Publish the rest of the run folder; the manifest last, as it declares the run done.
    let root = &plan.run_dir;
    for f in ["config.toml", "taxonomy.toml", "expand/summary.json", "generate/summary.json"] {
        store.upload(f, &root.join(f))?;
    }
    store.publish_tree(&root.join("curate"), "curate", |rel| !rel.starts_with("scores/"))?;
    store.publish_tree(&root.join("encode"), "encode", |_| true)?;
    store.upload("manifest.json", &root.join("manifest.json"))?;
    phase("publishing");
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_lists_read_as_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1–3, 7, 9–10");
        assert_eq!(ranges(&[4]), "4");
    }
}
