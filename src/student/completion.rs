//! The completion curve (`lightgen inpaint --completion N`): where does a student stop
//! drawing shapes the analyzer accepts? Held-out scenes are drawn by a faithful shapes
//! teacher at the corpus's object size; for each fraction f, a seeded f of the tokens that
//! touch an object are hidden and repainted for the scene's own prompt (background tokens and
//! the rest of the object stay known, pixels pasted back), and the analyzer judges the
//! result against the prompt's spec. Small f asks only for an object's missing edge with its
//! neighbours visible (the head and local context); f = 1 asks for whole objects inside their
//! token footprint (the outline, with position and size given); free sampling (`eval`) also
//! decides where objects go. The curve between them says which skill is missing.
//!
//! `Hide::Background` asks the converse: the objects stay drawn and a share of the tokens
//! around them is hidden. A student that keeps count repaints background there; one that
//! decides object-or-background token by token scatters extra objects (`extra_objects`).

use image::{GrayImage, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::inpaint::{cells_spanned, inpaint, prepare, side_by_side};
use super::sample::{Decoder, Prompter, Student};
use crate::error::{Error, Result};
use crate::student::model::sampler::SampleOptions;
use crate::world::analyze::Analyzer;
use crate::world::{render, SceneRequest, Spec};

/// One held-out scene and the tokens its objects touch.
pub struct CompletionCase {
    pub image: RgbImage,
    pub prompt: String,
    pub spec: Spec,
    /// Token indices (row-major over the grid) whose patch overlaps an object's box.
    pub object_tokens: Vec<usize>,
}

/// Which tokens a completion case hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Hide {
    /// Tokens whose patch meets an object's box: can the student finish (or start) objects?
    Objects,
    /// Every other token: does the student repaint background, or add objects?
    Background,
}

/// One point of the curve.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompletionPoint {
    pub hidden: Hide,
    /// Share of each scene's `hidden` tokens hidden (0 = the teacher's image as drawn).
    pub fraction: f64,
    pub cases: usize,
    pub accepted: usize,
    pub accuracy: f64,
    /// Mean analyzer alignment (partial credit).
    pub alignment: f64,
    pub hidden_tokens_mean: f64,
    /// Mean objects found beyond the number the prompt asks for (0 for the teacher's image).
    pub extra_objects: f64,
}

/// Up to `n` cases from the held-out prompts (all families, in file order), rendered at `res`
/// on a plain background from seed `seed + k` by `teacher` (the corpus's, without failures);
/// each case's object tokens are those of the `grid` × `grid` token grid its objects' boxes meet.
pub fn completion_cases(
    held: &[(String, String, String)],
    n: usize,
    res: u32,
    grid: u32,
    seed: u64,
    teacher: &render::ShapesTeacherConfig,
) -> Vec<CompletionCase> {
    let p = (res / grid.max(1)).max(1) as f32;
    let mut out = Vec::new();
    for (k, (prompt, _, s)) in held.iter().enumerate() {
        if out.len() == n {
            break;
        }
        let Ok(spec) = serde_json::from_str::<Spec>(s) else { continue };
        let req = SceneRequest { spec: spec.clone(), sizes: vec![], background: Some("plain".into()), style: None };
        let Ok(r) = render::render(&req, seed.wrapping_add(k as u64), res, teacher) else { continue };
        let mut tokens = Vec::new();
        for o in &r.scene.objects {
            for ty in cells_spanned(o.y, o.h, p, grid) {
                for tx in cells_spanned(o.x, o.w, p, grid) {
                    tokens.push((ty * grid + tx) as usize);
                }
            }
        }
        tokens.sort_unstable();
        tokens.dedup();
        if tokens.is_empty() {
            continue;
        }
        out.push(CompletionCase { image: r.image, prompt: prompt.clone(), spec, object_tokens: tokens });
    }
    out
}

