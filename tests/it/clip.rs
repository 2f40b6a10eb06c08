//! The CLIP scorer on real ONNX Runtime: the tokenizer against OpenAI's own vocabulary, the
//! scorer against cosines computed in Python with PIL and HF tokenizers
//! (`scripts/make-fixtures.py`), `curate` with CLIP scores and SemDeDup end to end, and the
//! error for a model with the wrong inputs.

use std::path::PathBuf;

use image::RgbImage;
use lightgen::config::ClipConfig;
use lightgen::onnx::clip_tokenizer::ClipTokenizer;
use lightgen::pipeline::curate::clip::ClipScorer;
use lightgen::pipeline::curate::score::{ScoreInput, Scorer};

use crate::{lightgen, read_parts, root, stderr, write_config};

fn fixture() -> PathBuf {
    root().join("tests/fixtures/onnx/clip-tiny")
}

fn clip_cfg(model: PathBuf) -> ClipConfig {
    ClipConfig { model, batch: 3, device: "cpu".into(), runtime: None }
}

#[test]
fn the_tokenizer_gives_openai_clip_ids() {
    let dir = std::env::var("LIGHTGEN_CLIP_VOCAB")
        .expect("LIGHTGEN_CLIP_VOCAB: run ./scripts/test.sh, which builds CLIP's vocabulary into target/clip-vocab");
    let tok = ClipTokenizer::load(std::path::Path::new(&dir)).unwrap();
    let ids = tok.encode("a photo of a cat").unwrap();
    // The ids every CLIP user knows: <|startoftext|> a photo of a cat <|endoftext|>, then padding.
    assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert_eq!(ids.len(), 77);
    assert!(ids[7..].iter().all(|&t| t == 49407));
    assert_eq!(&tok.encode("Hello,   World!").unwrap()[..6], &[49406, 3306, 267, 1002, 256, 49407]);
    // Long prompts keep 75 tokens between the two markers.
    let long = tok.encode(&"cat ".repeat(200)).unwrap();
    assert_eq!((long.len(), long[0], long[76]), (77, 49406, 49407));
}

#[test]
fn the_scorer_reproduces_the_python_reference() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let tok = ClipTokenizer::load(&fixture()).unwrap();
    let scorer = ClipScorer::load(&clip_cfg(fixture())).unwrap();
    assert!(scorer.id().starts_with("clip:clip-tiny@"), "{}", scorer.id());
    let cases = expected["cases"].as_array().unwrap();
    let images: Vec<RgbImage> =
        cases.iter().map(|c| image::open(fixture().join(c["image"].as_str().unwrap())).unwrap().to_rgb8()).collect();
    let inputs: Vec<ScoreInput<'_>> = cases
        .iter()
        .zip(&images)
        .map(|(c, img)| ScoreInput { image: img, prompt: c["prompt"].as_str().unwrap(), spec: None })
        .collect();
    // Preprocessing as CLIPImageProcessor: the resized, cropped pixels PIL made. Equal but for
    // rounding, and where bicubic overshoot is clipped between the two passes (PIL clips its
    // intermediate image) at the test images' hard 255→0 wraps.
    let pre = lightgen::pipeline::curate::clip::Preprocess::from_json(
        &serde_json::json!({"size": {"shortest_edge": 32}, "crop_size": 32}),
    );
    for (c, img) in cases.iter().zip(&images) {
        let want = image::open(fixture().join(c["crop"].as_str().unwrap())).unwrap().to_rgb8();
        let got = pre.apply(img).unwrap();
        let plane = 32 * 32;
        let (mut total, mut exact) = (0, 0);
        for (k, px) in want.pixels().enumerate() {
            for ch in 0..3 {
                let v = ((got[ch * plane + k] * pre.std[ch] + pre.mean[ch]) * 255.0).round() as i32;
                let d = (v - px.0[ch] as i32).abs();
                total += d;
                exact += (d == 0) as usize;
            }
        }
        let mean = total as f64 / (3 * plane) as f64;
        assert!(exact * 10 >= 9 * 3 * plane && mean < 0.2, "{}: {exact} exact, mean {mean:.3} levels off", c["image"]);
    }
    let scored = scorer.score(&inputs);
    for ((c, s), input) in cases.iter().zip(&scored).zip(&inputs) {
        let want_ids: Vec<i64> = serde_json::from_value(c["ids"].clone()).unwrap();
        assert_eq!(tok.encode(input.prompt).unwrap(), want_ids, "{}", input.prompt);
        let s = s.as_ref().unwrap();
        let want = c["cosine"].as_f64().unwrap() as f32;
        // One-level pixel differences move this tiny random model's cosine by a few 1e-3; a wrong
        // mean/std, crop or channel order moves it by 1e-1.
        assert!((s.score - want).abs() < 1e-2, "{}: {} vs Python {want}", input.prompt, s.score);
        let e = s.embedding.as_ref().unwrap();
        assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4, "unit embedding");
    }
    // Batched and one by one agree.
    let one = scorer.score(&inputs[1..2]);
    assert!((one[0].as_ref().unwrap().score - scored[1].as_ref().unwrap().score).abs() < 1e-5);
}

