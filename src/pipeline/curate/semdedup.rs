//! SemDeDup (Abbas et al. 2023; `pipeline.md` §3): spherical k-means over unit image
//! embeddings, then within each cluster, visiting samples in keep order, a sample whose cosine
//! to an already kept member is above 1 − eps is a semantic duplicate of that member.
//! Deterministic: the initial centroids come from a fixed-seed draw (seed 0).

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// What SemDeDup decided for one sample: `None` kept, or (index of the kept sample it
/// duplicates, cosine).
pub type Verdict = Option<(usize, f32)>;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Spherical k-means: each point's cluster. `points` are unit vectors of one length.
pub fn kmeans(points: &[&[f32]], k: usize, iterations: u32, threads: usize) -> Vec<usize> {
    let n = points.len();
    if n == 0 {
        return Vec::new();
    }
    let k = k.clamp(1, n);
    let dim = points[0].len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    let mut centroids: Vec<Vec<f32>> = idx[..k].iter().map(|&i| points[i].to_vec()).collect();
    let mut assign = vec![0usize; n];
    for _ in 0..iterations {
        // Assignment: the centroid of highest cosine (ties to the lower index).
        let next: Vec<usize> = crate::pipeline::par::map_chunks(
            points,
            threads,
            256,
            || (),
            |_, chunk| {
                chunk
                    .iter()
                    .map(|p| {
                        let mut best = (0, f32::NEG_INFINITY);
                        for (c, cen) in centroids.iter().enumerate() {
                            let s = dot(p, cen);
                            if s > best.1 {
                                best = (c, s);
                            }
                        }
                        best.0
                    })
                    .collect()
            },
            |_| {},
        );
        let changed = next != assign;
        assign = next;
        // Update: the normalised mean; an empty cluster keeps its centroid.
        let mut sums = vec![vec![0f32; dim]; k];
        for (p, &c) in points.iter().zip(&assign) {
            for (s, x) in sums[c].iter_mut().zip(p.iter()) {
                *s += x;
            }
        }
        for (cen, s) in centroids.iter_mut().zip(sums) {
            let norm = s.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                *cen = s.iter().map(|x| x / norm).collect();
            }
        }
        if !changed {
            break;
        }
    }
    assign
}

/// SemDeDup over `points` visited in `order` (the keep order: best first). Returns one
/// verdict per point.
pub fn semdedup(
    points: &[&[f32]],
    order: &[usize],
    clusters: usize,
    eps: f64,
    iterations: u32,
    threads: usize,
) -> Vec<Verdict> {
    let assign = kmeans(points, clusters, iterations, threads);
    let mut kept: std::collections::HashMap<usize, Vec<usize>> = std::collections::HashMap::new();
    let mut out: Vec<Verdict> = vec![None; points.len()];
    let limit = (1.0 - eps) as f32;
    for &i in order {
        let members = kept.entry(assign[i]).or_default();
        let best = members
            .iter()
            .map(|&j| (j, dot(points[i], points[j])))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        match best {
            Some((j, s)) if s > limit => out[i] = Some((j, s)),
            _ => members.push(i),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn near_copies_go_and_distinct_points_stay() {
        // Two tight groups and a loner; within a group the first in keep order stays.
        let pts: Vec<Vec<f32>> = vec![
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.99, 0.05, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.02, 0.98, 0.0]),
            unit(&[0.0, 0.0, 1.0]),
            unit(&[0.7, 0.7, 0.0]),
        ];
        let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
        let order = [1, 0, 2, 3, 4, 5];
        let v = semdedup(&refs, &order, 3, 0.01, 20, 1);
        assert_eq!(v[1], None, "first in keep order stays");
        assert_eq!(v[0].map(|x| x.0), Some(1));
        assert_eq!(v[3].map(|x| x.0), Some(2));
        assert_eq!((v[2], v[4], v[5]), (None, None, None));
        // A smaller eps (stricter match) keeps everything here.
        assert!(semdedup(&refs, &order, 3, 0.0001, 20, 1).iter().all(Option::is_none));
    }

    #[test]
    fn kmeans_separates_clear_groups_deterministically() {
        let pts: Vec<Vec<f32>> = (0..40)
            .map(|i| unit(&[if i < 20 { 1.0 } else { 0.0 }, if i < 20 { 0.0 } else { 1.0 }, 0.01 * i as f32]))
            .collect();
        let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
        let a = kmeans(&refs, 2, 10, 2);
        assert!(a[..20].iter().all(|&c| c == a[0]) && a[20..].iter().all(|&c| c == a[20]) && a[0] != a[20]);
        assert_eq!(a, kmeans(&refs, 2, 10, 1), "same result on any thread count");
    }
}
