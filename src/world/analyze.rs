//! The shapes analyzer: from pixels only, finds objects, names their shape and colour, and
//! judges an image against a prompt's spec. It is the shapes world's stand-in for a CLIP
//! filter (the alignment score) and for GenEval's detector (the verdict).
//!
//! Pipeline: a per-channel plane fitted to the image border models the background; pixels
//! far from it are foreground; 4-connected components are objects. Colour is the median of an
//! object's interior, named by the nearest canonical colour in CIELAB. Shape is found by
//! analysis by synthesis: the object's soft coverage (sub-pixel, from its distance to the
//! background) fixes, for each class, the scale and centre at which that class's unit shape
//! has the same area and centroid; the class whose predicted coverage differs least from the
//! observed one wins. The world's shape vocabulary is known; no sample's record is read.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::color;
use super::geometry::{bbox, relations, sdf, unit_shape, CLASSES};
use super::{ObjectSpec, SceneObject, Spec};

pub const RELATIONS: [&str; 4] = ["left of", "right of", "above", "below"];

/// One object found in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class: String,
    pub color: String,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub area: u32,
    /// 1 − d_best / d_second (0 = a toss-up, 1 = certain), for class and colour.
    pub class_conf: f32,
    pub color_conf: f32,
}

/// GenEval-style pass/fail for a spec, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub reason: String,
}

/// The analyzer's judgement of one image against one spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Prompt–image alignment in [0, 1]: matched objects / (matched + every mismatch). 1 means
    /// the image shows exactly what the prompt asks (no missing, extra, miscoloured or
    /// misplaced object).
    pub score: f32,
    pub verdict: Verdict,
    pub detections: Vec<Detection>,
}

/// Analyzes shapes-world images of any size. Stateless; cheap to copy.
#[derive(Clone, Copy, Default)]
pub struct Analyzer;

impl Analyzer {
    pub fn new() -> Analyzer {
        Analyzer
    }

    /// Finds the objects in an image.
    pub fn detect(&self, img: &RgbImage) -> Vec<Detection> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w < 3 || h < 3 {
            return vec![];
        }
        let px: Vec<[f32; 3]> = img.pixels().map(|p| p.0.map(|c| c as f32 / 255.0)).collect();
        let bg = fit_background(&px, w, h);
        let dist = bg_distance(&px, &bg, w);
        let fg: Vec<bool> = dist.iter().map(|&d| d > FG_THRESHOLD).collect();
        let unit = w.min(h) as f32 / 64.0;
        let min_area = (12.0 * unit * unit).max(4.0) as usize;
        let comps: Vec<Vec<usize>> = components(&fg, w, h).into_iter().filter(|c| c.len() >= min_area).collect();
        let mut label = vec![u32::MAX; w * h];
        for (k, c) in comps.iter().enumerate() {
            for &i in c {
                label[i] = k as u32;
            }
        }
        comps.iter().enumerate().map(|(k, c)| describe(k as u32, c, &px, &dist, &bg, &label, w, h)).collect()
    }

    /// Detects and judges an image against a spec.
    pub fn judge(&self, img: &RgbImage, spec: &Spec) -> Judgement {
        judge_detections(spec, self.detect(img))
    }
}

