//! The `generate` stage on the shapes world: layout, resume after kill -9, repair of failed
//! samples, undrawable prompts as recorded failures.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lightgen::formats::commit;
use lightgen::pipeline::generate::{read_part, write_part, Sample};

use crate::{lightgen, stderr, stdout, write_config};

const GENERATE: &str = "\n[generate]\nteacher = \"builtin:shapes\"\nimages_per_prompt = 2\nresolution = 64\n";

fn config(dir: &Path, name: &str, taxonomy: &str, count: u64, part_size: u64) -> std::path::PathBuf {
    let extra = format!("{GENERATE}part_size = {part_size}\n");
    write_config(dir, name, taxonomy, count, &extra)
}

fn run(args: &[&str]) -> serde_json::Value {
    let out = lightgen(args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Every sample of a stage, timing column cleared (it is the only field that varies).
fn samples(stage: &Path) -> Vec<Sample> {
    commit::committed_parts(stage)
        .unwrap()
        .iter()
        .flat_map(|p| read_part(p).unwrap())
        .map(|mut s| {
            s.gen_ms = 0.0;
            s
        })
        .collect()
}

#[test]
fn generates_every_sample_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "g", "builtin:shapes", 150, 100);
    let cfg = cfg.to_str().unwrap();
    run(&["expand", "-q", "--config", cfg]);
    let summary = run(&["generate", "-q", "--json", "--config", cfg]);
    assert_eq!(summary["samples"], 300);
    assert_eq!(summary["parts"], 3);
    assert_eq!(summary["failed"], 0);
    let all = samples(&dir.path().join("runs/g/generate"));
    assert_eq!(all.len(), 300);
    let ids: std::collections::HashSet<&str> = all.iter().map(|s| s.sample_id.as_str()).collect();
    assert_eq!(ids.len(), 300, "sample ids are unique");
    for s in &all {
        let bytes = s.image.as_deref().unwrap();
        assert_eq!(s.blake3.as_deref(), Some(blake3::hash(bytes).to_hex().as_str()));
        let img = image::load_from_memory(bytes).unwrap();
        assert_eq!((img.width(), img.height(), s.width), (64, 64, 64));
        let req: serde_json::Value = serde_json::from_str(&s.request).unwrap();
        assert_eq!(req["seed"], s.seed);
        let truth: lightgen::world::Scene = serde_json::from_str(s.truth.as_deref().unwrap()).unwrap();
        assert!(!truth.objects.is_empty() || truth.imperfection.as_deref() == Some("missing"));
    }
    // Same prompt, other image index: another seed, another image.
    assert_eq!(all[0].prompt_id, all[1].prompt_id);
    assert_ne!(all[0].seed, all[1].seed);
    assert_ne!(all[0].blake3, all[1].blake3);
    let out = lightgen(&["report", "generate", dir.path().join("runs/g").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("runs/g/reports/generate.json")).unwrap()).unwrap();
    assert_eq!(report["filter"]["judged"], 300);
    assert!(report["filter"]["recall"].as_f64().unwrap() >= 0.95, "{}", stdout(&out));
    assert!(dir.path().join("runs/g/reports/generate_grid.png").exists());
}

#[test]
fn kill_9_then_rerun_gives_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    let whole = config(dir.path(), "whole", "builtin:shapes", 20_000, 4000);
    run(&["expand", "-q", "--config", whole.to_str().unwrap()]);
    run(&["generate", "-q", "--threads", "1", "--config", whole.to_str().unwrap()]);
    let killed = config(dir.path(), "killed", "builtin:shapes", 20_000, 4000);
    run(&["expand", "-q", "--config", killed.to_str().unwrap()]);
    let stage = dir.path().join("runs/killed/generate");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(["generate", "-q", "--threads", "1", "--config", killed.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !stage.join("part-00001_stats.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no part committed in 2 minutes");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = (0..10).filter(|k| stage.join(commit::stats_name(*k)).exists()).count();
    assert!(done < 10, "killed before the end ({done} of 10 parts)");
    let summary = run(&["generate", "-q", "--json", "--config", killed.to_str().unwrap()]);
    assert_eq!(summary["parts_reused"], done as u64);
    assert_eq!(samples(&stage), samples(&dir.path().join("runs/whole/generate")));
}

#[test]
fn rerun_makes_only_the_failed_samples_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "r", "builtin:shapes", 50, 1000);
    run(&["expand", "-q", "--config", cfg.to_str().unwrap()]);
    run(&["generate", "-q", "--config", cfg.to_str().unwrap()]);
    let stage = dir.path().join("runs/r/generate");
    let before = samples(&stage);
    // Mark two samples failed, as a flaky teacher would have.
    let mut broken = read_part(&stage.join(commit::part_name(0))).unwrap();
    for i in [3, 40] {
        broken[i].status = "failed".into();
        broken[i].image = None;
        broken[i].error = Some("HTTP 503".into());
    }
    write_part(&stage, 0, &broken).unwrap();
    let stats: commit::PartStats =
        serde_json::from_slice(&std::fs::read(stage.join(commit::stats_name(0))).unwrap()).unwrap();
    commit::commit_part(&stage, 0, 100, &stats.plan, serde_json::json!({ "ok": 98, "failed": 2 })).unwrap();
    let summary = run(&["generate", "-q", "--json", "--config", cfg.to_str().unwrap()]);
    assert_eq!(summary["parts_repaired"], 1);
    assert_eq!(summary["made"], 2, "only the two failed samples are made again");
    assert_eq!(samples(&stage), before);
}

