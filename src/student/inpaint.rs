//! Zero-shot inpainting (`lightgen.md` §4.1): the image's tokens are the canvas, a token is
//! unknown when any pixel of its patch is masked, and the sampler reveals only the unknown
//! tokens (orders over them, the cosine schedule over their count), conditioned on the new
//! prompt. Known tokens are never touched; pasting the original pixels back outside the mask
//! makes the untouched area bit-exact after decoding too.

use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::formats::crop::center_crop;
use crate::student::model::sampler::{sample_tokens, Canvas, SampleOptions};
use crate::student::sample::{Decoder, Prompter, Student};

/// An image and mask brought to the model's resolution, and the token-level mask.
#[derive(Debug)]
pub struct Prepared {
    pub image: RgbImage,
    /// Pixel mask at the model's resolution: true = repaint.
    pub mask: Vec<bool>,
    /// Token mask (grid²): true = unknown.
    pub unknown: Vec<bool>,
}

/// Centre-crops both to `res` (the mask with nearest neighbour, so it stays binary: a pixel
/// brighter than 127 is to be repainted) and marks every token touching the mask unknown.
pub fn prepare(image: &RgbImage, mask: &GrayImage, res: u32, grid: u32) -> Result<Prepared> {
    if image.dimensions() != mask.dimensions() {
        return Err(Error::invalid(
            "--mask",
            format!(
                "is {}×{}, the image is {}×{}: they must match",
                mask.width(),
                mask.height(),
                image.width(),
                image.height()
            ),
        ));
    }
    let image = center_crop(image, res).map_err(|e| Error::invalid("--image", e))?;
    let side = mask.width().min(mask.height());
    let (x0, y0) = ((mask.width() - side) / 2, (mask.height() - side) / 2);
    let m = image::imageops::crop_imm(mask, x0, y0, side, side).to_image();
    let m = image::imageops::resize(&m, res, res, image::imageops::FilterType::Nearest);
    let mask: Vec<bool> = m.pixels().map(|p| p[0] > 127).collect();
    let p = res / grid;
    let mut unknown = vec![false; (grid * grid) as usize];
    for (i, &on) in mask.iter().enumerate() {
        if on {
            let (x, y) = (i as u32 % res, i as u32 / res);
            unknown[((y / p) * grid + x / p) as usize] = true;
        }
    }
    if !unknown.iter().any(|u| *u) {
        return Err(Error::invalid("--mask", "marks no pixel to repaint (white = repaint, black = keep)"));
    }
    Ok(Prepared { image, mask, unknown })
}

/// `n` inpaintings of `prep` for `prompt`; with `paste_back`, pixels outside the mask are the
/// original ones exactly. Same seed → same images.
#[allow(clippy::too_many_arguments)]
pub fn inpaint(
    student: &Student,
    prompter: &Prompter,
    decoder: &Decoder,
    prep: &Prepared,
    prompt: &str,
    n: usize,
    opts: &SampleOptions,
    seed: u64,
    paste_back: bool,
) -> Result<(Vec<RgbImage>, Vec<f32>, Vec<Vec<f32>>)> {
    let dev = student.model.device();
    let grid = student.state.grid;
    let (l, c) = (grid * grid, student.model.cfg.token_dim);
    let known = decoder.encode(&prep.image)?; // (L · C)
    if known.len() != l * c || prep.unknown.len() != l {
        return Err(Error::invalid(
            "inpaint",
            format!("the image gives {} values, the model expects {l} tokens of {c}", known.len()),
        ));
    }
    let canvas = Canvas { tokens: known.repeat(n), unknown: prep.unknown.repeat(n) };
    let prompts = vec![prompt; n];
    let text = prompter.input(&prompts, dev)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let opts = student.with_token_channels(opts);
    let tokens = sample_tokens(&student.model, &text, canvas, grid, &opts, &mut rng)
        .map_err(|e| Error::invalid("inpaint", e))?;
    let per: Vec<Vec<f32>> = tokens.chunks_exact(l * c).map(<[f32]>::to_vec).collect();
    let images = per
        .iter()
        .map(|t| {
            let mut img = decoder.decode(t);
            if paste_back {
                for (i, px) in img.pixels_mut().enumerate() {
                    if !prep.mask[i] {
                        *px = *prep.image.get_pixel(i as u32 % prep.image.width(), i as u32 / prep.image.width());
                    }
                }
            }
            img
        })
        .collect();
    Ok((images, known, per))
}

