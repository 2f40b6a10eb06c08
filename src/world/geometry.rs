//! The shapes of the shapes world as signed distance functions in unit space (the shape fits
//! the unit circle), so rendering gets exact anti-aliasing from the distance alone.

use std::sync::OnceLock;

/// The classes the world can draw, in `prompts/shapes.toml`'s vocabulary.
pub const CLASSES: [&str; 10] =
    ["circle", "square", "triangle", "hexagon", "diamond", "star", "cross", "ring", "heart", "crescent"];

pub fn class_index(name: &str) -> Option<usize> {
    CLASSES.iter().position(|c| *c == name)
}

type V = (f32, f32);

fn len(p: V) -> f32 {
    (p.0 * p.0 + p.1 * p.1).sqrt()
}

/// Distance to an axis-aligned box of half-size `b`.
fn sd_box(p: V, b: V) -> f32 {
    let d = (p.0.abs() - b.0, p.1.abs() - b.1);
    len((d.0.max(0.0), d.1.max(0.0))) + d.0.max(d.1).min(0.0)
}

/// Signed distance to a simple polygon (negative inside): the nearest edge gives the
/// distance, the crossing count the sign.
fn sd_polygon(p: V, v: &[V]) -> f32 {
    let mut d = f32::MAX;
    let mut inside = false;
    let n = v.len();
    for i in 0..n {
        let (a, b) = (v[i], v[(i + 1) % n]);
        let e = (b.0 - a.0, b.1 - a.1);
        let w = (p.0 - a.0, p.1 - a.1);
        let t = ((w.0 * e.0 + w.1 * e.1) / (e.0 * e.0 + e.1 * e.1)).clamp(0.0, 1.0);
        let q = (w.0 - e.0 * t, w.1 - e.1 * t);
        d = d.min(q.0 * q.0 + q.1 * q.1);
        if (a.1 > p.1) != (b.1 > p.1) && p.0 < a.0 + (p.1 - a.1) * e.0 / e.1 {
            inside = !inside;
        }
    }
    if inside {
        -d.sqrt()
    } else {
        d.sqrt()
    }
}

fn regular(n: usize, r: f32, phase: f32) -> Vec<V> {
    (0..n)
        .map(|i| {
            let a = phase + i as f32 * std::f32::consts::TAU / n as f32;
            (r * a.cos(), r * a.sin())
        })
        .collect()
}

struct Polys {
    triangle: Vec<V>,
    hexagon: Vec<V>,
    diamond: Vec<V>,
    star: Vec<V>,
    heart: Vec<V>,
}

fn polys() -> &'static Polys {
    static P: OnceLock<Polys> = OnceLock::new();
    P.get_or_init(|| {
        let up = -std::f32::consts::FRAC_PI_2; // y grows downwards: -90° points up
        let star: Vec<V> = (0..10)
            .map(|i| {
                let r = if i % 2 == 0 { 1.0 } else { 0.45 };
                let a = up + i as f32 * std::f32::consts::PI / 5.0;
                (r * a.cos(), r * a.sin())
            })
            .collect();
        // The classic heart curve, scaled into the unit circle, lobes up.
        let mut heart: Vec<V> = (0..48)
            .map(|i| {
                let t = i as f32 * std::f32::consts::TAU / 48.0;
                let x = 16.0 * t.sin().powi(3);
                let y = 13.0 * t.cos() - 5.0 * (2.0 * t).cos() - 2.0 * (3.0 * t).cos() - (4.0 * t).cos();
                (x / 17.0, -(y + 2.5) / 17.0)
            })
            .collect();
        heart.dedup();
        Polys {
            triangle: regular(3, 1.0, up),
            hexagon: regular(6, 1.0, 0.0),
            diamond: vec![(0.0, -1.0), (0.66, 0.0), (0.0, 1.0), (-0.66, 0.0)],
            star,
            heart,
        }
    })
}

/// Signed distance (unit space, negative inside) from `p` to shape `class`.
pub fn sdf(class: usize, p: V) -> f32 {
    let polys = polys();
    match class {
        0 => len(p) - 1.0,
        1 => sd_box(p, (0.8, 0.8)),
        2 => sd_polygon(p, &polys.triangle),
        3 => sd_polygon(p, &polys.hexagon),
        4 => sd_polygon(p, &polys.diamond),
        5 => sd_polygon(p, &polys.star),
        6 => sd_box(p, (0.92, 0.3)).min(sd_box(p, (0.3, 0.92))),
        7 => (len(p) - 0.72).abs() - 0.28,
        8 => sd_polygon(p, &polys.heart),
        9 => (len(p) - 1.0).max(-(len((p.0 - 0.45, p.1 + 0.1)) - 0.82)),
        _ => f32::MAX,
    }
}

