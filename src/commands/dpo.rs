//! `lightgen dpo`: argument handling and the summary around [`lightgen::student::train::dpo`].

use anyhow::Result;

use super::sample::{eval_args, eval_cmd};
use crate::cli::{DpoArgs, DpoFlags};
use lightgen::student::train::dpo::{pairs::PairsConfig, pairs::Winner, DpoConfig};
use lightgen::student::train::{self, checkpoint, TrainConfig};

/// The DPO settings of `flags` for `count` candidate prompts at `beta`; the base's sampling
/// and, unless the flags set it, its final object weight.
pub fn dpo_config(f: &DpoFlags, count: usize, beta: f64, base: &TrainConfig) -> Result<DpoConfig> {
    let sample = &base.sample;
    let t = &base.train;
    let trained = if t.object_loss_weight_until >= 1.0 { t.object_loss_weight } else { 1.0 };
    let object = f.sft_object_weight.unwrap_or(trained);
    anyhow::ensure!(
        object.is_finite() && object > 0.0,
        "--sft-object-weight {object}: expected a weight > 0 (1 = every token alike)"
    );
    anyhow::ensure!(
        f.dpo_object_weight.is_finite() && f.dpo_object_weight > 0.0,
        "--dpo-object-weight {}: expected a weight > 0 (1 = every token alike)",
        f.dpo_object_weight
    );
    let own = f.winner == "self";
    anyhow::ensure!(
        (0.0..=1.0).contains(&f.margin) && (own || f.margin == 0.0),
        "--margin {}: expected an alignment difference in [0, 1], with --winner self",
        f.margin
    );
    anyhow::ensure!(
        f.sft_weight.is_finite() && f.sft_weight >= 0.0,
        "--sft-weight {}: expected a weight >= 0 (0 = plain Diffusion-DPO)",
        f.sft_weight
    );
    Ok(DpoConfig {
        pairs: PairsConfig {
            count,
            seed: f.seed,
            loser_must_fail: f.loser_must_fail,
            part_size: f.part_size,
            sample: sample.clone(),
            winner: if own { Winner::OwnSample } else { Winner::Teacher },
            // teacher pairs matched on the count pick their loser among --draws samples
            draws: if own || f.same_count { f.draws } else { 1 },
            margin: f.margin, // 0 unless --winner self (checked above)
            same_count: f.same_count,
            families: f.families.clone(),
        },
        beta,
        sft_weight: f.sft_weight,
        sft_object_weight: object,
        dpo_object_weight: f.dpo_object_weight,
        anchor: f.anchor,
        lr: f.lr,
        warmup_steps: f.warmup,
        steps: f.steps,
        batch_size: f.batch,
        weight_decay: 0.0,
        grad_clip: 3.0,
        ema: 0.0,
        seed: f.seed,
        checkpoint_every: 50,
        candidates_used: None,
    })
}

/// `lightgen dpo`.
pub fn dpo_cmd(a: DpoArgs, progress: bool) -> Result<()> {
    use lightgen::student::train::dpo;
    let base = checkpoint::resolve(&a.checkpoint)?;
    let state = checkpoint::read_state(&base)?;
    let cfg = dpo_config(&a.flags, a.pairs, a.beta, &state.config)?;
    anyhow::ensure!(a.nproc != Some(0), "--nproc 0: expected at least 1 rank");
    if let Some(n) = a.nproc.filter(|&n| n > 1) {
        return super::train::spawn_ranks(n);
    }
    let launch = lightgen::student::dist::Launch::from_process(a.dist_timeout)?;
    let device = match (&launch, a.device.as_str()) {
        (Some(l), "cuda") => train::device(&format!("cuda:{}", l.local_rank))?,
        _ => train::device(&a.device)?,
    };
    let s = dpo::run(&base, &a.manifest, &cfg, &a.out.join("pairs"), &a.out, device, progress, launch.as_ref())?;
    if launch.as_ref().is_some_and(|l| l.rendezvous.rank != 0) {
        return Ok(()); // rank 0 writes the summary and evaluates
    }
    lightgen::formats::commit::write_atomic(&a.out.join("dpo.json"), &serde_json::to_vec_pretty(&s)?)?;
    if !a.json {
        outln!(
            "pairs     {} of {} candidates ({} samples judged, {} rejected by the analyzer); {}/pairs.png",
            s.pairs,
            s.candidates,
            s.losers_judged,
            s.losers_failed,
            a.out.join("pairs").display()
        );
        outln!(
            "dpo       {} steps, loss {:.4} → {:.4}, implicit reward accuracy {:.2}, {:.0} s → {}",
            s.steps,
            s.first_loss,
            s.last_loss,
            s.last_reward_accuracy,
            s.seconds,
            s.checkpoint.display()
        );
    }
    if a.no_eval {
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&s)?);
        }
        return Ok(());
    }
    let (before, after) = (a.out.join("eval-base"), a.out.join("eval-dpo"));
    for (ck, dir) in [(&base, &before), (&s.checkpoint, &after)] {
        if !dir.join("eval.json").exists() {
            eval_cmd(eval_args(ck, &a.manifest, dir.clone(), a.eval_n), progress)?;
        }
    }
    let (x, y) = (
        lightgen::student::eval::read_report(&before.join("eval.json"))?,
        lightgen::student::eval::read_report(&after.join("eval.json"))?,
    );
    let table = lightgen::student::eval::compare(&x, &y);
    lightgen::formats::commit::write_atomic(&a.out.join("compare.md"), table.as_bytes())?;
    if a.json {
        outln!("{}", serde_json::json!({ "dpo": s, "before": x.overall, "after": y.overall }));
    } else {
        outln!("\nbefore (base) → after (dpo), {} images per held-out prompt:\n{table}", a.eval_n);
    }
    Ok(())
}
