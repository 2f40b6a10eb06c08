//! The ONNX teacher on real ONNX Runtime, over the tiny random-weight exports of
//! `scripts/make-fixtures.py` (real folder layout, names, ranks and dtypes): prompt → image
//! part end to end, determinism by seed, every scheduler, SDXL with fp16 models, and the
//! errors for a folder with a missing part or a model with the wrong inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lightgen::config::{OnnxTeacherConfig, SchedulerKind};
use lightgen::formats::commit;
use lightgen::pipeline::generate::read_part;
use lightgen::pipeline::teacher::diffusers::OnnxTeacher;
use lightgen::pipeline::teacher::{PromptRow, Request, Teacher};

use crate::{lightgen, root, stderr, write_config};

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/onnx").join(name)
}

fn teacher(model: &Path, scheduler: SchedulerKind, guidance: f32) -> Result<OnnxTeacher, String> {
    let cfg = OnnxTeacherConfig {
        model: model.to_path_buf(),
        steps: 3,
        guidance,
        scheduler,
        negative_prompt: String::new(),
        batch: 2,
        device: "cpu".into(),
        runtime: None,
    };
    OnnxTeacher::load(&cfg).map_err(|e| e.to_string())
}

fn row(text: &str) -> PromptRow {
    PromptRow {
        index: 0,
        prompt_id: "p".into(),
        text: text.into(),
        family: "f".into(),
        spec: None,
        slots: BTreeMap::new(),
    }
}

fn make(t: &OnnxTeacher, prompts: &[PromptRow], seeds: &[u64], size: u32) -> Vec<image::RgbImage> {
    let reqs: Vec<Request<'_>> =
        prompts.iter().zip(seeds).map(|(p, &seed)| Request { prompt: p, seed, width: size, height: size }).collect();
    t.generate(&reqs).into_iter().map(|r| r.expect("image").image).collect()
}

#[test]
fn every_scheduler_is_deterministic_by_seed_and_follows_the_prompt() {
    let prompts = [row("a blue circle"), row("three red squares and a circle")];
    for (model, scheds) in [
        ("sd-tiny", vec![SchedulerKind::Auto, SchedulerKind::Euler, SchedulerKind::Ddim, SchedulerKind::Lcm]),
        ("sdxl-tiny", vec![SchedulerKind::Auto, SchedulerKind::EulerAncestral]),
    ] {
        for s in scheds {
            for guidance in [1.0, 3.0] {
                let t = teacher(&fixture(model), s, guidance).unwrap();
                let a = make(&t, &prompts, &[7, 8], 64);
                assert_eq!(a.len(), 2);
                assert_eq!(a[0].dimensions(), (64, 64));
                // Fixed seeds 7 and 8: the same seed gives the same image, in any batch.
                let again = make(&t, &prompts[..1], &[7], 64);
                assert!(a[0] == again[0], "{model} {s:?}: same seed, same image");
                let other_seed = make(&t, &prompts[..1], &[9], 64);
                assert!(a[0] != other_seed[0], "{model} {s:?}: another seed, another image");
                let other_prompt = make(&t, &[row("a green star")], &[7], 64);
                assert!(a[0] != other_prompt[0], "{model} {s:?}: the text conditions the image");
                let spread = a[0].as_raw().iter().filter(|&&v| v > 5 && v < 250).count();
                assert!(
                    spread > a[0].as_raw().len() / 2,
                    "{model} {s:?}: colours are not saturated: {spread} {:?}",
                    &a[0].as_raw()[..60]
                );
                let tm = t.timing();
                assert!(tm.models_s > 0.0 && tm.models_s <= tm.total_s && tm.unet_s <= tm.steps_s, "{tm:?}");
            }
        }
    }
}