/// The pixel mask hiding a seeded `fraction` of `case`'s `hide` tokens (at least one when
/// fraction > 0).
pub fn completion_mask(case: &CompletionCase, hide: Hide, fraction: f64, res: u32, grid: u32, seed: u64) -> GrayImage {
    let mut toks = match hide {
        Hide::Objects => case.object_tokens.clone(),
        Hide::Background => (0..(grid * grid) as usize).filter(|t| !case.object_tokens.contains(t)).collect(),
    };
    toks.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let k = ((fraction * toks.len() as f64).ceil() as usize).min(toks.len());
    let p = res / grid;
    let mut mask = GrayImage::new(res, res);
    for &t in &toks[..k] {
        let (tx, ty) = (t as u32 % grid, t as u32 / grid);
        for y in ty * p..(ty + 1) * p {
            for x in tx * p..(tx + 1) * p {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    mask
}

/// Repaints every case at every fraction (one draw each, paste-back on) and judges it;
/// writes `completion.png` (per fraction: original | mask | result rows, 8 cases each).
#[allow(clippy::too_many_arguments)]
pub fn completion_curve(
    student: &Student,
    prompter: &Prompter,
    decoder: &Decoder,
    cases: &[CompletionCase],
    hide: Hide,
    fractions: &[f64],
    opts: &SampleOptions,
    seed: u64,
    out: &std::path::Path,
    mut progress: impl FnMut(usize),
) -> Result<Vec<CompletionPoint>> {
    let judge = Analyzer::new();
    let (res, grid) = (decoder.resolution(), student.state.grid as u32);
    let mut points = Vec::new();
    let mut cells = Vec::new();
    for &f in fractions {
        let (mut accepted, mut align, mut hidden, mut extra) = (0usize, 0.0f64, 0usize, 0usize);
        for (k, case) in cases.iter().enumerate() {
            let case_seed = seed.wrapping_add(k as u64);
            let mask = completion_mask(case, hide, f, res, grid, case_seed);
            let (img, n_hidden) = if f > 0.0 {
                let prep = prepare(&case.image, &mask, res, grid)?;
                let (imgs, _, _) = inpaint(student, prompter, decoder, &prep, &case.prompt, 1, opts, case_seed, true)?;
                (imgs.into_iter().next().expect("one draw"), prep.unknown.iter().filter(|u| **u).count())
            } else {
                (case.image.clone(), 0)
            };
            hidden += n_hidden;
            let j = judge.judge(&img, &case.spec);
            accepted += usize::from(j.verdict.pass);
            align += j.score as f64;
            let asked: u32 = case.spec.include.iter().map(|o| o.count).sum();
            extra += j.detections.len().saturating_sub(asked as usize);
            if k < 8 {
                let hidden: Vec<bool> = mask.pixels().map(|p| p[0] > 127).collect();
                cells.push((side_by_side(&case.image, &hidden, &img), j.verdict.pass));
            }
            progress(1);
        }
        let n = cases.len().max(1) as f64;
        points.push(CompletionPoint {
            hidden: hide,
            fraction: f,
            cases: cases.len(),
            accepted,
            accuracy: accepted as f64 / n,
            alignment: align / n,
            hidden_tokens_mean: hidden as f64 / n,
            extra_objects: extra as f64 / n,
        });
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let p = out.join("completion.png");
    crate::report::chart::grid(&cells).save(&p).map_err(|e| Error::Image { path: p.clone(), source: e })?;
    Ok(points)
}

/// The curve as a markdown table.
pub fn markdown(points: &[CompletionPoint]) -> String {
    let what = match points.first().map(|p| p.hidden) {
        Some(Hide::Background) => "background",
        _ => "object",
    };
    let mut s = format!(
        "| {what} tokens hidden | cases | hidden tokens | accepted | accuracy | alignment | extra objects |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        s += &format!(
            "| {:.0}% | {} | {:.1} | {} | {:.3} | {:.3} | {:.2} |\n",
            100.0 * p.fraction,
            p.cases,
            p.hidden_tokens_mean,
            p.accepted,
            p.accuracy,
            p.alignment,
            p.extra_objects
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Vec<(String, String, String)> {
        let spec =
            |p: &str, inc: &str| format!(r#"{{"tag":"two_object","prompt":"{p}","include":{inc},"exclude":[]}}"#);
        vec![
            (
                "a red circle".into(),
                "colors".into(),
                spec("a red circle", r#"[{"class":"circle","count":1,"color":"red"}]"#),
            ),
            (
                "a star and a ring".into(),
                "two_object".into(),
                spec("a star and a ring", r#"[{"class":"star","count":1},{"class":"ring","count":1}]"#),
            ),
            ("not a spec".into(), "x".into(), "{".into()),
        ]
    }

    #[test]
    fn cases_list_the_tokens_under_each_object_and_the_teacher_image_passes() {
        let cases = completion_cases(&held(), 10, 32, 8, 0, &scaled(1.6));
        assert_eq!(cases.len(), 2, "the unreadable spec is skipped");
        let judge = Analyzer::new();
        for c in &cases {
            assert!(judge.judge(&c.image, &c.spec).verdict.pass, "a faithful render passes: {}", c.prompt);
            // every token under an object differs from the plain background somewhere; tokens
            // outside every object's box are background only
            let bg = *c.image.get_pixel(0, 0);
            for t in 0..64usize {
                let (tx, ty) = (t as u32 % 8, t as u32 / 8);
                let differs = (0..16).any(|i| *c.image.get_pixel(tx * 4 + i % 4, ty * 4 + i / 4) != bg);
                if !c.object_tokens.contains(&t) {
                    assert!(!differs, "token {t} is outside every box but not background ({})", c.prompt);
                }
            }
            assert!(c.object_tokens.len() >= 4, "objects × 1.6 cover several tokens: {:?}", c.object_tokens);
        }
    }

    fn scaled(object_scale: f64) -> render::ShapesTeacherConfig {
        render::ShapesTeacherConfig { object_scale, ..render::ShapesTeacherConfig::none() }
    }

    #[test]
    fn on_the_corpus_grid_each_object_is_one_token_of_its_own() {
        // The demo's corpus: the teacher on an 8-px grid at 32 px, 8-px tokens (4 × 4).
        let teacher = render::ShapesTeacherConfig { grid: 8, ..render::ShapesTeacherConfig::none() };
        let cases = completion_cases(&held(), 10, 32, 4, 0, &teacher);
        assert_eq!(cases.len(), 2);
        for c in &cases {
            assert_eq!(c.object_tokens.len(), c.spec.include.len(), "one token an object: {:?}", c.object_tokens);
        }
        // off the grid the same scenes straddle token lines
        let off = completion_cases(&held(), 10, 32, 4, 0, &render::ShapesTeacherConfig::none());
        let (on, off): (usize, usize) =
            (cases.iter().map(|c| c.object_tokens.len()).sum(), off.iter().map(|c| c.object_tokens.len()).sum());
        assert!(off > on, "off the grid {off} object tokens, on it {on}");
    }

    #[test]
    fn masks_hide_the_asked_share_of_object_tokens_and_nothing_else() {
        let cases = completion_cases(&held(), 1, 32, 8, 0, &scaled(1.6));
        let c = &cases[0];
        let n = c.object_tokens.len();
        for (f, want) in [(0.0, 0), (0.25, (n as f64 * 0.25).ceil() as usize), (1.0, n)] {
            let m = completion_mask(c, Hide::Objects, f, 32, 8, 3);
            let hidden: Vec<usize> =
                (0..64).filter(|t| m.get_pixel((*t as u32 % 8) * 4, (*t as u32 / 8) * 4)[0] > 127).collect();
            assert_eq!(hidden.len(), want, "fraction {f}");
            assert!(hidden.iter().all(|t| c.object_tokens.contains(t)), "only object tokens are hidden");
            // whole tokens: every pixel of a hidden token is white
            let white = m.pixels().filter(|p| p[0] > 127).count();
            assert_eq!(white, 16 * want);
        }
        // seeded: the same seed hides the same tokens, another seed (here) others
        let a = completion_mask(c, Hide::Objects, 0.25, 32, 8, 3);
        assert_eq!(a, completion_mask(c, Hide::Objects, 0.25, 32, 8, 3));
        assert_ne!(a, completion_mask(c, Hide::Objects, 0.25, 32, 8, 4), "seeds 3 and 4 pick different tokens");
    }

    #[test]
    fn background_masks_hide_the_asked_share_of_the_other_tokens() {
        let cases = completion_cases(&held(), 1, 32, 8, 0, &scaled(1.6));
        let c = &cases[0];
        let n = 64 - c.object_tokens.len();
        for (f, want) in [(0.5, (n as f64 * 0.5).ceil() as usize), (1.0, n)] {
            let m = completion_mask(c, Hide::Background, f, 32, 8, 3);
            let hidden: Vec<usize> =
                (0..64).filter(|t| m.get_pixel((*t as u32 % 8) * 4, (*t as u32 / 8) * 4)[0] > 127).collect();
            assert_eq!(hidden.len(), want, "fraction {f}");
            assert!(hidden.iter().all(|t| !c.object_tokens.contains(t)), "no token under an object is hidden");
        }
    }

    #[test]
    fn markdown_lists_each_fraction() {
        let p = |f: f64, a: usize| CompletionPoint {
            hidden: Hide::Objects,
            fraction: f,
            cases: 4,
            accepted: a,
            accuracy: a as f64 / 4.0,
            alignment: 0.5,
            hidden_tokens_mean: 2.0,
            extra_objects: 0.25,
        };
        let md = markdown(&[p(0.0, 4), p(0.5, 1)]);
        assert!(md.starts_with("| object tokens hidden |"), "{md}");
        assert!(md.contains("| 0% | 4 | 2.0 | 4 | 1.000 | 0.500 | 0.25 |"), "{md}");
        assert!(md.contains("| 50% | 4 | 2.0 | 1 | 0.250 | 0.500 | 0.25 |"), "{md}");
        let bg = markdown(&[CompletionPoint { hidden: Hide::Background, ..p(1.0, 2) }]);
        assert!(bg.starts_with("| background tokens hidden |"), "{bg}");
    }
}
