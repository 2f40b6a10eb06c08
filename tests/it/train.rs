//! `lightgen train` / `lightgen sample` on the example manifest (manifests/shapes-tiny) with a
//! micro model (tests/fixtures/train-micro.toml, seed 0).

use std::path::Path;

use super::{lightgen, stderr};

const MANIFEST: &str = "manifests/shapes-tiny/manifest.json";
const MICRO: &str = "tests/fixtures/train-micro.toml";

fn train(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "-q", "-m", MANIFEST, "-c", MICRO, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    lightgen(&args)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn resume_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let o = train(&a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(&b, &["--stop-at", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(b.join("checkpoints/step-00000005/state.json").exists());
    assert!(!b.join("checkpoints/step-00000010").exists());
    // Without --resume the folder is refused, naming the checkpoint.
    let o = train(&b, &[]);
    assert!(!o.status.success() && stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = train(&b, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        let (x, y) = (read(&a.join("checkpoints/step-00000010").join(f)), read(&b.join("checkpoints/step-00000010").join(f)));
        assert!(x == y, "{f} differs between 10 steps and 5 + resume + 5");
    }
    let losses = |dir: &Path| -> Vec<f64> {
        String::from_utf8(read(&dir.join("metrics.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
            .collect()
    };
    let losses_a = losses(&a);
    assert_eq!(losses_a, losses(&b), "the resumed run logs the same losses, each step once");
    let losses = losses_a;
    assert_eq!(losses.len(), 10);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(a.join("loss.png").exists() && a.join("samples/step-00000010.png").exists());
    let state: serde_json::Value = serde_json::from_slice(&read(&a.join("checkpoints/step-00000010/state.json"))).unwrap();
    assert_eq!(state["step"], 10);
    assert_eq!(state["adam_t"], 10);

    // Sampling: same seed, same images; another seed, other images.
    let s1 = dir.path().join("s1");
    let s2 = dir.path().join("s2");
    let s3 = dir.path().join("s3");
    for (out, seed) in [(&s1, "1"), (&s2, "1"), (&s3, "2")] {
        let o = lightgen(&[
            "sample", "-q", "--checkpoint", a.to_str().unwrap(), "-m", MANIFEST, "-p", "a red circle", "-p",
            "two blue squares", "-n", "2", "--seed", seed, "--out", out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for i in 0..4 {
        let f = format!("{i:05}.png");
        let img = image::open(s1.join(&f)).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
        assert_eq!(read(&s1.join(&f)), read(&s2.join(&f)));
    }
    assert_ne!(read(&s1.join("00000.png")), read(&s3.join("00000.png")));
    assert!(s1.join("grid.png").exists());
}

#[test]
fn a_tampered_manifest_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("m");
    std::fs::create_dir_all(copy.join("encode")).unwrap();
    for f in std::fs::read_dir(super::root().join("manifests/shapes-tiny/encode")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join("encode").join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(super::root().join(MANIFEST), copy.join("manifest.json")).unwrap();
    let shard = copy.join("encode/shard-00000.safetensors");
    let mut bytes = read(&shard);
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let out = dir.path().join("out");
    let o = lightgen(&["train", "-q", "-m", copy.join("manifest.json").to_str().unwrap(), "-c", MICRO, "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("shard-00000.safetensors") && e.contains("the shard was changed"), "{e}");
    assert!(!out.join("checkpoints").exists(), "nothing trained");
}

#[test]
fn resume_refuses_another_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let o = train(&out, &["--stop-at", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A valid manifest with another id: the same data under another name.
    let copy = dir.path().join("m");
    std::fs::create_dir_all(copy.join("encode")).unwrap();
    for f in std::fs::read_dir(super::root().join("manifests/shapes-tiny/encode")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join("encode").join(f.file_name().unwrap())).unwrap();
    }
    let mut m: serde_json::Value = serde_json::from_slice(&read(&super::root().join(MANIFEST))).unwrap();
    m["name"] = "renamed".into();
    let mut parsed: lightgen::pipeline::manifest::Manifest = serde_json::from_value(m).unwrap();
    parsed.id = lightgen::pipeline::manifest::content_id(&parsed);
    std::fs::write(copy.join("manifest.json"), serde_json::to_vec_pretty(&parsed).unwrap()).unwrap();
    let o = lightgen(&[
        "train", "-q", "-m", copy.join("manifest.json").to_str().unwrap(), "-c", MICRO, "--out", out.to_str().unwrap(), "--resume",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("resume with the same manifest"), "{}", stderr(&o));
}

#[test]
fn bad_train_configs_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.toml");
    std::fs::write(&p, "[model]\npreset = \"huge\"\n").unwrap();
    let o = lightgen(&["train", "-m", MANIFEST, "-c", p.to_str().unwrap(), "--out", dir.path().join("o").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown preset; known: tiny, small, base, large"), "{}", stderr(&o));
    std::fs::write(&p, "[model]\npreset = \"tiny\"\n[train]\nbatchsize = 3\n").unwrap();
    let o = lightgen(&["train", "-m", MANIFEST, "-c", p.to_str().unwrap(), "--out", dir.path().join("o").to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("t.toml:4:1") && e.contains("batchsize"), "{e}");
}
