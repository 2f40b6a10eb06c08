//! The token codebook of `train.code_loss_weight`: k-means centres of the corpus's tokens, and
//! each masked token's code (its nearest centre), the target of the code read-out's
//! cross-entropy. Fitted once at the start of a run on a seeded sample of training images and
//! stored with the optimiser state, so `--resume` keeps the same codes.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::data::Dataset;

/// Lloyd iterations: the centres of a few thousand tokens settle well within this.
const ITERS: usize = 20;

/// The tokens (N, C) of `images` training images drawn by `seed` (all of them if fewer).
pub fn sample_tokens(ds: &Dataset, images: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC0DE);
    let n = images.min(ds.len());
    let mut picked: Vec<usize> = sample(&mut rng, ds.len(), n).into_vec();
    picked.sort_unstable();
    let values: Vec<f32> = picked.into_iter().flat_map(|i| ds.example(i).tokens).collect();
    // (N·L, C): every token of the picked images.
    Tensor::from_slice(&values).view([(n * ds.tokens) as i64, ds.token_dim as i64])
}

/// k-means of `x` (N, C) into `k` centres (k, C): seeded distinct rows as the first centres,
/// then Lloyd's iterations; a centre that loses every token keeps its place.
pub fn kmeans(x: &Tensor, k: usize, seed: u64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let x = x.to_kind(Kind::Float);
    let (n, c) = (x.size()[0], x.size()[1]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = k.min(n as usize);
    let first: Vec<i64> = sample(&mut rng, n as usize, k).into_iter().map(|i| i as i64).collect();
    let mut centres = x.index_select(0, &Tensor::from_slice(&first)); // (k, C)
    for _ in 0..ITERS {
        let code = assign(&x, &centres); // (N)
        let sums = Tensor::zeros([k as i64, c], (Kind::Float, x.device())).index_add(0, &code, &x); // (k, C)
        let counts = Tensor::zeros([k as i64], (Kind::Float, x.device())).index_add(
            0,
            &code,
            &Tensor::ones([n], (Kind::Float, x.device())),
        ); // (k)
        let held = counts.gt(0.0).unsqueeze(1); // (k, 1)
        let means = sums / counts.clamp_min(1.0).unsqueeze(1);
        centres = means.where_self(&held, &centres);
    }
    centres
}

/// Each row's nearest centre: argmin over ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖² (‖x‖² is the same
/// for every centre). x (N, C), centres (k, C) → (N) int64.
pub fn assign(x: &Tensor, centres: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let x = x.to_kind(Kind::Float);
    let cc = centres.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Float); // (k)
    let d = cc.unsqueeze(0) - x.matmul(&centres.tr()) * 2.0; // (N, k)
    d.argmin(1, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::model::layers::Ctx;
    use crate::student::model::TextSource;
    use crate::student::train::data::Batch;
    use crate::student::train::trainer::tests::micro;
    use crate::student::train::trainer::Trainer;
    use tch::Device;

    #[test]
    fn the_code_term_adds_weight_times_the_cross_entropy_against_each_tokens_nearest_code() {
        // Seeded (train.seed 0): the same weights and draws with code_loss_weight 1 and 3; the
        // rows differ by 2 × the read-out's cross-entropy.
        let tokens: Vec<f32> = (0..4 * 16 * 12).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let x = Tensor::from_slice(&tokens).view([64, 12]);
        let book = kmeans(&x, 8, 0);
        let trainer = |w: f64, book: Option<&Tensor>| {
            let mut cfg = micro();
            cfg.train.code_loss_weight = w;
            cfg.train.codes = 8;
            cfg.train.text_drop_prob = 0.0;
            cfg.model.dropout = Some(0.0);
            let model = cfg.model_config().unwrap().for_data(12, 4, TextSource::Vocab { vocab: 10 }, 0, 3);
            assert_eq!(model.codes, 8, "a weight > 0 builds the read-out");
            let mut tr = Trainer::new(cfg, model, 4, Device::Cpu).unwrap();
            tr.codebook = book.map(|b| b.shallow_clone());
            tr
        };
        let batch = Batch { step: 0, size: 4, tokens, ids: vec![2, 3, 0, 4, 5, 0, 2, 5, 0, 3, 4, 0], feats: vec![] };
        let rows = |w: f64| {
            let (loss, mse, _) = trainer(w, Some(&book)).losses(&batch, 1, &Ctx::eval()).unwrap();
            (crate::student::model::layers::to_host(&loss), crate::student::model::layers::to_host(&mse))
        };
        let ((a, ma), (b, mb)) = (rows(1.0), rows(3.0));
        assert_eq!(ma, mb, "the DiffLoss terms do not change");
        let ce: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (y - x) / 2.0).collect();
        // Each row a cross-entropy over 8 codes: positive, and on average of the order of
        // ln 8 at init (not a sum over the batch or over the codes).
        let mean = ce.iter().sum::<f32>() / ce.len() as f32;
        assert!(ce.iter().all(|v| *v > 0.05 && v.is_finite()), "{ce:?}");
        assert!((0.5..2.0).contains(&(mean / 8f32.ln())), "mean cross-entropy {mean}");
        // The codebook is kept with the optimiser state (a resume reads it back).
        let tr = trainer(1.0, Some(&book));
        assert!(tr.optim_tensors()["codebook"].equal(&book));
        // Without a codebook the step is refused, naming the field.
        let err = trainer(1.0, None).losses(&batch, 1, &Ctx::eval()).unwrap_err().to_string();
        assert!(err.contains("code_loss_weight"), "{err}");
        assert_eq!(micro().model_config().unwrap().codes, 0, "off by default, as the reference");
        let mut bad = micro();
        bad.train.code_loss_weight = 1.0;
        bad.train.codes = 1;
        assert!(bad.validate().unwrap_err().contains("train.codes"));
    }

    #[test]
    fn kmeans_finds_separated_clusters_and_assign_names_them() {
        // Seeded (seed 3): 3 tight clusters of 40 points around far-apart centres in 4-D.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let centres = [[-5f32, 0.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0], [0.0, -5.0, 5.0, 5.0]];
        let mut v = Vec::new();
        for i in 0..120 {
            for &m in &centres[i % 3] {
                v.push(m + (rand::RngExt::random::<f32>(&mut rng) - 0.5) * 0.2);
            }
        }
        let x = Tensor::from_slice(&v).view([120, 4]);
        let cb = kmeans(&x, 3, 3);
        let code: Vec<i64> = Vec::try_from(assign(&x, &cb)).unwrap();
        // Points of one cluster share a code, and the three clusters have three codes.
        for i in 0..120 {
            assert_eq!(code[i], code[i % 3], "point {i}");
        }
        let mut distinct = vec![code[0], code[1], code[2]];
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        // Each centre sits on its cluster's mean (within the ±0.1 jitter).
        let cb: Vec<f32> = Vec::try_from(cb.flatten(0, -1)).unwrap();
        for (i, m) in centres.iter().enumerate() {
            let k = code[i] as usize;
            for d in 0..4 {
                assert!((cb[k * 4 + d] - m[d]).abs() < 0.1, "centre of cluster {i}: {:?}", &cb[k * 4..k * 4 + 4]);
            }
        }
        // The same seed gives the same centres.
        let again: Vec<f32> = Vec::try_from(kmeans(&x, 3, 3).flatten(0, -1)).unwrap();
        assert_eq!(cb, again);
    }
}
