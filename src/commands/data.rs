//! The data side's commands on the binary side: the stage commands, `distill` (printing each
//! stage's summary and report as the one chain in `pipeline::distill` runs), manifests,
//! reports, taxonomies and `serve`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::output::{describe_taxonomy, print_curate, print_encode, print_expand, print_generate};
use crate::cli::{DistillArgs, ManifestCommand, MergeArgs, ReportCommand, StageArgs};
use lightgen::config::{Overrides, Plan};
use lightgen::formats::manifest;
use lightgen::pipeline::curate::{self, CurateOptions};
use lightgen::pipeline::distill::{distill, DistillOptions, Stage};
use lightgen::pipeline::distribute;
use lightgen::pipeline::encode::{self, EncodeOptions};
use lightgen::pipeline::expand::{self, ExpandOptions};
use lightgen::pipeline::generate::{self, GenerateOptions};
use lightgen::pipeline::store::Store;
use lightgen::pipeline::worker::Worker;
use lightgen::report::{curate as curate_report, generate as generate_report, prompts};
use lightgen::taxonomy::Taxonomy;

/// `lightgen expand`.
pub fn expand_cmd(args: StageArgs, progress: bool) -> Result<()> {
    if let Some(plan) = plan(&args)? {
        let summary = expand::run(&plan, &ExpandOptions { force: args.force, progress })?;
        print_expand(&summary, args.json);
    }
    Ok(())
}

/// `lightgen generate`.
pub fn generate_cmd(args: StageArgs, progress: bool) -> Result<()> {
    if let Some(plan) = plan(&args)? {
        let opts = GenerateOptions { force: args.force, progress, threads: args.threads, share: None };
        print_generate(&generate::run(&plan, &opts)?, args.json);
    }
    Ok(())
}

/// `lightgen curate`.
pub fn curate_cmd(args: StageArgs, progress: bool) -> Result<()> {
    if let Some(plan) = plan(&args)? {
        let opts = CurateOptions { force: args.force, progress, threads: args.threads, share: None };
        print_curate(&curate::run(&plan, &opts)?, args.json);
    }
    Ok(())
}

/// `lightgen encode`.
pub fn encode_cmd(args: StageArgs, progress: bool) -> Result<()> {
    if let Some(plan) = plan(&args)? {
        let opts = EncodeOptions { force: args.force, progress, threads: args.threads };
        print_encode(&encode::run(&plan, &opts)?, args.json);
    }
    Ok(())
}

/// `lightgen manifest …`.
pub fn manifest_cmd(command: ManifestCommand, progress: bool) -> Result<()> {
    match command {
        ManifestCommand::Merge(MergeArgs { stage, store, workers }) => {
            if let Some(plan) = plan(&stage)? {
                let store = Store::open(&store)?;
                let opts = distribute::Options { progress, threads: stage.threads };
                let m = distribute::merge(&plan, &store, workers, opts)?;
                if stage.json {
                    outln!(
                        "{}",
                        serde_json::json!({ "manifest": plan.run_dir.join("manifest.json"), "id": m.id, "store": store.url() })
                    );
                } else {
                    outln!("{}", manifest::show(&m));
                    outln!(
                        "manifest: {} and {}/manifest.json",
                        plan.run_dir.join("manifest.json").display(),
                        store.url()
                    );
                }
            }
        }
        ManifestCommand::Build(args) => {
            if let Some(plan) = plan(&args)? {
                let m = lightgen::pipeline::manifest::build(&plan)?;
                out!("{}", manifest::show(&m));
            }
        }
        ManifestCommand::Show { manifest: path, json } => {
            let m = manifest::verify(&path)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                out!("{}", manifest::show(&m));
            }
        }
        ManifestCommand::Subset { manifest: path, name, count, fraction, strategy, filters, per, seed } => {
            use lightgen::pipeline::subset::{self, Rule};
            if let Some(f) = fraction {
                anyhow::ensure!(f > 0.0 && f <= 1.0, "--fraction {f}: expected more than 0 and at most 1");
            }
            if let Some(p) = &per {
                anyhow::ensure!(p == "family" || p.starts_with("slot:"), "--per {p}: expected family or slot:<name>");
            }
            let parent = manifest::verify(&path)?;
            let filters = filters.iter().map(|f| Rule::parse_filter(f)).collect::<Result<Vec<_>, _>>()?;
            let rule = Rule { count, fraction, strategy, filters, only_allowed: false, stratum: per, seed };
            let rows = subset::select(&path, &parent, &rule)?;
            let (out, m) = lightgen::pipeline::manifest::write_subset(&path, &parent, &name, &rule.describe(), &rows)?;
            out!("{}", manifest::show(&m));
            outln!(
                "subset    of {} by {}
    manifest: {}",
                &parent.id[..12],
                rule.describe(),
                out.display()
            );
        }
        ManifestCommand::Diff { a, b } => {
            let (ma, mb) = (manifest::load(&a)?, manifest::load(&b)?);
            let changes = manifest::diff(&ma, &mb);
            if changes.is_empty() {
                outln!("identical: both are {}", ma.id);
            } else {
                outln!("{} → {}: {} differences", &ma.id[..12], &mb.id[..12], changes.len());
                for c in changes {
                    outln!("  {c}");
                }
            }
        }
        ManifestCommand::Verify { manifest: path } => {
            let m = manifest::verify(&path)?;
            outln!(
                "ok        {} ({} shards, {} rows): schema, id, sizes, hashes and rows all match",
                path.display(),
                m.shards.len(),
                m.shards.iter().map(|s| s.rows).sum::<u64>()
            );
        }
    }
    Ok(())
}

