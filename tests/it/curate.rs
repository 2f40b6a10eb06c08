//! The `curate` stage on the shapes world: decisions, filter quality against the teacher's
//! record, bad image bytes, exact and near duplicates, config errors, reruns.

use std::io::Cursor;
use std::path::Path;

use lightgen::formats::commit;
use lightgen::pipeline::generate::{read_part, write_part};
use polars::prelude::*;

use crate::{lightgen, stderr, write_config};

fn config(dir: &Path, name: &str, count: u64, near_dup: bool) -> std::path::PathBuf {
    let extra = format!(
        "\n[generate]\nteacher = \"builtin:shapes\"\nimages_per_prompt = 2\n\n[curate]\nscorer = \"builtin:shapes\"\nnear_dup = {near_dup}\nnear_dup_distance = 4\n\n[curate.filter]\npolicy = \"threshold\"\nthreshold = 1.0\n"
    );
    write_config(dir, name, "builtin:shapes", count, &extra)
}

fn ok(args: &[&str]) {
    let out = lightgen(args);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// (reason, detail, dup_of) per sample of a curate part.
fn decisions(part: &Path) -> Vec<(String, String, Option<String>)> {
    let df = ParquetReader::new(std::fs::File::open(part).unwrap()).finish().unwrap();
    let col = |c: &str| df.column(c).unwrap().str().unwrap().clone();
    let (r, d, o) = (col("reason"), col("detail"), col("dup_of"));
    (0..df.height()).map(|i| (r.get(i).unwrap().into(), d.get(i).unwrap().into(), o.get(i).map(Into::into))).collect()
}

/// Rewrites generate part 0 through `edit`, keeping its marker valid.
fn edit_generate(stage: &Path, edit: impl FnOnce(&mut Vec<lightgen::pipeline::generate::Sample>)) {
    let path = stage.join(commit::part_name(0));
    let mut rows = read_part(&path).unwrap();
    edit(&mut rows);
    write_part(stage, 0, &rows).unwrap();
    let st: commit::PartStats =
        serde_json::from_slice(&std::fs::read(stage.join(commit::stats_name(0))).unwrap()).unwrap();
    commit::commit_part(stage, 0, rows.len() as u64, &st.plan, st.extra).unwrap();
}

#[test]
fn curated_set_is_precise_keeps_correct_images_and_every_slot_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "c", 1500, false);
    ok(&["distill", "-q", "--config", cfg.to_str().unwrap()]);
    let run = dir.path().join("runs/c");
    ok(&["report", "curate", run.to_str().unwrap()]);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("reports/curate.json")).unwrap()).unwrap();
    assert_eq!(r["samples"], 3000);
    let t = &r["truth"];
    assert!(t["injected"].as_u64().unwrap() > 200, "{t}");
    assert!(t["precision"].as_f64().unwrap() >= 0.99, "{t}");
    assert!(t["correct_kept"].as_f64().unwrap() >= 0.95, "{t}");
    assert!(
        r["min_share_ratio"].as_f64().unwrap() >= 0.9,
        "a slot value lost more than 10% of its share: {}",
        r["min_share_ratio"]
    );
    for png in ["curate_scores.png", "curate_borderline.png"] {
        assert!(image::open(run.join("reports").join(png)).is_ok(), "{png}");
    }
    // Every sample has exactly one decision, row for row with the generate part.
    let gen = read_part(&run.join("generate").join(commit::part_name(0))).unwrap();
    let dec = lightgen::pipeline::curate::read_records(&run.join("curate").join(commit::part_name(0))).unwrap();
    assert_eq!(gen.len(), dec.len());
    assert!(gen.iter().zip(&dec).all(|(g, d)| g.sample_id == d.sample_id));
}

