//! The command line (clap derive). Doc comments are the help text. Flags here are runtime
//! choices only; what changes the data lives in the run config.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
        /// tiny, small, base, large (a training config preset).
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

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The manifest to train on, e.g. runs/shapes/manifest.json.
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// A training config (TOML, e.g. configs/train-tiny.toml).
    #[arg(short, long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A built-in training config: tiny, small, base, large.
    #[arg(long)]
    pub preset: Option<String>,
    /// Output folder (checkpoints/, metrics.jsonl, loss.png, samples/).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Continue from the latest checkpoint in --out (same manifest; the checkpoint's
    /// architecture and optimisation, this config's step count).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps in all (resume later to go on).
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// Override train.steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// cpu, or cuda[:N] (libtorch must see a GPU: `lightgen doctor`). Under torchrun, Slurm
    /// or --nproc, `cuda` means each rank's own GPU (its LOCAL_RANK).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data-parallel on this machine: start N ranks of this command (c10d/Gloo on loopback).
    /// Jobs on many machines are launched by torchrun or srun instead (RANK, WORLD_SIZE, … or
    /// SLURM_PROCID, SLURM_NTASKS, … are read from the environment).
    #[arg(long)]
    pub nproc: Option<usize>,
    /// How long a rank waits for the others (rendezvous and each collective) before failing.
    #[arg(long, default_value_t = 600)]
    pub dist_timeout: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// A checkpoint folder, or a training folder (its latest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The manifest the model was trained on (for its text encoder and image tokenizer).
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// A prompt (repeatable).
    #[arg(short, long)]
    pub prompt: Vec<String>,
    /// A file of prompts, one per line.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Images per prompt.
    #[arg(short, long, default_value_t = 1)]
    pub n: usize,
    /// Output folder: 00000.png … and grid.png.
    #[arg(short, long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub flags: SampleFlags,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per model call.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// The VAE export to decode with (default: the path in the manifest's lineage).
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// The T5 export to encode prompts with (default: the path in the manifest's lineage).
    #[arg(long)]
    pub t5: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint folder, or a training folder (its latest checkpoint).
    #[arg(long, required_unless_present = "compare")]
    pub checkpoint: Option<PathBuf>,
    /// The manifest the model was trained on (held-out prompts, text encoder, tokenizer).
    #[arg(short, long, required_unless_present = "compare")]
    pub manifest: Option<PathBuf>,
    /// Compare two eval.json reports (A B) per task instead of evaluating.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Prompts in GenEval's evaluation_metadata.jsonl form instead of the held-out split.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Evaluate only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Images per prompt.
    #[arg(short, long, default_value_t = 4)]
    pub n: usize,
    /// Output folder (eval.json, eval.md, judgements.jsonl, failures-<task>.png).
    #[arg(short, long, required_unless_present = "compare")]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per model call.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub flags: SampleFlags,
    /// `shapes`: judge with the shapes analyzer (eval.json, eval.md, grids). `geneval`: also
    /// write GenEval's folder layout (`<out>/00000/metadata.jsonl`, `samples/0000.png` …) for
    /// its official evaluator; a run that is not the shapes world is then written, not judged.
    #[arg(long, default_value = "shapes", value_parser = ["shapes", "geneval"])]
    pub format: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// A checkpoint folder, or a training folder (its latest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The manifest the model was trained on (the samples come from its training split).
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// Training samples in the probe batch.
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InpaintArgs {
    /// A checkpoint folder (checkpoints/step-N) or a training --out folder (its latest).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The manifest the student was trained on (its tokenizer and text encoder).
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// The image to edit (centre-cropped to the model's resolution).
    #[arg(long, required_unless_present = "check")]
    pub image: Option<PathBuf>,
    /// A mask the size of the image: white (> 127) = repaint, black = keep.
    #[arg(long, required_unless_present = "check")]
    pub mask: Option<PathBuf>,
    /// What the whole image should show after the edit.
    #[arg(long, required_unless_present = "check")]
    pub prompt: Option<String>,
    /// Output folder: inpaint-NN.png, grid.png, inpaint.json.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Results to draw.
    #[arg(short, long, default_value_t = 4)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the decoded pixels outside the mask as the model drew them, not the original ones.
    #[arg(long)]
    pub no_paste_back: bool,
    /// Recolouring check: N held-out two-object scenes, one object masked, a new colour named.
    #[arg(long)]
    pub check: Option<usize>,
    /// Pixels added around the masked object's box in --check.
    #[arg(long, default_value_t = 2)]
    pub margin: u32,
    #[command(flatten)]
    pub flags: SampleFlags,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DpoArgs {
    /// The base checkpoint (a checkpoint folder, or a training --out folder: its latest).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The manifest the base was trained on: winners are its training samples.
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// Output folder: pairs/, checkpoints/, metrics.jsonl, eval-base/, eval-dpo/, compare.md.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Candidate prompts (training samples) to build pairs from.
    #[arg(long, default_value_t = 256)]
    pub pairs: usize,
    /// Keep only pairs whose loser the shapes analyzer rejects.
    #[arg(long)]
    pub loser_must_fail: bool,
    /// Pairs per stored part (the unit a rerun skips or redoes).
    #[arg(long, default_value_t = 64)]
    pub part_size: usize,
    /// β of the DPO loss (Diffusion-DPO uses 5000 for per-pixel SD latents).
    #[arg(long, default_value_t = 1000.0)]
    pub beta: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 150)]
    pub steps: u64,
    /// Pairs per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per held-out prompt in the before/after eval.
    #[arg(long, default_value_t = 4)]
    pub eval_n: usize,
    /// Skip the before/after eval.
    #[arg(long)]
    pub no_eval: bool,
    /// Data-parallel on this machine: N ranks (as `train --nproc`); torchrun and Slurm jobs
    /// are read from the environment.
    #[arg(long)]
    pub nproc: Option<usize>,
    /// How long a rank waits for the others before failing.
    #[arg(long, default_value_t = 600)]
    pub dist_timeout: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Diversity vs volume (the paper's Fig. 6): subsets at several volume fractions, random
    /// or coverage-first, and a narrow corpus of the smallest size; the same training budget
    /// for each; study.md, study.json and study.png (score vs images, a line per strategy).
    DiversityVsVolume(StudyArgs),
}

