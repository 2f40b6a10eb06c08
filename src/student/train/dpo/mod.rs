//! `lightgen dpo`: Diffusion-DPO post-training of a student checkpoint on pairs of (teacher
//! image that passed curation, the student's own sample) for the same caption. The policy and
//! the frozen reference both start from the base checkpoint's EMA weights (the ones that are
//! evaluated); dropout is off in both, so at step 0 the policy equals the reference and the
//! loss is exactly ln 2. Every random draw of step s comes from (seed, s): a run killed and
//! rerun continues from its last checkpoint to the same weights.

pub mod anchor;
pub mod loss;
pub mod pairs;
pub mod sweep;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::formats::manifest::{self, Manifest};
use crate::student::dist::{Dist, Launch};
use crate::student::model::layers::{scalar, tensor_f32, to_host, Ctx};
use crate::student::model::text::TextInput;
use crate::student::sample::{Decoder, Student};
use crate::student::train::checkpoint::{self, TrainState};
use crate::student::train::data::Dataset;
use crate::student::train::objects::PixelTokens;
use crate::student::train::optim::{AdamW, Ema};
use crate::student::train::schedule::{lr_at, mask_ratio, orders, step_rng, LrSchedule};
pub use anchor::Anchor;
use anchor::{policy_trainer, winners};
use loss::{dpo_loss, object_row_weights, pair_rows, per_sample, winner_mse, Draws};
use pairs::{Pairs, PairsConfig, PairsPlan};

/// The DPO run's settings (recorded in the checkpoint's lineage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoConfig {
    pub pairs: PairsConfig,
    pub beta: f64,
    /// Weight of the winners' own eps-MSE added to the DPO loss (0: plain Diffusion-DPO). The
    /// DPO term alone can be met by making the student worse at its own samples (the losers'
    /// error rises) as well as better at the winners'; this anchors the winners' error.
    #[serde(default)]
    pub sft_weight: f64,
    /// Weight of the winners' object rows in that term, normalised to a mean of 1 (1 = every
    /// row alike). `lightgen dpo` takes the base's own final `train.object_loss_weight`: an
    /// anchor that weighs rows otherwise than the base's training did pulls its prior (how
    /// often a token becomes an object) somewhere else. Pixel tokens only.
    #[serde(
        default = "crate::student::model::sampler::one",
        skip_serializing_if = "crate::student::model::sampler::is_one"
    )]
    pub sft_object_weight: f64,
    /// Weight of object rows in the DPO term's per-image errors (winner and loser each by
    /// their own object tokens; normalised per image; 1 = every row alike). The base's own
    /// loss weighed its object rows so: its implicit likelihood of an image is that weighted
    /// error, and weighed alike the preference is mostly about background rows. Pixel tokens
    /// only. On the demo student it read no better than 1 (docs/student.md, "What DPO adds").
    #[serde(
        default = "crate::student::model::sampler::one",
        skip_serializing_if = "crate::student::model::sampler::is_one"
    )]
    pub dpo_object_weight: f64,
    /// What `sft_weight` weighs: the winners' eps-MSE on the DPO term's own draws, or the
    /// base's whole training loss on them.
    #[serde(default, skip_serializing_if = "Anchor::is_eps")]
    pub anchor: Anchor,
    pub lr: f64,
    pub warmup_steps: u64,
    pub steps: u64,
    /// Pairs per step.
    pub batch_size: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// EMA of the DPO weights (0: the checkpoint's EMA is the last weights).
    pub ema: f64,
    pub seed: u64,
    pub checkpoint_every: u64,
    /// Train on the pairs of the first N candidate prompts only (a multiple of
    /// `pairs.part_size`): the pair set is built for `pairs.count` candidates and its first
    /// parts are exactly a smaller set's, so one build serves a sweep over pair counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_used: Option<usize>,
}

