//! Thin: parse the command line, resolve config, dispatch, map errors to exit codes.

/// `println!` for what the binary prints: a closed stdout (`lightgen … | head -2`) is not a
/// crash. Writes after the reader has gone are dropped and the work goes on, so every stage
/// still finishes (or a kill leaves it resumable) and the process exits as it would have.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` with the same rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod cli;
mod commands;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command, DistillArgs, ManifestCommand, MergeArgs, ReportCommand, StageArgs};
use lightgen::config::{Overrides, Plan};
use lightgen::formats::manifest;
use lightgen::pipeline::curate::{self, CurateOptions, CurateSummary};
use lightgen::pipeline::distribute;
use lightgen::pipeline::encode::{self, EncodeOptions, EncodeSummary};
use lightgen::pipeline::expand::{self, ExpandOptions, ExpandSummary};
use lightgen::pipeline::generate::{self, GenerateOptions, GenerateSummary};
use lightgen::pipeline::worker::Worker;
use lightgen::report::{curate as curate_report, generate as generate_report, prompts};
use lightgen::store::Store;
use lightgen::taxonomy::Taxonomy;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let progress = !cli.quiet;
    match run(cli.command, progress) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, one line each; a cause that its message already quotes
            // (`path: {source}`) is not printed twice.
            let mut last = e.to_string();
            eprintln!("error: {last}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !last.contains(&c) {
                    eprintln!("  caused by: {c}");
                }
                last = c;
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, progress: bool) -> Result<()> {
    match command {
        Command::Expand(args) => {
            if let Some(plan) = plan(&args)? {
                let summary = expand::run(&plan, &ExpandOptions { force: args.force, progress })?;
                print_expand(&summary, args.json);
            }
        }
        Command::Generate(args) => {
            if let Some(plan) = plan(&args)? {
                let opts = GenerateOptions { force: args.force, progress, threads: args.threads, share: None };
                print_generate(&generate::run(&plan, &opts)?, args.json);
            }
        }
        Command::Curate(args) => {
            if let Some(plan) = plan(&args)? {
                let opts = CurateOptions { force: args.force, progress, threads: args.threads, share: None };
                print_curate(&curate::run(&plan, &opts)?, args.json);
            }
        }
        Command::Encode(args) => {
            if let Some(plan) = plan(&args)? {
                let opts = EncodeOptions { force: args.force, progress, threads: args.threads };
                print_encode(&encode::run(&plan, &opts)?, args.json);
            }
        }
        Command::Manifest(ManifestCommand::Merge(MergeArgs { stage, store, workers })) => {
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
        Command::Manifest(ManifestCommand::Build(args)) => {
            if let Some(plan) = plan(&args)? {
                let m = lightgen::pipeline::manifest::build(&plan)?;
                out!("{}", manifest::show(&m));
            }
        }
        Command::Manifest(ManifestCommand::Show { manifest: path, json }) => {
            let m = manifest::verify(&path)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                out!("{}", manifest::show(&m));
            }
        }
        Command::Manifest(ManifestCommand::Subset {
            manifest: path,
            name,
            count,
            fraction,
            strategy,
            filters,
            per,
            seed,
        }) => {
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
        Command::Manifest(ManifestCommand::Diff { a, b }) => {
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
        Command::Manifest(ManifestCommand::Verify { manifest: path }) => {
            let m = manifest::verify(&path)?;
            outln!(
                "ok        {} ({} shards, {} rows): schema, id, sizes, hashes and rows all match",
                path.display(),
                m.shards.len(),
                m.shards.iter().map(|s| s.rows).sum::<u64>()
            );
        }
        Command::Distill(DistillArgs { stage: args, store, worker, workers, allow_empty }) => {
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
            if let Some(plan) = plan(&args)? {
                let summary = expand::run(&plan, &ExpandOptions { force: args.force, progress })?;
                print_expand(&summary, args.json);
                let (report, out) = prompts::run(&plan.run_dir)?;
                if !args.json {
                    outln!("\n{}", prompts::table(&report));
                }
                if plan.config.generate.is_some() {
                    let opts = GenerateOptions { force: args.force, progress, threads: args.threads, share: None };
                    let summary = generate::run(&plan, &opts)?;
                    print_generate(&summary, args.json);
                    let (report, _) = generate_report::run(&plan.run_dir)?;
                    if !args.json {
                        outln!("\n{}", generate_report::table(&report));
                    }
                    if summary.ok == 0 && summary.samples > 0 && !allow_empty {
                        let mut reasons: Vec<(&String, &u64)> = report.errors.iter().collect();
                        reasons.sort_by(|a, b| b.1.cmp(a.1));
                        let lines: Vec<String> = reasons.iter().map(|(e, n)| format!("  {n} × {e}")).collect();
                        anyhow::bail!(
                            "the teacher made no image: all {} samples failed, so there is nothing to curate or \
                             train on. Reasons:\n{}\nFix the teacher and rerun the same command (the failed samples \
                             are retried), or pass --allow-empty to publish the empty run anyway.",
                            summary.samples,
                            lines.join("\n")
                        );
                    }
                    if plan.config.curate.is_some() {
                        let opts = CurateOptions { force: args.force, progress, threads: args.threads, share: None };
                        print_curate(&curate::run(&plan, &opts)?, args.json);
                        let (report, _) = curate_report::run(&plan.run_dir)?;
                        if !args.json {
                            outln!("\n{}", curate_report::table(&report));
                        }
                        if plan.config.encode.is_some() {
                            let opts = EncodeOptions { force: args.force, progress, threads: args.threads };
                            print_encode(&encode::run(&plan, &opts)?, args.json);
                            let m = lightgen::pipeline::manifest::build(&plan)?;
                            if args.json {
                                outln!(
                                    "{}",
                                    serde_json::json!({ "manifest": plan.run_dir.join("manifest.json"), "id": m.id })
                                );
                            } else {
                                outln!("\n{}", manifest::show(&m));
                                outln!("manifest: {}", plan.run_dir.join("manifest.json").display());
                            }
                        }
                    }
                }
                if !args.json {
                    outln!("reports: {}", out.display());
                }
            }
        }
        Command::Report(ReportCommand::Prompts { run, json }) => {
            let (report, out) = prompts::run(&run)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", prompts::table(&report));
                outln!("written: {}/prompts.json, {}/prompts_coverage.png", out.display(), out.display());
            }
        }
        Command::Report(ReportCommand::Curate { run, json }) => {
            let (report, out) = curate_report::run(&run)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", curate_report::table(&report));
                outln!("written: {}/curate.json, curate_scores.png, curate_borderline.png", out.display());
            }
        }
        Command::Report(ReportCommand::Generate { run, json }) => {
            let (report, out) = generate_report::run(&run)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", generate_report::table(&report));
                outln!("written: {}/generate.json, {}/generate_grid.png", out.display(), out.display());
            }
        }
        Command::Taxonomy { taxonomy, json } => {
            let tax = Taxonomy::load(&taxonomy, Path::new("."))?;
            describe_taxonomy(&tax, json)?;
        }
        Command::Serve { config, addr, queue, workers, chaos, chaos_seed, chaos_delay_ms } => {
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
        }
        Command::Train(a) => commands::train::train_cmd(a, progress)?,
        Command::Sample(a) => commands::sample::sample_cmd(a, progress)?,
        Command::Eval(a) => commands::sample::eval_cmd(a, progress)?,
        Command::Probe(a) => {
            let r = lightgen::student::probe::run(&a.checkpoint, &a.manifest, a.samples, a.seed, &a.device)?;
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                out!("{}", r.markdown());
            }
        }
        Command::Inpaint(a) => commands::sample::inpaint_cmd(a, progress)?,
        Command::Dpo(a) => commands::dpo::dpo_cmd(a, progress)?,
        Command::Study(cli::StudyCommand::DiversityVsVolume(a)) => commands::study::study_cmd(a, progress)?,
        Command::Demo { n, steps } => {
            let t0 = std::time::Instant::now();
            let config = Path::new("configs/shapes-demo.toml").to_path_buf();
            anyhow::ensure!(config.exists(), "{}: run `lightgen demo` from the repository root", config.display());
            let stage = StageArgs {
                config,
                count: None,
                output_dir: None,
                show_config: false,
                force: false,
                json: false,
                threads: 0,
                wait: false,
            };
            let plan = Plan::load(&stage.config, &Overrides { count: None, output_dir: None })?;
            let run_dir = plan.run_dir.clone();
            let distill = DistillArgs { stage, store: None, worker: None, workers: None, allow_empty: false };
            run(Command::Distill(distill), progress)?;
            commands::train::demo_rest(&run_dir, n, steps, progress, t0)?;
        }
        Command::TrainCheck { preset, steps, batch, grid, device, precision } => {
            commands::train::train_check(&preset, steps, batch, grid, &device, &precision)?
        }
        Command::Doctor => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            outln!("lightgen  {} ({})", lightgen::VERSION, env!("LIGHTGEN_GIT_COMMIT"));
            outln!("cores     {cores} (image stages use one worker each unless --threads)");
            outln!("teachers  {}", lightgen::config::TEACHERS.join(", "));
            outln!("scorers   {}", lightgen::config::SCORERS.join(", "));
            outln!("tokenizer pixels; text encoder vocab");
            let builtins: Vec<String> =
                lightgen::taxonomy::BUILTIN.iter().map(|(n, _)| format!("builtin:{n}")).collect();
            outln!("taxonomies {}", builtins.join(", "));
            let cuda = lightgen::student::train::load_cuda_backend();
            outln!(
                "libtorch  {} from {}; {} threads; CUDA {}{}; CPU bf16 matmuls {}",
                env!("LIGHTGEN_LIBTORCH_VERSION"),
                env!("LIGHTGEN_LIBTORCH_PATH"),
                tch::get_num_threads(),
                if tch::Cuda::is_available() {
                    format!("yes ({} devices, cuDNN {})", tch::Cuda::device_count(), tch::utils::version_cudnn())
                } else {
                    format!("no ({})", cuda.err().unwrap_or_else(|| "no driver or no GPU".into()))
                },
                if tch::Cuda::is_available() { ", bf16 autocast" } else { "" },
                if std::arch::is_x86_feature_detected!("avx512bf16") {
                    "native (AVX-512 BF16)"
                } else {
                    "without native support (no AVX-512 BF16)"
                }
            );
            match lightgen::onnx::runtime::get(None) {
                Ok(rt) => outln!(
                    "onnx      ONNX Runtime {} from {}; execution providers: {}",
                    rt.version,
                    rt.library.display(),
                    rt.providers.join(", ")
                ),
                Err(e) => outln!("onnx      unavailable: {e}"),
            }
        }
        Command::Schema { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, text) in lightgen::schema::all() {
                let path = out.join(name);
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                outln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// Resolves the plan; `None` when `--show-config` printed it.
fn plan(args: &StageArgs) -> Result<Option<Plan>> {
    let overrides = Overrides { count: args.count, output_dir: args.output_dir.clone() };
    let plan = Plan::load(&args.config, &overrides)?;
    if args.show_config {
        out!("{}", plan.show());
        return Ok(None);
    }
    lightgen::pipeline::lock::acquire(&plan.run_dir, args.wait)?;
    Ok(Some(plan))
}

fn print_expand(s: &ExpandSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "expand    {} prompts in {} parts ({} reused) in {:.1}s → {}/expand",
        s.produced,
        s.parts,
        s.parts_reused,
        s.seconds,
        s.run_dir
    );
    outln!("taxonomy  {}, capacity {:.0} distinct prompts", s.taxonomy, s.capacity);
    if s.capped {
        outln!("note      asked for {}, the taxonomy can produce only {}: stopped there", s.requested, s.produced);
    }
    let fams: Vec<String> = s.per_family.iter().map(|(k, v)| format!("{k} {v}")).collect();
    outln!("families  {}", fams.join(", "));
    outln!("dropped   {} duplicate draws", s.duplicates_dropped);
}

