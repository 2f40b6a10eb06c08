//! The command line (clap derive). Doc comments are the help text. Flags here are runtime
//! choices only; what changes the data lives in the run config.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod student;
pub use student::*;

/// Distill a teacher text-to-image model into a compact synthetic corpus and train a
/// LightGen student on it.
#[derive(Debug, Parser)]
#[command(name = "lightgen", version, max_term_width = 100)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Expand a prompt taxonomy into diverse, deduplicated prompts (runs/<name>/expand).
    Expand(StageArgs),
    /// Render every prompt with the configured teacher (runs/<name>/generate).
    Generate(StageArgs),
    /// Remove duplicates and filter by prompt–image score; every sample gets a decision
    /// (runs/<name>/curate).
    Curate(StageArgs),
    /// Crop and tokenize kept images into shards, prompts into text features (runs/<name>/encode).
    Encode(StageArgs),
    /// expand → generate → curate → encode → manifest, resumable end to end, with reports.
    /// With --worker I/N and --store, one worker's share of a multi-machine run.
    Distill(DistillArgs),
    /// Dataset manifests: build, show, verify.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Reports over a run folder, as a table, JSON and PNG.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Check a taxonomy file and print its slots, templates and capacity.
    Taxonomy {
        /// A taxonomy file, or builtin:shapes|geneval|general.
        taxonomy: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the config's teacher over the OpenAI images protocol (POST /v1/images/generations,
    /// b64_json), with a bounded queue and GET /health; point `teacher = "http"` at it.
    Serve {
        /// A run config whose [generate] section names the teacher.
        #[arg(short, long)]
        config: PathBuf,
        /// Address to listen on (port 0 picks a free one; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Requests waiting or running at once; more are answered 429 with Retry-After.
        #[arg(long, default_value_t = 64)]
        queue: usize,
        /// Requests the teacher works on at once (0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Testing: this share of answers goes wrong (429, 500, slow, truncated base64, wrong
        /// size, dropped connection), reproducibly from --chaos-seed.
        #[arg(long, default_value_t = 0.0)]
        chaos: f64,
        /// Seed of the injected faults.
        #[arg(long, default_value_t = 0)]
        chaos_seed: u64,
        /// How late a slow answer comes, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        chaos_delay_ms: u64,
    },
    /// Train the LightGen student on a manifest (checkpoints, metrics.jsonl, loss.png and
    /// sample grids in --out); verifies the manifest first.
    Train(TrainArgs),
    /// Sample images from a trained checkpoint (EMA weights unless --no-ema).
    Sample(SampleArgs),
    /// GenEval-style evaluation of a checkpoint on the manifest's held-out prompts (or a GenEval
    /// evaluation_metadata.jsonl), judged by the shapes analyzer: per-task and overall scores.
    Eval(EvalArgs),
    /// Does a checkpoint use its caption and its visible tokens? How much z moves when the
    /// caption changes, and the eps-MSE by timestep band with and without the caption and
    /// with all tokens masked or a quarter visible, on a seeded batch of training samples.
    Probe(ProbeArgs),
    /// Zero-shot inpainting: repaint the masked part of an image for a prompt, the rest kept
    /// (known tokens fixed; with paste-back, known pixels exact). --check N runs the recolouring
    /// check on N held-out two-object scenes instead.
    Inpaint(InpaintArgs),
    /// Diffusion-DPO post-training: pairs of (teacher image that passed curation, the
    /// student's own sample) per caption, built once (resumable); a new checkpoint whose
    /// lineage names the base and the pair set; an eval table before/after.
    Dpo(DpoArgs),
    /// Studies that train several students and compare them.
    #[command(subcommand)]
    Study(StudyCommand),
    /// The main job on the embedded default: distill the shapes world (configs/shapes-demo.toml),
    /// train the tiny student (configs/train-tiny.toml), evaluate it on the held-out prompts.
    /// Rerunning resumes whatever is unfinished.
    Demo {
        /// Images per held-out prompt in the evaluation.
        #[arg(short, long, default_value_t = 2)]
        n: usize,
        /// Override train.steps of the tiny config.
        #[arg(long)]
        steps: Option<u64>,
    },
    /// Training throughput on random latents and T5-sized features (no data needed): tokens/s
    /// and ms/step for a preset, e.g. `--preset base --device cuda` (scripts/gpu-check.sh).
    TrainCheck {
        /// tiny, small, base, large, gpu (a training config preset).
        #[arg(long, default_value = "base")]
        preset: String,
        #[arg(long, default_value_t = 300)]
        steps: u64,
        /// Batch size (default: the preset's).
        #[arg(long)]
        batch: Option<usize>,
        /// Token grid side (16 = 256 px with an SD3.5 VAE and patch 2).
        #[arg(long, default_value_t = 16)]
        grid: usize,
        /// cpu, or cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: String,
        /// auto (bf16 on CUDA, f32 on CPU), f32 or bf16.
        #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "bf16"])]
        precision: String,
    },
    /// What this build can do here: version, commit, cores, teachers, scorers, tokenizers.
    Doctor,
    /// Write the JSON Schemas of the run config and taxonomy formats.
    Schema {
        /// Folder to write them to.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct StageArgs {
    /// The run config (TOML), e.g. configs/shapes.toml.
    #[arg(short, long)]
    pub config: PathBuf,
    /// Override prompts.count (recorded in the run's resolved config).
    #[arg(long)]
    pub count: Option<u64>,
    /// Override run.output_dir.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub show_config: bool,
    /// Discard stage folders written by a different config instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for image stages (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// If another lightgen run holds the run folder, wait for it instead of exiting.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Run folder in storage shared by all workers: s3://bucket/prefix, gs://…, az://… or a
    /// directory (credentials from the usual environment variables). The local run folder
    /// is then a disposable scratch copy.
    #[arg(long)]
    pub store: Option<String>,
    /// Be worker I of N (0-based) and make only its share of the parts; without it, read
    /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX (with --workers).
    #[arg(long, conflicts_with = "workers")]
    pub worker: Option<String>,
    /// Number of workers, for JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Go on to curate, encode and publish even when the teacher made no image at all
    /// (otherwise such a run stops with the failure reasons counted and exits non-zero).
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// The run folder in storage the workers wrote to.
    #[arg(long)]
    pub store: String,
    /// How many workers the run had (to name the ones to rerun); read from their markers if
    /// left out.
    #[arg(long)]
    pub workers: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Write runs/<name>/manifest.json for a run whose data stages are done.
    Build(StageArgs),
    /// Finish a multi-worker run: check that every worker's parts are in --store (naming the
    /// workers to rerun if not), then curate, encode and build the manifest, here and in
    /// the store.
    Merge(MergeArgs),
    /// A readable summary of a manifest.
    Show {
        /// The manifest, e.g. runs/shapes/manifest.json.
        manifest: PathBuf,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A new manifest over some of a manifest's samples (no data copied): by count or
    /// fraction, per stratum, filtered on family or slot values, at random or coverage-first.
    Subset {
        /// The parent manifest.
        manifest: PathBuf,
        /// Name of the subset: writes manifest-<name>.json and subsets/<name>/ beside the parent.
        #[arg(long)]
        name: String,
        /// How many samples (per stratum with --per).
        #[arg(long, conflicts_with = "fraction")]
        count: Option<u64>,
        /// Which share of the samples (per stratum with --per).
        #[arg(long)]
        fraction: Option<f64>,
        /// random, or coverage: every slot value and value pair first.
        #[arg(long, default_value = "random")]
        strategy: lightgen::pipeline::subset::Strategy,
        /// Keep samples whose family or slot has one of the values: family=counting,
        /// slot:color=red,blue (repeatable; all must hold).
        #[arg(long = "where")]
        filters: Vec<String>,
        /// Apply the count or fraction within each stratum: family or slot:<name>.
        #[arg(long)]
        per: Option<String>,
        /// Seed for the random draw.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// What changed from manifest A to B: lineage, counts, specs, shards.
    Diff { a: PathBuf, b: PathBuf },
    /// Check schema, id, every shard's size, hash and rows; exit non-zero on any mismatch.
    Verify {
        /// The manifest, e.g. runs/shapes/manifest.json.
        manifest: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Diversity of the expanded prompts: slot coverage and entropy, pair coverage, distinct-n.
    Prompts {
        /// The run folder, e.g. runs/shapes.
        run: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Curation: counts per reason, pass rates per family and slot value, share changes, score
    /// histograms, borderline images and, for the shapes world, precision and recall.
    Curate {
        /// The run folder, e.g. runs/shapes.
        run: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the teacher made; for the shapes world, the analyzer's precision and recall
    /// against the teacher's ground-truth record, and an image grid.
    Generate {
        /// The run folder, e.g. runs/shapes.
        run: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}