#[test]
fn corrupt_bytes_exact_and_near_duplicates_get_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "d", 40, true);
    ok(&["expand", "-q", "--config", cfg.to_str().unwrap()]);
    ok(&["generate", "-q", "--config", cfg.to_str().unwrap()]);
    let stage = dir.path().join("runs/d/generate");
    edit_generate(&stage, |rows| {
        // 0: truncated PNG bytes. 1: garbage. 2 → 3: re-encoded copy (same pixels, other bytes).
        // 4 → 5: a copy one grey level brighter (a near duplicate).
        let b = rows[0].image.clone().unwrap();
        rows[0].image = Some(b[..b.len() / 2].to_vec());
        rows[1].image = Some(b"not an image".to_vec());
        let img = image::load_from_memory(rows[2].image.as_deref().unwrap()).unwrap().to_rgb8();
        let mut jpeg_free = Vec::new();
        image::codecs::png::PngEncoder::new_with_quality(
            Cursor::new(&mut jpeg_free),
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::Paeth,
        )
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
        assert_ne!(Some(&jpeg_free), rows[2].image.as_ref());
        rows[3] = rows[2].clone();
        rows[3].sample_id = "copy-of-2".into();
        rows[3].image = Some(jpeg_free);
        let base = image::load_from_memory(rows[4].image.as_deref().unwrap()).unwrap().to_rgb8();
        let brighter = image::RgbImage::from_fn(base.width(), base.height(), |x, y| {
            image::Rgb(base.get_pixel(x, y).0.map(|c| c.saturating_add(1)))
        });
        let mut png = Vec::new();
        brighter.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        rows[5] = rows[4].clone();
        rows[5].sample_id = "near-4".into();
        rows[5].image = Some(png);
    });
    let out = lightgen(&["curate", "-q", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "bad bytes must not stop the stage: {}", stderr(&out));
    let d = decisions(&dir.path().join("runs/d/curate").join(commit::part_name(0)));
    assert_eq!(d[0].0, "decode_failed");
    assert_eq!(d[1].0, "decode_failed");
    let sid = |i: usize| read_part(&stage.join(commit::part_name(0))).unwrap()[i].sample_id.clone();
    assert_eq!((d[3].0.as_str(), d[3].2.as_deref()), ("exact_dup", Some(sid(2).as_str())), "{:?}", d[3]);
    assert_eq!((d[5].0.as_str(), d[5].2.as_deref()), ("near_dup", Some(sid(4).as_str())), "{:?}", d[5]);
}

use image::ImageEncoder;

#[test]
fn out_of_range_thresholds_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, field) in [
        ("threshold = 1.5", "curate.filter.threshold = 1.5"),
        ("policy = \"top_fraction\"\nfraction = 0", "curate.filter.fraction = 0"),
        ("policy = \"top_fraction\"", "curate.filter.fraction is needed"),
    ] {
        let text = format!(
            "\n[generate]\nteacher = \"builtin:shapes\"\n\n[curate]\nscorer = \"builtin:shapes\"\n\n[curate.filter]\n{}\n",
            if extra.starts_with("policy") { extra.to_string() } else { format!("policy = \"threshold\"\n{extra}") }
        );
        let cfg = write_config(dir.path(), "e", "builtin:shapes", 10, &text);
        let out = lightgen(&["curate", "--config", cfg.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(field), "{field}: {}", stderr(&out));
    }
    let cfg = write_config(dir.path(), "e", "builtin:shapes", 10, "\n[generate]\nteacher = \"builtin:shapes\"\n\n[curate]\nscorer = \"builtin:shapes\"\nnear_dup_distance = 65\n[curate.filter]\nthreshold = 0.5\n");
    let out = lightgen(&["curate", "--config", cfg.to_str().unwrap()]);
    assert!(stderr(&out).contains("curate.near_dup_distance = 65: expected 0 to 64"), "{}", stderr(&out));
}

#[test]
fn rerun_after_losing_parts_decides_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "r", 300, false);
    ok(&["distill", "-q", "--config", cfg.to_str().unwrap()]);
    let stage = dir.path().join("runs/r/curate");
    let before = decisions(&stage.join(commit::part_name(0)));
    std::fs::remove_file(stage.join(commit::stats_name(0))).unwrap();
    std::fs::remove_file(stage.join("scores").join(commit::stats_name(0))).unwrap();
    ok(&["curate", "-q", "--config", cfg.to_str().unwrap()]);
    assert_eq!(decisions(&stage.join(commit::part_name(0))), before);
}