/// One logged step.
#[derive(Debug, Clone, Serialize)]
pub struct DpoStep {
    pub step: u64,
    pub loss: f64,
    /// Share of the batch's pairs whose implicit reward already prefers the winner (d < 0).
    pub reward_accuracy: f64,
    /// Mean of d = (Lw − Ll) − (Lw_ref − Ll_ref).
    pub margin: f64,
    /// The anchor on the winners (what `sft_weight` holds down): their mean eps-MSE, or with
    /// `Anchor::Train` the base's training loss on them. In plain DPO the winners' error may
    /// rise as long as the losers' rises more.
    pub winner_mse: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// What `run` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpoSummary {
    pub pairs: usize,
    pub candidates: usize,
    /// Samples of the base student the analyzer judged (the losers; every draw with
    /// `winner = self`), and how many it rejected.
    pub losers_judged: u64,
    pub losers_failed: u64,
    pub pairs_id: String,
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub last_reward_accuracy: f64,
    pub seconds: f64,
    pub checkpoint: PathBuf,
}

/// The shared draws of step `step` for `b` pairs of `l` tokens of `c` values.
fn draws(seed: u64, step: u64, b: usize, l: usize, c: usize, dev: Device) -> Draws {
    let mut rng = step_rng(seed, step, 0);
    let masked = ((l as f64 * mask_ratio(0.7, 0.25, &mut rng)).ceil() as usize).clamp(1, l);
    let ord = orders(b, l, &mut rng);
    let n = b * masked;
    let t: Vec<usize> = (0..n).map(|_| rng.random_range(0..1000)).collect();
    let noise: Vec<f32> = (0..n * c).map(|_| StandardNormal.sample(&mut rng)).collect();
    Draws { orders: ord, masked, t, noise: tensor_f32(&noise, &[n, c], dev) }
}

/// The pairs of step `step`: epochs of a seeded permutation.
fn picks(seed: u64, step: u64, b: usize, n: usize) -> Vec<usize> {
    (0..b)
        .map(|i| {
            let pos = step * b as u64 + i as u64;
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ (pos / n as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            ));
            perm[(pos % n as u64) as usize]
        })
        .collect()
}

/// (2B, L, C) tokens [winners; losers] and the (2B) text input of some pairs.
fn batch(p: &Pairs, idx: &[usize], ds: &Dataset, dev: Device) -> (Tensor, TextInput) {
    let (l, c, tl) = (ds.tokens, ds.token_dim, ds.text_len);
    let w = l * c;
    let mut tokens = Vec::with_capacity(2 * idx.len() * w);
    for src in [&p.winner, &p.loser] {
        for &i in idx {
            tokens.extend_from_slice(&src[i * w..(i + 1) * w]);
        }
    }
    let b2 = 2 * idx.len();
    let tokens = tensor_f32(&tokens, &[b2, l, c], dev);
    let text = if ds.text_channels == 0 {
        let ids: Vec<u32> =
            (0..2).flat_map(|_| idx.iter().flat_map(|&i| p.ids[i * tl..(i + 1) * tl].iter().copied())).collect();
        TextInput::from_host(&ids, &[], b2, tl, 0, dev)
    } else {
        let f = tl * ds.text_channels;
        let v: Vec<f32> =
            (0..2).flat_map(|_| idx.iter().flat_map(|&i| p.feats[i * f..(i + 1) * f].iter().copied())).collect();
        TextInput::from_host(&[], &v, b2, tl, ds.text_channels, dev)
    };
    (tokens, text)
}

