//! The anchor of `lightgen dpo`: what `sft_weight` weighs on the winners while the DPO term
//! learns the preference, and the policy as a trainer of the base's own config (so the anchor
//! can be the base's own training loss).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::pairs::Pairs;
use super::DpoConfig;
use crate::error::{Error, Result};
use crate::student::sample::Student;
use crate::student::train::checkpoint;
use crate::student::train::data::{Batch, Dataset};
use crate::student::train::objects::PixelTokens;
use crate::student::train::Trainer;

/// What holds the winners' own likelihood while DPO learns the preference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// The winners' eps-MSE over the DPO term's masked tokens (its mask ratios: the
    /// reference's [0.7, 1]), object rows at `sft_object_weight`.
    #[default]
    Eps,
    /// The base's own training loss on the winners, with draws of its own: its mask ratios,
    /// caption drop, VB term and read-out terms (`x0_loss_weight`, `label_loss_weight`), object
    /// rows at `sft_object_weight`. DPO moves the weights that those read-outs shaped; an anchor
    /// of eps alone leaves them free to drift.
    Train,
}

impl Anchor {
    pub(super) fn is_eps(&self) -> bool {
        *self == Anchor::Eps
    }
}

/// The stream the `Anchor::Train` loss draws from (its masks, timesteps and noise), apart from
/// the DPO term's (`step_rng(seed, step, 0)`).
const ANCHOR_STREAM: u64 = 0xA4C4_0D10_5EED_0001;

/// The policy, from the base checkpoint's EMA weights, as a trainer of the base's own config
/// (what `Anchor::Train` evaluates), its object rows at the anchor's weight throughout.
pub(super) fn policy_trainer(base: &Student, ckpt: &Path, cfg: &DpoConfig, device: Device) -> Result<Trainer> {
    let mut tc = base.state.config.clone();
    tc.train.seed = cfg.seed ^ ANCHOR_STREAM;
    tc.train.object_loss_weight = cfg.sft_object_weight;
    tc.train.object_loss_weight_until = 1.0;
    let grid = base.state.grid;
    let mut tr = Trainer::new(tc, base.state.model.clone(), grid, device)?;
    let file = ckpt.join("ema.safetensors");
    tr.store
        .load(&checkpoint::load_checked(ckpt, "ema.safetensors")?)
        .map_err(|m| Error::invalid(file.display().to_string(), m))?;
    tr.pixels = base.state.latent.as_ref().and_then(|l| PixelTokens::of(l, grid));
    if cfg.anchor == Anchor::Train && tr.cfg.train.code_loss_weight > 0.0 {
        // The code read-out's codebook is kept with the base's optimiser state.
        let optim = checkpoint::load_checked(ckpt, "optim.safetensors")?;
        tr.codebook = optim.get("codebook").map(|c| c.to_device(device));
    }
    Ok(tr)
}

/// The winners of some pairs as a training batch (`Anchor::Train`).
pub(super) fn winners(p: &Pairs, idx: &[usize], ds: &Dataset, step: u64) -> Batch {
    let (w, tl, f) = (ds.tokens * ds.token_dim, ds.text_len, ds.text_len * ds.text_channels);
    let pick = |v: &[f32], n: usize| idx.iter().flat_map(|&i| v[i * n..(i + 1) * n].iter().copied()).collect();
    Batch {
        step,
        size: idx.len(),
        tokens: pick(&p.winner, w),
        ids: if ds.text_channels == 0 {
            idx.iter().flat_map(|&i| p.ids[i * tl..(i + 1) * tl].iter().copied()).collect()
        } else {
            Vec::new()
        },
        feats: if ds.text_channels == 0 { Vec::new() } else { pick(&p.feats, f) },
    }
}
