//! The positional tables' two helpers: resizing a learned table to another grid (as the
//! reference's `interpolate_pos_encoding`) and MAE's 2-D sin-cos table. Used by the model and
//! by checkpoint loading, which resizes a reference checkpoint's tables.

use tch::{Kind, Tensor};

/// A (1, g², D) positional table resized to (1, grid², D) with libtorch's bicubic kernel, as
/// the reference's `interpolate_pos_encoding`: `F.interpolate(mode="bicubic",
/// align_corners=False, scale_factor=(grid + 0.1)/g)`. Also how a reference checkpoint's
/// 16×16 tables load into a model trained at another grid.
pub fn resize_positions(table: &Tensor, g: usize, grid: usize) -> Tensor {
    if g == grid {
        return table.shallow_clone(); // the reference interpolates only when the sizes differ
    }
    let d = *table.size().last().expect("(1, P, D)");
    let scale = (grid as f64 + 0.1) / g as f64;
    let (g, grid) = (g as i64, grid as i64);
    let img = table.to_kind(Kind::Float).view([1, g, g, d]).permute([0, 3, 1, 2]); // (1, D, g, g)
    let out = img.upsample_bicubic2d([grid, grid], false, scale, scale); // (1, D, grid, grid)
    out.permute([0, 2, 3, 1]).reshape([1, grid * grid, d]).to_kind(table.kind())
}

/// A 2-D sin-cos table like MAE's `get_2d_sincos_pos_embed(d, grid)`, (grid², d) in raster
/// order: the first d/2 channels encode the row, the last d/2 the column, each as
/// [sin(x·ω_k), cos(x·ω_k)] with ω_k = 1/10000^(k/(d/4)), k < d/4.
pub fn sincos_2d(grid: usize, d: usize) -> Vec<f32> {
    let q = d / 4;
    let omega: Vec<f64> = (0..q).map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64)).collect();
    let mut out = Vec::with_capacity(grid * grid * d);
    for y in 0..grid {
        for x in 0..grid {
            for coord in [y, x] {
                out.extend(omega.iter().map(|w| (coord as f64 * w).sin() as f32));
                out.extend(omega.iter().map(|w| (coord as f64 * w).cos() as f32));
            }
        }
    }
    out
}
