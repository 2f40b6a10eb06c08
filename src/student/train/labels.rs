//! The label read-out's targets (`train.label_loss_weight`): each token's class and colour
//! as the shapes analyzer reads them off the training image, or background, read once per
//! distinct sample (a cache keyed by the sample's hash) and on every core.

use super::data::Batch;
use super::objects::PixelTokens;
use super::trainer::Trainer;
use crate::error::{Error, Result};
use crate::formats::tokenizer::unpatchify;
use crate::student::model::config::LABEL_CLASSES;
use crate::world::analyze::{Analyzer, Detection};
use crate::world::color;
use crate::world::geometry::class_index;
use image::RgbImage;

impl PixelTokens {
    /// [`Self::token_labels`] of every sample of `tokens`: N · L labels, sample-major.
    pub fn labels_of(&self, tokens: &[f32], per_sample: usize) -> Vec<[i64; 2]> {
        tokens.chunks_exact(per_sample).flat_map(|s| self.token_labels(s)).collect()
    }

    /// Per token of one sample, its semantic label for `label_head`: [class, colour] of the
    /// object the shapes analyzer finds there (indices into the world's `CLASSES` and colour
    /// `NAMES`), or [`BACKGROUND`] for both. A token is an object's when it holds foreground
    /// pixels (as [`Self::object_tokens`]) and that object's box covers the most of its cell.
    pub fn token_labels(&self, tokens: &[f32]) -> Vec<[i64; 2]> {
        let (p, g) = (self.patch, self.grid);
        let side = p * g;
        let planes = unpatchify(tokens, 3, side, side, p); // (3, H, W)
        let level =
            |c: usize, i: usize| (planes[c * side * side + i] / self.scale + self.shift).round().clamp(0.0, 255.0);
        let img = RgbImage::from_fn(side as u32, side as u32, |x, y| {
            let i = y as usize * side + x as usize;
            image::Rgb([0, 1, 2].map(|c| level(c, i) as u8))
        });
        let found = Analyzer::new().detect(&img);
        let object = self.object_tokens(tokens);
        (0..g * g)
            .map(|t| {
                let (x0, y0) = ((t % g * p) as f32, (t / g * p) as f32);
                let cover = |d: &Detection| {
                    let span = |c: f32, len: f32, lo: f32| {
                        ((c + len / 2.0).min(lo + p as f32) - (c - len / 2.0).max(lo)).max(0.0)
                    };
                    span(d.x, d.w, x0) * span(d.y, d.h, y0)
                };
                let best =
                    found.iter().map(|d| (cover(d), d)).filter(|(a, _)| *a > 0.0).max_by(|a, b| a.0.total_cmp(&b.0));
                match (object[t], best) {
                    (true, Some((_, d))) => [
                        class_index(&d.class).map_or(BACKGROUND, |c| c as i64),
                        color::index(&d.color).map_or(BACKGROUND, |c| c as i64),
                    ],
                    _ => [BACKGROUND; 2],
                }
            })
            .collect()
    }
}

/// The label of a token without an object, in both halves of `label_head`'s logits.
pub const BACKGROUND: i64 = (LABEL_CLASSES - 1) as i64;

impl Trainer {
    /// Every token's [`PixelTokens::token_labels`] in a batch (B · L), for
    /// `train.label_loss_weight`.
    pub(super) fn labels(&self, b: &Batch) -> Result<Vec<[i64; 2]>> {
        let px = self.pixels.as_ref().ok_or_else(|| {
            Error::invalid(
                "train.label_loss_weight",
                "labels are read off pixel tokens by the shapes analyzer (encode.tokenizer = \"pixels\")",
            )
        })?;
        let n = self.grid * self.grid * self.model.cfg.token_dim;
        let samples: Vec<&[f32]> = b.tokens.chunks_exact(n).collect();
        let keys: Vec<[u8; 32]> = samples
            .iter()
            .map(|s| *blake3::hash(&s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).as_bytes())
            .collect();
        let mut cache = self.label_cache.lock().unwrap_or_else(|e| e.into_inner());
        // The samples the cache has not read yet (each once, though a batch repeats one).
        let mut todo: Vec<usize> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if !cache.contains_key(k) && !todo.iter().any(|&j| keys[j] == *k) {
                todo.push(i);
            }
        }
        let fresh = read_labels(px, &todo.iter().map(|&i| samples[i]).collect::<Vec<_>>());
        for (&i, labels) in todo.iter().zip(fresh) {
            cache.insert(keys[i], labels);
        }
        let out = keys.iter().flat_map(|k| cache[k].iter().map(|l| l.map(i64::from))).collect();
        Ok(out)
    }
}

