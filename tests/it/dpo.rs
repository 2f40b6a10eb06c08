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

/// A micro student (tests/fixtures/train-micro.toml, seed 0) trained 3 steps on the example
/// manifest, in `dir`/base.
fn micro_base(dir: &Path) -> std::path::PathBuf {
    let base = dir.join("base");
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
    base
}

/// The files of `from` copied into `to` (a pair set reused by another run folder).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn pairs_resume_by_part_and_the_checkpoint_names_its_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let base = micro_base(dir.path());
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
    copy_dir(&pairs, &copy);
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
    assert_eq!(lin["dpo"]["sft_weight"], 500.0, "the winners' loss is anchored by default");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(first["winner_mse"].as_f64().is_some_and(|m| m.is_finite() && m > 0.0), "{first}");
    // Plain Diffusion-DPO (no winner term) from the same pairs: the same first DPO loss
    // (ln 2: the logged loss is the DPO term), other weights.
    let plain = dir.path().join("plain");
    copy_dir(&copy, &plain.join("pairs")); // the set the rerun completed
    let o = dpo(&base, &plain, &["--sft-weight", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sp: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((sp["first_loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6, "{sp}");
    let ema = |run: &Path| std::fs::read(run.join("checkpoints/step-00000003/ema.safetensors")).unwrap();
    assert_ne!(ema(&plain), ema(&out), "the winner term changes the update");
    // The micro base trained every token alike, so its anchor does (the lineage leaves the
    // weight out at 1); weighing the winners' object tokens 3× is another update, recorded.
    assert_eq!(lin["dpo"].get("sft_object_weight"), None, "{lin}");
    let objw = dir.path().join("objw");
    copy_dir(&copy, &objw.join("pairs"));
    let o = dpo(&base, &objw, &["--sft-object-weight", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(objw.join("checkpoints/step-00000003/state.json")).unwrap()).unwrap();
    assert_eq!(st["lineage"]["dpo"]["sft_object_weight"], 3.0);
    assert_ne!(ema(&objw), ema(&out), "object tokens weigh more in the anchor");
    let o = dpo(&base, &dir.path().join("w0"), &["--sft-object-weight", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("--sft-object-weight 0"), "{}", stderr(&o));
    assert!(!dir.path().join("w0").exists(), "refused before anything is written");
    // Object tokens weighed in the DPO term too (each image by its own objects): recorded,
    // and another update than the anchor's weight alone.
    let termw = dir.path().join("termw");
    copy_dir(&copy, &termw.join("pairs"));
    let o = dpo(&base, &termw, &["--sft-object-weight", "3", "--dpo-object-weight", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(termw.join("checkpoints/step-00000003/state.json")).unwrap()).unwrap();
    assert_eq!(st["lineage"]["dpo"]["dpo_object_weight"], 3.0);
    assert_ne!(ema(&termw), ema(&objw), "object tokens weigh more in the DPO term");
    let o = dpo(&base, &dir.path().join("t0"), &["--dpo-object-weight=-1"]);
    assert!(!o.status.success() && stderr(&o).contains("--dpo-object-weight -1"), "{}", stderr(&o));
    assert!(!dir.path().join("t0").exists(), "refused before anything is written");
    // The default anchor is the base's own training loss (recorded); eps alone, the anchor
    // before it, is left out of the lineage, keeps the DPO term (ln 2 first), and gives
    // another anchor value and another update.
    assert_eq!(lin["dpo"]["anchor"], "train", "{lin}");
    let eps_run = dir.path().join("anchor-eps");
    copy_dir(&copy, &eps_run.join("pairs"));
    let o = dpo(&base, &eps_run, &["--anchor", "eps"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sa: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((sa["first_loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6, "{sa}");
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eps_run.join("checkpoints/step-00000003/state.json")).unwrap()).unwrap();
    assert_eq!(st["lineage"]["dpo"].get("anchor"), None, "{}", st["lineage"]);
    let first_anchor = |run: &Path| -> f64 {
        let m = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        serde_json::from_str::<serde_json::Value>(m.lines().next().unwrap()).unwrap()["winner_mse"].as_f64().unwrap()
    };
    let (train, eps) = (first_anchor(&out), first_anchor(&eps_run));
    assert!(eps.is_finite() && eps > 0.0 && train.is_finite() && train != eps, "anchors: eps {eps}, train {train}");
    assert_ne!(ema(&eps_run), ema(&out), "the training loss anchors otherwise than eps alone");
    let o = dpo(&base, &dir.path().join("a0"), &["--anchor", "pixels"]);
    assert!(!o.status.success() && stderr(&o).contains("pixels"), "{}", stderr(&o));
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
fn pairs_can_come_from_named_families_only() {
    // The micro base (seed 0, 3 steps) on the example manifest.
    let dir = tempfile::tempdir().unwrap();
    let base = micro_base(dir.path());
    // The example's counting samples, read off its shard index (fewer than the 12 candidates).
    let index = Path::new("manifests/shapes-tiny/encode/shard-00000.parquet");
    let f = lightgen::formats::frame::Frame::read(index, Some(&["family"])).unwrap();
    let family = f.str("family").unwrap();
    let counting = (0..f.height()).filter(|&i| family.get(i) == Some("counting")).count();
    assert!(counting > 0 && counting < 12, "{counting}");
    let out = dir.path().join("fam");
    let o = dpo(&base, &out, &["--families", "counting"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["candidates"].as_u64(), Some(counting as u64), "every candidate a counting sample: {s}");
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoints/step-00000003/state.json")).unwrap()).unwrap();
    assert_eq!(st["lineage"]["dpo"]["pairs"]["families"], serde_json::json!(["counting"]));
    // A misspelt family is refused by name, with the families there are, before any pair.
    let bad = dir.path().join("bad");
    let o = dpo(&base, &bad, &["--families", "counting,countin"]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("dpo --families") && e.contains("\"countin\"") && e.contains("position"),
        "{e}"
    );
    assert!(!bad.join("pairs/part-00000.safetensors").exists());
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
    // A negative winner-loss weight is refused by name before anything is written.
    let o = dpo_on(manifest, &base, &graded, &["--sft-weight=-1"]);
    assert!(!o.status.success() && stderr(&o).contains("--sft-weight -1"), "{}", stderr(&o));
    assert!(!graded.exists(), "nothing written");
    // Teacher pairs matched on the number of objects found draw --draws samples a prompt and
    // keep a prompt only where one of them has the teacher image's count.
    let matched = dir.path().join("matched");
    let o = dpo_on(manifest, &base, &matched, &["--same-count", "--draws", "3"]);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(matched.join("pairs/pairs.json")).unwrap()).unwrap();
    assert_eq!((plan["config"].get("winner"), plan["config"]["draws"].as_u64()), (None, Some(3)), "{plan}");
    assert_eq!(plan["config"]["same_count"], true);
    if o.status.success() {
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(s["pairs"].as_u64().unwrap() <= 12, "{s}");
    } else {
        assert!(stderr(&o).contains("no pairs were kept"), "{}", stderr(&o));
    }
    dpo_on(manifest, &base, &graded, &["--winner", "self", "--draws", "3", "--margin", "0.2", "--same-count"]);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(graded.join("pairs/pairs.json")).unwrap()).unwrap();
    assert_eq!(plan["config"]["margin"].as_f64().map(|m| (m * 100.0).round()), Some(20.0));
    assert_eq!(plan["config"]["same_count"], true);
}

/// Three DPO steps of 4 pairs, pairs stored in parts of 4: a sweep cell and a plain run alike.
const SMALL: [&str; 6] = ["--part-size", "4", "--steps", "3", "--batch", "4"];

/// The ema weights of a run's last checkpoint, as stored.
fn ema_bytes(run: &Path) -> Vec<u8> {
    let mut cks: Vec<_> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    cks.sort();
    std::fs::read(cks.last().unwrap().join("ema.safetensors")).unwrap()
}

#[test]
fn study_dpo_sweeps_beta_and_pair_counts_from_one_pair_set_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let micro = "tests/fixtures/train-micro.toml";
    let o = lightgen(&["train", "-q", "-m", MANIFEST, "-c", micro, "--out", base.to_str().unwrap(), "--steps", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("sweep");
    let study = |pairs: &str| {
        let (b, o) = (base.to_str().unwrap(), out.to_str().unwrap());
        let mut args = vec!["study", "dpo", "-q", "--checkpoint", b, "-m", MANIFEST, "--out", o, "--betas", "100,1000"];
        args.extend_from_slice(&["--pairs", pairs, "--eval-n", "1", "--eval-seeds", "0,1", "--json"]);
        args.extend_from_slice(&SMALL);
        lightgen(&args)
    };
    // A count that is not a whole number of parts is refused before anything is written.
    let o = study("6,12");
    assert!(!o.status.success() && stderr(&o).contains("--pairs"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");

    let o = study("12,4");
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cells = r["cells"].as_array().unwrap();
    let grid: Vec<(u64, f64, u64)> = cells
        .iter()
        .map(|c| (c["candidates"].as_u64().unwrap(), c["beta"].as_f64().unwrap(), c["pairs"].as_u64().unwrap()))
        .collect();
    // teacher pairs without --loser-must-fail: every candidate gives one
    assert_eq!(grid, [(4, 100.0, 4), (4, 1000.0, 4), (12, 100.0, 12), (12, 1000.0, 12)]);
    // One pair set, built once for the largest count.
    let sets: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pairs"))
        .collect();
    assert_eq!(sets, ["pairs-c12"]);
    // Each cell is the `lightgen dpo` run of its own count and β, weight for weight: the
    // 4-candidate cells learn from the first part of the 12-candidate set, which is exactly the
    // set a 4-candidate run builds.
    for (pairs, beta, cell) in [("12", "1000", "c12-b1000"), ("4", "100", "c4-b100")] {
        let plain = dir.path().join(format!("plain-{cell}"));
        let (b, p) = (base.to_str().unwrap(), plain.to_str().unwrap());
        let mut args = vec!["dpo", "-q", "--checkpoint", b, "-m", MANIFEST, "--out", p, "--pairs", pairs];
        args.extend_from_slice(&["--beta", beta, "--no-eval", "--json"]);
        args.extend_from_slice(&SMALL);
        let o = lightgen(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let c = cells.iter().find(|c| c["dir"].as_str().unwrap().ends_with(cell)).unwrap();
        assert_eq!(c["last_loss"], s["last_loss"], "{cell}");
        assert_eq!(ema_bytes(&out.join(cell)), ema_bytes(&plain), "{cell}");
    }
    // The scores are the evals' seed means, and an eval is the one `lightgen eval` gives.
    let overall = |p: &Path| -> f64 {
        let e: serde_json::Value = serde_json::from_slice(&std::fs::read(p.join("eval.json")).unwrap()).unwrap();
        e["overall"].as_f64().unwrap()
    };
    let (b0, b1) = (overall(&out.join("base/eval-s0")), overall(&out.join("base/eval-s1")));
    assert_eq!(r["base"]["per_seed"], serde_json::json!([b0, b1]));
    assert!((r["base"]["overall"].as_f64().unwrap() - (b0 + b1) / 2.0).abs() < 1e-12);
    let by_hand = dir.path().join("by-hand");
    let cell = out.join("c12-b100");
    let o = lightgen(&[
        "eval",
        "-q",
        "--checkpoint",
        cell.to_str().unwrap(),
        "-m",
        MANIFEST,
        "-n",
        "1",
        "--seed",
        "1",
        "--out",
        by_hand.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let judgements = |p: &Path| std::fs::read_to_string(p.join("judgements.jsonl")).unwrap();
    assert_eq!(judgements(&by_hand), judgements(&cell.join("eval-s1")), "same draws as by hand");
    for f in ["sweep.md", "sweep.json", "sweep.png", "sweep-alignment.png"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert!(std::fs::read_to_string(out.join("sweep.md")).unwrap().contains("| 1000 | 12 | 12 |"));

    // A rerun trains and evaluates nothing again and writes the same report, also for a cell
    // whose summary was lost after its last checkpoint (its losses come from its log).
    let before = std::fs::read(out.join("sweep.json")).unwrap();
    let ck = out.join("c4-b1000/checkpoints/step-00000003/ema.safetensors");
    let t0 = std::fs::metadata(&ck).unwrap().modified().unwrap();
    std::fs::remove_file(out.join("c4-b1000/dpo.json")).unwrap();
    let o = study("12,4");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&ck).unwrap().modified().unwrap(), t0);
    assert_eq!(
        String::from_utf8(std::fs::read(out.join("sweep.json")).unwrap()).unwrap(),
        String::from_utf8(before).unwrap()
    );
}