#[test]
fn generate_runs_the_onnx_teacher_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[generate]\nteacher = \"onnx\"\nimages_per_prompt = 2\nresolution = 32\n\
         [generate.onnx]\nmodel = \"{}\"\nsteps = 2\nguidance = 2.0\nbatch = 3\ndevice = \"cpu\"\n",
        fixture("sd-tiny").display()
    );
    let cfg = write_config(dir.path(), "o", "builtin:shapes", 5, &extra);
    let cfg = cfg.to_str().unwrap();
    assert!(lightgen(&["expand", "-q", "--config", cfg]).status.success());
    let out = lightgen(&["generate", "-q", "--json", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((s["samples"].as_u64(), s["failed"].as_u64(), s["teacher"].as_str()), (Some(10), Some(0), Some("onnx")));
    let rows: Vec<_> = commit::committed_parts(&dir.path().join("runs/o/generate"))
        .unwrap()
        .iter()
        .flat_map(|p| read_part(p).unwrap())
        .collect();
    assert_eq!(rows.len(), 10);
    for r in &rows {
        let img = image::load_from_memory(r.image.as_deref().unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
        let req: serde_json::Value = serde_json::from_str(&r.request).unwrap();
        assert_eq!(req["seed"], r.seed);
        assert_eq!(req["scheduler"], "Euler", "auto follows scheduler_config.json");
        assert_eq!(req["model_hash"].as_str().unwrap().len(), 16);
        assert!(req["onnxruntime"].as_str().unwrap().starts_with('1'));
    }
    // A second run from scratch makes the same bytes.
    let out = lightgen(&["generate", "-q", "--force", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Vec<_> = commit::committed_parts(&dir.path().join("runs/o/generate"))
        .unwrap()
        .iter()
        .flat_map(|p| read_part(p).unwrap())
        .collect();
    for (a, b) in rows.iter().zip(&again) {
        assert_eq!(a.blake3, b.blake3, "{}: deterministic by seed", a.sample_id);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn broken_exports_get_errors_that_name_the_file_and_the_ports() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("sd");
    copy_dir(&fixture("sd-tiny"), &broken);
    std::fs::remove_file(broken.join("unet/model.onnx")).unwrap();
    let e = teacher(&broken, SchedulerKind::Auto, 1.0).err().unwrap();
    assert!(e.contains("unet/model.onnx") && e.contains("missing"), "{e}");

    // A VAE decoder where the UNet should be: wrong inputs.
    std::fs::copy(broken.join("vae_decoder/model.onnx"), broken.join("unet/model.onnx")).unwrap();
    let e = teacher(&broken, SchedulerKind::Auto, 1.0).err().unwrap();
    assert!(e.contains("unet/model.onnx") && e.contains("inputs do not match"), "{e}");
    assert!(e.contains("sample (rank 4)") && e.contains("encoder_hidden_states (rank 3)"), "expected names: {e}");
    assert!(e.contains("latent_sample: Float32[?, 4, ?, ?]"), "found names and shapes: {e}");

    std::fs::remove_file(broken.join("model_index.json")).unwrap();
    let e = teacher(&broken, SchedulerKind::Auto, 1.0).err().unwrap();
    assert!(e.contains("model_index.json") && e.contains("text_encoder/model.onnx"), "{e}");
}

#[test]
fn doctor_reports_the_onnx_runtime() {
    let out = lightgen(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("ONNX Runtime 1.") && text.contains("execution providers: ") && text.contains("CPU"),
        "{text}"
    );
}

#[test]
fn encode_stores_vae_moments_with_an_auto_scale_and_a_verified_manifest() {
    use lightgen::formats::shards::Shard;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[generate]\nteacher = \"builtin:shapes\"\nimages_per_prompt = 1\nresolution = 64\n\
         [curate]\nscorer = \"builtin:shapes\"\nnear_dup = false\n[curate.filter]\npolicy = \"threshold\"\nthreshold = 0.0\n\
         require_verdict = false\n\
         [encode]\nresolution = 64\ntokenizer = \"vae\"\npatch = 2\ndtype = \"f32\"\nflip = true\nheld_out = 0.0\n\
         [encode.vae]\nmodel = \"{}\"\nscale = \"auto\"\nbatch = 8\ndevice = \"cpu\"\n",
        fixture("sd-tiny").display()
    );
    let cfg = write_config(dir.path(), "v", "builtin:shapes", 40, &extra);
    let cfg = cfg.to_str().unwrap();
    let out = lightgen(&["distill", "-q", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.path().join("runs/v");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("encode/spec.json")).unwrap()).unwrap();
    let l = &spec["latent"];
    // 64 px / 8 px per latent / patch 2 = 4x4 tokens of (4 means + 4 log-variances) · 2².
    assert_eq!(
        (l["tokenizer"].as_str(), l["grid"].as_u64(), l["token_dim"].as_u64()),
        (Some("vae"), Some(4), Some(32))
    );
    assert_eq!(l["moments"], true);
    assert!(l["model"].as_str().unwrap().starts_with("vae:sd-tiny@"), "{l}");
    let scale = l["scale"].as_f64().unwrap();
    assert!(
        scale > 0.0 && (scale - 1.0).abs() > 1e-3 && (scale - 0.18215).abs() > 1e-3,
        "measured, not a default: {scale}"
    );
    let shard = Shard::open(&run.join("encode/shard-00000.safetensors")).unwrap();
    assert_eq!((shard.rows, shard.tokens, shard.token_dim), (40, 16, 32));
    let (mut means, mut logvars) = (Vec::new(), Vec::new());
    let mut row = Vec::new();
    for i in 0..shard.rows {
        shard.latents_into(i, false, &mut row);
        for tok in row.chunks_exact(32) {
            means.extend_from_slice(&tok[..16]);
            logvars.extend_from_slice(&tok[16..]);
        }
    }
    let avg = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    // The fixture's log-variance channels carry a bias of −2; the means are centred.
    assert!((avg(&logvars) + 2.0).abs() < 0.5 && avg(&means).abs() < 0.5, "{} {}", avg(&means), avg(&logvars));
    let std = (means.iter().map(|m| m * m).sum::<f32>() / means.len() as f32).sqrt();
    assert!(std > 0.0);
    let verify = lightgen(&["manifest", "verify", run.join("manifest.json").to_str().unwrap()]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    // Object-first masks and the label read-out find objects in pixels: on VAE latents
    // training refuses, naming the option and the tokenizer, and writes no checkpoint.
    let micro = std::fs::read_to_string(root().join("tests/fixtures/train-micro.toml")).unwrap();
    let m = run.join("manifest.json");
    for option in ["object_mask_prob = 0.5", "label_loss_weight = 0.1"] {
        let tc = dir.path().join("objects.toml");
        std::fs::write(&tc, micro.replace("[train]\n", &format!("[train]\n{option}\n"))).unwrap();
        let o = dir.path().join("o");
        let args = ["train", "-q", "-m", m.to_str().unwrap(), "-c", tc.to_str().unwrap(), "--out", o.to_str().unwrap()];
        let out = lightgen(&args);
        assert!(!out.status.success(), "{option}");
        let e = stderr(&out);
        let name = format!("train.{}", option.split(' ').next().unwrap());
        assert!(e.contains(&name) && e.contains("tokenizer is \"vae\""), "{option}: {e}");
        assert!(!o.join("checkpoints").exists(), "{option}: nothing trained");
    }
}

#[test]
fn the_vae_decodes_its_own_tokens() {
    use lightgen::formats::tokenizer::ImageTokenizer;
    let cfg = lightgen::config::VaeConfig {
        model: fixture("sd-tiny"),
        scale: None,
        shift: None,
        batch: 2,
        device: "cpu".into(),
        runtime: None,
    };
    let vae = lightgen::formats::vae::Vae::load(&cfg, 64, 2, "f32", false).unwrap();
    assert_eq!(vae.spec().scale, 0.18215, "the export's scaling_factor");
    let a = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]));
    let b = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 20, 20]));
    let tokens = vae.encode_batch(&[a.clone(), b]).unwrap();
    assert_eq!(tokens[0], vae.encode(&a), "batched and alone agree");
    let (da, db) = (vae.decode(&tokens[0]), vae.decode(&tokens[1]));
    assert_eq!(da.dimensions(), (64, 64));
    let grey = image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
    assert!(da != grey && da != db, "the decoder ran on each image's own mean latent");
}

