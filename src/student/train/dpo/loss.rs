//! Diffusion-DPO adapted to MAR (`lightgen.md` §6): winner and loser share the mask and order,
//! the timestep and the noise of every masked token; the per-sample eps-MSE over masked tokens
//! of the policy and of the frozen reference give
//! `loss = −log σ(−β/2 · ((Lw − Ll) − (Lw_ref − Ll_ref)))`.

use tch::{Kind, Tensor};

use crate::student::model::layers::{index, Ctx};
use crate::student::model::{Mar, Mask};

/// What one batch's noise looks like: the shared draws of B pairs.
pub struct Draws {
    /// One order per pair (used for its winner and its loser).
    pub orders: Vec<Vec<usize>>,
    /// Masked tokens per sample.
    pub masked: usize,
    /// Timestep of each masked token, pair-major (B · masked).
    pub t: Vec<usize>,
    /// Noise of each masked token, (B · masked, C).
    pub noise: Tensor,
}

impl Draws {
    /// The draws of pairs `lo..lo + n` of the batch (a rank's share).
    pub fn share(&self, lo: usize, n: usize) -> Draws {
        let m = self.masked;
        Draws {
            orders: self.orders[lo..lo + n].to_vec(),
            masked: m,
            t: self.t[lo * m..(lo + n) * m].to_vec(),
            noise: self.noise.narrow(0, (lo * m) as i64, (n * m) as i64),
        }
    }
}

/// Per-row eps-MSE of the masked tokens of `tokens` (2B, L, C) = [winners; losers], with
/// `text` (2B, T, D) the aligned captions: (2B, masked), each sample's rows in ascending
/// position. [`per_sample`] gives the DPO loss's per-sample means.
pub fn pair_rows(model: &Mar, tokens: &Tensor, text: &Tensor, d: &Draws, grid: usize, ctx: &Ctx) -> Tensor {
    let (b2, l, c) = tokens.size3().expect("(2B, L, C)");
    let orders: Vec<Vec<usize>> = d.orders.iter().chain(d.orders.iter()).cloned().collect();
    let mask = Mask::from_orders(&orders, l as usize, d.masked);
    // Rows ascend by sample then position: row j of winner i and of loser i is one position.
    let rows = mask.rows(true);
    let idx = index(&rows, tokens.device()); // (K = 2B · masked)
    let z = model.forward_z_rows(tokens, &mask, text, grid, ctx, &rows); // (K, D)
    let target = tokens.view([b2 * l, c]).index_select(0, &idx); // (K, C)
    let t: Vec<usize> = d.t.iter().chain(d.t.iter()).copied().collect();
    let noise = Tensor::cat(&[&d.noise, &d.noise], 0); // (K, C)
    let mse = model.diffloss.terms(&target, &z, &t, &noise).mse; // (K)
    mse.view([b2, d.masked as i64]) // (2B, masked)
}

/// Per-sample mean of per-row MSEs (2B, masked): (2B). With `weights` (2B, masked) each
/// sample's mean is weighted (normalised by its own weights' sum).
pub fn per_sample(rows: &Tensor, weights: Option<&Tensor>) -> Tensor {
    match weights {
        None => rows.mean_dim(1, false, Kind::Float),
        Some(w) => (rows * w).sum_dim_intlist(1, false, Kind::Float) / w.sum_dim_intlist(1, false, Kind::Float),
    }
}

/// The weights of the winners' (or the losers') rows (B · masked, pair-major in ascending
/// position, as [`pair_rows`]): `object` where the image's token covers an object
/// (`objects[i]`, one flag a token of pair i), 1 elsewhere. The base was trained with its
/// object rows weighed so; an anchor that weighs every row alike pulls the student towards
/// background.
pub fn object_row_weights(d: &Draws, len: usize, objects: &[&[bool]], object: f32) -> Vec<f32> {
    let rows = Mask::from_orders(&d.orders, len, d.masked).rows(true);
    rows.iter().map(|&r| if objects[r as usize / len][r as usize % len] { object } else { 1.0 }).collect()
}

