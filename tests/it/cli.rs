//! The command line: help text and error messages (snapshots).

use crate::{lightgen, scrub, stderr, stdout, write_config};

#[test]
fn help_lists_the_commands() {
    let out = lightgen(&["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("help", stdout(&out));
}

#[test]
fn expand_help() {
    let out = lightgen(&["expand", "--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("expand_help", stdout(&out));
}

fn taxonomy_error(name: &str, taxonomy: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("prompts")).unwrap();
    let tax = dir.path().join("prompts").join(format!("{name}.toml"));
    std::fs::write(&tax, taxonomy).unwrap();
    let cfg = write_config(dir.path(), name, tax.to_str().unwrap(), 10, "");
    let out = lightgen(&["expand", "-q", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success(), "a bad taxonomy must fail");
    assert!(!dir.path().join("runs").exists(), "nothing is written for a bad taxonomy");
    scrub(&stderr(&out), dir.path())
}

const HEAD: &str = "[taxonomy]\nname = \"t\"\nversion = \"1\"\n\n[slots.shape]\nvalues = [\"circle\", \"square\"]\n\n[slots.color]\nvalues = [\"red\"]\n\n";

#[test]
fn malformed_toml_names_file_line_and_column() {
    let err = taxonomy_error("malformed", &format!("{HEAD}[[families]\nname = \"f\"\n"));
    assert!(err.contains("malformed.toml:11:"), "{err}");
    insta::assert_snapshot!("err_malformed_toml", err);
}

#[test]
fn unknown_slot_names_template_slot_and_known_slots() {
    let err = taxonomy_error(
        "unknown_slot",
        &format!("{HEAD}[[families]]\nname = \"f\"\n\n[[families.templates]]\nid = \"two_object\"\ntext = \"{{a}} and {{b}}\"\nvars = {{ a = \"shape\", b = \"shap\" }}\n"),
    );
    assert!(err.contains("unknown_slot.toml:17:8"), "{err}");
    assert!(err.contains("\"shap\"") && err.contains("known slots: color, shape"), "{err}");
    insta::assert_snapshot!("err_unknown_slot", err);
}

#[test]
fn impossible_distinct_constraint_is_an_error() {
    let err = taxonomy_error(
        "impossible",
        &format!("{HEAD}[[families]]\nname = \"f\"\n\n[[families.templates]]\nid = \"color_attr\"\ntext = \"{{a}} and {{b}}\"\nvars = {{ a = \"color\", b = \"color\" }}\ndistinct = [[\"a\", \"b\"]]\n"),
    );
    assert!(err.contains("must be distinct") && err.contains("\"red\""), "{err}");
    insta::assert_snapshot!("err_impossible", err);
}

#[test]
fn undeclared_var_in_text_is_an_error() {
    let err = taxonomy_error(
        "undeclared",
        &format!("{HEAD}[[families]]\nname = \"f\"\n\n[[families.templates]]\nid = \"x\"\ntext = \"a {{a}} and a {{c}}\"\nvars = {{ a = \"shape\" }}\n"),
    );
    assert!(err.contains("undeclared var \"c\"") && err.contains("declared vars: a"), "{err}");
    insta::assert_snapshot!("err_undeclared_var", err);
}

#[test]
fn unknown_config_field_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "x", "builtin:shapes", 10, "cuont = 3");
    let out = lightgen(&["expand", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = scrub(&stderr(&out), dir.path());
    assert!(err.contains("x.toml:9:1") && err.contains("cuont"), "{err}");
    insta::assert_snapshot!("err_unknown_config_field", err);
}

#[test]
fn count_above_capacity_stops_at_the_maximum() {
    // Two templates over 3 shapes: 3 + 3·2 = 9 distinct prompts at most.
    let dir = tempfile::tempdir().unwrap();
    let tax = dir.path().join("small_taxonomy.toml");
    std::fs::write(
        &tax,
        "[taxonomy]\nname = \"small\"\nversion = \"1\"\n[slots.shape]\nvalues = [\"circle\", \"square\", \"star\"]\n\
         [[families]]\nname = \"single_object\"\n[[families.templates]]\nid = \"one\"\ntext = \"a {a}\"\nvars = { a = \"shape\" }\n\
         [[families]]\nname = \"two_object\"\n[[families.templates]]\nid = \"two\"\ntext = \"a {a} and a {b}\"\nvars = { a = \"shape\", b = \"shape\" }\ndistinct = [[\"a\", \"b\"]]\n",
    )
    .unwrap();
    let cfg = write_config(dir.path(), "small", tax.to_str().unwrap(), 1000, "");
    let out = lightgen(&["expand", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = scrub(&stderr(&out), dir.path());
    assert!(err.contains("asked for 1000 prompts") && err.contains("only 9 distinct"), "{err}");
    insta::assert_snapshot!("warn_count_above_capacity", err);
    let df = crate::read_parts(&dir.path().join("runs/small/expand"));
    assert_eq!(df.height(), 9);
    assert_eq!(df.column("prompt").unwrap().n_unique().unwrap(), 9, "never duplicates");
}

#[test]
fn unknown_builtin_taxonomy_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "x", "builtin:shape", 10, "");
    let out = lightgen(&["expand", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("known: builtin:shapes, builtin:geneval, builtin:general"), "{}", stderr(&out));
}

#[test]
fn show_config_prints_the_resolved_plan() {
    let out = lightgen(&["expand", "--config", "configs/shapes.toml", "--count", "77", "--show-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("count = 77"), "{text}");
    assert!(text.contains("taxonomy: shapes v1.0.0"), "{text}");
}

#[test]
fn doctor_lists_what_this_build_can_do() {
    let out = lightgen(&["doctor"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("teachers  builtin:shapes") && text.contains("builtin:geneval"), "{text}");
}

#[test]
fn every_shipped_config_resolves() {
    for entry in std::fs::read_dir(crate::root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue; // configs/deploy: scheduler examples, not run configs
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let rel = format!("configs/{name}");
        if name.starts_with("train-") {
            // Training configs: parsed and checked like `lightgen train` does.
            let cfg = lightgen::student::train::TrainConfig::load(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(
                Some(cfg),
                lightgen::student::train::TrainConfig::preset(&name[6..name.len() - 5]),
                "{rel} vs its built-in preset"
            );
            continue;
        }
        let out = lightgen(&["expand", "--config", &rel, "--show-config"]);
        assert!(out.status.success(), "{rel}: {}", stderr(&out));
    }
}

#[test]
fn teacher_sections_are_checked_with_their_field_names() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        ("[generate]\nteacher = \"http\"\n", "needs a [generate.http] section"),
        (
            "[generate]\nteacher = \"http\"\n[generate.http]\nprotocol = \"openai\"\nendpoints = []\n",
            "generate.http.endpoints is empty",
        ),
        (
            "[generate]\nteacher = \"http\"\n[generate.http]\nprotocol = \"openai\"\n[[generate.http.endpoints]]\nurl = \"gpu-1:8080\"\n",
            "generate.http.endpoints[0].url = \"gpu-1:8080\": expected an http:// or https:// URL",
        ),
        ("[generate]\nteacher = \"onnx\"\n[generate.onnx]\nmodel = \"m\"\ndevice = \"tpu\"\n", "generate.onnx.device = \"tpu\""),
        ("[generate]\nteacher = \"http\"\n[generate.http]\nprotocol = \"comfy\"\nendpoints = []\n", "unknown variant `comfy`"),
        ("[curate]\nscorer = \"clip\"\n", "curate.scorer = \"clip\" needs a [curate.clip] section"),
        ("[curate]\nscorer = \"builtin:shapes\"\n[curate.semdedup]\n", "curate.semdedup needs CLIP image embeddings"),
        ("[curate]\nscorer = \"clip\"\n[curate.clip]\nmodel = \"m\"\n[curate.semdedup]\neps = 1.5\n", "curate.semdedup.eps = 1.5"),
    ] {
        let cfg = write_config(dir.path(), "t", "builtin:shapes", 10, extra);
        let out = lightgen(&["expand", "--config", cfg.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
    }
}

#[test]
fn the_example_manifest_verifies() {
    let out = lightgen(&["manifest", "verify", "manifests/shapes-tiny/manifest.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("21 rows"), "{}", stdout(&out));
}

/// Runs `lightgen args` with its stdout piped, reads `lines` lines, then closes the pipe (as
/// `| head -N` does) and waits: (exit status, stderr).
fn closed_after(args: &[&str], lines: usize) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, Read};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(args)
        .current_dir(super::root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
    }
    drop(out); // the reader goes away
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn issue_19_a_closed_stdout_is_not_a_crash() {
    let (status, err) = closed_after(&["taxonomy", "builtin:shapes"], 1);
    assert!(status.success() && !err.contains("panicked"), "{status}: {err}");
    // distill | head -2: every stage still runs and the manifest is published.
    let dir = tempfile::tempdir().unwrap();
    let (status, err) = closed_after(
        &["distill", "-c", "configs/shapes.toml", "--count", "100", "--output-dir", dir.path().to_str().unwrap()],
        2,
    );
    assert!(status.success() && !err.contains("panicked"), "{status}: {err}");
    assert!(dir.path().join("shapes/manifest.json").exists(), "the run finished its work");
}