#[test]
fn a_vae_without_the_right_outputs_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("vae_encoder")).unwrap();
    std::fs::copy(fixture("sd-tiny").join("vae_decoder/model.onnx"), dir.path().join("vae_encoder/model.onnx"))
        .unwrap();
    let cfg = lightgen::config::VaeConfig {
        model: dir.path().to_path_buf(),
        scale: None,
        shift: None,
        batch: 1,
        device: "cpu".into(),
        runtime: None,
    };
    let e = lightgen::formats::vae::Vae::load(&cfg, 64, 1, "f16", false).err().unwrap();
    assert!(
        e.contains("vae_encoder/model.onnx") && e.contains("sample (rank 4)") && e.contains("latent_sample"),
        "{e}"
    );
}

fn t5_cfg() -> lightgen::config::T5Config {
    lightgen::config::T5Config {
        model: fixture("t5-tiny"),
        dtype: "bf16".into(),
        batch: 2,
        device: "cpu".into(),
        runtime: None,
    }
}

#[test]
fn t5_ids_and_features_match_the_python_reference() {
    use lightgen::formats::t5::T5;
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("t5-tiny").join("expected.json")).unwrap()).unwrap();
    let t5 = T5::load(&t5_cfg(), 32).unwrap();
    assert_eq!(t5.dim, 16);
    assert!(t5.id.starts_with("t5:t5-tiny@"));
    let cases = expected["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["prompt"].as_str().unwrap()).collect();
    // One batch of different lengths: padding must not change any prompt's features.
    let feats = t5.features(&texts).unwrap();
    for (c, f) in cases.iter().zip(&feats) {
        let want_ids: Vec<u32> = serde_json::from_value(c["ids"].clone()).unwrap();
        assert_eq!(t5.ids(c["prompt"].as_str().unwrap()).unwrap(), want_ids, "{}", c["prompt"]);
        let want: Vec<f32> = serde_json::from_value(c["features"].clone()).unwrap();
        assert_eq!(f.len(), want_ids.len() * 16, "features cut at the true length");
        for (a, b) in f.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{}: {a} vs {b}", c["prompt"]);
        }
    }
    // Truncation keeps </s> last.
    let short = T5::load(&t5_cfg(), 4).unwrap();
    assert_eq!(short.ids("three blue squares on the left").unwrap().last(), Some(&1));
    assert_eq!(short.ids("three blue squares on the left").unwrap().len(), 4);
}

