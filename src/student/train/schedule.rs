//! Pure schedules: the learning rate per step, the batch's mask ratio (truncated normal) and
//! the per-step random streams (every random draw of step s comes from (seed, s), so a resumed
//! run draws exactly what an uninterrupted one would).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Linear warm-up, then constant (the reference default).
    Constant,
    /// Linear warm-up, then half-cosine down to `min_lr` (over the last `lr_decay_steps`
    /// only, when set: constant until then).
    Cosine,
}

/// `util/lr_sched.adjust_learning_rate`, per step: lr·s/warmup during warm-up, then constant
/// or cosine from lr to min_lr over the remaining steps. With `decay` > 0 the cosine spans only
/// the last `decay` steps and the lr holds until then (warm-up, stable, decay): a curriculum's
/// early phase keeps the full lr, and the end still anneals.
pub fn lr_at(step: u64, lr: f64, min_lr: f64, warmup: u64, total: u64, decay: u64, kind: LrSchedule) -> f64 {
    if step < warmup {
        return lr * step as f64 / warmup as f64;
    }
    match kind {
        LrSchedule::Constant => lr,
        LrSchedule::Cosine => {
            let start = if decay > 0 { total.saturating_sub(decay).max(warmup) } else { warmup };
            if step < start {
                return lr;
            }
            let span = total.saturating_sub(start).max(1) as f64;
            let p = ((step - start) as f64 / span).min(1.0);
            min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}

/// The random stream for one purpose of one step.
pub fn step_rng(seed: u64, step: u64, purpose: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x6c69_6768_7467_656e);
    r.set_stream(step.wrapping_mul(16).wrapping_add(purpose));
    r
}

/// `scipy.stats.truncnorm((min − 1)/std, 0, loc=1, scale=std)` (std = 0.25 in the reference):
/// N(1, std²) restricted to [min, 1], drawn by rejection from the left half-normal.
pub fn mask_ratio(min: f64, std: f64, rng: &mut impl rand::Rng) -> f64 {
    let n = Normal::new(0.0, std).expect("finite");
    loop {
        let r = 1.0 - f64::abs(n.sample(rng));
        if r >= min {
            return r;
        }
    }
}

/// One independent random permutation of 0..len per sample (`sample_orders`).
pub fn orders(b: usize, len: usize, rng: &mut impl rand::Rng) -> Vec<Vec<usize>> {
    use rand::seq::SliceRandom;
    (0..b)
        .map(|_| {
            let mut o: Vec<usize> = (0..len).collect();
            o.shuffle(rng);
            o
        })
        .collect()
}

/// A block-wise order over a `grid`×`grid` token grid (BEiT's blockwise masking): random
/// rectangles of 1..=⌈grid/2⌉ tokens a side are listed one after another (each one's new
/// tokens in random order, tokens already listed skipped), the tokens no rectangle reached
/// last in random order. A mask made of an order's first k tokens is then a union of whole
/// blocks (the last one partly): whole objects hidden with the background around them
/// visible, which uniform random masks almost never show (each of an object's tokens is
/// visible independently).
pub fn block_order(grid: usize, rng: &mut impl rand::Rng) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let len = grid * grid;
    let side = grid.div_ceil(2).max(1);
    let mut seen = vec![false; len];
    let mut order = Vec::with_capacity(len);
    // 4·len rectangles reach all but a few tokens; the cap ends the loop when the last
    // unlisted tokens keep being missed (they go last, shuffled)
    for _ in 0..4 * len {
        if order.len() == len {
            break;
        }
        let (w, h) = (rng.random_range(1..=side), rng.random_range(1..=side));
        let (x0, y0) = (rng.random_range(0..=grid - w), rng.random_range(0..=grid - h));
        let mut block: Vec<usize> =
            (y0..y0 + h).flat_map(|y| (x0..x0 + w).map(move |x| y * grid + x)).filter(|&i| !seen[i]).collect();
        block.shuffle(rng);
        for &i in &block {
            seen[i] = true;
        }
        order.extend(block);
    }
    let mut rest: Vec<usize> = (0..len).filter(|&i| !seen[i]).collect();
    rest.shuffle(rng);
    order.extend(rest);
    order
}

