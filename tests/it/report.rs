//! `lightgen report prompts`: the diversity report on a real expansion.

use crate::{lightgen, stderr, stdout, write_config};

#[test]
fn report_shows_full_value_coverage_and_writes_json_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "rep", "builtin:shapes", 2000, "");
    let out = lightgen(&["expand", "-q", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.path().join("runs/rep");
    let out = lightgen(&["report", "prompts", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pairwise coverage"), "{}", stdout(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("reports/prompts.json")).unwrap()).unwrap();
    assert_eq!(json["rows"], 2000);
    assert_eq!(json["duplicate_rate"], 0.0);
    for slot in json["slots"].as_array().unwrap() {
        assert_eq!(slot["coverage"], 1.0, "every value used at 2000 prompts: {slot}");
        assert!(slot["normalized_entropy"].as_f64().unwrap() > 0.97, "{slot}");
    }
    let shape_color =
        json["pairs"].as_array().unwrap().iter().find(|p| p["a"] == "color" && p["b"] == "shape").unwrap();
    assert_eq!(shape_color["possible"], 100);
    assert_eq!(shape_color["seen"], 100);
    let png = image::open(run.join("reports/prompts_coverage.png")).unwrap();
    assert!(png.width() > 300 && png.height() > 200);
}

#[test]
fn report_on_a_folder_without_expand_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = lightgen(&["report", "prompts", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("run `lightgen expand` first"), "{}", stderr(&out));
}