/// Names one component's colour and shape.
#[allow(clippy::too_many_arguments)]
fn describe(
    k: u32,
    pixels: &[usize],
    px: &[[f32; 3]],
    dist: &[f32],
    bg: &Plane,
    label: &[u32],
    w: usize,
    h: usize,
) -> Detection {
    let fill = interior_median(pixels, label, k, px, w);
    let (ci, color_conf) = color::name(fill);
    // Soft coverage in a window around the component: distance from the background relative
    // to the fill's own distance (other components' pixels excluded).
    let x0 = pixels.iter().map(|&i| i % w).min().unwrap_or(0).saturating_sub(2);
    let x1 = (pixels.iter().map(|&i| i % w).max().unwrap_or(0) + 3).min(w);
    let y0 = pixels.iter().map(|&i| i / w).min().unwrap_or(0).saturating_sub(2);
    let y1 = (pixels.iter().map(|&i| i / w).max().unwrap_or(0) + 3).min(h);
    let centre = (pixels.iter().map(|&i| (i % w) as f32).sum::<f32>() / pixels.len() as f32, 0.0);
    let fb = bg.at(centre.0, (pixels.iter().map(|&i| i / w).sum::<usize>() / pixels.len()) as f32);
    let full = ((0..3).map(|c| (fill[c] - fb[c]).powi(2)).sum::<f32>().sqrt()).max(FG_THRESHOLD);
    let mut cov = Vec::with_capacity((x1 - x0) * (y1 - y0));
    let (mut a, mut sx, mut sy) = (0.0f32, 0.0f32, 0.0f32);
    for y in y0..y1 {
        for x in x0..x1 {
            let i = y * w + x;
            let alpha = if label[i] != u32::MAX && label[i] != k { 0.0 } else { (dist[i] / full).clamp(0.0, 1.0) };
            cov.push(alpha);
            a += alpha;
            sx += alpha * (x as f32 + 0.5);
            sy += alpha * (y as f32 + 0.5);
        }
    }
    let (cx, cy) = (sx / a.max(1e-6), sy / a.max(1e-6));
    // Each class at the scale and centre that give it this area and centroid; least error wins.
    let window = Window { x0, x1, y0, y1, cov: &cov };
    let mut errors = [f32::MAX; 10];
    let mut fits = [(0.0f32, 0.0f32, 0.0f32); 10];
    for c in 0..10 {
        let u = unit_shape(c);
        let r = (a / u.area).sqrt();
        fits[c] = (cx - u.centroid.0 * r, cy - u.centroid.1 * r, r);
        errors[c] = window.error(c, fits[c]);
    }
    let mut order: Vec<usize> = (0..10).collect();
    order.sort_by(|&p, &q| errors[p].total_cmp(&errors[q]));
    // The two best refine their scale (soft edges and outlines bias the area a little).
    for &c in &order[..2] {
        let u = unit_shape(c);
        for f in [0.94f32, 0.97, 1.03, 1.06] {
            let r = fits[c].2 * f;
            let fit = (cx - u.centroid.0 * r, cy - u.centroid.1 * r, r);
            let e = window.error(c, fit);
            if e < errors[c] {
                errors[c] = e;
                fits[c] = fit;
            }
        }
    }
    order.sort_by(|&p, &q| errors[p].total_cmp(&errors[q]));
    let best = order[0];
    let (ox, oy, r) = fits[best];
    let (bx, by, bw, bh) = bbox(best, ox, oy, r);
    Detection {
        class: CLASSES[best].into(),
        color: color::NAMES[ci].into(),
        x: bx,
        y: by,
        w: bw,
        h: bh,
        area: pixels.len() as u32,
        class_conf: 1.0 - errors[best] / errors[order[1]].max(1e-6),
        color_conf,
    }
}

/// Observed soft coverage around one object.
struct Window<'a> {
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
    cov: &'a [f32],
}

impl Window<'_> {
    /// L1 distance between the observed coverage and class `c` drawn at (x, y, r).
    fn error(&self, c: usize, (ox, oy, r): (f32, f32, f32)) -> f32 {
        let mut e = 0.0;
        let mut idx = 0;
        for y in self.y0..self.y1 {
            for x in self.x0..self.x1 {
                let p = ((x as f32 + 0.5 - ox) / r, (y as f32 + 0.5 - oy) / r);
                e += ((0.5 - sdf(c, p) * r).clamp(0.0, 1.0) - self.cov[idx]).abs();
                idx += 1;
            }
        }
        e
    }
}

/// Median colour of a component's pixels whose four neighbours are in it too (all if few).
fn interior_median(pixels: &[usize], label: &[u32], k: u32, px: &[[f32; 3]], w: usize) -> [f32; 3] {
    let inside = |i: usize, dx: isize, dy: isize| {
        let (x, y) = ((i % w) as isize + dx, (i / w) as isize + dy);
        x >= 0 && y >= 0 && (x as usize) < w && {
            let j = y as usize * w + x as usize;
            j < label.len() && label[j] == k
        }
    };
    let inner: Vec<usize> = pixels
        .iter()
        .copied()
        .filter(|&i| inside(i, -1, 0) && inside(i, 1, 0) && inside(i, 0, -1) && inside(i, 0, 1))
        .collect();
    let set = if inner.len() >= 3 { &inner } else { pixels };
    [0, 1, 2].map(|c| {
        let mut v: Vec<f32> = set.iter().map(|&i| px[i][c]).collect();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    })
}