#[test]
fn curate_scores_with_clip_and_removes_semantic_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[generate]\nteacher = \"builtin:shapes\"\nimages_per_prompt = 2\nresolution = 64\n\
         [curate]\nscorer = \"clip\"\nnear_dup = false\n[curate.filter]\npolicy = \"top_fraction\"\nfraction = 0.9\n\
         require_verdict = false\n[curate.clip]\nmodel = \"{}\"\nbatch = 16\ndevice = \"cpu\"\n\
         [curate.semdedup]\neps = 0.5\nclusters = 4\n",
        fixture().display()
    );
    let cfg = write_config(dir.path(), "c", "builtin:shapes", 60, &extra);
    let cfg = cfg.to_str().unwrap();
    for stage in ["expand", "generate", "curate"] {
        let out = lightgen(&[stage, "-q", "--config", cfg]);
        assert!(out.status.success(), "{stage}: {}", stderr(&out));
    }
    let df = read_parts(&dir.path().join("runs/c/curate"));
    assert_eq!(df.height(), 120);
    let scorer = df.column("scorer").unwrap().str().unwrap().get(0).unwrap().to_string();
    assert!(scorer.starts_with("clip:clip-tiny@"), "{scorer}");
    let score = df.column("score").unwrap().f32().unwrap();
    assert!((0..df.height()).all(|i| score.get(i).is_some_and(|s| (-1.0..=1.0).contains(&s))), "raw cosines");
    let reason = df.column("reason").unwrap().str().unwrap();
    let dup_of = df.column("dup_of").unwrap().str().unwrap();
    let ids = df.column("sample_id").unwrap().str().unwrap();
    let decision = df.column("decision").unwrap().str().unwrap();
    // The member a semantic duplicate points at survived deduplication (the score filter may
    // still drop it) and scores at least as high (keep = highest_score).
    let row_of: std::collections::HashMap<&str, usize> = (0..df.height()).map(|i| (ids.get(i).unwrap(), i)).collect();
    let sem: Vec<usize> = (0..df.height()).filter(|&i| reason.get(i) == Some("semantic_dup")).collect();
    assert!(
        !sem.is_empty(),
        "eps 0.5 (cosine above 0.5) on 64 px shapes images finds semantic duplicates (fixed seed 42)"
    );
    for &i in &sem {
        let j = row_of[dup_of.get(i).unwrap()];
        assert!(
            ["kept", "low_score"].contains(&reason.get(j).unwrap()),
            "{} points at a {:?}",
            ids.get(i).unwrap(),
            reason.get(j)
        );
        assert!(score.get(j).unwrap() >= score.get(i).unwrap());
    }
    assert!((0..df.height()).any(|i| decision.get(i) == Some("kept")));
    assert!((0..df.height()).any(|i| reason.get(i) == Some("low_score")), "the top-90% filter rejects some");
}

#[test]
fn a_clip_model_with_the_wrong_inputs_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(root().join("tests/fixtures/onnx/sd-tiny/vae_decoder/model.onnx"), dir.path().join("model.onnx"))
        .unwrap();
    let e = ClipScorer::load(&clip_cfg(dir.path().to_path_buf())).err().unwrap().to_string();
    assert!(e.contains("model.onnx") && e.contains("inputs do not match"), "{e}");
    assert!(
        e.contains("input_ids (rank 2)") && e.contains("pixel_values (rank 4)") && e.contains("latent_sample"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("model.onnx")).unwrap();
    let e = ClipScorer::load(&clip_cfg(dir.path().to_path_buf())).err().unwrap().to_string();
    assert!(e.contains("no model.onnx") && e.contains("vision_model.onnx"), "{e}");
}