/// The recolouring check of issue 8: two-object scenes drawn by the shapes world, one object
/// masked (its box plus `margin` pixels), the prompt naming a new colour for it; the analyzer
/// judges each result against the changed prompt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecolorReport {
    pub cases: usize,
    pub accepted: usize,
    pub accuracy: f64,
    /// Pixels outside the mask that differ from the original (0 with paste-back).
    pub changed_outside: usize,
    pub unknown_tokens_mean: f64,
}

/// One case: the rendered scene, its mask, the new prompt and its spec.
pub struct RecolorCase {
    pub image: RgbImage,
    pub mask: GrayImage,
    pub prompt: String,
    pub spec: crate::world::Spec,
}

/// The cells of `size` px (at most `n`) whose spans meet an extent of length `e` centred at
/// `c` px. A box whose edge lies on a cell line (a gridded teacher's objects) does not reach
/// into the next cell through rounding error.
pub fn cells_spanned(c: f32, e: f32, size: f32, n: u32) -> std::ops::Range<u32> {
    const EPS: f32 = 1e-3;
    let lo = ((c - e / 2.0) / size + EPS).floor().max(0.0) as u32;
    let hi = (((c + e / 2.0) / size - EPS).ceil().max(0.0) as u32).min(n);
    lo..hi.max(lo)
}

