//! One integration binary: runs the real `lightgen` binary on the shipped taxonomies.

mod cli;
mod clip;
mod curate;
mod distill;
mod distributed;
mod dpo;
mod expand;
mod generate;
mod http;
mod onnx;
mod parity;
mod report;
mod schemas;
mod study;
mod taxonomies;
mod train;
mod train_dist;
mod world;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (tests read the shipped `prompts/` and `configs/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn lightgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightgen")).args(args).current_dir(root()).output().expect("runs lightgen")
}

/// Writes a run config into `dir` whose taxonomy is `taxonomy` (absolute or builtin:), with the
/// seed fixed at 42 for every test that uses it.
pub fn write_config(dir: &Path, name: &str, taxonomy: &str, count: u64, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[run]\nname = \"{name}\"\noutput_dir = \"runs\"\nseed = 42\n\n[prompts]\ntaxonomy = \"{taxonomy}\"\ncount = {count}\n{extra}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `lightgen sample` of one "a red circle" from `checkpoint` into `out`; asserts it succeeded.
pub fn sample_red_circle(checkpoint: &Path, manifest: &str, out: &Path) {
    let (ck, out) = (checkpoint.to_str().unwrap(), out.to_str().unwrap());
    let o = lightgen(&["sample", "-q", "--checkpoint", ck, "-m", manifest, "-p", "a red circle", "--out", out]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Every tensor of a safetensors file as f32 values, by name.
fn tensors(p: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Reads every committed part of a stage as one DataFrame.
pub fn read_parts(stage_dir: &Path) -> polars::prelude::DataFrame {
    use polars::prelude::*;
    let mut frames = Vec::new();
    for p in lightgen::formats::commit::committed_parts(stage_dir).unwrap() {
        frames.push(ParquetReader::new(std::fs::File::open(p).unwrap()).finish().unwrap());
    }
    let mut df = frames.remove(0);
    for f in frames {
        df.vstack_mut(&f).unwrap();
    }
    df
}

/// Replaces a temp folder path in output so snapshots are stable.
pub fn scrub(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "[TMP]")
}