/// Per-sample caption keep flags (dropped with probability `p` for CFG).
pub fn keep_text(b: usize, p: f64, rng: &mut impl rand::Rng) -> Vec<bool> {
    (0..b).map(|_| rng.random::<f64>() >= p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_constant_or_cosine() {
        assert_eq!(lr_at(0, 1e-3, 0.0, 10, 100, 0, LrSchedule::Constant), 0.0);
        assert!((lr_at(5, 1e-3, 0.0, 10, 100, 0, LrSchedule::Constant) - 5e-4).abs() < 1e-15);
        assert_eq!(lr_at(50, 1e-3, 0.0, 10, 100, 0, LrSchedule::Constant), 1e-3);
        assert_eq!(lr_at(10, 1e-3, 1e-5, 10, 100, 0, LrSchedule::Cosine), 1e-3);
        assert!((lr_at(55, 1e-3, 0.0, 10, 100, 0, LrSchedule::Cosine) - 5e-4).abs() < 1e-12);
        assert!((lr_at(100, 1e-3, 1e-5, 10, 100, 0, LrSchedule::Cosine) - 1e-5).abs() < 1e-15);
        // The last 40 of 100 steps decay; before them the lr holds (and `Constant` ignores it).
        assert_eq!(lr_at(60, 1e-3, 0.0, 10, 100, 40, LrSchedule::Cosine), 1e-3);
        assert!((lr_at(80, 1e-3, 0.0, 10, 100, 40, LrSchedule::Cosine) - 5e-4).abs() < 1e-12);
        assert!(lr_at(100, 1e-3, 0.0, 10, 100, 40, LrSchedule::Cosine).abs() < 1e-15);
        assert_eq!(lr_at(80, 1e-3, 0.0, 10, 100, 40, LrSchedule::Constant), 1e-3);
        // A decay longer than the run starts after the warm-up, as without it.
        assert_eq!(
            lr_at(55, 1e-3, 0.0, 10, 100, 500, LrSchedule::Cosine),
            lr_at(55, 1e-3, 0.0, 10, 100, 0, LrSchedule::Cosine)
        );
    }

    #[test]
    fn truncnorm_stays_in_bounds_with_the_reference_mean() {
        // Mean of N(1, 0.25) truncated to [0.7, 1]: 1 + 0.25·(φ(−1.2) − φ(0)) / (Φ(0) − Φ(−1.2))
        // = 1 + 0.25·(0.194186 − 0.398942)/(0.5 − 0.115070) = 0.867017.
        let mut rng = ChaCha8Rng::seed_from_u64(3); // fixed seed: a 200k-draw mean
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| mask_ratio(0.7, 0.25, &mut rng)).collect();
        assert!(draws.iter().all(|r| (0.7..=1.0).contains(r)));
        let mean = draws.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.867017).abs() < 0.002, "{mean}");
        // N(1, 1) on [0.2, 1]: 1 − E|N| given |N| ≤ 0.8 = 1 − (1 − e^−0.32)/∫₀^0.8 e^(−x²/2) dx
        // = 1 − 0.273851/0.722815 = 0.621133.
        let draws: Vec<f64> = (0..n).map(|_| mask_ratio(0.2, 1.0, &mut rng)).collect();
        assert!(draws.iter().all(|r| (0.2..=1.0).contains(r)));
        let mean = draws.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.621133).abs() < 0.002, "{mean}");
    }

    #[test]
    fn step_streams_are_reproducible_and_distinct() {
        let a: u64 = step_rng(1, 5, 0).random();
        assert_eq!(a, step_rng(1, 5, 0).random::<u64>());
        assert_ne!(a, step_rng(1, 6, 0).random::<u64>());
        assert_ne!(a, step_rng(1, 5, 1).random::<u64>());
        let o = orders(2, 10, &mut step_rng(1, 0, 0));
        let mut s = o[0].clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_ne!(o[0], o[1]);
    }

    /// Masked 4-neighbours per masked token, over the first `k` tokens of each order.
    fn clustering(orders: &[Vec<usize>], grid: usize, k: usize) -> f64 {
        let mut sum = 0usize;
        for o in orders {
            let mut m = vec![false; grid * grid];
            o[..k].iter().for_each(|&i| m[i] = true);
            for &i in &o[..k] {
                let (x, y) = (i % grid, i / grid);
                let n = [
                    (x > 0, i.wrapping_sub(1)),
                    (x + 1 < grid, i + 1),
                    (y > 0, i.wrapping_sub(grid)),
                    (y + 1 < grid, i + grid),
                ];
                sum += n.iter().filter(|(ok, j)| *ok && m[*j]).count();
            }
        }
        sum as f64 / (orders.len() * k) as f64
    }

    #[test]
    fn block_orders_are_permutations_whose_masks_are_blocks() {
        let mut rng = step_rng(0, 0, 3); // fixed seed: 200 orders of each kind
        let blocks: Vec<Vec<usize>> = (0..200).map(|_| block_order(8, &mut rng)).collect();
        for o in &blocks {
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, (0..64).collect::<Vec<_>>());
        }
        let uniform = orders(200, 64, &mut rng);
        let (b, u) = (clustering(&blocks, 8, 24), clustering(&uniform, 8, 24));
        // uniform masks of 24/64: each neighbour masked with p ≈ 23/63, ~1.3 of ~3.5 neighbours
        assert!(u < 1.5, "uniform {u}");
        assert!(b > u + 0.8, "block masks hide whole regions: {b} against {u}");
        assert_ne!(blocks[0], blocks[1]);
        assert_eq!(block_order(8, &mut step_rng(0, 7, 3)), block_order(8, &mut step_rng(0, 7, 3)));
    }
}
