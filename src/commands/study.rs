//! `lightgen study diversity-vs-volume` and `study dpo`, around [`lightgen::student::study`]
//! and [`lightgen::student::train::dpo::sweep`].

use anyhow::{Context, Result};

use crate::cli::{StudyArgs, StudyDpoArgs};
use lightgen::student::train::{self, TrainConfig};

/// `lightgen study diversity-vs-volume`.
pub fn study_cmd(a: StudyArgs, progress: bool) -> Result<()> {
    let mut train = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::preset(&a.preset)
            .with_context(|| format!("--preset {}: unknown; known: {}", a.preset, TrainConfig::PRESETS.join(", ")))?,
    };
    if let Some(s) = a.steps {
        train.train.steps = s;
    }
    train.train.sample_every = 0; // one grid per arm is not worth its time here
    anyhow::ensure!(
        !a.fractions.is_empty() && a.fractions.iter().all(|f| *f > 0.0 && *f <= 1.0),
        "--fractions: expected values in (0, 1]"
    );
    anyhow::ensure!(a.narrow_share > 0.0 && a.narrow_share <= 1.0, "--narrow-share: expected a value in (0, 1]");
    let cfg = lightgen::student::study::StudyConfig {
        fractions: a.fractions.clone(),
        narrow_share: a.narrow_share,
        eval_n: a.eval_n,
        seed: a.seed,
        train,
    };
    let r = lightgen::student::study::run(&a.manifest, &cfg, &a.out, train::device(&a.device)?, progress)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", lightgen::student::study::markdown(&r));
        outln!("\nplot {}; table {}", a.out.join("study.png").display(), a.out.join("study.md").display());
    }
    Ok(())
}

/// `lightgen study dpo`.
pub fn study_dpo_cmd(a: StudyDpoArgs, progress: bool) -> Result<()> {
    use lightgen::student::train::{checkpoint, dpo::sweep};
    let base = checkpoint::resolve(&a.checkpoint)?;
    let state = checkpoint::read_state(&base)?;
    let largest = a.pairs.iter().copied().max().unwrap_or(0);
    let cfg = sweep::SweepConfig {
        betas: a.betas.clone(),
        candidates: a.pairs.clone(),
        dpo: super::dpo::dpo_config(&a.flags, largest, 0.0, &state.config)?,
        eval_n: a.eval_n,
        eval_seeds: a.eval_seeds.clone(),
        eval_batch: 32, // `lightgen eval`'s: the same draws as evaluating a cell by hand
    };
    let r = sweep::run(&base, &a.manifest, &cfg, &a.out, train::device(&a.device)?, progress)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", sweep::markdown(&r));
        outln!("\nplot {}; table {}", a.out.join("sweep.png").display(), a.out.join("sweep.md").display());
    }
    Ok(())
}