/// Foreground: colour distance (RGB, 0–1) from the background model above this.
const FG_THRESHOLD: f32 = 0.16;

/// Per pixel (RGB in 0–1, raster order, at least 3×3), whether it is foreground: the test
/// `detect` starts from, for callers that need the object pixels only.
pub fn foreground(px: &[[f32; 3]], w: usize, h: usize) -> Vec<bool> {
    let bg = fit_background(px, w, h);
    bg_distance(px, &bg, w).iter().map(|&d| d > FG_THRESHOLD).collect()
}

/// Each pixel's colour distance from the background plane.
fn bg_distance(px: &[[f32; 3]], bg: &Plane, w: usize) -> Vec<f32> {
    (0..px.len())
        .map(|i| {
            let b = bg.at((i % w) as f32, (i / w) as f32);
            (0..3).map(|k| (px[i][k] - b[k]).powi(2)).sum::<f32>().sqrt()
        })
        .collect()
}

struct Plane([[f32; 3]; 3]);

impl Plane {
    fn at(&self, x: f32, y: f32) -> [f32; 3] {
        let p = &self.0;
        [0, 1, 2].map(|k| p[k][0] + p[k][1] * x + p[k][2] * y)
    }
}

/// Least-squares plane per channel over the outermost ring of pixels (objects keep a margin).
fn fit_background(px: &[[f32; 3]], w: usize, h: usize) -> Plane {
    // Normal equations for v ≈ a + b·x + c·y.
    let mut m = [[0f64; 3]; 3];
    let mut rhs = [[0f64; 3]; 3];
    let mut add = |x: usize, y: usize| {
        let basis = [1.0, x as f64, y as f64];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += basis[i] * basis[j];
            }
            for k in 0..3 {
                rhs[k][i] += basis[i] * px[y * w + x][k] as f64;
            }
        }
    };
    for x in 0..w {
        add(x, 0);
        add(x, h - 1);
    }
    for y in 1..h - 1 {
        add(0, y);
        add(w - 1, y);
    }
    let inv = invert3(m);
    Plane([0, 1, 2].map(|k| [0, 1, 2].map(|i| (0..3).map(|j| inv[i][j] * rhs[k][j]).sum::<f64>() as f32)))
}

fn invert3(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let adj = [
        [c(1, 1, 2, 2), -c(0, 1, 2, 2), c(0, 1, 1, 2)],
        [-c(1, 0, 2, 2), c(0, 0, 2, 2), -c(0, 0, 1, 2)],
        [c(1, 0, 2, 1), -c(0, 0, 2, 1), c(0, 0, 1, 1)],
    ];
    adj.map(|row| row.map(|v| v / det))
}

/// 4-connected components of the foreground, as pixel index lists.
fn components(fg: &[bool], w: usize, h: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; fg.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..fg.len() {
        if !fg[start] || seen[start] {
            continue;
        }
        let mut comp = Vec::new();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            comp.push(i);
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if fg[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        out.push(comp);
    }
    out
}

/// A 3×3 binomial blur: the reference for soft, student-like edges.
pub fn blur(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let mut acc = [0u32; 3];
        let mut total = 0;
        for dy in -1..=1i64 {
            for dx in -1..=1i64 {
                let (sx, sy) = ((x as i64 + dx).clamp(0, w - 1), (y as i64 + dy).clamp(0, h - 1));
                let k = (2 - dx.abs()) * (2 - dy.abs());
                let p = img.get_pixel(sx as u32, sy as u32);
                for c in 0..3 {
                    acc[c] += p[c] as u32 * k as u32;
                }
                total += k as u32;
            }
        }
        image::Rgb(acc.map(|v| ((v + total / 2) / total) as u8))
    })
}

