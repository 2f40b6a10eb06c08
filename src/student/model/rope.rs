//! 2-D rotary position embedding (RoPE, Su et al. 2021, in the axial 2-D form of Heo et al.
//! 2024) for the encoder's and decoder's self-attention: opt-in (`model.rope`), not in the
//! reference. Each head's channels split in four: row and column, each a pair of halves
//! rotated by angle pos·ω_j, so q·k depends on the two tokens' offset only. With learned
//! absolute tables alone, a masked token learns to look at its neighbours slowly: a
//! small model copies a visible square's colour into the square's hidden centre no better
//! than the background after 3,000 steps (the square toy in `train/learning_tests.rs`).

use tch::{Device, Kind, Tensor};

use super::layers::tensor_f32;

/// The base of the frequencies ω_j = base^(−j/n), j < n = head_dim/4: at 100 the fastest
/// turns 1 rad per token and the slowest ~0.02 rad, for grids of up to ~64 tokens a side.
const BASE: f64 = 100.0;

/// Rotation tables for a `grid`×`grid` sequence: cos and sin, each (grid², head_dim), laid
/// out as (axis, half, n) per position: axis 0 the row, axis 1 the column.
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    pub fn new(grid: usize, head_dim: usize, dev: Device) -> Rope {
        let n = head_dim / 4;
        let omega: Vec<f64> = (0..n).map(|j| BASE.powf(-(j as f64) / n as f64)).collect();
        let (mut cos, mut sin) =
            (Vec::with_capacity(grid * grid * head_dim), Vec::with_capacity(grid * grid * head_dim));
        for y in 0..grid {
            for x in 0..grid {
                for coord in [y, x] {
                    for _half in 0..2 {
                        cos.extend(omega.iter().map(|w| (coord as f64 * w).cos() as f32));
                        sin.extend(omega.iter().map(|w| (coord as f64 * w).sin() as f32));
                    }
                }
            }
        }
        let l = grid * grid;
        Rope { cos: tensor_f32(&cos, &[l, head_dim], dev), sin: tensor_f32(&sin, &[l, head_dim], dev) }
    }

    /// The tables at given positions: `at` (N) indices into the grid → (cos, sin), (N, hd).
    pub fn at(&self, at: &Tensor) -> (Tensor, Tensor) {
        (self.cos.index_select(0, at), self.sin.index_select(0, at))
    }
}

/// Angles for a batch of queries or keys, ready to broadcast over heads: (B or 1, 1, L, hd).
pub struct Angles {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Angles {
    /// (N, hd) tables of `b` samples × L positions (sample-major) → (b, 1, L, hd) in `kind`.
    pub fn of(cos: Tensor, sin: Tensor, b: i64, kind: Kind) -> Angles {
        let hd = cos.size()[1];
        let shape = [b, 1, -1, hd];
        Angles { cos: cos.view(shape).to_kind(kind), sin: sin.view(shape).to_kind(kind) }
    }

    /// Rotates x (B, H, L, hd): within each (axis, ·) group the halves (a, b) become
    /// (a·cos − b·sin, b·cos + a·sin).
    pub fn rotate(&self, x: &Tensor) -> Tensor {
        let (b, h, l, hd) = x.size4().expect("(B, H, L, hd)");
        let n = hd / 4;
        let x6 = x.view([b, h, l, 2, 2, n]); // (B, H, L, axis, half, n)
        let (xa, xb) = (x6.select(4, 0), x6.select(4, 1)); // (B, H, L, 2, n)
        let rot = Tensor::stack(&[&xb.neg(), &xa], 4).view([b, h, l, hd]); // (B, H, L, hd)
        x * &self.cos + rot * &self.sin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::model::layers::{index, to_host};

    #[test]
    fn rotated_dot_products_depend_on_the_offset_only() {
        // q·k after rotation at (p, p + δ) is the same for every p with the same offset δ, and
        // at δ = 0 equals the plain dot product (a rotation keeps norms).
        let rope = Rope::new(6, 8, Device::Cpu);
        let q = Tensor::from_slice(&[0.3f32, -1.0, 0.5, 2.0, 0.1, 0.7, -0.4, 1.2]).view([1, 1, 1, 8]);
        let k = Tensor::from_slice(&[1.0f32, 0.2, -0.3, 0.4, 0.9, -1.1, 0.6, 0.05]).view([1, 1, 1, 8]);
        let dot = |pq: i64, pk: i64| {
            let (qc, qs) = rope.at(&index(&[pq], Device::Cpu));
            let (kc, ks) = rope.at(&index(&[pk], Device::Cpu));
            let qr = Angles::of(qc, qs, 1, Kind::Float).rotate(&q);
            let kr = Angles::of(kc, ks, 1, Kind::Float).rotate(&k);
            to_host(&(qr * kr).sum(Kind::Float))[0]
        };
        let plain = to_host(&(&q * &k).sum(Kind::Float))[0];
        assert!((dot(7, 7) - plain).abs() < 1e-5 && (dot(20, 20) - plain).abs() < 1e-5);
        // Offset (+1 row, +2 columns) from (0, 0) and from (2, 3): positions 0 → 8, 15 → 23.
        assert!((dot(0, 8) - dot(15, 23)).abs() < 1e-5, "{} vs {}", dot(0, 8), dot(15, 23));
        assert!((dot(0, 8) - plain).abs() > 1e-3, "an offset changes the product");
    }
}