fn print_encode(s: &EncodeSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "encode    {} kept → {} training samples in {} shards ({} reused); {} prompts ({} samples) held out; {:.1}s ({:.0} images/s) → {}/encode",
        s.kept, s.train_samples, s.shards, s.shards_reused, s.held_out_prompts, s.held_out_samples, s.seconds, s.images_per_second, s.run_dir
    );
}

fn print_curate(s: &CurateSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "curate    {} samples: {} kept, {} rejected, scored by {} in {:.1}s ({:.0} images/s measured) → {}/curate",
        s.samples,
        s.kept,
        s.rejected,
        s.scorer,
        s.seconds,
        s.images_per_second,
        s.run_dir
    );
    let reasons: Vec<String> = s.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    outln!("reasons   {}", reasons.join(", "));
}

fn print_generate(s: &GenerateSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "generate  {} images of {} prompts ({} ok, {} failed) by {} in {:.1}s → {}/generate",
        s.samples,
        s.prompts,
        s.ok,
        s.failed,
        s.teacher,
        s.seconds,
        s.run_dir
    );
    outln!(
        "parts     {} ({} reused, {} repaired); made {} images at {:.0} images/s",
        s.parts,
        s.parts_reused,
        s.parts_repaired,
        s.made,
        s.images_per_second
    );
}