/// Builds up to `n` cases from `color_attr` prompts (held-out ones, so the model never saw
/// them), drawn at `res` pixels from seed `seed + k` by `teacher` (the corpus's, without
/// failures: objects of the size the student learned, on its grid when the corpus was).
/// The mask is the target object's box plus `margin` pixels; on a gridded teacher it is the
/// grid cells the box covers instead, with no margin: there the object fills its cells, so
/// those cells are exactly its tokens, and a margin would hide every neighbouring token too.
pub fn recolor_cases(
    held: &[(String, String, String)],
    n: usize,
    res: u32,
    seed: u64,
    margin: u32,
    teacher: &crate::world::render::ShapesTeacherConfig,
) -> Vec<RecolorCase> {
    use crate::world::{render, SceneRequest, Spec};
    let specs: Vec<Spec> = held
        .iter()
        .filter_map(|(_, _, s)| serde_json::from_str::<Spec>(s).ok())
        .filter(|s| s.tag == "color_attr" && s.include.len() == 2 && s.include.iter().all(|o| o.color.is_some()))
        .collect();
    let mut colors: Vec<String> = specs.iter().flat_map(|s| s.include.iter().filter_map(|o| o.color.clone())).collect();
    colors.sort();
    colors.dedup();
    let mut out = Vec::new();
    for (k, spec) in specs.iter().enumerate().take(n) {
        let req = SceneRequest { spec: spec.clone(), sizes: vec![], background: Some("plain".into()), style: None };
        let Ok(r) = render::render(&req, seed.wrapping_add(k as u64), res, teacher) else {
            continue;
        };
        let target = &spec.include[0];
        let Some(obj) =
            r.scene.objects.iter().find(|o| o.class == target.class && Some(&o.color) == target.color.as_ref())
        else {
            continue;
        };
        let used: Vec<&String> = spec.include.iter().filter_map(|o| o.color.as_ref()).collect();
        let free: Vec<&String> = colors.iter().filter(|c| !used.contains(c)).collect();
        if free.is_empty() {
            continue;
        }
        let new = free[k % free.len()].clone();
        let old = target.color.clone().unwrap_or_default();
        let mut new_spec = spec.clone();
        new_spec.include[0].color = Some(new.clone());
        // the first mention of the old colour is the first object's (template order)
        let prompt = spec.prompt.replacen(&old, &new, 1);
        new_spec.prompt = prompt.clone();
        let (xs, ys) = match teacher.grid {
            0 => {
                let m = margin as f32;
                (cells_spanned(obj.x, obj.w + 2.0 * m, 1.0, res), cells_spanned(obj.y, obj.h + 2.0 * m, 1.0, res))
            }
            g => {
                let (size, cells) = (g as f32, res.div_ceil(g));
                let (cx, cy) = (cells_spanned(obj.x, obj.w, size, cells), cells_spanned(obj.y, obj.h, size, cells));
                ((cx.start * g..(cx.end * g).min(res)), (cy.start * g..(cy.end * g).min(res)))
            }
        };
        let mut mask = GrayImage::new(res, res);
        for y in ys {
            for x in xs.clone() {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        out.push(RecolorCase { image: r.image, mask, prompt, spec: new_spec });
    }
    out
}

/// original | mask (white = repainted) | result, side by side: one row of a check's grid.
/// `mask` is per pixel of `original`, row-major; all three are the same size.
pub fn side_by_side(original: &RgbImage, mask: &[bool], result: &RgbImage) -> RgbImage {
    let (w, h) = original.dimensions();
    RgbImage::from_fn(3 * w, h, |x, y| match x / w {
        0 => *original.get_pixel(x, y),
        1 if mask[(y * w + x - w) as usize] => image::Rgb([255, 255, 255]),
        1 => image::Rgb([0, 0, 0]),
        _ => *result.get_pixel(x - 2 * w, y),
    })
}

/// Inpaints every case once (paste-back on) and judges it; writes `recolor.png` (original,
/// mask, result per row) into `out`.
#[allow(clippy::too_many_arguments)]
pub fn recolor_check(
    student: &Student,
    prompter: &Prompter,
    decoder: &Decoder,
    cases: &[RecolorCase],
    opts: &SampleOptions,
    seed: u64,
    out: &std::path::Path,
    mut progress: impl FnMut(usize),
) -> Result<RecolorReport> {
    let judge = crate::world::analyze::Analyzer::new();
    let (res, grid) = (decoder.resolution(), student.state.grid as u32);
    let (mut accepted, mut changed, mut unknown) = (0, 0, 0usize);
    let mut cells = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let prep = prepare(&case.image, &case.mask, res, grid)?;
        unknown += prep.unknown.iter().filter(|u| **u).count();
        let (imgs, _, _) =
            inpaint(student, prompter, decoder, &prep, &case.prompt, 1, opts, seed.wrapping_add(k as u64), true)?;
        let img = &imgs[0];
        changed += img.pixels().zip(prep.image.pixels()).zip(&prep.mask).filter(|((a, b), m)| !**m && a != b).count();
        let pass = judge.judge(img, &case.spec).verdict.pass;
        accepted += usize::from(pass);
        if cells.len() < 32 {
            cells.push((side_by_side(&prep.image, &prep.mask, img), pass));
        }
        progress(1);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let p = out.join("recolor.png");
    crate::report::chart::grid(&cells).save(&p).map_err(|e| Error::Image { path: p.clone(), source: e })?;
    Ok(RecolorReport {
        cases: cases.len(),
        accepted,
        accuracy: accepted as f64 / cases.len().max(1) as f64,
        changed_outside: changed,
        unknown_tokens_mean: unknown as f64 / cases.len().max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_rows_show_original_mask_and_result() {
        let a = RgbImage::from_pixel(2, 1, image::Rgb([10, 20, 30]));
        let b = RgbImage::from_pixel(2, 1, image::Rgb([7, 8, 9]));
        let row = side_by_side(&a, &[true, false], &b);
        assert_eq!(row.dimensions(), (6, 1));
        let px: Vec<[u8; 3]> = row.pixels().map(|p| p.0).collect();
        assert_eq!(px, [[10, 20, 30], [10, 20, 30], [255, 255, 255], [0, 0, 0], [7, 8, 9], [7, 8, 9]]);
    }

    #[test]
    fn a_token_is_unknown_when_any_pixel_of_its_patch_is_masked() {
        let img = RgbImage::from_pixel(32, 32, image::Rgb([9, 9, 9]));
        let mut mask = GrayImage::new(32, 32);
        mask.put_pixel(5, 0, image::Luma([255])); // token (1, 0) of an 8×8 grid of 4 px patches
        mask.put_pixel(31, 31, image::Luma([200])); // the last token
        mask.put_pixel(0, 31, image::Luma([100])); // too dark: kept
        let p = prepare(&img, &mask, 32, 8).unwrap();
        let on: Vec<usize> = p.unknown.iter().enumerate().filter(|(_, u)| **u).map(|(i, _)| i).collect();
        assert_eq!(on, vec![1, 63]);
        assert_eq!(p.mask.iter().filter(|m| **m).count(), 2);
        assert!(prepare(&img, &GrayImage::new(32, 32), 32, 8).unwrap_err().to_string().contains("no pixel"));
        assert!(prepare(&img, &GrayImage::new(16, 32), 32, 8).unwrap_err().to_string().contains("must match"));
    }

    fn teacher(object_scale: f64, grid: u32) -> crate::world::render::ShapesTeacherConfig {
        crate::world::render::ShapesTeacherConfig {
            object_scale,
            grid,
            ..crate::world::render::ShapesTeacherConfig::none()
        }
    }

    fn held() -> Vec<(String, String, String)> {
        let spec = |a: &str, b: &str| {
            let j = format!(
                r#"{{"tag":"color_attr","prompt":"a {a} circle and a {b} square","include":[{{"class":"circle","color":"{a}"}},{{"class":"square","color":"{b}"}}]}}"#
            );
            (String::new(), String::new(), j)
        };
        vec![spec("red", "blue"), spec("green", "yellow"), spec("purple", "orange")]
    }

    fn masked_pixels(cases: &[RecolorCase]) -> Vec<usize> {
        cases.iter().map(|c| c.mask.pixels().filter(|p| p.0[0] > 0).count()).collect()
    }

    #[test]
    fn recolouring_cases_draw_objects_at_the_corpus_scale() {
        let held = held();
        let small = masked_pixels(&recolor_cases(&held, 3, 32, 7, 0, &teacher(1.0, 0)));
        let big = masked_pixels(&recolor_cases(&held, 3, 32, 7, 0, &teacher(1.6, 0)));
        assert_eq!(small.len(), 3);
        assert_eq!(big.len(), 3);
        // the mask is the target object's box: 1.6 times the size is about 2.6 times the area
        for (s, b) in small.iter().zip(&big) {
            assert!(*b as f64 > 1.8 * *s as f64, "scale 1.6 mask {b} px vs scale 1 {s} px");
        }
        let c = &recolor_cases(&held, 1, 32, 7, 0, &teacher(1.6, 0))[0];
        assert!(!c.prompt.contains("red") && c.spec.include[0].color.as_deref() != Some("red"), "{}", c.prompt);
        // a margin grows the box on every side
        let wide = masked_pixels(&recolor_cases(&held, 3, 32, 7, 2, &teacher(1.0, 0)));
        assert!(wide.iter().zip(&small).all(|(w, s)| w > s), "margin 2: {wide:?} vs {small:?}");
    }

    #[test]
    fn on_a_gridded_corpus_the_mask_is_the_objects_own_token() {
        // The demo's corpus: objects on an 8-px grid at 32 px, 8-px tokens (4 × 4). The mask is
        // the target's cell, margin or not, so exactly one token is repainted.
        let held = held();
        for margin in [0, 2] {
            let cases = recolor_cases(&held, 3, 32, 7, margin, &teacher(1.0, 8));
            assert_eq!(cases.len(), 3);
            for (k, c) in cases.iter().enumerate() {
                let p = prepare(&c.image, &c.mask, 32, 4).unwrap();
                assert_eq!(p.unknown.iter().filter(|u| **u).count(), 1, "margin {margin}: {}", c.prompt);
                assert_eq!(p.mask.iter().filter(|m| **m).count(), 64, "the whole 8 × 8 cell");
                // every pixel of the target's old colour is inside the mask (cases keep the
                // order of `held`: the targets were red, green and purple)
                let old = crate::world::color::index(["red", "green", "purple"][k]).unwrap();
                let of_old = |x: u32, y: u32| {
                    let px = c.image.get_pixel(x, y).0.map(|v| f32::from(v) / 255.0);
                    let (i, sure) = crate::world::color::name(px);
                    i == old && sure > 0.5
                };
                let (inside, outside) = (0..32 * 32).map(|i| (i % 32, i / 32)).filter(|&(x, y)| of_old(x, y)).fold(
                    (0, 0),
                    |(a, b), (x, y)| match c.mask.get_pixel(x, y).0[0] > 0 {
                        true => (a + 1, b),
                        false => (a, b + 1),
                    },
                );
                assert!(inside > 10 && outside == 0, "{}: {inside} target pixels masked, {outside} not", c.prompt);
            }
        }
        // off the grid, the same scenes' masks straddle token lines (2 to 4 tokens)
        let off = recolor_cases(&held, 3, 32, 7, 0, &teacher(1.0, 0));
        let unknown: usize =
            off.iter().map(|c| prepare(&c.image, &c.mask, 32, 4).unwrap().unknown.iter().filter(|u| **u).count()).sum();
        assert!(unknown > 3, "off the grid {unknown} tokens over 3 masks");
    }
}