/// Measurements of a class's unit shape: bounding box (min x, min y, max x, max y), area and
/// centroid, integrated numerically once.
#[derive(Debug, Clone, Copy)]
pub struct UnitShape {
    pub bbox: [f32; 4],
    pub area: f32,
    pub centroid: (f32, f32),
}

pub fn unit_shape(class: usize) -> &'static UnitShape {
    static U: OnceLock<Vec<UnitShape>> = OnceLock::new();
    &U.get_or_init(|| {
        const N: usize = 300;
        let step = 2.2 / N as f32;
        (0..CLASSES.len())
            .map(|c| {
                let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
                let (mut n, mut sx, mut sy) = (0usize, 0.0f64, 0.0f64);
                for i in 0..N {
                    for j in 0..N {
                        let p = (-1.1 + (i as f32 + 0.5) * step, -1.1 + (j as f32 + 0.5) * step);
                        if sdf(c, p) <= 0.0 {
                            b = [b[0].min(p.0), b[1].min(p.1), b[2].max(p.0), b[3].max(p.1)];
                            n += 1;
                            sx += p.0 as f64;
                            sy += p.1 as f64;
                        }
                    }
                }
                let half = step / 2.0;
                UnitShape {
                    bbox: [b[0] - half, b[1] - half, b[2] + half, b[3] + half],
                    area: n as f32 * step * step,
                    centroid: ((sx / n as f64) as f32, (sy / n as f64) as f32),
                }
            })
            .collect::<Vec<_>>()
    })[class]
}

/// Bounding box (centre x, centre y, w, h) in pixels of an object.
pub fn bbox(class: usize, x: f32, y: f32, r: f32) -> (f32, f32, f32, f32) {
    let b = unit_shape(class).bbox;
    (x + (b[0] + b[2]) / 2.0 * r, y + (b[1] + b[3]) / 2.0 * r, (b[2] - b[0]) * r, (b[3] - b[1]) * r)
}

/// GenEval's `relative_position` of box a to box b, boxes as (centre x, centre y, w, h):
/// the centre offset shrunk by 0.1·(dims) per axis, normalised by the offset's length.
/// `strict` > 0 demands a clearer cut than GenEval's 0.5 (used when placing objects).
pub fn relations(a: (f32, f32, f32, f32), b: (f32, f32, f32, f32), strict: f32) -> Vec<&'static str> {
    let off = (a.0 - b.0, a.1 - b.1);
    let norm = (off.0 * off.0 + off.1 * off.1).sqrt();
    let shrink = |o: f32, da: f32, db: f32| (o.abs() - 0.1 * (da + db)).max(0.0) * o.signum();
    let rev = (shrink(off.0, a.2, b.2), shrink(off.1, a.3, b.3));
    if norm == 0.0 || (rev.0.abs() < 1e-3 && rev.1.abs() < 1e-3) {
        return vec![];
    }
    let (dx, dy) = (rev.0 / norm, rev.1 / norm);
    let cut = 0.5 + strict;
    let mut out = vec![];
    if dx < -cut {
        out.push("left of");
    }
    if dx > cut {
        out.push("right of");
    }
    if dy < -cut {
        out.push("above");
    }
    if dy > cut {
        out.push("below");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_circle_measures() {
        let u = unit_shape(0);
        assert!((u.area - std::f32::consts::PI).abs() < 0.01, "{}", u.area);
        assert!(u.centroid.0.abs() < 1e-3 && u.centroid.1.abs() < 1e-3);
        assert!((u.bbox[2] - 1.0).abs() < 0.01);
    }

    #[test]
    fn centres_are_inside_and_far_points_outside() {
        for (c, name) in CLASSES.iter().enumerate() {
            let centre = sdf(c, (0.0, 0.0));
            let far = sdf(c, (1.6, 1.6));
            assert!(far > 0.0, "{name}");
            // Ring and crescent are hollow or open at the centre; the others are filled.
            assert_eq!(centre < 0.0, !matches!(*name, "ring" | "crescent"), "{name}: {centre}");
        }
    }

    #[test]
    fn circle_and_box_distances_are_exact() {
        assert!((sdf(0, (2.0, 0.0)) - 1.0).abs() < 1e-6);
        assert!((sdf(1, (0.0, 1.8)) - 1.0).abs() < 1e-6);
        assert!((sdf(1, (0.0, 0.0)) + 0.8).abs() < 1e-6);
    }

    #[test]
    fn polygon_sign_and_distance() {
        let sq = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)];
        assert!((sd_polygon((0.0, 0.0), &sq) + 1.0).abs() < 1e-6);
        assert!((sd_polygon((3.0, 0.0), &sq) - 2.0).abs() < 1e-6);
    }
}
