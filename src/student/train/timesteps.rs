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
}