fn describe_taxonomy(tax: &Taxonomy, json: bool) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "name": tax.name,
            "version": tax.version,
            "hash": tax.hash,
            "slots": tax.slots.iter().map(|s| serde_json::json!({"name": s.name, "values": s.values.len()})).collect::<Vec<_>>(),
            "templates": tax.templates.iter().map(|t| serde_json::json!({
                "id": t.id, "family": tax.families[t.family].name, "share": t.share, "capacity": t.capacity
            })).collect::<Vec<_>>(),
            "capacity": tax.total_capacity(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let values: usize = tax.slots.iter().map(|s| s.values.len()).sum();
    outln!("taxonomy  {} v{} ({}), {} slots, {} values", tax.name, tax.version, tax.source, tax.slots.len(), values);
    for s in &tax.slots {
        let cats: std::collections::BTreeSet<&str> =
            s.values.iter().map(|v| v.path.split('/').next().unwrap_or("")).collect();
        let cats = cats.into_iter().filter(|c| !c.is_empty()).count();
        outln!(
            "  slot {:<16} {:>4} values{}",
            s.name,
            s.values.len(),
            if cats > 0 { format!(" in {cats} categories") } else { String::new() }
        );
    }
    for t in &tax.templates {
        outln!(
            "  template {:<28} family {:<14} share {:>6.2}%  capacity {:.0}",
            t.id,
            tax.families[t.family].name,
            t.share * 100.0,
            t.capacity
        );
    }
    outln!("capacity  {:.0} distinct prompts", tax.total_capacity());
    Ok(())
}
