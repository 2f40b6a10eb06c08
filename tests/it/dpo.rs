//! `lightgen dpo` on the example manifest with a micro student (seed 0): pairs are stored in
//! parts and a rerun redoes only a part that is incomplete; the checkpoint's lineage names the
//! base and the pair set; a second config in the same folder is refused.

use std::path::Path;

use super::{lightgen, stderr};

const MANIFEST: &str = "manifests/shapes-tiny/manifest.json";

fn dpo(base: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    dpo_on(MANIFEST, base, out, extra)
}

/// `lightgen dpo` on `manifest`: 12 candidate prompts in parts of 4, 3 steps of 4 pairs, no eval.
fn dpo_on(manifest: &str, base: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["dpo", "-q", "--checkpoint", base.to_str().unwrap(), "-m", manifest, "--out", out.to_str().unwrap()];
    args.extend_from_slice(&[
        "--pairs",
        "12",
        "--part-size",
        "4",
        "--steps",
        "3",
        "--batch",
        "4",
        "--no-eval",
        "--json",
    ]);
    args.extend_from_slice(extra);
    lightgen(&args)
}

#[test]
fn pairs_resume_by_part_and_the_checkpoint_names_its_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let o = lightgen(&[
        "train",
        "-q",
        "-m",
        MANIFEST,
        "-c",
        "tests/fixtures/train-micro.toml",
        "--out",
        base.to_str().unwrap(),
        "--steps",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("dpo");
    let o = dpo(&base, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((s["pairs"].as_u64(), s["candidates"].as_u64()), (Some(12), Some(12)), "{s}");
    // dropout is off and the policy starts as the reference: the first loss is ln 2
    assert!((s["first_loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6, "{s}");
    let pairs = out.join("pairs");
    let part = |k: u32| std::fs::read(pairs.join(format!("part-{k:05}.safetensors"))).unwrap();
    let before: Vec<Vec<u8>> = (0..3).map(part).collect();

    // A build killed after writing part 1 but before its marker: only part 1 is made again.
    std::fs::remove_file(pairs.join("part-00001_stats.json")).unwrap();
    std::fs::write(pairs.join("part-00001.safetensors"), b"half-written").unwrap();
    let t0 = std::fs::metadata(pairs.join("part-00000.safetensors")).unwrap().modified().unwrap();
    let out2 = dir.path().join("dpo-again");
    std::fs::create_dir_all(&out2).unwrap();
    // same pair set in another run folder: copy the pairs, keep the broken part
    let copy = out2.join("pairs");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(&pairs).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let o = dpo(&base, &out2, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = |k: u32| std::fs::read(copy.join(format!("part-{k:05}.safetensors"))).unwrap();
    for k in 0..3 {
        assert_eq!(again(k), before[k as usize], "part {k} is the same pairs, bit for bit");
    }
    assert_eq!(std::fs::metadata(pairs.join("part-00000.safetensors")).unwrap().modified().unwrap(), t0);
    let s2: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s2["last_loss"], s["last_loss"], "same pairs, same seed: same training");

    // The checkpoint says where it comes from.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoints/step-00000003/state.json")).unwrap()).unwrap();
    let lin = &state["lineage"];
    assert_eq!(lin["kind"], "dpo");
    assert!(lin["base_checkpoint"].as_str().unwrap().ends_with("step-00000003"), "{lin}");
    assert_eq!(lin["pairs"]["id"], s["pairs_id"]);
    assert_eq!(lin["dpo"]["beta"], 1000.0);
    // and it samples like any checkpoint
    let smp = dir.path().join("smp");
    super::sample_red_circle(&out, MANIFEST, &smp);

    // Another β in the same folder is refused, not mixed in.
    let o = dpo(&base, &out, &["--beta", "50"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("another base, pair set or config"), "{}", stderr(&o));
    // The analyzer filter needs the prompts' specs (the run's expand/ beside the manifest).
    let o = dpo(&base, &dir.path().join("f"), &["--loser-must-fail"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot be judged"), "{}", stderr(&o));
}

#[test]
fn self_pairs_judge_every_draw_and_need_specs_and_two_draws() {
    // The example config distilled afresh (seed 42, its expand/ beside the manifest, so the
    // analyzer can judge), a micro student (seed 0) trained 3 steps on it.
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let o = lightgen(&["distill", "-q", "-c", "configs/shapes-tiny.toml", "--output-dir", runs.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = runs.join("shapes-tiny/manifest.json");
    let manifest = manifest.to_str().unwrap();
    let base = dir.path().join("base");
    let micro = "tests/fixtures/train-micro.toml";
    let o = lightgen(&["train", "-q", "-m", manifest, "-c", micro, "--out", base.to_str().unwrap(), "--steps", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |m: &str, out: &Path, draws: &str| dpo_on(m, &base, out, &["--winner", "self", "--draws", draws]);
    // One draw cannot both pass and fail; a manifest without specs cannot be judged. Both are
    // refused before anything is written.
    let out = dir.path().join("one");
    let o = run(manifest, &out, "1");
    assert!(!o.status.success() && stderr(&o).contains("needs at least 2 samples per prompt"), "{}", stderr(&o));
    assert!(!out.join("pairs/pairs.json").exists(), "nothing written");
    let expand = runs.join("shapes-tiny/expand");
    let hidden = runs.join("shapes-tiny/expand-hidden");
    std::fs::rename(&expand, &hidden).unwrap();
    let o = run(manifest, &dir.path().join("nospec"), "3");
    assert!(!o.status.success() && stderr(&o).contains("cannot be judged"), "{}", stderr(&o));
    std::fs::rename(&hidden, &expand).unwrap();
    // Three draws of each of the 12 prompts are judged; a pair is kept only where one passed and
    // one failed (none, at chance, ends in the clear "no pairs" error, not a crash).
    let out = dir.path().join("dpo");
    let o = run(manifest, &out, "3");
    let judged: u64 = (0..3)
        .map(|k| {
            let p = out.join(format!("pairs/part-{k:05}_stats.json"));
            let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            st["extra"]["losers_judged"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(judged, 36, "12 prompts × 3 draws judged");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("pairs/pairs.json")).unwrap()).unwrap();
    assert_eq!((plan["config"]["winner"].as_str(), plan["config"]["draws"].as_u64()), (Some("self"), Some(3)));
    if o.status.success() {
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(s["pairs"].as_u64().unwrap() <= 12, "{s}");
    } else {
        assert!(stderr(&o).contains("no pairs were kept"), "{}", stderr(&o));
    }
    // A margin (pairs by alignment where every draw fails) needs --winner self and a value in
    // [0, 1], refused before anything is written; given, the plan records it.
    let graded = dir.path().join("graded");
    for args in [&["--margin", "0.2"][..], &["--winner", "self", "--draws", "3", "--margin", "1.5"]] {
        let o = dpo_on(manifest, &base, &graded, args);
        assert!(!o.status.success() && stderr(&o).contains("--margin"), "{}", stderr(&o));
        assert!(!graded.exists(), "nothing written");
    }
    dpo_on(manifest, &base, &graded, &["--winner", "self", "--draws", "3", "--margin", "0.2"]);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(graded.join("pairs/pairs.json")).unwrap()).unwrap();
    assert_eq!(plan["config"]["margin"].as_f64().map(|m| (m * 100.0).round()), Some(20.0));
}