/// `lightgen report …`.
pub fn report_cmd(command: ReportCommand) -> Result<()> {
    match command {
        ReportCommand::Prompts { run, json } => {
            let (report, out) = prompts::run(&run)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", prompts::table(&report));
                outln!("written: {}/prompts.json, {}/prompts_coverage.png", out.display(), out.display());
            }
        }
        ReportCommand::Curate { run, json } => {
            let (report, out) = curate_report::run(&run)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", curate_report::table(&report));
                outln!("written: {}/curate.json, curate_scores.png, curate_borderline.png", out.display());
            }
        }
        ReportCommand::Generate { run, json } => {
            let (report, out) = generate_report::run(&run)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", generate_report::table(&report));
                outln!("written: {}/generate.json, {}/generate_grid.png", out.display(), out.display());
            }
        }
    }
    Ok(())
}

/// `lightgen taxonomy`.
pub fn taxonomy_cmd(taxonomy: String, json: bool) -> Result<()> {
    let tax = Taxonomy::load(&taxonomy, Path::new("."))?;
    describe_taxonomy(&tax, json)?;
    Ok(())
}

/// `lightgen serve`.
pub fn serve_cmd(
    config: PathBuf,
    addr: std::net::SocketAddr,
    queue: usize,
    workers: usize,
    chaos: f64,
    chaos_seed: u64,
    chaos_delay_ms: u64,
) -> Result<()> {
    let plan = Plan::load(&config, &Default::default())?;
    let gen = plan.config.generate.as_ref().ok_or_else(|| {
        anyhow::anyhow!("{}: no [generate] section: serve needs one to know its teacher", config.display())
    })?;
    if !(0.0..=1.0).contains(&chaos) || queue == 0 {
        anyhow::bail!("--chaos must be 0 to 1 and --queue at least 1");
    }
    let opts = lightgen::serve::ServeOptions {
        addr,
        queue,
        workers,
        default_size: gen.resolution,
        chaos: (chaos > 0.0).then_some((chaos, chaos_seed, chaos_delay_ms)),
    };
    lightgen::serve::run(gen, &opts)?;
    Ok(())
}

