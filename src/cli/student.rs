//! The student's command-line arguments: train, sample, eval, probe, inpaint, dpo, study.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The manifest to train on, e.g. runs/shapes/manifest.json.
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// A training config (TOML, e.g. configs/train-tiny.toml).
    #[arg(short, long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A built-in training config: tiny, small, base, large, gpu (configs/train-<name>.toml).
    #[arg(long)]
    pub preset: Option<String>,
    /// Output folder (checkpoints/, metrics.jsonl, loss.png, samples/).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Continue from the latest checkpoint in --out (same manifest; the checkpoint's
    /// architecture and optimisation, this config's step count).
    #[arg(long)]
    pub resume: bool,
    /// Start from this checkpoint's weights and EMA (a checkpoint folder, or a training folder:
    /// its latest), with a fresh optimiser and schedule on this manifest: a curriculum, or
    /// fine-tuning on a new corpus. Its architecture and token/text specs must match.
    #[arg(long, value_name = "CHECKPOINT")]
    pub init_from: Option<PathBuf>,
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
    #[arg(long, required_unless_present_any = ["check", "completion"])]
    pub image: Option<PathBuf>,
    /// A mask the size of the image: white (> 127) = repaint, black = keep.
    #[arg(long, required_unless_present_any = ["check", "completion"])]
    pub mask: Option<PathBuf>,
    /// What the whole image should show after the edit.
    #[arg(long, required_unless_present_any = ["check", "completion"])]
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
    /// Completion curve: N held-out scenes (all families), a share of the tokens under their
    /// objects hidden and repainted for the scene's own prompt, judged by the analyzer.
    #[arg(long, conflicts_with = "check")]
    pub completion: Option<usize>,
    /// What --completion hides: tokens under the objects (finishing and starting objects) or
    /// the background around them (does the student add objects the prompt did not ask for?).
    #[arg(long, value_enum, default_value = "objects")]
    pub hide: lightgen::student::completion::Hide,
    /// Shares of those tokens hidden in --completion (0 = the teacher's image as drawn).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 0.25, 0.5, 1.0])]
    pub fractions: Vec<f64>,
    /// Pixels added around the masked object's box in --check (off-grid corpora; on a corpus
    /// drawn on the token grid the mask is the object's own tokens).
    #[arg(long, default_value_t = 2)]
    pub margin: u32,
    #[command(flatten)]
    pub flags: SampleFlags,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How pairs are made and learned from: shared by `dpo` and `study dpo`.
