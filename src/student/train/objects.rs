//! Object-first masks (`train.object_mask_prob`): a sample's mask hides every token that
//! covers an object before any background token, so training shows scenes whose objects are
//! entirely hidden with background around them. Uniform masks almost never do (each of an
//! object's tokens is visible independently), and the student learns to continue objects but
//! not to start one (`inpaint --completion`: 0 of 60 scenes drawn with all object tokens
//! hidden). Pixel tokens only: objects are found in the pixels, by the shapes analyzer's
//! foreground test (colour distance from a plane fitted to the image's border).
//!
//! Objects-last masks (`train.object_keep_prob`) are the reverse: background hidden first,
//! so the scene's objects stay visible, as at the end of free sampling.

use super::data::Batch;
use super::draws::StepDraws;
use super::trainer::Trainer;
use crate::error::{Error, Result};
use crate::formats::tokenizer::{unpatchify, LatentSpec};
use crate::student::model::Mask;
use crate::world::analyze::foreground;

/// How a manifest's pixel tokens map back to pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelTokens {
    pub patch: usize,
    pub grid: usize,
    /// Token value = (x − shift) · scale, x in 0..=255.
    pub scale: f32,
    pub shift: f32,
}

impl PixelTokens {
    /// How `latent`'s tokens map back to pixels at `grid` tokens a side; None unless they are
    /// pixel tokens.
    pub fn of(latent: &LatentSpec, grid: usize) -> Option<PixelTokens> {
        (latent.tokenizer == "pixels").then(|| PixelTokens {
            patch: latent.patch as usize,
            grid,
            scale: latent.scale,
            shift: latent.shift,
        })
    }

    /// [`Self::object_tokens`] of every sample of `tokens` (N samples of `per_sample` values):
    /// N · L flags, sample-major.
    pub fn object_tokens_of(&self, tokens: &[f32], per_sample: usize) -> Vec<bool> {
        tokens.chunks_exact(per_sample).flat_map(|s| self.object_tokens(s)).collect()
    }

    /// Per token of one sample (L · C values, raster order), whether any of its pixels is
    /// foreground.
    pub fn object_tokens(&self, tokens: &[f32]) -> Vec<bool> {
        let (p, g) = (self.patch, self.grid);
        let side = p * g;
        let planes = unpatchify(tokens, 3, side, side, p); // (3, H, W)
        let px: Vec<[f32; 3]> = (0..side * side)
            .map(|i| [0, 1, 2].map(|c| (planes[c * side * side + i] / self.scale + self.shift) / 255.0))
            .collect();
        let fg = foreground(&px, side, side);
        (0..g * g).map(|t| (0..p * p).any(|k| fg[((t / g) * p + k / p) * side + (t % g) * p + k % p])).collect()
    }
}

/// `order` with the marked tokens first, each part keeping its order (a random permutation
/// stays random within each part).
pub fn objects_first(order: &[usize], object: &[bool]) -> Vec<usize> {
    marked_first(order, object, true)
}

/// `order` with the unmarked tokens first (see [`objects_first`]).
pub fn objects_last(order: &[usize], object: &[bool]) -> Vec<usize> {
    marked_first(order, object, false)
}

/// `order` with the tokens whose mark is `mark` first, each part keeping its order.
fn marked_first(order: &[usize], object: &[bool], mark: bool) -> Vec<usize> {
    let (mut first, rest): (Vec<usize>, Vec<usize>) = order.iter().partition(|&&i| object[i] == mark);
    first.extend(rest);
    first
}

impl StepDraws {
    /// The option whose masks need the batch's object tokens, if any sample draws one.
    pub fn mask_option(&self) -> Option<&'static str> {
        if self.objects_first.iter().any(|&o| o) {
            Some("train.object_mask_prob")
        } else if self.objects_last.iter().any(|&o| o) {
            Some("train.object_keep_prob")
        } else {
            None
        }
    }
}

impl Trainer {
    /// The mask of a batch under its draws: each sample's order's first `masked` tokens,
    /// object tokens first where the draws say so.
    pub fn mask(&self, b: &Batch, d: &StepDraws) -> Result<Mask> {
        let objects = match d.mask_option() {
            Some(field) => Some(self.objects(b, field)?),
            None => None,
        };
        Ok(self.mask_with(d, objects.as_deref()))
    }

