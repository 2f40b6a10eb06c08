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
