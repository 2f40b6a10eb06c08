//! The random choices of one training step ([`StepDraws`]): mask ratio and orders, caption
//! drops, timesteps and noise of the head's rows, and the object options' per-sample draws.
//! Every one comes from (seed, step), each option's from a stream of its own, so a resumed
//! run draws what the uninterrupted one would have, and an option that is off leaves the
//! reference's draws as they were.

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

use super::schedule::{block_order, keep_text, mask_ratio, orders, step_rng};
use super::timesteps::{stratify, timesteps};
use super::trainer::Trainer;

/// The random choices of one training step.
pub struct StepDraws {
    pub ratio: f64,
    /// Masked tokens per sample.
    pub masked: usize,
    /// Per sample, a permutation of the L positions; its first `masked` are masked.
    pub orders: Vec<Vec<usize>>,
    /// Per sample, whether its caption is kept (else the null caption).
    pub keep: Vec<bool>,
    /// Per sample, whether its order puts the object tokens first (`train.object_mask_prob`;
    /// the order is rearranged once the sample's pixels are known, in `losses_with`).
    pub objects_first: Vec<bool>,
    /// Per sample, whether its order puts the background tokens first, keeping the objects
    /// visible (`train.object_keep_prob`; objects first wins where both are drawn).
    pub objects_last: Vec<bool>,
    /// Timestep of each head row (N = B · masked · diffusion_batch_mul, copy-major).
    pub t: Vec<usize>,
    /// Noise of each head row, (N · C).
    pub noise: Vec<f32>,
    /// Weight of object rows this step (`train.object_loss_weight` until
    /// `object_loss_weight_until` of the run, then 1).
    pub object_weight: f64,
}

impl StepDraws {
    /// Share `k` of `parts` equal shares of the batch (the samples k·B/parts.. of it, and their
    /// head rows in each of the `mul` copies).
    pub fn share(&self, k: usize, parts: usize, mul: usize) -> StepDraws {
        let b = self.orders.len() / parts;
        let (lo, hi) = (k * b, (k + 1) * b);
        let per_copy = self.orders.len() * self.masked; // head rows of one copy
        let c = self.noise.len() / self.t.len().max(1);
        let mut t = Vec::with_capacity(mul * b * self.masked);
        let mut noise = Vec::with_capacity(mul * b * self.masked * c);
        for copy in 0..mul {
            let rows = copy * per_copy + lo * self.masked..copy * per_copy + hi * self.masked;
            t.extend_from_slice(&self.t[rows.clone()]);
            noise.extend_from_slice(&self.noise[rows.start * c..rows.end * c]);
        }
        StepDraws {
            ratio: self.ratio,
            masked: self.masked,
            orders: self.orders[lo..hi].to_vec(),
            keep: self.keep[lo..hi].to_vec(),
            objects_first: self.objects_first[lo..hi].to_vec(),
            objects_last: self.objects_last[lo..hi].to_vec(),
            t,
            noise,
            object_weight: self.object_weight,
        }
    }
}