/// `lightgen distill`: a worker of a distributed run, or the whole chain here.
pub fn distill_cmd(a: DistillArgs, progress: bool) -> Result<()> {
    let DistillArgs { stage: args, store, worker, workers, allow_empty } = a;
    // the scheduler's variables matter only for a run with a store
    let w = match (&worker, &store) {
        (Some(spec), _) => Some(Worker::parse(spec)?),
        (None, Some(_)) => Worker::from_env(|k| std::env::var(k).ok(), workers)?,
        (None, None) => None,
    };
    match (&store, w) {
        (Some(url), Some(w)) => {
            if let Some(plan) = plan(&args)? {
                let store = std::sync::Arc::new(Store::open(url)?);
                let opts = distribute::Options { progress, threads: args.threads };
                let s = distribute::run_worker(&plan, &store, w, opts)?;
                if args.json {
                    outln!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    outln!(
                        "worker {}: parts {}..{} → {} ({} made, {} were published before) in {:.1}s",
                        s.worker,
                        s.parts.0,
                        s.parts.1,
                        s.store,
                        s.parts_made,
                        s.parts_published_before,
                        s.seconds
                    );
                    outln!(
                        "when every worker is done: lightgen manifest merge -c {} --store {}",
                        args.config.display(),
                        s.store
                    );
                }
            }
            return Ok(());
        }
        (None, Some(w)) => anyhow::bail!(
            "worker {w}: a worker needs --store (s3://bucket/prefix, or a directory every worker can reach)"
        ),
        (Some(_), None) => anyhow::bail!(
            "--store needs --worker I/N (or SLURM_ARRAY_TASK_ID, or JOB_COMPLETION_INDEX with --workers N)"
        ),
        (None, None) => {}
    }
    let Some(plan) = plan(&args)? else { return Ok(()) };
    let json = args.json;
    let opts = DistillOptions { force: args.force, progress, threads: args.threads };
    let mut reports = None;
    // Each stage's summary and report as it finishes; the reports are drawn here, not by
    // the pipeline.
    distill(&plan, &opts, |stage| {
        match stage {
            Stage::Expanded(s) => {
                print_expand(s, json);
                let (report, out) = prompts::run(&plan.run_dir)?;
                if !json {
                    outln!("\n{}", prompts::table(&report));
                }
                reports = Some(out);
            }
            Stage::Generated(s) => {
                print_generate(s, json);
                let (report, _) = generate_report::run(&plan.run_dir)?;
                if !json {
                    outln!("\n{}", generate_report::table(&report));
                }
                if s.ok == 0 && s.samples > 0 && !allow_empty {
                    let mut reasons: Vec<(&String, &u64)> = report.errors.iter().collect();
                    reasons.sort_by(|a, b| b.1.cmp(a.1));
                    let lines: Vec<String> = reasons.iter().map(|(e, n)| format!("  {n} × {e}")).collect();
                    return Err(lightgen::error::Error::invalid(
                        "distill",
                        format!(
                            "the teacher made no image: all {} samples failed, so there is nothing to curate or \
                             train on. Reasons:\n{}\nFix the teacher and rerun the same command (the failed samples \
                             are retried), or pass --allow-empty to publish the empty run anyway.",
                            s.samples,
                            lines.join("\n")
                        ),
                    ));
                }
            }
            Stage::Curated(s) => {
                print_curate(s, json);
                let (report, _) = curate_report::run(&plan.run_dir)?;
                if !json {
                    outln!("\n{}", curate_report::table(&report));
                }
            }
            Stage::Encoded(s) => print_encode(s, json),
            Stage::Manifest(m) if json => {
                outln!("{}", serde_json::json!({ "manifest": plan.run_dir.join("manifest.json"), "id": m.id }))
            }
            Stage::Manifest(m) => {
                outln!("\n{}", manifest::show(m));
                outln!("manifest: {}", plan.run_dir.join("manifest.json").display());
            }
        }
        Ok(())
    })?;
    if let (false, Some(out)) = (json, reports) {
        outln!("reports: {}", out.display());
    }
    Ok(())
}

/// Resolves the plan; `None` when `--show-config` printed it.
pub fn plan(args: &StageArgs) -> Result<Option<Plan>> {
    let overrides = Overrides { count: args.count, output_dir: args.output_dir.clone() };
    let plan = Plan::load(&args.config, &overrides)?;
    if args.show_config {
        out!("{}", plan.show());
        return Ok(None);
    }
    lightgen::pipeline::lock::acquire(&plan.run_dir, args.wait)?;
    Ok(Some(plan))
}