    pub(super) fn mask_with(&self, d: &StepDraws, objects: Option<&[bool]>) -> Mask {
        let l = self.grid * self.grid;
        let orders: Vec<Vec<usize>> = match objects {
            None => d.orders.clone(),
            Some(obj) => (d.orders.iter().enumerate())
                .map(|(i, o)| {
                    let obj = &obj[i * l..(i + 1) * l];
                    match (d.objects_first[i], d.objects_last[i]) {
                        (true, _) => objects_first(o, obj),
                        (false, true) => objects_last(o, obj),
                        (false, false) => o.clone(),
                    }
                })
                .collect(),
        };
        Mask::from_orders(&orders, l, d.masked)
    }

    /// Per token of the batch (B · L), whether it covers an object (pixel tokens only; `field`
    /// is the option that asked, for the error).
    pub(super) fn objects(&self, b: &Batch, field: &str) -> Result<Vec<bool>> {
        let px = self.pixels.as_ref().ok_or_else(|| {
            Error::invalid(field, "objects are found in pixel tokens (encode.tokenizer = \"pixels\")")
        })?;
        let n = self.grid * self.grid * self.model.cfg.token_dim;
        Ok(px.object_tokens_of(&b.tokens, n))
    }
}

/// Each of `rows` (flat b·L + l) weighted `object` where `obj` marks it and `background`
/// elsewhere: (K).
pub(super) fn row_weights(rows: &[i64], obj: &[bool], object: f32, background: f32) -> Vec<f32> {
    rows.iter().map(|&r| if obj[r as usize] { object } else { background }).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::formats::tokenizer::patchify;
    use crate::student::model::layers::{to_host, Ctx};
    use crate::student::train::config::{ObjectWeightTerms, Precision};
    use crate::student::train::trainer::tests::{micro, micro_trainer};

    /// 16 samples of 8 px (4×4 tokens of 2×2 px, [-1, 1]): grey 140 with a red block over
    /// tokens 5, 6, 9, 10 (returned).
    pub(in crate::student::train) fn red_block_batch() -> (Batch, [usize; 4]) {
        use crate::formats::tokenizer::patchify;
        let mut planes = vec![140f32; 3 * 64];
        for y in 2..6 {
            for x in 2..6 {
                (planes[y * 8 + x], planes[64 + y * 8 + x], planes[128 + y * 8 + x]) = (220.0, 40.0, 40.0);
            }
        }
        let values: Vec<f32> = planes.iter().map(|v| (v - 127.5) / 127.5).collect();
        let one = patchify(&values, 3, 8, 8, 2);
        (Batch { step: 0, size: 16, tokens: one.repeat(16), ids: [2, 3, 0].repeat(16), feats: vec![] }, [5, 6, 9, 10])
    }

    #[test]
    fn one_token_alone_is_told_object_or_background() {
        // The sampler's test for `sample.object_prior` (grid 1): a token's own pixels.
        let (batch, object) = red_block_batch();
        let spec = PixelTokens { patch: 2, grid: 1, scale: 1.0 / 127.5, shift: 127.5 };
        let tokens = &batch.tokens[..16 * 12];
        let block = PixelTokens { patch: 8, grid: 1, ..spec };
        for t in 0..16 {
            let one = spec.object_tokens(&tokens[t * 12..(t + 1) * 12]);
            // A 2×2 token wholly inside the red block is flat: its own border says background.
            assert_eq!(one, vec![false], "token {t} (object: {})", object.contains(&t));
        }
        // The whole 8-px sample as one token of 8×8 px holds the block.
        let planes = crate::formats::tokenizer::unpatchify(tokens, 3, 8, 8, 2);
        assert_eq!(block.object_tokens(&patchify(&planes, 3, 8, 8, 8)), vec![true]);
        let grey = vec![(140.0 - 127.5) / 127.5; 192];
        assert_eq!(block.object_tokens(&grey), vec![false]);
    }

    #[test]
    fn object_first_masks_hide_every_object_token_before_any_background() {
        // Seeded (train.seed = 0): 16 samples of 8 px (4×4 tokens of 2×2 px), grey with a red
        // block over tokens 5, 6, 9, 10; object_mask_prob 1 then 0.5.
        let (mut tr, _) = micro_trainer(Precision::F32, 0.0);
        let spec = PixelTokens { patch: 2, grid: 4, scale: 1.0 / 127.5, shift: 127.5 };
        let (batch, object) = red_block_batch();
        tr.cfg.train.object_mask_prob = 1.0;
        let mut d = tr.draws(16, 7);
        assert!(d.objects_first.iter().all(|&o| o));
        assert!(tr.mask(&batch, &d).unwrap_err().to_string().contains("pixel tokens"));
        tr.pixels = Some(spec);
        for masked in [2, 4, 11] {
            d.masked = masked;
            let mask = tr.mask(&batch, &d).unwrap();
            for s in 0..16 {
                let hidden = |i: usize| mask.masked[s * 16 + i];
                let objects = object.iter().filter(|&&i| hidden(i)).count();
                assert_eq!(objects, masked.min(4), "sample {s}, {masked} masked: objects first");
            }
        }
        // Half the samples (its own stream): the others keep the uniform order.
        tr.cfg.train.object_mask_prob = 0.5;
        let half = tr.draws(16, 7);
        let n = half.objects_first.iter().filter(|&&o| o).count();
        assert!((3..=13).contains(&n), "{n} of 16");
        let uniform = Mask::from_orders(&half.orders, 16, half.masked);
        let mask = tr.mask(&batch, &half).unwrap();
        for s in (0..16).filter(|&s| !half.objects_first[s]) {
            assert_eq!(mask.masked[s * 16..(s + 1) * 16], uniform.masked[s * 16..(s + 1) * 16]);
        }
        let mut bad = micro();
        bad.train.object_mask_prob = -0.1;
        assert!(bad.validate().unwrap_err().contains("object_mask_prob"));
    }

    #[test]
    fn object_last_masks_hide_every_background_token_before_any_object() {
        // Seeded (train.seed = 0): the red-block batch (4 object tokens of 16), object_keep_prob 1.
        let (mut tr, _) = micro_trainer(Precision::F32, 0.0);
        let (batch, object) = red_block_batch();
        tr.cfg.train.object_keep_prob = 1.0;
        let mut d = tr.draws(16, 7);
        assert!(d.objects_last.iter().all(|&o| o) && !d.objects_first.iter().any(|&o| o));
        assert!(tr.mask(&batch, &d).unwrap_err().to_string().contains("object_keep_prob"));
        tr.pixels = Some(PixelTokens { patch: 2, grid: 4, scale: 1.0 / 127.5, shift: 127.5 });
        for masked in [2, 11, 12, 14] {
            d.masked = masked;
            let mask = tr.mask(&batch, &d).unwrap();
            for s in 0..16 {
                let objects = object.iter().filter(|&&i| mask.masked[s * 16 + i]).count();
                assert_eq!(objects, masked.saturating_sub(12), "sample {s}, {masked} masked: objects last");
            }
        }
        // Where both are drawn, objects first wins.
        tr.cfg.train.object_mask_prob = 1.0;
        let mut both = tr.draws(16, 7);
        both.masked = 4;
        let mask = tr.mask(&batch, &both).unwrap();
        assert!((0..16).all(|s| object.iter().all(|&i| mask.masked[s * 16 + i])));
        let mut bad = micro();
        bad.train.object_keep_prob = 1.5;
        assert!(bad.validate().unwrap_err().contains("object_keep_prob"));
        // From half the run on (20 steps): none before step 10, all from it.
        tr.cfg.train.object_mask_prob = 0.0;
        (tr.cfg.train.steps, tr.cfg.train.object_keep_from) = (20, 0.5);
        assert!(!tr.draws(16, 9).objects_last.iter().any(|&o| o));
        assert!(tr.draws(16, 10).objects_last.iter().all(|&o| o));
        bad.train.object_keep_prob = 0.5;
        bad.train.object_keep_from = 1.0;
        assert!(bad.validate().unwrap_err().contains("object_keep_from = 1"));
    }

    /// A micro trainer on the red-block batch's pixel tokens with an x0 read-out of weight
    /// `x0` and no dropout: libtorch's global generator, which draws dropout masks, is shared
    /// with tests running beside these, and their passes must see the same network.
    fn still_trainer(x0: f64) -> Trainer {
        still_trainer_labelled(x0, 0.0)
    }

    /// [`still_trainer`] with the label read-out at weight `labels` (0 = none).
    pub(in crate::student::train) fn still_trainer_labelled(x0: f64, labels: f64) -> Trainer {
        let mut cfg = micro();
        cfg.train.x0_loss_weight = x0;
        cfg.train.label_loss_weight = labels;
        cfg.train.text_drop_prob = 0.0;
        let mut model =
            cfg.model_config().unwrap().for_data(12, 4, crate::student::model::TextSource::Vocab { vocab: 10 }, 0, 3);
        (model.attn_dropout, model.proj_dropout) = (0.0, 0.0);
        let mut tr = Trainer::new(cfg, model, 4, tch::Device::Cpu).unwrap();
        tr.pixels = Some(PixelTokens { patch: 2, grid: 4, scale: 1.0 / 127.5, shift: 127.5 });
        tr
    }

    /// The weight each hidden row of `d` should carry at object weight `w`: w on the rows of
    /// `object` tokens, 1 on the others, normalised to a mean of 1 (both kinds must be there).
    fn expected_row_weights(tr: &Trainer, batch: &Batch, d: &StepDraws, object: &[usize], w: f32) -> Vec<f32> {
        let hidden = tr.mask(batch, d).unwrap().rows(true);
        let is_obj: Vec<bool> = hidden.iter().map(|&r| object.contains(&(r as usize % 16))).collect();
        let k = is_obj.iter().filter(|&&o| o).count();
        assert!(k > 0 && k < hidden.len(), "both kinds of rows: {k} of {}", hidden.len());
        let mean = (w * k as f32 + (hidden.len() - k) as f32) / hidden.len() as f32;
        is_obj.iter().map(|&o| if o { w / mean } else { 1.0 / mean }).collect()
    }

    #[test]
    fn object_loss_weight_scales_object_rows_against_background_rows() {
        // Seeded (train.seed = 0, manual_seed 5 for each pass): the red-block batch, weight 1
        // then 4; the rows' ratio is 4/mean on object tokens and 1/mean on the others, with
        // mean the batch's mean weight.
        let mut tr = still_trainer(0.0);
        let (batch, object) = red_block_batch();
        let d = tr.draws(16, 3);
        let rows = |tr: &Trainer, d: &StepDraws| to_host(&tr.losses_with(&batch, d, &Ctx::train(5)).unwrap().0);
        let plain = rows(&tr, &d);
        tr.cfg.train.object_loss_weight = 4.0;
        let d4 = tr.draws(16, 3);
        assert_eq!(d4.object_weight, 4.0, "the step's draws carry the weight");
        let heavy = rows(&tr, &d4);
        for (i, want) in expected_row_weights(&tr, &batch, &d, &object, 4.0).into_iter().enumerate() {
            assert!((heavy[i] / plain[i] - want).abs() < 1e-4, "row {i}: {} vs {want}", heavy[i] / plain[i]);
        }
        let mut bad = micro();
        bad.train.object_loss_weight = 0.0;
        assert!(bad.validate().unwrap_err().contains("object_loss_weight"));
    }

    #[test]
    fn the_object_weight_stops_at_its_share_of_the_run() {
        // micro: 10 steps; weight 4 for the first half, then every row weighs 1.
        let (mut tr, _) = micro_trainer(Precision::F32, 0.0);
        tr.cfg.train.object_loss_weight = 4.0;
        tr.cfg.train.object_loss_weight_until = 0.5;
        let w: Vec<f64> = (0..10).map(|s| tr.draws(4, s).object_weight).collect();
        assert_eq!(w, [4.0, 4.0, 4.0, 4.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        for bad_share in [0.0, 1.5] {
            let mut bad = micro();
            bad.train.object_loss_weight_until = bad_share;
            assert!(bad.validate().unwrap_err().contains("object_loss_weight_until"), "{bad_share}");
        }
    }

    #[test]
    fn x0_or_head_terms_weigh_the_read_out_or_the_head_alone() {
        // Seeded (train.seed = 0, Ctx seed 5): a micro student with an x0 read-out on the
        // red-block batch. Each row is D + x0_w · A (DiffLoss D, read-out A). With terms = x0
        // and weight 4, only A is scaled: row − plain row = A · (w_row − 1), with A read off
        // a pass at x0_w = 2.
        let mut tr = still_trainer(1.0);
        let (batch, object) = red_block_batch();
        let d = tr.draws(16, 3);
        let rows = |tr: &Trainer, d: &StepDraws| to_host(&tr.losses_with(&batch, d, &Ctx::train(5)).unwrap().0);
        let plain = rows(&tr, &d);
        tr.cfg.train.x0_loss_weight = 2.0;
        let read_out: Vec<f32> = rows(&tr, &d).iter().zip(&plain).map(|(a, b)| a - b).collect();
        tr.cfg.train.x0_loss_weight = 1.0;
        tr.cfg.train.object_loss_weight = 4.0;
        tr.cfg.train.object_loss_weight_terms = ObjectWeightTerms::X0;
        let d4 = tr.draws(16, 3);
        let x0_only = rows(&tr, &d4);
        for (i, w) in expected_row_weights(&tr, &batch, &d, &object, 4.0).into_iter().enumerate() {
            let want = read_out[i] * (w - 1.0);
            assert!((x0_only[i] - plain[i] - want).abs() < 1e-4, "row {i}: {} vs {want}", x0_only[i] - plain[i]);
        }
        // With terms = head, only D is scaled: row − plain row = (plain row − A) · (w_row − 1).
        tr.cfg.train.object_loss_weight_terms = ObjectWeightTerms::Head;
        let head_only = rows(&tr, &d4);
        for (i, w) in expected_row_weights(&tr, &batch, &d, &object, 4.0).into_iter().enumerate() {
            let want = (plain[i] - read_out[i]) * (w - 1.0);
            assert!((head_only[i] - plain[i] - want).abs() < 1e-4, "row {i}: {} vs {want}", head_only[i] - plain[i]);
        }
        let mut bad = micro();
        (bad.train.object_loss_weight, bad.train.object_loss_weight_terms) = (4.0, ObjectWeightTerms::X0);
        assert!(bad.validate().unwrap_err().contains("x0_loss_weight"));
    }

    #[test]
    fn the_x0_background_weight_scales_the_read_outs_background_rows_only() {
        // Seeded (train.seed = 0, Ctx seed 5): the red-block batch, x0 weight 1. Each row is
        // D + A (DiffLoss D, read-out A, A read off a pass at x0 weight 2). At background weight
        // 0.25 a background row is D + 0.25·A and an object row is unchanged.
        let mut tr = still_trainer(1.0);
        let (batch, object) = red_block_batch();
        let d = tr.draws(16, 3);
        let rows = |tr: &Trainer| to_host(&tr.losses_with(&batch, &d, &Ctx::train(5)).unwrap().0);
        let plain = rows(&tr);
        tr.cfg.train.x0_loss_weight = 2.0;
        let read_out: Vec<f32> = rows(&tr).iter().zip(&plain).map(|(a, b)| a - b).collect();
        tr.cfg.train.x0_loss_weight = 1.0;
        tr.cfg.train.x0_background_weight = 0.25;
        let light = rows(&tr);
        let hidden = tr.mask(&batch, &d).unwrap().rows(true);
        let mut kinds = [0usize; 2];
        for (i, &r) in hidden.iter().enumerate() {
            let obj = object.contains(&(r as usize % 16));
            kinds[usize::from(obj)] += 1;
            let want = if obj { 0.0 } else { -0.75 * read_out[i] };
            assert!(read_out[i] > 1e-4, "row {i}: the read-out's MSE is positive");
            assert!(
                (light[i] - plain[i] - want).abs() < 1e-5,
                "row {i} (object {obj}): {} vs {want}",
                light[i] - plain[i]
            );
        }
        assert!(kinds[0] > 0 && kinds[1] > 0, "both kinds of rows: {kinds:?}");
        for (x0, bg, field) in [(1.0, -0.5, "x0_background_weight"), (0.0, 0.5, "x0_loss_weight")] {
            let mut bad = micro();
            (bad.train.x0_loss_weight, bad.train.x0_background_weight) = (x0, bg);
            assert!(bad.validate().unwrap_err().contains(field), "{x0} {bg}");
        }
    }

    #[test]
    fn a_square_on_grey_marks_exactly_the_tokens_it_covers() {
        // 16 px, patch 4 (4×4 tokens): grey 140 with a red square over pixels 5..11 (tokens
        // (1, 1), (1, 2), (2, 1), (2, 2)).
        let side = 16;
        let mut planes = vec![140f32; 3 * side * side];
        for y in 5..11 {
            for x in 5..11 {
                planes[y * side + x] = 220.0;
                planes[side * side + y * side + x] = 40.0;
                planes[2 * side * side + y * side + x] = 40.0;
            }
        }
        let spec = PixelTokens { patch: 4, grid: 4, scale: 1.0 / 127.5, shift: 127.5 };
        let values: Vec<f32> = planes.iter().map(|v| (v - spec.shift) * spec.scale).collect();
        let tokens = patchify(&values, 3, side, side, 4);
        let marked: Vec<usize> =
            spec.object_tokens(&tokens).iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i).collect();
        assert_eq!(marked, [5, 6, 9, 10]);
    }

    #[test]
    fn marked_tokens_go_first_in_their_own_order() {
        let mut object = vec![false; 6];
        (object[1], object[4]) = (true, true);
        assert_eq!(objects_first(&[5, 4, 3, 2, 1, 0], &object), [4, 1, 5, 3, 2, 0]);
        assert_eq!(objects_last(&[5, 4, 3, 2, 1, 0], &object), [5, 3, 2, 0, 4, 1]);
    }
}
