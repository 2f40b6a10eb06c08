//! Small PNG charts drawn directly with `image` and an 8×8 bitmap font, so that reports need
//! no plotting stack or system fonts.

use std::path::Path;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

const SCALE: u32 = 2; // font pixels per glyph pixel
const GLYPH: u32 = 8 * SCALE;
/// One bar's row height: a glyph plus a gap, so value labels never overlap.
const BAR_H: u32 = GLYPH + 2;
const BG: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([30, 30, 30]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
/// Series colours (colour-blind safe: blue, orange, green).
/// Okabe–Ito's colour-blind-safe palette (black last).
pub const SERIES: [Rgb<u8>; 8] = [
    Rgb([0, 114, 178]),
    Rgb([230, 159, 0]),
    Rgb([0, 158, 115]),
    Rgb([204, 121, 167]),
    Rgb([86, 180, 233]),
    Rgb([213, 94, 0]),
    Rgb([240, 228, 66]),
    Rgb([0, 0, 0]),
];

/// Draws `text` with its top-left corner at (x, y).
pub fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) != 0 {
                    fill(img, x + i as u32 * GLYPH + col * SCALE, y + row as u32 * SCALE, SCALE, SCALE, color);
                }
            }
        }
    }
}

/// Fills a rectangle, clipped to the image.
pub fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, color);
        }
    }
}

/// A horizontal grouped bar chart of values in [0, 1]: one group per row label, one bar per
/// series. Saved as PNG.
pub fn bars(path: &Path, title: &str, series: &[&str], rows: &[(String, Vec<f64>)]) -> Result<()> {
    let label_w = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(4).clamp(4, 28) as u32 * GLYPH + 16;
    let bar_w = 520u32;
    let group_h = series.len() as u32 * BAR_H + 10;
    let top = GLYPH * 2 + 24 + GLYPH;
    let width = label_w + bar_w + 8 * GLYPH;
    let height = top + rows.len() as u32 * group_h + GLYPH + 24;
    let mut img = RgbImage::from_pixel(width, height, BG);
    text(&mut img, 12, 10, title, INK);
    // Legend.
    let mut lx = 12;
    for (s, name) in series.iter().enumerate() {
        fill(&mut img, lx, 16 + GLYPH, GLYPH, GLYPH, SERIES[s % SERIES.len()]);
        text(&mut img, lx + GLYPH + 6, 16 + GLYPH, name, INK);
        lx += GLYPH + 6 + (name.chars().count() as u32 + 3) * GLYPH;
    }
    // Grid at 0, 25, 50, 75, 100 %.
    for q in 0..=4u32 {
        let x = label_w + bar_w * q / 4;
        fill(&mut img, x, top - 4, 1, rows.len() as u32 * group_h + 4, GRID);
        let label = format!("{}%", q * 25);
        text(&mut img, x.saturating_sub(GLYPH), top + rows.len() as u32 * group_h + 4, &label, INK);
    }
    for (r, (label, values)) in rows.iter().enumerate() {
        let y = top + r as u32 * group_h;
        let shown: String = label.chars().take(28).collect();
        text(&mut img, 8, y + (group_h - GLYPH) / 2, &shown, INK);
        for (s, v) in values.iter().enumerate() {
            let w = (v.clamp(0.0, 1.0) * bar_w as f64).round() as u32;
            let by = y + s as u32 * BAR_H;
            fill(&mut img, label_w, by, w.max(1), BAR_H - 2, SERIES[s % SERIES.len()]);
            text(&mut img, label_w + w + 6, by, &format!("{:.1}", v * 100.0), INK);
        }
    }
    img.save(path).map_err(|e| Error::Image { path: path.to_path_buf(), source: e })
}

/// A line chart of one or more (x, y) series (log-free, y from its min to max), saved as PNG.
pub fn lines(path: &Path, title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    lines_in(path, title, x_label, series, None)
}