#[derive(Debug, Args)]
pub struct DpoFlags {
    /// Keep only pairs whose loser the shapes analyzer rejects.
    #[arg(long)]
    pub loser_must_fail: bool,
    /// `teacher`: the teacher's curated image against the student's sample (LightGen's
    /// pairs). `self`: the student's own sample that the shapes analyzer passes against one it
    /// rejects, from --draws samples per prompt (prompts without both give no pair).
    #[arg(long, default_value = "teacher", value_parser = ["teacher", "self"])]
    pub winner: String,
    /// Samples per prompt for --winner self, and for teacher pairs with --same-count.
    #[arg(long, default_value_t = 4)]
    pub draws: usize,
    /// --winner self: prompts whose draws all fail (or all pass) also give a pair when the
    /// analyzer's alignments differ by at least this much (0 = pass against fail only).
    #[arg(long, default_value_t = 0.0)]
    pub margin: f32,
    /// Pair only images in which the analyzer finds the same number of objects. --winner self:
    /// a miss is most often a draw with objects missing, so unmatched pairs teach "draw more".
    /// Teacher pairs: the loser is one of --draws samples with the teacher image's count (the
    /// student draws more objects, so unmatched pairs teach "draw fewer").
    #[arg(long)]
    pub same_count: bool,
    /// Build pairs from training samples of these families only (comma-separated, as the
    /// taxonomy names them, e.g. `counting,position`); default every family.
    #[arg(long, value_delimiter = ',')]
    pub families: Vec<String>,
    /// Pairs per stored part (the unit a rerun skips or redoes).
    #[arg(long, default_value_t = 64)]
    pub part_size: usize,
    /// Weight of the winners' own denoising loss added to the DPO loss: keeps the student
    /// good at the preferred images while it learns the preference. 0 = plain Diffusion-DPO,
    /// which can be met by getting worse at the student's own samples: on the demo student it
    /// left empty backgrounds (overall 0.324 → 0.029). With the defaults: 0.311 → 0.351 over
    /// three eval seeds; 2000 reads the same accuracy, less alignment (docs/student.md, "What
    /// DPO adds").
    #[arg(long, default_value_t = 500.0)]
    pub sft_weight: f64,
    /// Weight of the winners' object tokens in that loss (normalised; 1 = every token alike).
    /// Default: the base's own `train.object_loss_weight` at the end of its training (the
    /// demo's 4), so the anchor keeps the base's prior on how many objects to draw; weighed
    /// alike, it halves the demo student's objects by itself. Pixel tokens only.
    #[arg(long)]
    pub sft_object_weight: Option<f64>,
    /// Weight of object tokens in the DPO term's per-image errors, the winner's and the
    /// loser's each by its own objects (normalised per image; 1 = every token alike). Pixel
    /// tokens only.
    #[arg(long, default_value_t = 1.0)]
    pub dpo_object_weight: f64,
    /// What --sft-weight weighs: `train`, the base's whole training loss on the winners (its
    /// mask ratios, caption drop and read-out terms, draws of its own), so the read-outs that
    /// shaped the base keep holding while DPO moves its weights; `eps`, the winners' eps-MSE on
    /// the DPO term's own masks (mask ratios in [0.7, 1]). On the labelled demo student `train`
    /// read +0.054 / +0.056 / +0.056 overall at DPO seeds 0 / 1 / 2, `eps` +0.061 / +0.025 /
    /// +0.051 (docs/student.md, "DPO anchored by the base's own loss").
    #[arg(long, value_enum, default_value = "train")]
    pub anchor: lightgen::student::train::dpo::Anchor,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// 450: on the demo student 150 gave +0.005 overall and 900 the same as 450
    /// (docs/student.md, "DPO anchored as the base was trained" and "What DPO adds").
    #[arg(long, default_value_t = 450)]
    pub steps: u64,
    /// Pairs per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    #[command(flatten)]
    pub flags: DpoFlags,
    /// β of the DPO loss (Diffusion-DPO uses 5000 for per-pixel SD latents).
    #[arg(long, default_value_t = 1000.0)]
    pub beta: f64,
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
    /// for each; study.md, study.json, study.png and study-alignment.png (score vs images, a
    /// line per strategy).
    DiversityVsVolume(StudyArgs),
    /// Diffusion-DPO of one base over a grid of β and pair counts (one pair set, built once),
    /// every result and the base evaluated at the same sampling seeds; sweep.md, sweep.json,
    /// sweep.png and sweep-alignment.png (score vs pairs, a line per β).
    Dpo(StudyDpoArgs),
}

#[derive(Debug, Args)]
pub struct StudyDpoArgs {
    /// The base checkpoint (a checkpoint folder, or a training --out folder: its latest).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The manifest the base was trained on.
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// Output folder: pairs-c<largest>/, base/, c<pairs>-b<beta>/ per cell, sweep.md, sweep.json,
    /// sweep.png.
    #[arg(short, long)]
    pub out: PathBuf,
    /// β values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "200,1000,5000")]
    pub betas: Vec<f64>,
    /// Candidate prompts per cell, comma-separated multiples of --part-size; the pairs of a
    /// smaller count are the first parts of the largest one's set.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    pub pairs: Vec<usize>,
    #[command(flatten)]
    pub flags: DpoFlags,
    /// Images per held-out prompt in each eval.
    #[arg(long, default_value_t = 2)]
    pub eval_n: usize,
    /// Sampling seeds of the evals (the base's and every cell's), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub eval_seeds: Vec<u64>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StudyArgs {
    /// The parent manifest (its run's expand/ must be beside it, for slot values).
    #[arg(short, long)]
    pub manifest: PathBuf,
    /// Output folder: one folder per arm (train/, eval/), study.md, study.json, study.png,
    /// study-alignment.png.
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
    /// The temperature at the last AR step (linear from --temperature at the first).
    #[arg(long)]
    pub temperature_end: Option<f64>,
    /// Diffusion steps of the head.
    #[arg(long)]
    pub diffusion_steps: Option<usize>,
    /// Clamp the head's predicted x0 to ±R (0 = off).
    #[arg(long)]
    pub clip_x0: Option<f64>,
    /// Scale of the head's noise along each token's channel means (1 = as the rest; 0 keeps
    /// a token's level from its context instead of its starting noise).
    #[arg(long)]
    pub mean_noise: Option<f64>,
    /// Undo the object weight's prior: keep each drawn object token with probability 1/W,
    /// else draw it again (W = train.object_loss_weight; 1 = off). Pixel tokens only.
    #[arg(long)]
    pub object_prior: Option<f64>,
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
            temperature_end: None,
            diffusion_steps: None,
            clip_x0: None,
            mean_noise: None,
            object_prior: None,
            device: "cpu".into(),
        }
    }
}