/// [`PixelTokens::token_labels`] of each of `samples`, a byte a label (indices are below
/// LABEL_CLASSES, 11), read on every core: the analyzer reads a fresh sample in about a
/// millisecond, which on a GPU's batch of 128 would cost more than the step itself.
fn read_labels(px: &PixelTokens, samples: &[&[f32]]) -> Vec<Vec<[u8; 2]>> {
    let read = |s: &[f32]| px.token_labels(s).into_iter().map(|l| l.map(|v| v as u8)).collect::<Vec<_>>();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    if samples.len() < 2 || cores < 2 {
        return samples.iter().map(|s| read(s)).collect();
    }
    let per = samples.len().div_ceil(cores);
    std::thread::scope(|scope| {
        let parts: Vec<_> = samples
            .chunks(per)
            .map(|part| scope.spawn(move || part.iter().map(|s| read(s)).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|h| h.join().expect("the analyzer does not panic")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tokenizer::patchify;
    use crate::student::model::layers::{to_host, Ctx};
    use crate::student::train::objects::tests::{red_block_batch, still_trainer_labelled};
    use crate::student::train::trainer::tests::micro;

    #[test]
    fn token_labels_name_the_class_and_colour_of_each_object_token() {
        // The red block (4 × 4 px over tokens 5, 6, 9, 10) is a red square; the rest background.
        let (batch, object) = red_block_batch();
        let spec = PixelTokens { patch: 2, grid: 4, scale: 1.0 / 127.5, shift: 127.5 };
        let square = [class_index("square").unwrap() as i64, color::index("red").unwrap() as i64];
        let labels = spec.labels_of(&batch.tokens[..2 * 16 * 12], 16 * 12);
        for (t, l) in labels.iter().enumerate() {
            let want = if object.contains(&(t % 16)) { square } else { [BACKGROUND; 2] };
            assert_eq!(*l, want, "token {t}");
        }
        // The demo's world (32 px, objects on the 8-px grid, plain and flat; seeds 0..40
        // fixed): each drawn object's label sits on the token of its centre, in its class and
        // colour, and no other token has one.
        use crate::world::render::{render, ShapesTeacherConfig};
        use crate::world::{ObjectSpec, SceneRequest, Spec};
        let teacher = ShapesTeacherConfig {
            grid: 8,
            backgrounds: vec!["plain".into()],
            styles: vec!["flat".into()],
            ..ShapesTeacherConfig::none()
        };
        let obj = |class: &str, color: &str| ObjectSpec {
            class: class.into(),
            count: 1,
            color: Some(color.into()),
            position: None,
        };
        let include = vec![obj("square", "blue"), obj("triangle", "yellow"), obj("cross", "green")];
        let req = SceneRequest {
            spec: Spec { tag: "t".into(), include, exclude: vec![], prompt: String::new() },
            sizes: vec![],
            background: None,
            style: None,
        };
        let px = PixelTokens { patch: 8, grid: 4, scale: 1.0 / 127.5, shift: 127.5 };
        let (mut right, mut objects) = (0, 0);
        for seed in 0..40 {
            let drawn = render(&req, seed, 32, &teacher).unwrap();
            let planes: Vec<f32> =
                (0..3).flat_map(|c| drawn.image.pixels().map(move |p| (p.0[c] as f32 - 127.5) / 127.5)).collect();
            let labels = px.token_labels(&patchify(&planes, 3, 32, 32, 8));
            let mut expected = [[BACKGROUND; 2]; 16];
            for o in &drawn.scene.objects {
                let t = (o.y / 8.0) as usize * 4 + (o.x / 8.0) as usize;
                expected[t] = [class_index(&o.class).unwrap() as i64, color::index(&o.color).unwrap() as i64];
            }
            for (t, (got, want)) in labels.iter().zip(&expected).enumerate() {
                assert_eq!(got[0] == BACKGROUND, want[0] == BACKGROUND, "seed {seed}, token {t}: {got:?} vs {want:?}");
                assert_eq!(got[1], want[1], "seed {seed}, token {t}: the colour");
                if want[0] != BACKGROUND {
                    objects += 1;
                    right += (got[0] == want[0]) as usize;
                }
            }
        }
        assert_eq!(objects, 120);
        // The analyzer tells these three classes apart at 8 px, though not always.
        assert!(right >= 108, "{right} of {objects} objects in their class");
    }

    #[test]
    fn the_label_term_adds_each_rows_cross_entropy_and_its_read_out_learns_the_labels() {
        // Seeded (train.seed = 0, Ctx seed 5): the red-block batch. Each row is D + w · CE, so
        // the rows are linear in the weight, and the CE starts at chance or above (2 · ln 11
        // for two halves of 11 classes; the fresh read-out's logits are not flat).
        let mut tr = still_trainer_labelled(0.0, 1.0);
        let (batch, _) = red_block_batch();
        let d = tr.draws(16, 3);
        let rows = |tr: &Trainer| to_host(&tr.losses_with(&batch, &d, &Ctx::train(5)).unwrap().0);
        let one = rows(&tr);
        tr.cfg.train.label_loss_weight = 2.0;
        let two = rows(&tr);
        tr.cfg.train.label_loss_weight = 0.0;
        let plain = rows(&tr);
        let ce: Vec<f32> = one.iter().zip(&plain).map(|(a, b)| a - b).collect();
        for i in 0..ce.len() {
            assert!((two[i] - plain[i] - 2.0 * ce[i]).abs() < 1e-3, "row {i}");
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean(&ce) > 0.9 * 2.0 * 11f32.ln(), "{}", mean(&ce));
        // 60 steps on the one batch: the read-out learns which tokens are the red square's.
        tr.cfg.train.label_loss_weight = 1.0;
        for s in 0..60 {
            tr.step(&batch, s).unwrap();
        }
        let after: Vec<f32> = {
            let one = rows(&tr);
            tr.cfg.train.label_loss_weight = 0.0;
            one.iter().zip(&rows(&tr)).map(|(a, b)| a - b).collect()
        };
        assert!(mean(&after) < 0.25 * mean(&ce), "{} → {}", mean(&ce), mean(&after));
        // The analyzer read the batch's one distinct sample once; the cache gives its labels.
        assert_eq!(tr.label_cache.lock().unwrap().len(), 1);
        let spec = tr.pixels.unwrap();
        assert_eq!(tr.labels(&batch).unwrap(), spec.labels_of(&batch.tokens, 16 * 12));
        // 16 new distinct samples (sample i is i + 1 grey levels lighter; the odd ones without
        // the square) are read on every core and come back in order, each read once.
        let mut tokens = batch.tokens.clone();
        for (i, s) in tokens.chunks_exact_mut(16 * 12).enumerate() {
            for v in s.iter_mut() {
                *v = if i % 2 == 1 { (140.0 - 127.5) / 127.5 } else { *v } + (i + 1) as f32 / 127.5;
            }
        }
        let distinct = Batch { tokens, ..red_block_batch().0 };
        let want = spec.labels_of(&distinct.tokens, 16 * 12);
        assert!(want[5 * 16 + 5] == [BACKGROUND; 2] && want[4 * 16 + 5] != [BACKGROUND; 2]);
        assert_eq!(tr.labels(&distinct).unwrap(), want);
        assert_eq!(tr.label_cache.lock().unwrap().len(), 17);
        // Without pixel tokens there are no labels; a negative weight is refused.
        tr.cfg.train.label_loss_weight = 1.0;
        tr.pixels = None;
        let err = tr.losses_with(&batch, &d, &Ctx::train(5)).unwrap_err().to_string();
        assert!(err.contains("label_loss_weight") && err.contains("pixel tokens"), "{err}");
        let mut bad = micro();
        bad.train.label_loss_weight = -1.0;
        assert!(bad.validate().unwrap_err().contains("label_loss_weight"));
    }
}
