//! `lightgen distill` end to end (expand → generate → curate → encode → manifest), the
//! manifest's verification, and kill -9 at several points giving the same manifest id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lightgen::formats::commit;
use lightgen::formats::shards::Shard;
use lightgen::formats::tokenizer::{ImageTokenizer, Pixels};
use lightgen::pipeline::generate::read_part;
use polars::prelude::*;

use crate::{lightgen, stderr, stdout, write_config};

const STAGES: &str = "
[generate]
teacher = \"builtin:shapes\"
images_per_prompt = 2
part_size = 300

[curate]
scorer = \"builtin:shapes\"
near_dup = false

[curate.filter]
threshold = 1.0

[encode]
resolution = 64
patch = 4
dtype = \"f16\"
flip = true
shard_size = 256
held_out = 0.1
";

fn config(dir: &Path, count: u64) -> PathBuf {
    write_config(dir, "d", "builtin:shapes", count, STAGES)
}

fn distill(cfg: &Path, out: &Path) {
    let o = lightgen(&["distill", "-q", "--config", cfg.to_str().unwrap(), "--output-dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn manifest_id(run: &Path) -> String {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    m["id"].as_str().unwrap().to_string()
}

#[test]
fn distill_writes_a_verified_manifest_whose_shards_decode_to_the_images() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 200);
    distill(&cfg, &dir.path().join("out"));
    let run = dir.path().join("out/d");
    let o = lightgen(&["manifest", "verify", run.join("manifest.json").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let rows: u64 = m["shards"].as_array().unwrap().iter().map(|s| s["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, m["counts"]["train_samples"].as_u64().unwrap());
    assert_eq!(m["counts"]["samples"], 400);
    assert!(m["counts"]["held_out_prompts"].as_u64().unwrap() > 5);

    // Row 0 of shard 0 decodes to exactly the generated image of its sample.
    let index =
        ParquetReader::new(std::fs::File::open(run.join("encode/shard-00000.parquet")).unwrap()).finish().unwrap();
    let sid = index.column("sample_id").unwrap().str().unwrap().get(0).unwrap().to_string();
    let sample = read_part(&run.join("generate").join(commit::part_name(0)))
        .unwrap()
        .into_iter()
        .find(|s| s.sample_id == sid)
        .unwrap();
    let original = image::load_from_memory(sample.image.as_deref().unwrap()).unwrap().to_rgb8();
    let shard = Shard::open(&run.join("encode/shard-00000.safetensors")).unwrap();
    let mut tokens = Vec::new();
    shard.latents_into(0, false, &mut tokens);
    let pixels = Pixels::new(64, 4, "f16", true).unwrap();
    assert_eq!(pixels.decode(&tokens), original);
    shard.latents_into(0, true, &mut tokens);
    assert_eq!(pixels.decode(&tokens), image::imageops::flip_horizontal(&original));
    let (ids, n) = shard.text(0);
    assert!(n > 2 && ids[..n as usize].iter().all(|&i| i >= 2), "every word of a shapes prompt is in the vocabulary");

    // No held-out prompt reaches a shard.
    let held: Vec<String> = std::fs::read_to_string(run.join("encode/held_out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt_id"].as_str().unwrap().to_string())
        .collect();
    for k in 0..m["shards"].as_array().unwrap().len() as u64 {
        let idx = ParquetReader::new(std::fs::File::open(run.join(format!("encode/shard-{k:05}.parquet"))).unwrap())
            .finish()
            .unwrap();
        for p in idx.column("prompt_id").unwrap().str().unwrap().iter().flatten() {
            assert!(!held.iter().any(|h| h == p), "held-out prompt {p} in shard {k}");
        }
    }
    let o = lightgen(&["manifest", "show", run.join("manifest.json").to_str().unwrap()]);
    assert!(stdout(&o).contains("training samples"), "{}", stdout(&o));

    // diff: identical with itself; another seed changes lineage, counts and every shard.
    let path = run.join("manifest.json");
    let o = lightgen(&["manifest", "diff", path.to_str().unwrap(), path.to_str().unwrap()]);
    assert!(stdout(&o).starts_with("identical"), "{}", stdout(&o));
    let other = dir.path().join("other.toml");
    std::fs::write(&other, std::fs::read_to_string(&cfg).unwrap().replace("seed = 42", "seed = 7")).unwrap();
    distill(&other, &dir.path().join("out2"));
    let o = lightgen(&[
        "manifest",
        "diff",
        path.to_str().unwrap(),
        dir.path().join("out2/d/manifest.json").to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("lineage.config_hash") && text.contains("shard encode/shard-00000.safetensors: changed"),
        "{text}"
    );
}

#[test]
fn verify_refuses_a_changed_byte_a_missing_shard_an_unknown_schema_and_an_escaping_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 120);
    distill(&cfg, &dir.path().join("out"));
    let run = dir.path().join("out/d");
    let manifest = run.join("manifest.json");
    let good = std::fs::read(&manifest).unwrap();
    let verify = || {
        let o = lightgen(&["manifest", "verify", manifest.to_str().unwrap()]);
        assert!(!o.status.success(), "verify must fail");
        stderr(&o)
    };
    // A changed byte in a shard.
    let shard0 = run.join("encode/shard-00000.safetensors");
    let bytes = std::fs::read(&shard0).unwrap();
    let mut changed = bytes.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&shard0, &changed).unwrap();
    let e = verify();
    assert!(e.contains("shard-00000.safetensors") && e.contains("the shard was changed"), "{e}");
    // A missing shard.
    std::fs::remove_file(&shard0).unwrap();
    let e = verify();
    assert!(e.contains("shard-00000.safetensors") && e.contains("missing"), "{e}");
    std::fs::write(&shard0, &bytes).unwrap();
    assert!(lightgen(&["manifest", "verify", manifest.to_str().unwrap()]).status.success());
    // An unknown schema version.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["schema_version"] = 99.into();
    std::fs::write(&manifest, v.to_string()).unwrap();
    assert!(verify().contains("schema_version 99"));
    // A path escaping the root (with the id recomputed, so only the path is wrong).
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["shards"][0]["path"] = "../../etc/passwd".into();
    let mut m: lightgen::formats::manifest::Manifest = serde_json::from_value(v).unwrap();
    m.id = lightgen::formats::manifest::content_id(&m);
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    assert!(verify().contains("must be relative"), "escaping path");
    // A changed count without a new id.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["counts"]["kept"] = 1.into();
    std::fs::write(&manifest, v.to_string()).unwrap();
    assert!(verify().contains("does not match its content"));
}

#[test]
fn kill_9_at_several_points_then_rerun_gives_the_same_manifest_id() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 900);
    distill(&cfg, &dir.path().join("whole"));
    let want = manifest_id(&dir.path().join("whole/d"));
    let out = dir.path().join("killed");
    let run = out.join("d");
    for marker in
        ["generate/part-00001_stats.json", "curate/scores/part-00001_stats.json", "encode/shard-00001_stats.json"]
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lightgen"))
            .args([
                "distill",
                "-q",
                "--threads",
                "1",
                "--config",
                cfg.to_str().unwrap(),
                "--output-dir",
                out.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !run.join(marker).exists() {
            assert!(start.elapsed() < Duration::from_secs(120), "{marker} never appeared");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!run.join("manifest.json").exists(), "killed after {marker}, before the manifest");
    }
    distill(&cfg, &out);
    assert_eq!(manifest_id(&run), want);
}

/// (family, prompt_id) of every sample a manifest uses.
fn used_samples(manifest: &Path) -> Vec<(String, String)> {
    let m = lightgen::formats::manifest::verify(manifest).unwrap();
    let root = manifest.parent().unwrap();
    let mut out = Vec::new();
    for s in &m.shards {
        let idx = ParquetReader::new(std::fs::File::open(root.join(&s.index)).unwrap()).finish().unwrap();
        let fam = idx.column("family").unwrap().str().unwrap().clone();
        let pid = idx.column("prompt_id").unwrap().str().unwrap().clone();
        let keep: Option<Vec<u32>> = s
            .selection
            .as_ref()
            .map(|sel| lightgen::formats::manifest::selection_rows(&std::fs::read(root.join(&sel.path)).unwrap()));
        for i in 0..idx.height() {
            if keep.as_ref().is_none_or(|k| k.contains(&(i as u32))) {
                out.push((fam.get(i).unwrap().to_string(), pid.get(i).unwrap().to_string()));
            }
        }
    }
    out
}

#[test]
fn subsets_select_without_copying_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 300);
    distill(&cfg, &dir.path().join("out"));
    let run = dir.path().join("out/d");
    let parent = run.join("manifest.json");
    let p = parent.to_str().unwrap();
    let subset = |args: &[&str]| {
        let mut all = vec!["manifest", "subset", p];
        all.extend_from_slice(args);
        let o = lightgen(&all);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    subset(&["--name", "r50", "--count", "50", "--seed", "1"]);
    let m = lightgen::formats::manifest::verify(&run.join("manifest-r50.json")).unwrap();
    assert_eq!(m.counts.train_samples, 50);
    assert_eq!(used_samples(&run.join("manifest-r50.json")).len(), 50);
    let parent_id = lightgen::formats::manifest::verify(&parent).unwrap().id;
    assert_eq!(m.parent.as_ref().unwrap().id, parent_id);
    assert!(m.shards.iter().all(|s| s.path.starts_with("encode/")), "no shard is copied");

    subset(&["--name", "counting", "--where", "family=counting"]);
    let used = used_samples(&run.join("manifest-counting.json"));
    assert!(!used.is_empty() && used.iter().all(|(f, _)| f == "counting"));

    subset(&["--name", "per5", "--count", "5", "--per", "family"]);
    let used = used_samples(&run.join("manifest-per5.json"));
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    used.iter().for_each(|(f, _)| *per.entry(f.clone()).or_default() += 1);
    assert_eq!(per.len(), 6);
    assert!(per.values().all(|&n| n == 5), "{per:?}");

    // A subset of a subset stays inside it.
    let o = lightgen(&[
        "manifest",
        "subset",
        run.join("manifest-counting.json").to_str().unwrap(),
        "--name",
        "c10",
        "--count",
        "10",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inner = used_samples(&run.join("manifest-c10.json"));
    assert_eq!(inner.len(), 10);
    assert!(inner.iter().all(|(f, _)| f == "counting"));

    // A changed selection file is refused.
    let sel = std::fs::read_dir(run.join("subsets/r50")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&sel).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&sel, bytes).unwrap();
    let o = lightgen(&["manifest", "verify", run.join("manifest-r50.json").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("row selection was changed"), "{}", stderr(&o));
    // A missing one too, naming it, and nothing is selected from an empty set.
    let sel = std::fs::read_dir(run.join("subsets/counting")).unwrap().next().unwrap().unwrap().path();
    std::fs::remove_file(&sel).unwrap();
    let name = sel.file_name().unwrap().to_str().unwrap().to_string();
    let counting = run.join("manifest-counting.json");
    let o = lightgen(&["manifest", "subset", counting.to_str().unwrap(), "--name", "c5", "--count", "5"]);
    assert!(!o.status.success() && stderr(&o).contains(&name), "{}", stderr(&o));
    assert!(!run.join("manifest-c5.json").exists());
}

#[test]
fn coverage_subsets_keep_every_slot_value_that_random_ones_lose() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 600);
    distill(&cfg, &dir.path().join("out"));
    let run = dir.path().join("out/d");
    let p = run.join("manifest.json");
    // Slot values per prompt, from the expand stage.
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in lightgen::formats::commit::committed_parts(&run.join("expand")).unwrap() {
        for row in lightgen::formats::prompt_rows::read_prompts(&part).unwrap() {
            values.insert(
                row.prompt_id,
                row.slots.iter().flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}"))).collect(),
            );
        }
    }
    let covered = |name: &str| -> usize {
        let used = used_samples(&run.join(format!("manifest-{name}.json")));
        used.iter().flat_map(|(_, pid)| values[pid].clone()).collect::<std::collections::BTreeSet<_>>().len()
    };
    let all = covered_all(&values);
    // Subset of 12 with a strategy and a seed; returns how many slot values it covers.
    let subset12 = |strategy: &str, seed: u64| -> usize {
        let name = format!("{strategy}{seed}");
        let args = ["manifest", "subset", p.to_str().unwrap(), "--name", &name, "--count", "12"];
        let seed = seed.to_string();
        let extra = ["--strategy", strategy, "--seed", &seed];
        let o = lightgen(&[&args[..], &extra[..]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        covered(&name)
    };
    let mut random_total = 0;
    for seed in 0..3 {
        random_total += subset12("random", seed);
        let c = subset12("coverage", seed);
        assert!(c as f64 >= 0.9 * all as f64, "coverage subset of 12 covers {c} of {all} slot values");
    }
    assert!(
        (random_total as f64 / 3.0) < 0.9 * all as f64,
        "random subsets should not cover as much ({random_total}/3 of {all})"
    );
}

fn covered_all(values: &BTreeMap<String, Vec<String>>) -> usize {
    values.values().flatten().collect::<std::collections::BTreeSet<_>>().len()
}

use std::collections::BTreeMap;

#[test]
fn issue_19_one_writer_per_run_folder() {
    // A first run (a few seconds of work) holds the folder; a second is refused, naming the
    // first's process; a third with --wait queues behind it and finishes.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let args = ["distill", "-q", "-c", "configs/shapes.toml", "--count", "3000", "--output-dir", out];
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(args)
        .current_dir(super::root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join("shapes/.lock");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim().is_empty()) {
        assert!(t0.elapsed().as_secs() < 60, "the first run never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = super::lightgen(&args);
    let e = super::stderr(&o);
    assert!(!o.status.success() && e.contains(&format!("in use by process {}", first.id())), "{e}");
    let o = super::lightgen(&[&args[..], &["--wait"]].concat());
    assert!(o.status.success(), "{}", super::stderr(&o));
    assert!(first.wait().unwrap().success());
    assert!(dir.path().join("shapes/manifest.json").exists());
}

#[test]
fn issue_19_verify_checks_the_counts_and_which_index_belongs_to_which_shard() {
    use lightgen::formats::manifest::{content_id, Manifest};
    let dir = tempfile::tempdir().unwrap();
    distill(&config(dir.path(), 500), &dir.path().join("out"));
    let path = dir.path().join("out/d/manifest.json");
    let good: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(good.shards.len() >= 3 && good.shards[0].rows == good.shards[1].rows, "two full shards of 256");
    // Each tampered manifest carries a recomputed id, as anyone can compute it.
    let verify_with = |m: &Manifest| {
        let mut m = m.clone();
        m.id = content_id(&m);
        std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let o = lightgen(&["manifest", "verify", path.to_str().unwrap()]);
        assert!(!o.status.success(), "verify must fail");
        stderr(&o)
    };
    let mut more = good.clone();
    more.counts.train_samples += 1000;
    let e = verify_with(&more);
    assert!(e.contains("counts.train_samples") && e.contains("shards hold"), "{e}");
    // Shards 0 and 1 swap their indexes (same row count): the index no longer matches the rows.
    let mut swapped = good.clone();
    let (a, b) = (swapped.shards[0].clone(), swapped.shards[1].clone());
    (swapped.shards[0].index, swapped.shards[0].index_bytes, swapped.shards[0].index_blake3) =
        (b.index, b.index_bytes, b.index_blake3);
    (swapped.shards[1].index, swapped.shards[1].index_bytes, swapped.shards[1].index_blake3) =
        (a.index, a.index_bytes, a.index_blake3);
    let e = verify_with(&swapped);
    assert!(e.contains("shard-00001.parquet") && e.contains("belongs to another shard"), "{e}");
    // The untouched manifest still verifies.
    std::fs::write(&path, serde_json::to_vec_pretty(&good).unwrap()).unwrap();
    let o = lightgen(&["manifest", "verify", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}