/// [`lines`] with the y axis fixed to `y_range` (accuracies on [0, 1], say) when given.
pub fn lines_in(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    y_range: Option<(f64, f64)>,
) -> Result<()> {
    let (w, h, left, bottom) = (900u32, 480u32, 90u32, 40u32);
    // The legend wraps onto as many rows as it needs above the plot.
    let item = |name: &str| GLYPH + 6 + (name.chars().count() as u32 + 3) * GLYPH;
    let mut rows = 1u32;
    let mut x = left + 300;
    for (name, _) in series {
        if x + item(name) > w && x > left {
            rows += 1;
            x = left;
        }
        x += item(name);
    }
    let top = 40 + rows * (GLYPH + 6);
    let mut img = RgbImage::from_pixel(w, h, BG);
    text(&mut img, 12, 10, title, INK);
    let pts = series.iter().flat_map(|(_, s)| s.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if let Some((lo, hi)) = y_range {
        (y0, y1) = (lo, hi);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let (pw, ph) = (w - left - 20, h - top - bottom);
    for q in 0..=4u32 {
        let y = top + ph * q / 4;
        fill(&mut img, left, y, pw, 1, GRID);
        text(&mut img, 4, y.saturating_sub(GLYPH / 2), &format!("{:.3}", y1 - (y1 - y0) * q as f64 / 4.0), INK);
    }
    text(&mut img, left, h - GLYPH - 8, &format!("{x_label}: {x0:.0} .. {x1:.0}"), INK);
    let (mut lx, mut ly) = (left + 300, 16 + GLYPH);
    for (k, (name, pts)) in series.iter().enumerate() {
        let col = SERIES[k % SERIES.len()];
        if lx + item(name) > w && lx > left {
            (lx, ly) = (left, ly + GLYPH + 6);
        }
        fill(&mut img, lx, ly, GLYPH, GLYPH, col);
        text(&mut img, lx + GLYPH + 6, ly, name, INK);
        lx += item(name);
        let map = |(x, y): (f64, f64)| {
            let px = left as f64 + (x - x0) / (x1 - x0) * pw as f64;
            let py = top as f64 + (y1 - y) / (y1 - y0) * ph as f64;
            (px, py)
        };
        // Markers where the points are few enough to tell apart (evaluation curves).
        for &p in pts.iter().filter(|(x, y)| pts.len() <= 64 && x.is_finite() && y.is_finite()) {
            let (x, y) = map(p);
            fill(&mut img, (x as u32).saturating_sub(3), (y as u32).saturating_sub(3), 7, 7, col);
        }
        for pair in pts.windows(2) {
            let (a, b) = (map(pair[0]), map(pair[1]));
            let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
            for i in 0..=n {
                let t = i as f64 / n as f64;
                let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
                if x.is_finite() && y.is_finite() {
                    fill(&mut img, x as u32, y as u32, 2, 2, col);
                }
            }
        }
    }
    img.save(path).map_err(|e| Error::Image { path: path.to_path_buf(), source: e })
}

/// Images in an 8-wide grid at 2× (nearest), framed green (`true`) or orange (`false`).
pub fn grid(images: &[(RgbImage, bool)]) -> RgbImage {
    // cells as wide and as tall as the largest image (at 2×): side-by-side rows stay compact
    let cw = images.iter().map(|(i, _)| i.width()).max().unwrap_or(64) * 2 + 6;
    let ch = images.iter().map(|(i, _)| i.height()).max().unwrap_or(64) * 2 + 6;
    let cols = 8u32;
    let rows = (images.len() as u32).div_ceil(cols).max(1);
    let mut sheet = RgbImage::from_pixel(cols * cw, rows * ch, BG);
    for (n, (img, ok)) in images.iter().enumerate() {
        let (ox, oy) = ((n as u32 % cols) * cw, (n as u32 / cols) * ch);
        let frame = if *ok { SERIES[2] } else { Rgb([213, 94, 0]) };
        fill(&mut sheet, ox + 1, oy + 1, cw - 2, ch - 2, frame);
        for y in 0..img.height() * 2 {
            for x in 0..img.width() * 2 {
                sheet.put_pixel(ox + 3 + x, oy + 3 + y, *img.get_pixel(x / 2, y / 2));
            }
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_of_wide_rows_is_as_tall_as_the_rows() {
        let row = RgbImage::from_pixel(96, 32, Rgb([1, 2, 3]));
        let sheet = grid(&[(row.clone(), true), (row, false)]);
        assert_eq!((sheet.width(), sheet.height()), (8 * (192 + 6), 64 + 6));
        assert_eq!(*sheet.get_pixel(3 + 191, 3 + 63), Rgb([1, 2, 3]), "the image's far corner is drawn");
        assert_eq!(*sheet.get_pixel(1, 1), SERIES[2], "a passing cell is framed");
    }

    #[test]
    fn bars_draw_proportional_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        bars(&path, "t", &["a"], &[("full".into(), vec![1.0]), ("half".into(), vec![0.5])]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let count = |row: u32| (0..img.width()).filter(|&x| *img.get_pixel(x, row) == SERIES[0]).count();
        let top = GLYPH * 2 + 24 + GLYPH;
        let group_h = BAR_H + 10;
        let (full, half) = (count(top + 2), count(top + group_h + 2));
        assert!(full > 500 && (half as f64 / full as f64 - 0.5).abs() < 0.02, "full {full}, half {half}");
    }
}
