//! The stage chain, in the one place that knows its order: expand → generate → curate →
//! encode → manifest, each stage only where its config section exists. `lightgen distill`
//! and `lightgen demo` run it; callers see each stage's summary as it finishes (to print it,
//! draw its report, or stop the chain) through `on_stage`.

use crate::config::Plan;
use crate::error::Result;
use crate::formats::manifest::Manifest;

use super::curate::{self, CurateOptions, CurateSummary};
use super::encode::{self, EncodeOptions, EncodeSummary};
use super::expand::{self, ExpandOptions, ExpandSummary};
use super::generate::{self, GenerateOptions, GenerateSummary};

/// Runtime choices for the whole chain.
#[derive(Debug, Clone)]
pub struct DistillOptions {
    pub force: bool,
    pub progress: bool,
    pub threads: usize,
}

/// A stage that has just finished.
pub enum Stage<'a> {
    Expanded(&'a ExpandSummary),
    Generated(&'a GenerateSummary),
    Curated(&'a CurateSummary),
    Encoded(&'a EncodeSummary),
    Manifest(&'a Manifest),
}

/// What the chain did: each stage's summary, for the stages the config has.
#[derive(Debug, Default)]
pub struct DistillSummary {
    pub expand: Option<ExpandSummary>,
    pub generate: Option<GenerateSummary>,
    pub curate: Option<CurateSummary>,
    pub encode: Option<EncodeSummary>,
    pub manifest: Option<Manifest>,
}

/// Runs the chain for `plan`; `on_stage` sees each summary and may stop the chain with an error.
pub fn distill(
    plan: &Plan,
    opts: &DistillOptions,
    mut on_stage: impl FnMut(Stage) -> Result<()>,
) -> Result<DistillSummary> {
    let (force, progress, threads) = (opts.force, opts.progress, opts.threads);
    let mut out = DistillSummary::default();
    let s = expand::run(plan, &ExpandOptions { force, progress })?;
    on_stage(Stage::Expanded(&s))?;
    out.expand = Some(s);
    if plan.config.generate.is_none() {
        return Ok(out);
    }
    let s = generate::run(plan, &GenerateOptions { force, progress, threads, share: None })?;
    on_stage(Stage::Generated(&s))?;
    out.generate = Some(s);
    if plan.config.curate.is_none() {
        return Ok(out);
    }
    let s = curate::run(plan, &CurateOptions { force, progress, threads, share: None })?;
    on_stage(Stage::Curated(&s))?;
    out.curate = Some(s);
    if plan.config.encode.is_none() {
        return Ok(out);
    }
    let s = encode::run(plan, &EncodeOptions { force, progress, threads })?;
    on_stage(Stage::Encoded(&s))?;
    out.encode = Some(s);
    let m = super::manifest::build(plan)?;
    on_stage(Stage::Manifest(&m))?;
    out.manifest = Some(m);
    Ok(out)
}
