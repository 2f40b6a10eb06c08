//! Data-parallel training on c10d/Gloo over loopback (issue 21): two ranks compute the same
//! steps as one process with the same global batch, resume exactly, and fail together.
//! Seeded: the micro config's seed 0, with dropout off (ranks draw their own dropout masks,
//! as PyTorch's DDP does, so only a dropout-free model can match one process).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{lightgen, root, stderr, tensors};

const MANIFEST: &str = "manifests/shapes-tiny/manifest.json";

/// The micro config with `batch_size`, `accumulate`, no dropout, 5 steps.
fn config(dir: &Path, name: &str, batch: usize, accumulate: usize) -> PathBuf {
    let text = std::fs::read_to_string(root().join("tests/fixtures/train-micro.toml")).unwrap();
    let text = text
        .replace("dropout = 0.1", "dropout = 0.0")
        .replace("batch_size = 4", &format!("batch_size = {batch}\naccumulate = {accumulate}"))
        .replace("steps = 10", "steps = 5");
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn train_output(cfg: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "-q", "-m", MANIFEST, "-c", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    lightgen(&args)
}

fn train(cfg: &Path, out: &Path, extra: &[&str]) {
    let o = train_output(cfg, out, extra);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The largest |a − b| / max(max |a|, 0.01) over two checkpoints' weights and EMA weights:
/// each difference against its tensor's scale (0.01 at least, half the init std). Not per
/// element: some parameters have a gradient that is zero but for rounding (the key bias of an
/// attention, to which softmax is blind), so they drift at 1e-7 on the sums' rounding alone.
fn max_rel_diff(a: &Path, b: &Path) -> f64 {
    let mut worst = 0.0f64;
    for f in ["model.safetensors", "ema.safetensors"] {
        let (x, y) = (tensors(&a.join(f)), tensors(&b.join(f)));
        assert_eq!(x.len(), y.len(), "{f}: same tensors");
        for ((kx, vx), (ky, vy)) in x.iter().zip(&y) {
            assert_eq!(kx, ky);
            let scale = vx.iter().fold(0.01f32, |m, v| m.max(v.abs()));
            let r = vx.iter().zip(vy).fold(0.0f64, |m, (p, q)| m.max(((p - q).abs() / scale) as f64));
            if std::env::var_os("LIGHTGEN_DEBUG_DIFF").is_some() {
                eprintln!("{f} {kx}: {r:e}");
            }
            worst = worst.max(r);
        }
    }
    worst
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn issue_21_two_gloo_ranks_match_one_process_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (one, two, acc, res) = (d.join("one"), d.join("two"), d.join("acc"), d.join("resumed"));
    train(&config(d, "b32", 32, 1), &one, &[]);
    train(&config(d, "b16", 16, 1), &two, &["--nproc", "2"]);
    // One process, two micro-batches of 16: the same global batch of 32 again.
    train(&config(d, "b16x2", 16, 2), &acc, &[]);
    let last = "checkpoints/step-00000005";
    let (a, b, c) = (one.join(last), two.join(last), acc.join(last));
    let rel = max_rel_diff(&a, &b);
    assert!(rel < 1e-5, "1 rank × 32 vs 2 ranks × 16 after 5 steps: largest relative difference {rel:e}");
    let rel = max_rel_diff(&a, &c);
    assert!(rel < 1e-5, "batch 32 vs 2 accumulated micro-batches of 16: largest relative difference {rel:e}");
    // The logged loss is the global batch's mean on every path.
    for (x, y) in losses(&one).iter().zip(losses(&two)) {
        assert!((x - y).abs() < 1e-5 * x.abs(), "loss {x} vs {y}");
    }
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(b.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["world"], 2);
    // Two ranks stopped at step 2 and resumed: bit for bit the uninterrupted two-rank run.
    let cfg = config(d, "b16", 16, 1);
    train(&cfg, &res, &["--nproc", "2", "--stop-at", "2"]);
    train(&cfg, &res, &["--nproc", "2", "--resume"]);
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        assert!(
            std::fs::read(b.join(f)).unwrap() == std::fs::read(res.join(last).join(f)).unwrap(),
            "{f}: 2 + resume + 3 differs from 5 steps on two ranks"
        );
    }
    // A checkpoint of two ranks is not resumed by one.
    let o = train_output(&cfg, &two, &["--resume", "--steps", "8"]);
    assert!(!o.status.success() && stderr(&o).contains("trained by 2 rank(s)"), "{}", stderr(&o));
    let o = train_output(&cfg, &d.join("none"), &["--nproc", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("--nproc 0: expected at least 1"), "{}", stderr(&o));
}

/// Starts rank `rank` of 2 by hand (torchrun's variables), on `manifest`.
fn rank(rank: usize, port: u16, manifest: &str, out: &Path, cfg: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(["train", "-q", "-m", manifest, "-c", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--dist-timeout", "60"])
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("GLOO_SOCKET_IFNAME", "lo")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn issue_21_a_failed_rank_fails_the_other_with_a_clear_message_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "b4", 4, 1);
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let t0 = Instant::now();
    // Rank 1 joins, then fails on its manifest; rank 0 is left waiting in a collective.
    let r0 = rank(0, port, MANIFEST, &dir.path().join("out"), &cfg);
    let r1 = rank(1, port, "no/such/manifest.json", &dir.path().join("out"), &cfg);
    let o1 = r1.wait_with_output().unwrap();
    let o0 = r0.wait_with_output().unwrap();
    assert!(!o1.status.success() && stderr(&o1).contains("no/such/manifest.json"), "{}", stderr(&o1));
    assert!(!o0.status.success(), "rank 0 must fail when rank 1 is gone");
    let e = stderr(&o0);
    assert!(e.contains("rank 0 of 2") && e.contains("another rank"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(50), "rank 0 took {:?} to notice (timeout 60 s)", t0.elapsed());
    // A rank whose peers never come fails at the rendezvous within --dist-timeout.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lightgen"));
    c.args(["train", "-q", "-m", MANIFEST, "-c", cfg.to_str().unwrap(), "--out"])
        .arg(dir.path().join("alone"))
        .args(["--dist-timeout", "3"])
        .envs([("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("GLOO_SOCKET_IFNAME", "lo")])
        .env("MASTER_PORT", port.to_string())
        .current_dir(root());
    let t0 = Instant::now();
    let o = c.output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("rendezvous") && e.contains("127.0.0.1"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
}

#[test]
fn issue_21_dpo_on_two_ranks_matches_one_process() {
    // Seeded (pair seed 0, micro config seed 0). Both runs with one thread per process, so
    // the losers the base student samples are the same bits whichever rank builds their part.
    // β = 10, not the default 1000: the DPO loss multiplies the rounding of the two MSEs'
    // difference by β, and the two runs' matmuls round differently (other batch shapes).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    train(&config(d, "b4", 4, 1), &base, &["--steps", "3"]);
    let dpo = |out: &Path, batch: &str, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_lightgen"))
            .args(["dpo", "-q", "--checkpoint", base.to_str().unwrap(), "-m", MANIFEST, "--out", out.to_str().unwrap()])
            .args([
                "--pairs",
                "12",
                "--part-size",
                "4",
                "--steps",
                "4",
                "--batch",
                batch,
                "--lr",
                "1e-3",
                "--beta",
                "10",
            ])
            .args(["--no-eval", "--json"])
            .args(extra)
            .env("OMP_NUM_THREADS", "1")
            .current_dir(root())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let (one, two) = (d.join("one"), d.join("two"));
    dpo(&one, "4", &[]);
    dpo(&two, "2", &["--nproc", "2"]);
    for k in 0..3 {
        let f = format!("pairs/part-{k:05}.safetensors");
        assert!(std::fs::read(one.join(&f)).unwrap() == std::fs::read(two.join(&f)).unwrap(), "{f} differs");
    }
    // Every logged step agrees: the loss, the reward accuracy and the gradient norm.
    let log = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a, b) = (log(&one), log(&two));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        for k in ["loss", "grad_norm", "reward_accuracy"] {
            let (p, q) = (x[k].as_f64().unwrap(), y[k].as_f64().unwrap());
            assert!((p - q).abs() <= 1e-5 * p.abs().max(1e-3), "step {}: {k} {p} vs {q}", x["step"]);
        }
    }
    // The weights to 1e-4 of their scale, not 1e-5: the head's final layer starts at zero and
    // DPO's first gradients there are differences of nearly equal winner and loser terms, so
    // their rounding decides the sign of Adam's first ±lr updates on some elements.
    let last = "checkpoints/step-00000004";
    let rel = max_rel_diff(&one.join(last), &two.join(last));
    assert!(rel < 1e-4, "DPO on 1 rank × 4 pairs vs 2 ranks × 2: largest relative difference {rel:e}");
}
