//! Object-first masks (`train.object_mask_prob`): a sample's mask hides every token that
//! covers an object before any background token, so training shows scenes whose objects are
//! entirely hidden with background around them. Uniform masks almost never do (each of an
//! object's tokens is visible independently), and the student learns to continue objects but
//! not to start one (`inpaint --completion`: 0 of 60 scenes drawn with all object tokens
//! hidden). Pixel tokens only: objects are found in the pixels, by the shapes analyzer's
//! foreground test (colour distance from a plane fitted to the image's border).

use crate::formats::tokenizer::unpatchify;
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
    let (mut first, rest): (Vec<usize>, Vec<usize>) = order.iter().partition(|&&i| object[i]);
    first.extend(rest);
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tokenizer::patchify;

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
    }
}
