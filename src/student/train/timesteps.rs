//! What timestep each head row of a step trains at, and how much its loss weighs there.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::student::model::Prediction;

/// The weight of the head's MSE at a timestep with cumulative alpha `ab` (SNR = ab / (1 − ab)):
/// min-SNR-γ, min(SNR, γ)/SNR for an eps head and min(SNR, γ)/(SNR + 1) for a v head (both
/// are the x0 weight min(SNR, γ), Hang et al. 2023), times the truncated high-noise weight
/// min(1 + 1/SNR, Γ) (Γ > 0, eps heads only); 1 when both are off.
pub fn loss_weight(ab: f64, gamma: f64, high: f64, prediction: Prediction) -> f64 {
    let snr = ab / (1.0 - ab);
    let norm = match prediction {
        Prediction::Eps => snr,
        Prediction::V => snr + 1.0,
    };
    let low = if gamma > 0.0 { snr.min(gamma) / norm } else { 1.0 };
    let hi = if high > 0.0 { (1.0 + 1.0 / snr).min(high) } else { 1.0 };
    low * hi
}

/// The timesteps of a step's `n` head rows, uniform on 0..1000, then (`timestep_band_share`
/// > 0) that share of the rows, evenly spread, mapped into `band` [lo, hi). The band takes no
/// draws of its own, so with it off every draw of the step is as before.
pub fn timesteps(n: usize, share: f64, band: [usize; 2], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let ts = (0..n).map(|_| rng.random_range(0..1000));
    match share {
        s if s > 0.0 => ts.enumerate().map(|(i, x)| in_band(i, s, x, band)).collect(),
        _ => ts.collect(),
    }
}

/// `ts` (a step's rows' timesteps) replaced by one stratified draw over the same rows
/// (`train.stratified_timesteps`): row i at ⌊(σ(i) + u)·1000/n⌋ for a random permutation σ
/// and one offset u in [0, 1). Each row's timestep is still uniform on 0..1000, so the loss is
/// the same in expectation, but a step's rows cover the range evenly (Kingma et al. 2021's
/// low-discrepancy sampler): the part of a step's gradient noise that comes from which
/// timesteps were drawn goes.
pub fn stratify(ts: &mut [usize], rng: &mut ChaCha8Rng) {
    use rand::seq::SliceRandom;
    let n = ts.len();
    let u: f64 = rng.random();
    let mut strata: Vec<usize> = (0..n).collect();
    strata.shuffle(rng);
    for (t, s) in ts.iter_mut().zip(strata) {
        *t = (((s as f64 + u) * 1000.0 / n as f64) as usize).min(999);
    }
}

/// Timestep `x` of row `i`, mapped into `band` when the row is one of the `share` evenly spread
/// over the rows: row i is in the band when ⌊(i + ½)·share⌋ steps up.
fn in_band(i: usize, share: f64, x: usize, [lo, hi]: [usize; 2]) -> usize {
    let band = ((i as f64 + 0.5) * share).floor() != ((i as f64 - 0.5) * share).floor();
    if band {
        lo + x * (hi - lo) / 1000
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::super::trainer::tests::micro;
    use super::super::trainer::Trainer;
    use crate::student::model::TextSource;

    #[test]
    fn a_band_share_moves_that_share_of_rows_into_the_band_and_keeps_every_other_draw() {
        // Seeded (train.seed 0, step 5): the same draws with the option off and on.
        let draws = |share: f64, band: [usize; 2]| {
            let mut cfg = micro();
            cfg.train.timestep_band_share = share;
            cfg.train.timestep_band = band;
            let model = cfg.model_config().unwrap().for_data(12, 4, TextSource::Vocab { vocab: 10 }, 0, 3);
            Trainer::new(cfg, model, 4, Device::Cpu).unwrap().draws(8, 5)
        };
        let off = draws(0.0, [0, 400]);
        for share in [0.25, 0.5] {
            // Which rows move: a band whose map has no fixed point among the draws (x = 1000).
            let probe = draws(share, [600, 1000]);
            let moved: Vec<bool> = probe.t.iter().zip(&off.t).map(|(a, b)| a != b).collect();
            let (n, want) = (moved.iter().filter(|&&m| m).count(), (off.t.len() as f64 * share).round() as usize);
            assert!(n.abs_diff(want) <= 1, "{n} rows in the band, {want} due");
            // Evenly spread: every run of 1 / share rows holds exactly one of them.
            assert!(moved.chunks((1.0 / share) as usize).all(|c| c.iter().filter(|&&m| m).count() == 1));
            for [lo, hi] in [[0, 400], [400, 700], [600, 1000]] {
                let d = draws(share, [lo, hi]);
                assert_eq!((d.noise.as_slice(), &d.orders, d.masked), (off.noise.as_slice(), &off.orders, off.masked));
                for (i, &m) in moved.iter().enumerate() {
                    let want = if m { lo + off.t[i] * (hi - lo) / 1000 } else { off.t[i] };
                    assert_eq!(d.t[i], want, "row {i}, band [{lo}, {hi})");
                    assert!(!m || (lo..hi).contains(&d.t[i]));
                }
            }
        }
        let mut bad = micro();
        bad.train.timestep_band_share = 1.5;
        assert!(bad.validate().unwrap_err().contains("timestep_band_share"));
        bad.train.timestep_band_share = 0.5;
        bad.train.timestep_band = [700, 400];
        assert!(bad.validate().unwrap_err().contains("timestep_band"));
        bad.train.timestep_band = [0, 1001];
        assert!(bad.validate().unwrap_err().contains("timestep_band"));
    }

    #[test]
    fn stratified_timesteps_put_one_row_in_each_stratum_and_keep_every_other_draw() {
        // Seeded (train.seed 0, steps 5 and 6): the same draws with the option off and on.
        let draws = |on: bool, step: u64| {
            let mut cfg = micro();
            cfg.train.stratified_timesteps = on;
            let model = cfg.model_config().unwrap().for_data(12, 4, TextSource::Vocab { vocab: 10 }, 0, 3);
            Trainer::new(cfg, model, 4, Device::Cpu).unwrap().draws(8, step)
        };
        for step in [5, 6] {
            let (off, on) = (draws(false, step), draws(true, step));
            assert_eq!((on.noise.as_slice(), &on.orders, on.masked), (off.noise.as_slice(), &off.orders, off.masked));
            let n = on.t.len();
            assert!(n >= 16, "{n} rows");
            // Sorted, the i-th timestep lies in the i-th of n equal strata of 0..1000.
            let mut sorted = on.t.clone();
            sorted.sort();
            for (i, &t) in sorted.iter().enumerate() {
                assert!(t >= i * 1000 / n && t < ((i + 1) * 1000).div_ceil(n), "row {i} of {n}: {t}");
            }
            // In a random order over the rows, not the grid's.
            assert_ne!(on.t, sorted);
            assert_ne!(on.t, off.t);
        }
        // Other steps draw another order and offset.
        assert_ne!(draws(true, 5).t, draws(true, 6).t);
        let mut bad = micro();
        (bad.train.stratified_timesteps, bad.train.timestep_band_share) = (true, 0.5);
        assert!(bad.validate().unwrap_err().contains("stratified_timesteps"));
    }
}
