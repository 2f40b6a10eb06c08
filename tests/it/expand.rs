//! The `expand` stage end to end: determinism, the commit protocol, resume after kill -9.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{lightgen, read_parts, stderr, write_config};

fn part_hashes(stage: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(stage)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), blake3::hash(&bytes).to_hex().to_string())
        })
        .collect()
}

fn expand(cfg: &Path) {
    let out = lightgen(&["expand", "-q", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn small_expansion_snapshot() {
    // Fixed seed 42 (write_config): the rows below are what seed 42 gives.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "snap", "builtin:shapes", 12, "");
    expand(&cfg);
    let df = read_parts(&dir.path().join("runs/snap/expand"));
    let rows: Vec<String> = (0..df.height())
        .map(|i| {
            let get = |c: &str| df.column(c).unwrap().str().unwrap().get(i).unwrap_or("null").to_string();
            format!("{} | {} | {} | {}", get("family"), get("prompt"), get("vars"), get("spec"))
        })
        .collect();
    insta::assert_snapshot!("shapes_12", rows.join("\n"));
}

#[test]
fn same_seed_same_bytes_other_seed_other_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_config(dir.path(), "a", "builtin:general", 3000, "part_size = 1000");
    let b = write_config(dir.path(), "b", "builtin:general", 3000, "part_size = 1000");
    expand(&a);
    expand(&b);
    let (ha, hb) = (part_hashes(&dir.path().join("runs/a/expand")), part_hashes(&dir.path().join("runs/b/expand")));
    assert_eq!(ha.len(), 3);
    assert_eq!(ha, hb, "same config and seed give byte-identical parts");
    let c = dir.path().join("c.toml");
    std::fs::write(
        &c,
        std::fs::read_to_string(&a).unwrap().replace("name = \"a\"", "name = \"c\"").replace("seed = 42", "seed = 43"),
    )
    .unwrap();
    expand(&c);
    let (da, dc) = (read_parts(&dir.path().join("runs/a/expand")), read_parts(&dir.path().join("runs/c/expand")));
    assert_ne!(da.column("prompt").unwrap(), dc.column("prompt").unwrap());
}

#[test]
fn rows_are_unique_and_ids_stable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "u", "builtin:shapes", 5000, "part_size = 2000\nrow_group_size = 700");
    expand(&cfg);
    let df = read_parts(&dir.path().join("runs/u/expand"));
    assert_eq!(df.height(), 5000);
    assert_eq!(df.column("prompt").unwrap().n_unique().unwrap(), 5000);
    assert_eq!(df.column("prompt_id").unwrap().n_unique().unwrap(), 5000);
    let idx: Vec<u64> = df.column("index").unwrap().u64().unwrap().iter().flatten().collect();
    assert_eq!(idx, (0..5000).collect::<Vec<_>>());
    // Every row carries its taxonomy version and a GenEval spec that names its family.
    let fam = df.column("family").unwrap().str().unwrap();
    let spec = df.column("spec").unwrap().str().unwrap();
    for i in 0..df.height() {
        let s: serde_json::Value = serde_json::from_str(spec.get(i).unwrap()).unwrap();
        assert_eq!(s["tag"], fam.get(i).unwrap());
    }
    assert_eq!(df.column("taxonomy_version").unwrap().str().unwrap().get(0), Some("shapes@1.0.0"));
}

#[test]
fn rerun_rewrites_only_missing_or_damaged_parts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "r", "builtin:shapes", 5000, "part_size = 1000");
    expand(&cfg);
    let stage = dir.path().join("runs/r/expand");
    let before = part_hashes(&stage);
    assert_eq!(before.len(), 5);
    // A lost marker, a damaged part and a stray temporary from a killed writer.
    std::fs::remove_file(stage.join("part-00001_stats.json")).unwrap();
    std::fs::write(stage.join("part-00003.parquet"), b"garbage").unwrap();
    std::fs::write(stage.join("part-00004.parquet.tmp-999"), b"half").unwrap();
    let out = lightgen(&["expand", "--json", "-q", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["parts_reused"], 3);
    assert_eq!(part_hashes(&stage), before);
    assert!(!stage.join("part-00004.parquet.tmp-999").exists());
}

#[test]
fn another_config_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "f", "builtin:shapes", 100, "");
    expand(&cfg);
    let other = write_config(dir.path(), "f", "builtin:shapes", 200, "");
    let out = lightgen(&["expand", "--config", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was written by another config"), "{}", stderr(&out));
    let out = lightgen(&["expand", "-q", "--force", "--config", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_parts(&dir.path().join("runs/f/expand")).height(), 200);
}

#[test]
fn kill_9_then_rerun_gives_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "part_size = 10000";
    let whole = write_config(dir.path(), "whole", "builtin:general", 200_000, extra);
    expand(&whole);
    let killed = write_config(dir.path(), "killed", "builtin:general", 200_000, extra);
    let stage = dir.path().join("runs/killed/expand");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(["expand", "-q", "--config", killed.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !stage.join("part-00002_stats.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no part committed in 2 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = std::fs::read_dir(&stage)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_stats.json"))
        .count();
    assert!(done < 20, "killed before the end ({done} of 20 parts done)");
    expand(&killed);
    assert_eq!(part_hashes(&stage), part_hashes(&dir.path().join("runs/whole/expand")));
}

#[test]
fn geneval_expansion_follows_genevals_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "g", "builtin:geneval", 553, "write_geneval = true");
    expand(&cfg);
    let stage = dir.path().join("runs/g/expand");
    let df = read_parts(&stage);
    assert_eq!(df.height(), 553);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for f in df.column("family").unwrap().str().unwrap().iter().flatten() {
        *counts.entry(f.to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, u32> = [
        ("single_object", 80),
        ("two_object", 99),
        ("counting", 80),
        ("colors", 94),
        ("position", 100),
        ("color_attr", 100),
    ]
    .into_iter()
    .map(|(f, n)| (f.to_string(), n))
    .collect();
    assert_eq!(counts, want, "GenEval's 553 = 80/99/80/94/100/100");
    let meta = std::fs::read_to_string(stage.join("evaluation_metadata.jsonl")).unwrap();
    assert_eq!(meta.lines().count(), 553);
    for line in meta.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let inc = m["include"].as_array().unwrap();
        match m["tag"].as_str().unwrap() {
            "colors" | "color_attr" => {
                assert!(inc.iter().all(|o| o["class"] != "person"), "no coloured person: {line}");
                if m["tag"] == "color_attr" {
                    assert_ne!(inc[0]["color"], inc[1]["color"], "{line}");
                }
            }
            "counting" => {
                let n = inc[0]["count"].as_u64().unwrap();
                assert!((2..=4).contains(&n), "{line}");
                assert_eq!(m["exclude"][0]["count"].as_u64(), Some(n + 1), "{line}");
            }
            "position" => assert_eq!(inc[1]["position"][1], 0, "{line}"),
            _ => {}
        }
    }
    // Single objects: all 80 classes exactly once (the family's capacity is 80).
    assert_eq!(meta.lines().filter(|l| l.contains("\"single_object\"")).count(), 80);
}