/// The DPO loss from per-sample MSEs (2B) of the policy and the reference: (scalar loss,
/// per-pair `d = (Lw − Ll) − (Lw_ref − Ll_ref)`, B). The reference side carries no gradient.
pub fn dpo_loss(policy: &Tensor, reference: &Tensor, beta: f64) -> (Tensor, Tensor) {
    let b = policy.size()[0] / 2;
    let diff = |x: &Tensor| x.narrow(0, 0, b) - x.narrow(0, b, b);
    let d = diff(policy) - diff(&reference.detach()); // (B)
                                                      // −log σ(−x) = softplus(x), libtorch's stable kernel for any x
    let x = &d * (beta / 2.0);
    (x.softplus().mean(Kind::Float), d)
}

/// The winners' eps-MSE from per-row MSEs (2B, masked) (the first half): the pretraining loss
/// on the preferred images, which `--sft-weight` adds to the DPO loss. With `weights` (B,
/// masked) the mean is weighted, as `train.object_loss_weight` weighs the base's loss (the
/// weights normalised to a mean of 1 over the rows).
pub fn winner_mse(rows: &Tensor, weights: Option<&Tensor>) -> Tensor {
    let winners = rows.narrow(0, 0, rows.size()[0] / 2); // (B, masked)
    match weights {
        None => winners.mean(Kind::Float),
        Some(w) => (&winners * w).sum(Kind::Float) / w.sum(Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::model::layers::{scalar, to_host};

    #[test]
    fn loss_matches_a_hand_computed_case() {
        // Two pairs. Policy MSEs: w = (0.30, 0.50), l = (0.40, 0.45); reference: w = (0.35, 0.50),
        // l = (0.35, 0.50). d1 = (0.30 − 0.40) − (0.35 − 0.35) = −0.10; d2 = (0.50 − 0.45) − 0 = 0.05.
        // β = 20: −log σ(−10·d) → −log σ(1) = 0.313262, −log σ(−0.5) = 0.974077; mean 0.643669.
        let p = Tensor::from_slice(&[0.30f32, 0.50, 0.40, 0.45]);
        let r = Tensor::from_slice(&[0.35f32, 0.50, 0.35, 0.50]);
        let (loss, d) = dpo_loss(&p, &r, 20.0);
        let d = to_host(&d);
        assert!((d[0] + 0.10).abs() < 1e-6 && (d[1] - 0.05).abs() < 1e-6, "{d:?}");
        let v = scalar(&loss);
        assert!((v - 0.643_669).abs() < 1e-5, "{v}");
        // policy = reference: log 2 whatever β
        let (same, _) = dpo_loss(&r, &r, 5000.0);
        assert!((scalar(&same) - std::f64::consts::LN_2).abs() < 1e-6);
        // large arguments stay finite (softplus, not log(sigmoid))
        let (big, _) = dpo_loss(&p, &r, 1e6);
        assert!(scalar(&big).is_finite());
    }

    #[test]
    fn the_gradient_lowers_the_winner_error_relative_to_the_loser() {
        // d loss / d Lw > 0 and d loss / d Ll < 0: descending makes the winner likelier.
        let p = Tensor::from_slice(&[0.4f32, 0.4]).set_requires_grad(true);
        let r = Tensor::from_slice(&[0.4f32, 0.4]);
        let (loss, _) = dpo_loss(&p, &r, 10.0);
        loss.backward();
        let g = to_host(&p.grad());
        assert!(g[0] > 0.0 && g[1] < 0.0, "{g:?}");
        assert!((g[0] - 2.5).abs() < 1e-5, "β/2 · σ(0) = 2.5: {g:?}");
    }

    #[test]
    fn the_winner_term_pulls_on_the_winners_only() {
        // Winners (0.30, 0.50), losers (0.40, 0.45), one row each: the winners' mean is 0.40,
        // and λ · it adds λ / B to each winner's gradient and nothing to the losers'.
        let p = Tensor::from_slice(&[0.30f32, 0.50, 0.40, 0.45]);
        assert!((scalar(&winner_mse(&p.view([4, 1]), None)) - 0.40).abs() < 1e-6);
        let r = Tensor::from_slice(&[0.35f32, 0.50, 0.35, 0.50]);
        let grad = |lambda: f64| {
            let x = p.copy().set_requires_grad(true);
            let (loss, _) = dpo_loss(&x, &r, 20.0);
            (loss + winner_mse(&x.view([4, 1]), None) * lambda).backward();
            to_host(&x.grad())
        };
        let (plain, anchored) = (grad(0.0), grad(3.0));
        let added: Vec<f32> = plain.iter().zip(&anchored).map(|(a, b)| b - a).collect();
        for (i, want) in [1.5f32, 1.5, 0.0, 0.0].iter().enumerate() {
            assert!((added[i] - want).abs() < 1e-5, "{added:?}");
        }
    }

    #[test]
    fn weighted_per_sample_means_normalise_by_each_samples_weights() {
        // Two samples of two rows: (1, 3) weighed (1, 3) → 10 / 4 = 2.5; (2, 4) weighed (1, 1)
        // → 3, the plain mean. No weights: the plain means 2 and 3.
        let rows = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 4.0]).view([2, 2]);
        let w = Tensor::from_slice(&[1.0f32, 3.0, 1.0, 1.0]).view([2, 2]);
        let weighted = to_host(&per_sample(&rows, Some(&w)));
        assert!((weighted[0] - 2.5).abs() < 1e-6 && (weighted[1] - 3.0).abs() < 1e-6, "{weighted:?}");
        assert_eq!(to_host(&per_sample(&rows, None)), vec![2.0, 3.0]);
        // A uniform weight is the plain mean whatever its value.
        let uniform = to_host(&per_sample(&rows, Some(&(Tensor::ones([2, 2], (Kind::Float, tch::Device::Cpu)) * 7.0))));
        assert_eq!(uniform, vec![2.0, 3.0]);
    }

    #[test]
    fn object_rows_weigh_their_weight_in_the_winner_term() {
        // Two pairs of 4 tokens, 2 masked: pair 0 masks positions 3 and 1 (rows ascend: 1, 3),
        // pair 1 masks 0 and 2. Winner 0 has an object at token 3, winner 1 at tokens 0 and 2.
        let d = Draws {
            orders: vec![vec![3, 1, 0, 2], vec![2, 0, 1, 3]],
            masked: 2,
            t: vec![0; 4],
            noise: Tensor::zeros([4, 1], (Kind::Float, tch::Device::Cpu)),
        };
        let (o0, o1) = ([false, false, false, true], [true, false, true, false]);
        let w = object_row_weights(&d, 4, &[&o0, &o1], 4.0);
        assert_eq!(w, vec![1.0, 4.0, 4.0, 4.0], "rows 1, 3 of pair 0, then 0, 2 of pair 1");
        // Winner rows (0.1, 0.2 | 0.3, 0.4), losers anything: (0.1 + 0.8 + 1.2 + 1.6) / 13.
        let rows = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4, 9.0, 9.0, 9.0, 9.0]).view([4, 2]);
        let wt = Tensor::from_slice(&w).view([2, 2]);
        let v = scalar(&winner_mse(&rows, Some(&wt)));
        assert!((v - 3.7 / 13.0).abs() < 1e-6, "{v}");
        // weight 1 everywhere is the plain mean of the winners
        let ones = Tensor::ones([2, 2], (Kind::Float, tch::Device::Cpu));
        assert!((scalar(&winner_mse(&rows, Some(&ones))) - 0.25).abs() < 1e-6);
        assert!((scalar(&winner_mse(&rows, None)) - 0.25).abs() < 1e-6);
    }
}