/// Builds the pairs in `pairs_dir` (resumable; `lightgen dpo` keeps them in `out/pairs`),
/// then trains; checkpoints land in `out/checkpoints/`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    base_ckpt: &Path,
    manifest_path: &Path,
    cfg: &DpoConfig,
    pairs_dir: &Path,
    out: &Path,
    device: Device,
    progress: bool,
    launch: Option<&Launch>,
) -> Result<DpoSummary> {
    let t0 = Instant::now();
    let part = cfg.pairs.part_size.max(1);
    if let Some(n) = cfg.candidates_used {
        if n == 0 || n % part != 0 || n > cfg.pairs.count {
            return Err(Error::invalid(
                "dpo candidates_used",
                format!("{n}: expected a multiple of the part size {part} in 1..={}", cfg.pairs.count),
            ));
        }
    }
    // The same data-parallel path as `train`: each rank takes an equal share of every step's
    // pairs and draws; gradients and the logged means are averaged in one all-reduce.
    let dist = match launch {
        Some(l) => Dist::join(l)?,
        None => Dist::single(),
    };
    let main = dist.is_main();
    let progress = progress && main;
    let m: Manifest = manifest::verify(manifest_path)?;
    let ds = Dataset::open(manifest_path, &m)?;
    let base = Student::load(base_ckpt, true, device)?;
    if base.state.manifest_id != m.id {
        return Err(Error::Conflict {
            path: base_ckpt.to_path_buf(),
            message: format!(
                "was trained on manifest {}, not {} ({})",
                base.state.manifest_id,
                m.id,
                manifest_path.display()
            ),
        });
    }
    let decoder = Decoder::for_manifest(&m, None)?;
    let weights = std::fs::read(base_ckpt.join("ema.safetensors")).map_err(|e| Error::io(base_ckpt, e))?;
    let plan = PairsPlan {
        config: cfg.pairs.clone(),
        base_checkpoint: base_ckpt.display().to_string(),
        base_weights: blake3::hash(&weights).to_hex().to_string(),
        manifest_id: m.id.clone(),
    };
    let pb = crate::progress::bar(cfg.pairs.count.min(ds.len()) as u64, "pairs", "prompts", progress);
    let p = pairs::build(&base, &decoder, manifest_path, &m, &ds, &plan, pairs_dir, &dist, |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    let p = match cfg.candidates_used {
        Some(n) if n < p.candidates => pairs::load(pairs_dir, &p.id, n, (n / part) as u64)?,
        _ => p,
    };
    let parts = p.candidates.div_ceil(part) as u64;
    let (judged, failed) = pairs::verdicts(pairs_dir, &p.id, parts);
    if p.n == 0 {
        return Err(Error::invalid(
            "dpo",
            "no pairs were kept (every loser passed the analyzer?): nothing to learn from",
        ));
    }
    let lineage = serde_json::json!({
        "kind": "dpo",
        "base_checkpoint": base_ckpt.display().to_string(),
        "base_step": base.state.step,
        "base_weights": plan.base_weights,
        "pairs": { "dir": pairs_dir.display().to_string(), "id": p.id, "pairs": p.n, "candidates": p.candidates },
        "dpo": cfg,
        "world": dist.world,
    });

    // Policy and reference from the base EMA weights; resume from our last checkpoint.
    let policy = policy_trainer(&base, base_ckpt, cfg, device)?;
    let reference = base;
    let mut opt = AdamW::new(0.9, 0.95, cfg.weight_decay);
    let mut ema = Ema::new(&policy.store, cfg.ema);
    let mut start = 0;
    if let Some(ck) = checkpoint::list(out).pop() {
        let st = checkpoint::read_state(&ck)?;
        if st.lineage.as_ref() != Some(&lineage) {
            return Err(Error::Conflict {
                path: ck,
                message: "is a DPO checkpoint of another base, pair set or config; use another --out".into(),
            });
        }
        policy
            .store
            .load(&checkpoint::load_checked(&ck, "model.safetensors")?)
            .map_err(|e| Error::invalid("dpo resume", e))?;
        ema.weights = checkpoint::load_checked(&ck, "ema.safetensors")?
            .into_iter()
            .map(|(k, v)| (k, v.to_device(device)))
            .collect();
        for (k, v) in checkpoint::load_checked(&ck, "optim.safetensors")? {
            let v = v.to_device(device);
            match (k.strip_prefix("m."), k.strip_prefix("v.")) {
                (Some(n), _) => drop(opt.m.insert(n.to_string(), v)),
                (_, Some(n)) => drop(opt.v.insert(n.to_string(), v)),
                _ => {}
            }
        }
        opt.t = st.adam_t;
        start = st.step;
    }
    let weights: Vec<&Tensor> = policy.store.vars.values().chain(ema.weights.values()).collect();
    dist.broadcast(&weights)?;
    let metrics_path = out.join("metrics.jsonl");
    if main {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    if main && start > 0 {
        // steps logged after the last checkpoint are trained again: log them once
        crate::student::train::metrics::trim_metrics(&metrics_path, start)?;
    }
    let mut metrics = if main { Some(crate::student::train::metrics::append(&metrics_path)?) } else { None };
    // Pairs per rank and per step (all ranks take equal shares of the global batch).
    let per = cfg.batch_size.min(p.n / dist.world).max(1);
    let (lo, global) = (dist.rank * per, per * dist.world);
    let grid = reference.state.grid;
    let (l, c) = (grid * grid, policy.model.cfg.token_dim);
    let ctx = Ctx::eval(); // no dropout: policy and reference see the same network

    // Per pair (N · L), whether the winner's token covers an object, when a term weighs
    // them; the losers' only for the DPO term.
    let anchor_weighs = cfg.sft_object_weight != 1.0 && cfg.sft_weight > 0.0;
    let term_weighs = cfg.dpo_object_weight != 1.0;
    let px = match anchor_weighs || term_weighs {
        false => None,
        true => {
            Some((reference.state.latent.as_ref()).and_then(|lat| PixelTokens::of(lat, grid)).ok_or_else(|| {
                Error::invalid(
                    "dpo --sft-object-weight / --dpo-object-weight",
                    "objects are found in pixel tokens; use 1 with this manifest",
                )
            })?)
        }
    };
    let winner_objects = px.map(|px| px.object_tokens_of(&p.winner, l * c));
    let loser_objects = px.filter(|_| term_weighs).map(|px| px.object_tokens_of(&p.loser, l * c));
    let pb = crate::progress::bar(cfg.steps, "dpo", "steps", progress);
    pb.set_position(start);
    let (mut first, mut last, mut last_acc) = (f64::NAN, f64::NAN, f64::NAN);
    let mut last_ck = checkpoint::list(out).pop().unwrap_or_default();
    for step in start..cfg.steps {
        let idx = picks(cfg.seed, step, global, p.n)[lo..lo + per].to_vec();
        let (tokens, text) = batch(&p, &idx, &ds, device);
        let d = draws(cfg.seed, step, global, l, c, device).share(lo, per);
        // Row weights (B, masked) of this step's winners or losers, copied before the step's
        // first kernel.
        let row_weights = |of: &[bool], w: f64| {
            let flags: Vec<&[bool]> = idx.iter().map(|&i| &of[i * l..(i + 1) * l]).collect();
            tensor_f32(&object_row_weights(&d, l, &flags, w as f32), &[per, d.masked], device)
        };
        let weights = winner_objects.as_ref().filter(|_| anchor_weighs).map(|w| row_weights(w, cfg.sft_object_weight));
        // (2B, masked): the winners' rows, then the losers'.
        let term = winner_objects.as_ref().zip(loser_objects.as_ref()).map(|(win, lose)| {
            Tensor::cat(&[row_weights(win, cfg.dpo_object_weight), row_weights(lose, cfg.dpo_object_weight)], 0)
        });
        let text_err = |e: String| Error::invalid("dpo", e);
        let ref_mse = tch::no_grad(|| -> Result<Tensor> {
            let tr = reference.model.text.forward(&text, &ctx).map_err(text_err)?;
            Ok(per_sample(&pair_rows(&reference.model, &tokens, &tr, &d, grid, &ctx), term.as_ref()))
        })?;
        let tp = policy.model.text.forward(&text, &ctx).map_err(text_err)?;
        let pol_rows = pair_rows(&policy.model, &tokens, &tp, &d, grid, &ctx); // (2B, masked)
        let (loss, diff) = dpo_loss(&per_sample(&pol_rows, term.as_ref()), &ref_mse, cfg.beta);
        let wmse = match cfg.anchor {
            Anchor::Eps => winner_mse(&pol_rows, weights.as_ref()),
            Anchor::Train => {
                // The global batch's draws, this rank's share of them (as `train` does), so
                // ranks together anchor as one process.
                let mul = policy.cfg.train.diffusion_batch_mul;
                let draws = policy.draws(global, step).share(dist.rank, dist.world, mul);
                let (rows, _) = policy.losses_with(&winners(&p, &idx, &ds, step), &draws, &ctx)?;
                rows.mean(tch::Kind::Float)
            }
        };
        let total = if cfg.sft_weight > 0.0 { &loss + &wmse * cfg.sft_weight } else { loss.shallow_clone() };
        let dv = to_host(&diff);
        let mut grads = policy.store.grads(&total);
        let acc = dv.iter().filter(|x| **x < 0.0).count() as f64 / dv.len() as f64;
        let margin = dv.iter().map(|x| *x as f64).sum::<f64>() / dv.len() as f64;
        // (DPO loss, winners' MSE, reward accuracy, margin): means over this rank's pairs, then
        // over the ranks. The logged loss is the DPO term alone (ln 2 at step 0 whatever the
        // winner weight).
        let host = Tensor::from_slice(&[acc as f32, margin as f32]).to_device(device);
        let scalars = [&loss, &wmse].map(|t| t.detach().to_kind(tch::Kind::Float).reshape([1]));
        let mut means = Tensor::cat(&[&scalars[0], &scalars[1], &host], 0); // (4,)
        dist.average(&mut grads, &mut [&mut means])?;
        let means: Vec<f32> = to_host(&means);
        let (value, wm) = (f64::from(means[0]), f64::from(means[1]));
        let (acc, margin) = (f64::from(means[2]), f64::from(means[3]));
        if !value.is_finite() {
            return Err(Error::invalid(
                format!("dpo step {step}"),
                format!("the loss is {value}; lower --lr or --beta"),
            ));
        }
        let lr = lr_at(step, cfg.lr, cfg.lr, cfg.warmup_steps, cfg.steps, 0, LrSchedule::Constant);
        let grad_norm = scalar(&opt.step(&policy.store, &grads, lr, cfg.grad_clip)?);
        ema.update(&policy.store)?;
        let s = DpoStep { step, loss: value, reward_accuracy: acc, margin, winner_mse: wm, lr, grad_norm };
        if let Some(metrics) = metrics.as_mut() {
            writeln!(metrics, "{}", serde_json::to_string(&s).expect("serialises"))
                .map_err(|e| Error::io(&metrics_path, e))?;
        }
        if first.is_nan() {
            first = value;
        }
        (last, last_acc) = (value, acc);
        pb.inc(1);
        pb.set_prefix(format!("loss {value:.3}"));
        let done = step + 1;
        if main && (done == cfg.steps || (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0)) {
            if let Some(metrics) = metrics.as_mut() {
                metrics.flush().map_err(|e| Error::io(&metrics_path, e))?;
            }
            let state =
                TrainState { step: done, adam_t: opt.t, lineage: Some(lineage.clone()), ..reference.state.clone() };
            let mut optim = std::collections::BTreeMap::new();
            for (k, v) in &opt.m {
                optim.insert(format!("m.{k}"), v.shallow_clone());
            }
            for (k, v) in &opt.v {
                optim.insert(format!("v.{k}"), v.shallow_clone());
            }
            last_ck = checkpoint::save(out, &state, &policy.store.tensors(), &ema.weights, &optim, 2)?;
        }
    }
    pb.finish_and_clear();
    if first.is_nan() && main {
        // A rerun of a finished run trains nothing: its losses are the logged ones.
        let text = std::fs::read_to_string(&metrics_path).unwrap_or_default();
        let steps: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        if let (Some(a), Some(z)) = (steps.first(), steps.last()) {
            (first, last, last_acc) = (num(a, "loss"), num(z, "loss"), num(z, "reward_accuracy"));
        }
    }
    Ok(DpoSummary {
        pairs: p.n,
        candidates: p.candidates,
        losers_judged: judged,
        losers_failed: failed,
        pairs_id: p.id,
        steps: cfg.steps,
        first_loss: first,
        last_loss: last,
        last_reward_accuracy: last_acc,
        seconds: t0.elapsed().as_secs_f64(),
        checkpoint: last_ck,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_cover_every_pair_once_per_epoch_and_draws_are_pure() {
        let mut seen: Vec<usize> = (0..5).flat_map(|s| picks(7, s, 4, 20)).collect();
        seen.sort();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "5 steps of 4 = one epoch of 20");
        assert_eq!(picks(7, 3, 4, 20), picks(7, 3, 4, 20));
        let a = draws(1, 9, 3, 16, 12, Device::Cpu);
        let b = draws(1, 9, 3, 16, 12, Device::Cpu);
        assert_eq!((a.masked, a.t.clone(), a.orders.clone()), (b.masked, b.t, b.orders));
        assert!(a.masked >= 12 && a.masked <= 16, "mask ratio ≥ 0.7: {}", a.masked);
        assert_eq!(a.noise.size(), [3 * a.masked as i64, 12]);
    }
}
