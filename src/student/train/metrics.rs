//! A run's `metrics.jsonl` (step lines and evaluation lines) and the plots drawn from it:
//! `loss.png` and `eval-curve.png`.

use std::path::Path;

use crate::error::{Error, Result};

/// `path` opened for appending (created if absent): a run's `metrics.jsonl`.
pub(crate) fn append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))
}

/// Keeps only the metric lines up to `step` (a resumed run rewrites what came after): the
/// steps before it and the evaluations up to it. Returns the wall time the kept evaluations
/// reached (where a resumed run's curve goes on from).
pub(crate) fn trim_metrics(path: &Path, step: u64) -> Result<f64> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(0.0) };
    let mut wall = 0.0f64;
    let kept: String = text
        .lines()
        .filter(|l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { return false };
            let Some(s) = v["step"].as_u64() else { return false };
            let keep = if v.get("eval").is_some() { s <= step } else { s < step };
            if keep {
                wall = wall.max(v["wall_s"].as_f64().unwrap_or(0.0));
            }
            keep
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::formats::commit::write_atomic(path, kept.as_bytes())?;
    Ok(wall)
}

/// `eval-curve.png` from the evaluation lines of `metrics.jsonl`: each task's accuracy and the
/// overall score against the step (the title gives the wall time of the last point).
pub fn eval_curve(metrics: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io(metrics, e))?;
    let evals: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("eval").is_some())
        .collect();
    let Some(last) = evals.last() else { return Ok(()) };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut push = |name: &str, x: f64, y: f64| match series.iter_mut().find(|(n, _)| n == name) {
        Some((_, pts)) => pts.push((x, y)),
        None => series.push((name.to_string(), vec![(x, y)])),
    };
    for v in &evals {
        let x = v["step"].as_f64().unwrap_or(0.0);
        push("overall", x, v["eval"]["overall"].as_f64().unwrap_or(0.0));
        if let Some(a) = v["eval"]["alignment"].as_f64() {
            push("alignment", x, a);
        }
        if let Some(tasks) = v["eval"]["tasks"].as_object() {
            for (k, a) in tasks {
                push(k, x, a.as_f64().unwrap_or(0.0));
            }
        }
    }
    // Short: the chart's font fits ~55 characters across ("held-out accuracy, …" cut off the
    // step count at step 6,000).
    let title = format!(
        "held-out, {} images/point, {:.1} min at step {}",
        last["eval"]["images"],
        last["wall_s"].as_f64().unwrap_or(0.0) / 60.0,
        last["step"]
    );
    let series: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    crate::report::chart::lines_in(png, &title, "step", &series, Some((0.0, 1.0)))
}

/// `loss.png` from `metrics.jsonl`: the logged loss and its running mean.
pub fn loss_curve(metrics: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io(metrics, e))?;
    let pts: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()? + 1.0, v["loss"].as_f64()?)))
        .collect();
    let mut mean = Vec::with_capacity(pts.len());
    let mut acc = f64::NAN;
    for &(x, y) in &pts {
        acc = if acc.is_nan() { y } else { 0.9 * acc + 0.1 * y };
        mean.push((x, acc));
    }
    crate::report::chart::lines(
        png,
        "training loss (DiffLoss: eps-MSE + VB)",
        "step",
        &[("loss", pts), ("running mean", mean)],
    )
}