impl Trainer {
    /// The random choices of step `step` for a batch of `b`: all from (seed, step), so a
    /// resumed run draws what the uninterrupted one would have.
    pub fn draws(&self, b: usize, step: u64) -> StepDraws {
        let t = &self.cfg.train;
        let (l, c) = (self.grid * self.grid, self.model.cfg.token_dim);
        let mut rng = step_rng(t.seed, step, 0);
        let ratio = mask_ratio(t.mask_ratio_min, t.mask_ratio_std, &mut rng);
        let masked = ((l as f64 * ratio).ceil() as usize).min(l);
        let mut orders = orders(b, l, &mut rng);
        let keep = keep_text(b, t.text_drop_prob, &mut rng);
        let n = b * masked * t.diffusion_batch_mul;
        let mut ts = timesteps(n, t.timestep_band_share, t.timestep_band, &mut rng);
        if t.stratified_timesteps {
            // a stream of its own: the noise and every later draw stay the reference's
            stratify(&mut ts, &mut step_rng(t.seed, step, 6));
        }
        let noise: Vec<f32> = (0..n * c).map(|_| StandardNormal.sample(&mut rng)).collect();
        if t.block_mask_prob > 0.0 {
            // a stream of its own: with the option off, every other draw is the reference's
            let mut r = step_rng(t.seed, step, 3);
            for o in orders.iter_mut() {
                if r.random::<f64>() < t.block_mask_prob {
                    *o = block_order(self.grid, &mut r);
                }
            }
        }
        // Streams of their own, as above.
        let drawn = |stream: u64, p: f64| -> Vec<bool> {
            if p <= 0.0 {
                return vec![false; b];
            }
            let mut r = step_rng(t.seed, step, stream);
            (0..b).map(|_| r.random::<f64>() < p).collect()
        };
        // Whether this step lies before a share of the run.
        let before = |share: f64| (step as f64) < share * t.steps as f64;
        let last = if before(t.object_keep_from) { 0.0 } else { t.object_keep_prob };
        let (objects_first, objects_last) = (drawn(4, t.object_mask_prob), drawn(5, last));
        // The weight's bias (see TrainConfig::object_loss_weight_until) is trained out at the end.
        let object_weight = if before(t.object_loss_weight_until) { t.object_loss_weight } else { 1.0 };
        StepDraws { ratio, masked, orders, keep, objects_first, objects_last, t: ts, noise, object_weight }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::train::trainer::tests::{micro, micro_trainer};

    #[test]
    fn block_masks_replace_the_asked_share_of_orders_and_nothing_else() {
        // Seeded (train.seed = 0): the same step drawn with block_mask_prob 0, 0.5 and 1.
        let (mut tr, _) = micro_trainer(super::super::config::Precision::F32, 0.0);
        let off = tr.draws(64, 5);
        tr.cfg.train.block_mask_prob = 1.0;
        let all = tr.draws(64, 5);
        tr.cfg.train.block_mask_prob = 0.5;
        let half = tr.draws(64, 5);
        for d in [&all, &half] {
            // ratio, timesteps, noise and caption drops are the reference's draws
            assert_eq!(
                (d.ratio, d.masked, &d.t, &d.noise, &d.keep),
                (off.ratio, off.masked, &off.t, &off.noise, &off.keep)
            );
        }
        let same = |d: &StepDraws| d.orders.iter().zip(&off.orders).filter(|(a, b)| a == b).count();
        assert_eq!(same(&all), 0, "every order is a block order");
        let kept = same(&half);
        assert!((20..=44).contains(&kept), "about half stay uniform: {kept} of 64");
        for o in half.orders.iter().chain(&all.orders) {
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, (0..16).collect::<Vec<_>>(), "a permutation of the 4×4 grid");
        }
        let mut bad = micro();
        bad.train.block_mask_prob = 1.5;
        assert!(bad.validate().unwrap_err().contains("block_mask_prob"));
    }

    #[test]
    fn shares_of_a_steps_draws_partition_it_per_copy() {
        // Seeded (train.seed = 0): 8 samples, 2 copies per masked token, cut into 4 shares.
        let (mut tr, _) = micro_trainer(super::super::config::Precision::F32, 0.0);
        tr.cfg.train.diffusion_batch_mul = 2;
        let d = tr.draws(8, 3);
        let (k_rows, c) = (8 * d.masked, d.noise.len() / d.t.len());
        let parts: Vec<StepDraws> = (0..4).map(|k| d.share(k, 4, 2)).collect();
        for (k, p) in parts.iter().enumerate() {
            assert_eq!((p.orders.len(), p.masked, p.ratio), (2, d.masked, d.ratio));
            assert_eq!(p.orders[..], d.orders[2 * k..2 * k + 2]);
            assert_eq!(p.keep[..], d.keep[2 * k..2 * k + 2]);
            let per = 2 * d.masked; // this share's head rows in one copy
            for copy in 0..2 {
                let at = copy * k_rows + k * per;
                assert_eq!(p.t[copy * per..(copy + 1) * per], d.t[at..at + per], "share {k}, copy {copy}");
                assert_eq!(p.noise[copy * per * c..(copy + 1) * per * c], d.noise[at * c..(at + per) * c]);
            }
        }
        // One share of one is the whole step.
        let whole = d.share(0, 1, 2);
        assert_eq!((whole.t, whole.noise, whole.orders), (d.t.clone(), d.noise.clone(), d.orders.clone()));
    }
}