fn bx(d: &Detection) -> (f32, f32, f32, f32) {
    (d.x, d.y, d.w, d.h)
}

/// GenEval's verdict and the exact-scene alignment score for a set of detections.
pub fn judge_detections(spec: &Spec, detections: Vec<Detection>) -> Judgement {
    let verdict = geneval_verdict(spec, &detections);
    // Exact match: assign detections to expected objects, colour-specific ones first.
    let mut expected: Vec<(usize, &ObjectSpec)> = Vec::new();
    for (i, o) in spec.include.iter().enumerate() {
        for _ in 0..o.count {
            expected.push((i, o));
        }
    }
    expected.sort_by_key(|(_, o)| o.color.is_none());
    let mut used = vec![false; detections.len()];
    let mut first_of = vec![None; spec.include.len()];
    let (mut ok, mut errors) = (0usize, 0usize);
    for (i, o) in &expected {
        let exact = (0..detections.len()).find(|&d| {
            !used[d] && detections[d].class == o.class && o.color.as_ref().is_none_or(|c| *c == detections[d].color)
        });
        let any = (0..detections.len()).find(|&d| !used[d] && detections[d].class == o.class);
        match exact.or(any) {
            Some(d) => {
                used[d] = true;
                first_of[*i].get_or_insert(d);
                if exact.is_some() {
                    ok += 1;
                } else {
                    errors += 1; // right shape, wrong colour
                }
            }
            None => errors += 1, // missing
        }
    }
    errors += used.iter().filter(|u| !**u).count(); // extra objects
    for (i, o) in spec.include.iter().enumerate() {
        if let (Some((rel, j)), Some(a)) = (&o.position, first_of[i]) {
            if let Some(b) = first_of[*j] {
                if !relations(bx(&detections[a]), bx(&detections[b]), 0.0).contains(&rel.as_str()) {
                    errors += 1;
                }
            }
        }
    }
    let score = if ok + errors == 0 { 0.0 } else { ok as f32 / (ok + errors) as f32 };
    Judgement { score, verdict, detections }
}

/// GenEval's rules: each include object found at least `count` times (the most confident
/// `count` of them in the asked colour, placed as asked); each exclude found fewer times.
fn geneval_verdict(spec: &Spec, dets: &[Detection]) -> Verdict {
    let fail = |reason: String| Verdict { pass: false, reason };
    let of_class = |o: &ObjectSpec| {
        let mut v: Vec<&Detection> = dets.iter().filter(|d| d.class == o.class).collect();
        v.sort_by(|a, b| b.class_conf.total_cmp(&a.class_conf));
        v
    };
    for o in &spec.include {
        let found = of_class(o);
        if found.len() < o.count as usize {
            return fail(format!("expected {} {}, found {}", o.count, o.class, found.len()));
        }
        if let Some(c) = &o.color {
            if let Some(bad) = found.iter().take(o.count as usize).find(|d| &d.color != c) {
                return fail(format!("expected a {c} {}, found a {} one", o.class, bad.color));
            }
        }
        if let Some((rel, j)) = &o.position {
            let refs = of_class(&spec.include[*j]);
            if let (Some(a), Some(b)) = (found.first(), refs.first()) {
                if !relations(bx(a), bx(b), 0.0).contains(&rel.as_str()) {
                    return fail(format!("expected {} {rel} {}", o.class, spec.include[*j].class));
                }
            }
        }
    }
    for o in &spec.exclude {
        let found = of_class(o).into_iter().filter(|d| o.color.as_ref().is_none_or(|c| *c == d.color)).count();
        if found >= o.count as usize {
            return fail(format!("expected fewer than {} {}, found {found}", o.count, o.class));
        }
    }
    Verdict { pass: true, reason: "ok".into() }
}

/// Whether detections show exactly the drawn scene: the same multiset of (class, colour).
pub fn agrees(detections: &[Detection], truth: &[SceneObject]) -> bool {
    let mut a: Vec<(&str, &str)> = detections.iter().map(|d| (d.class.as_str(), d.color.as_str())).collect();
    let mut b: Vec<(&str, &str)> = truth.iter().map(|o| (o.class.as_str(), o.color.as_str())).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}