#[derive(Debug, Args)]
pub struct StudyArgs {
    /// The parent manifest (its run's expand/ must be beside it, for slot values).
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// Output folder: one folder per arm (train/, eval/), study.md, study.json, study.png.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Training preset for every arm.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Or a training config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Training steps of every arm (the shared compute budget); the preset's if left out.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Volume fractions, comma-separated. Coverage-first differs from random only while a
    /// random draw of that size still misses slot values or pairs (small fractions).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.25,1")]
    pub fractions: Vec<f64>,
    /// Share of the shape and colour values the narrow arm may draw from.
    #[arg(long, default_value_t = 0.5)]
    pub narrow_share: f64,
    /// Images per held-out prompt in each arm's eval.
    #[arg(long, default_value_t = 2)]
    pub eval_n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

/// Which weights, how to sample and where: shared by `sample`, `eval` and `inpaint`.
#[derive(Debug, Args)]
pub struct SampleFlags {
    /// Use the raw weights instead of the EMA.
    #[arg(long)]
    pub no_ema: bool,
    /// Masked-AR steps (default: the training config's [sample]).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale.
    #[arg(long)]
    pub cfg: Option<f64>,
    /// constant or linear.
    #[arg(long)]
    pub cfg_schedule: Option<String>,
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Diffusion steps of the head.
    #[arg(long)]
    pub diffusion_steps: Option<usize>,
    /// Clamp the head's predicted x0 to ±R (0 = off).
    #[arg(long)]
    pub clip_x0: Option<f64>,
    /// cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl Default for SampleFlags {
    fn default() -> Self {
        SampleFlags {
            no_ema: false,
            steps: None,
            cfg: None,
            cfg_schedule: None,
            temperature: None,
            diffusion_steps: None,
            clip_x0: None,
            device: "cpu".into(),
        }
    }
}
