//! GenEval's ten colour names, their canonical sRGB values, jitter, and naming a measured
//! colour (nearest canonical colour in CIELAB).

use rand::{Rng, RngExt};

pub const NAMES: [&str; 10] = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"];

/// Canonical sRGB values in [0, 1], chosen far apart in CIELAB and from the neutral greys
/// that backgrounds use.
pub const RGB: [[f32; 3]; 10] = [
    [0.86, 0.10, 0.10],
    [1.00, 0.55, 0.05],
    [0.97, 0.88, 0.12],
    [0.12, 0.65, 0.20],
    [0.12, 0.30, 0.90],
    [0.55, 0.18, 0.78],
    [1.00, 0.55, 0.78],
    [0.50, 0.30, 0.12],
    [0.06, 0.06, 0.06],
    [0.97, 0.97, 0.97],
];

pub fn index(name: &str) -> Option<usize> {
    NAMES.iter().position(|n| *n == name)
}

/// A jittered instance of colour `c`: hue ±6°, saturation ×[0.9, 1], value ×[0.9, 1.06].
pub fn jitter(c: usize, rng: &mut impl Rng) -> [f32; 3] {
    let (h, s, v) = rgb_to_hsv(RGB[c]);
    let h = (h + rng.random_range(-6.0f32..6.0)).rem_euclid(360.0);
    let s = (s * rng.random_range(0.9f32..1.0)).clamp(0.0, 1.0);
    let v = (v * rng.random_range(0.9f32..1.06)).clamp(0.0, 1.0);
    hsv_to_rgb(h, s, v)
}

pub fn rgb_to_hsv([r, g, b]: [f32; 3]) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    (h, if max == 0.0 { 0.0 } else { d / max }, max)
}

pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0).rem_euclid(2.0) - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r + m, g + m, b + m]
}

/// sRGB in [0, 1] → CIELAB (D65).
pub fn lab([r, g, b]: [f32; 3]) -> [f32; 3] {
    let lin = |c: f32| {
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(r), lin(g), lin(b));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f32| {
        if t > 0.008856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// The nearest colour name to a measured sRGB value, and how sure (1 − d_best / d_second).
pub fn name(rgb: [f32; 3]) -> (usize, f32) {
    let q = lab(rgb);
    let mut d: Vec<(f32, usize)> = RGB
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = lab(*c);
            ((q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2) + (q[2] - p[2]).powi(2), i)
        })
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    (d[0].1, 1.0 - (d[0].0 / d[1].0.max(1e-6)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn canonical_colours_name_themselves_and_jitter_keeps_the_name() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0); // fixed seed
        for c in 0..10 {
            assert_eq!(name(RGB[c]).0, c, "{}", NAMES[c]);
            for _ in 0..200 {
                let j = jitter(c, &mut rng);
                assert_eq!(name(j).0, c, "{} jittered to {j:?}", NAMES[c]);
            }
        }
    }

    #[test]
    fn hsv_round_trips() {
        for c in RGB {
            let (h, s, v) = rgb_to_hsv(c);
            let back = hsv_to_rgb(h, s, v);
            for k in 0..3 {
                assert!((back[k] - c[k]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn lab_of_white_and_black() {
        let w = lab([1.0, 1.0, 1.0]);
        assert!((w[0] - 100.0).abs() < 0.1 && w[1].abs() < 0.5 && w[2].abs() < 0.5, "{w:?}");
        assert!(lab([0.0, 0.0, 0.0])[0].abs() < 1e-3);
    }
}