#[test]
fn an_undrawable_prompt_is_a_recorded_failure_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "u", "builtin:geneval", 20, 1000);
    run(&["expand", "-q", "--config", cfg.to_str().unwrap()]);
    let summary = run(&["generate", "-q", "--json", "--config", cfg.to_str().unwrap()]);
    assert_eq!(summary["samples"], 40);
    assert_eq!(summary["failed"], 40);
    let all = samples(&dir.path().join("runs/u/generate"));
    let err = all[0].error.as_deref().unwrap();
    assert!(err.contains("the shapes world cannot draw class"), "{err}");
    assert!(all.iter().all(|s| s.image.is_none() && s.status == "failed"));
}

#[test]
fn unknown_teacher_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "t", "builtin:shapes", 10, "\n[generate]\nteacher = \"dalle\"\n");
    let out = lightgen(&["generate", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown teacher; known: builtin:shapes"), "{}", stderr(&out));
}

#[test]
fn out_of_range_shapes_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, says) in [
        ("object_scale = 2.5", "generate.shapes.object_scale = 2.5: expected 0.5 to 2"),
        ("missing = 1.5", "generate.shapes.missing = 1.5: expected a rate from 0 to 1"),
        ("grid = 3", "generate.shapes.grid = 3: expected 0 (off) or an even number of pixels"),
        ("count = 0.6\nmissing = 0.6", "the failure rates add up to"),
        ("backgrounds = []", "generate.shapes.backgrounds is empty: expected one or more of plain, gradient, textured"),
        (
            "styles = [\"flat\", \"dotted\"]",
            "generate.shapes.styles: unknown \"dotted\"; expected one or more of flat, outlined",
        ),
    ] {
        let cfg =
            write_config(dir.path(), "s", "builtin:shapes", 10, &format!("{GENERATE}\n[generate.shapes]\n{extra}\n"));
        let out = lightgen(&["generate", "--config", cfg.to_str().unwrap()]);
        assert!(!out.status.success(), "{extra}");
        assert!(stderr(&out).contains(says), "{extra}: {}", stderr(&out));
    }
}

#[test]
fn generate_before_expand_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "n", "builtin:shapes", 10, 100);
    let out = lightgen(&["generate", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("run `lightgen expand` first"), "{}", stderr(&out));
}

#[test]
fn changing_generate_settings_keeps_the_expand_stage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "k", "builtin:shapes", 30, 100);
    run(&["distill", "-q", "--config", cfg.to_str().unwrap()]);
    let other =
        write_config(dir.path(), "k", "builtin:shapes", 30, &format!("{GENERATE}part_size = 100\nformat = \"jpeg\"\n"));
    let out = lightgen(&["distill", "-q", "--config", other.to_str().unwrap()]);
    assert!(!out.status.success(), "generate settings changed: its stage is refused");
    assert!(stderr(&out).contains("runs/k/generate: was written by another config"), "{}", stderr(&out));
}

#[test]
fn jpeg_and_webp_encodings_decode_to_the_right_size() {
    for (format, magic) in [("jpeg", &[0xFF, 0xD8][..]), ("webp", &b"RIFF"[..])] {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("\n[generate]\nteacher = \"builtin:shapes\"\nimages_per_prompt = 1\nresolution = 96\nformat = \"{format}\"\nquality = 80\n");
        let cfg = write_config(dir.path(), "f", "builtin:shapes", 12, &extra);
        run(&["expand", "-q", "--config", cfg.to_str().unwrap()]);
        run(&["generate", "-q", "--config", cfg.to_str().unwrap()]);
        for s in samples(&dir.path().join("runs/f/generate")) {
            let bytes = s.image.unwrap();
            assert!(bytes.starts_with(magic), "{format}");
            assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 96);
        }
    }
}