#[test]
fn encode_stores_t5_features_once_per_prompt() {
    use lightgen::formats::shards::Shard;
    use lightgen::formats::t5::T5;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[generate]\nteacher = \"builtin:shapes\"\nimages_per_prompt = 3\nresolution = 64\n\
         [curate]\nscorer = \"builtin:shapes\"\nnear_dup = false\n[curate.filter]\npolicy = \"threshold\"\nthreshold = 0.0\n\
         require_verdict = false\n\
         [encode]\nresolution = 64\ntokenizer = \"pixels\"\npatch = 4\nflip = false\nheld_out = 0.0\ntext = \"t5\"\nmax_text_len = 24\n\
         [encode.t5]\nmodel = \"{}\"\ndtype = \"bf16\"\nbatch = 4\ndevice = \"cpu\"\n",
        fixture("t5-tiny").display()
    );
    let cfg = write_config(dir.path(), "t", "builtin:shapes", 10, &extra);
    let out = lightgen(&["distill", "-q", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.path().join("runs/t");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("encode/spec.json")).unwrap()).unwrap();
    assert_eq!((spec["text"]["encoder"].as_str(), spec["text"]["dim"].as_u64()), (Some("t5"), Some(16)));
    assert!(spec["text"]["model"].as_str().unwrap().starts_with("t5:t5-tiny@"));
    let shard = Shard::open(&run.join("encode/shard-00000.safetensors")).unwrap();
    let t5 = T5::load(&t5_cfg(), 24).unwrap();
    let file = std::fs::File::open(run.join("encode/shard-00000.parquet")).unwrap();
    let index = {
        use polars::prelude::SerReader;
        polars::prelude::ParquetReader::new(file).finish().unwrap()
    };
    let prompts = index.column("prompt").unwrap().str().unwrap();
    let mut f = Vec::new();
    for i in 0..shard.rows {
        let prompt = prompts.get(i).unwrap();
        let len = shard.text_features_into(i, &mut f).unwrap();
        let (ids, n) = shard.text(i);
        assert_eq!(len, n as usize);
        assert_eq!(&ids[..len], &t5.ids(prompt).unwrap()[..]);
        let want = &t5.features(&[prompt]).unwrap()[0];
        assert_eq!(f.len(), want.len());
        // bf16 keeps 8 bits of mantissa.
        assert!(f.iter().zip(want).all(|(a, b)| (a - b).abs() <= 0.01 * b.abs().max(0.05)), "{prompt}");
    }
    let verify = lightgen(&["manifest", "verify", run.join("manifest.json").to_str().unwrap()]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}
