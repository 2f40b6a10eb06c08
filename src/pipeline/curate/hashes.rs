//! Exact and perceptual image hashes, and a multi-index hash table that finds a near
//! duplicate among millions of 64-bit hashes without comparing all pairs.

use image::RgbImage;
use image_hasher::{FilterType, HashAlg, Hasher, HasherConfig};

/// The hashes curation compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hashes {
    /// blake3 of the decoded pixels and dimensions: a re-encoded copy hashes the same.
    pub exact: [u8; 32],
    /// DCT perceptual hash (pHash), 64 bits.
    pub phash: u64,
    /// Difference hash (dHash), 64 bits.
    pub dhash: u64,
}

/// Computes hashes; holds the hashers' configuration (build once per thread).
pub struct ImageHashes {
    phash: Hasher<[u8; 8]>,
    dhash: Hasher<[u8; 8]>,
}

impl Default for ImageHashes {
    fn default() -> Self {
        let base = || HasherConfig::with_bytes_type::<[u8; 8]>().resize_filter(FilterType::Triangle);
        ImageHashes {
            phash: base().hash_alg(HashAlg::Mean).preproc_dct().to_hasher(),
            dhash: base().hash_alg(HashAlg::Gradient).to_hasher(),
        }
    }
}

impl ImageHashes {
    pub fn hash(&self, img: &RgbImage) -> Hashes {
        let mut h = blake3::Hasher::new();
        h.update(&img.width().to_le_bytes()).update(&img.height().to_le_bytes()).update(img.as_raw());
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8-byte hash"));
        // Both perceptual hashes look at 16×16 or smaller; an area-averaged 64×64 thumbnail
        // first makes large images as cheap as small ones (9 ms → under 1 ms at 512 px).
        let (phash, dhash) = if img.width().max(img.height()) > 64 {
            let small = image::imageops::thumbnail(img, 64, 64);
            (self.phash.hash_image(&small), self.dhash.hash_image(&small))
        } else {
            (self.phash.hash_image(img), self.dhash.hash_image(img))
        };
        Hashes { exact: *h.finalize().as_bytes(), phash: word(phash.as_bytes()), dhash: word(dhash.as_bytes()) }
    }
}

/// Multi-index hashing (Norouzi et al.): each 64-bit hash is filed under m disjoint chunks.
/// Two hashes within distance d differ in at most ⌊d/m⌋ bits on at least one chunk
/// (pigeonhole), so a query probes only the buckets that close to its own chunks. m is chosen
/// so that ⌊d/m⌋ ≤ 1 where chunks stay ≥ 8 bits wide (d = 10: six chunks of 10–11 bits, 12
/// probes each): few random bucket visits, each a contiguous scan.
pub struct NearIndex {
    max_distance: u32,
    /// (shift, width) of each chunk.
    chunks: Vec<(u32, u32)>,
    /// Per chunk, 2^width buckets of (hash, id).
    buckets: Vec<Vec<Vec<(u64, u32)>>>,
    /// Per chunk, every mask of its width with at most ⌊d/m⌋ bits set.
    probes: Vec<Vec<u32>>,
}

impl NearIndex {
    pub fn new(max_distance: u32) -> NearIndex {
        let m = (max_distance / 2 + 1).clamp(4, 8);
        let radius = max_distance / m;
        let mut chunks = Vec::new();
        let mut shift = 0;
        for i in 0..m {
            let width = 64 / m + u32::from(i < 64 % m);
            chunks.push((shift, width));
            shift += width;
        }
        let buckets = chunks.iter().map(|&(_, w)| vec![Vec::new(); 1 << w]).collect();
        let probes =
            chunks.iter().map(|&(_, w)| (0..1u32 << w).filter(|p| p.count_ones() <= radius).collect()).collect();
        NearIndex { max_distance, chunks, buckets, probes }
    }

    fn chunk(hash: u64, (shift, width): (u32, u32)) -> u32 {
        ((hash >> shift) & ((1u64 << width) - 1)) as u32
    }

    pub fn insert(&mut self, hash: u64, id: u32) {
        for (c, &ch) in self.chunks.iter().enumerate() {
            self.buckets[c][Self::chunk(hash, ch) as usize].push((hash, id));
        }
    }

    /// The nearest stored hash within the distance, as (id, distance); ties go to the lowest id.
    /// `accept` can veto a candidate (e.g. a second hash that must agree too).
    pub fn nearest(&self, hash: u64, mut accept: impl FnMut(u32) -> bool) -> Option<(u32, u32)> {
        let mut best: Option<(u32, u32)> = None;
        for (c, &ch) in self.chunks.iter().enumerate() {
            let own = Self::chunk(hash, ch);
            for &m in &self.probes[c] {
                for &(h, id) in &self.buckets[c][(own ^ m) as usize] {
                    let d = (h ^ hash).count_ones();
                    if d <= self.max_distance && best.is_none_or(|(bi, bd)| (d, id) < (bd, bi)) && accept(id) {
                        best = Some((id, d));
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn finds_exactly_the_hashes_within_the_distance() {
        // Fixed seed: 2,000 random hashes, checked against brute force.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut stored: Vec<u64> = (0..2000).map(|_| rng.random()).collect();
        // Plant near copies at distances 0..=12.
        for d in 0..=12u32 {
            let mut h = stored[d as usize];
            for b in 0..d {
                h ^= 1 << (b * 5);
            }
            stored.push(h);
        }
        for max in [0, 3, 4, 10, 12, 20] {
            let mut idx = NearIndex::new(max);
            for (i, &h) in stored.iter().enumerate().take(2000) {
                idx.insert(h, i as u32);
            }
            for &q in &stored[2000..] {
                let brute = stored[..2000]
                    .iter()
                    .enumerate()
                    .map(|(i, &h)| ((h ^ q).count_ones(), i as u32))
                    .filter(|&(d, _)| d <= max)
                    .min()
                    .map(|(d, i)| (i, d));
                assert_eq!(idx.nearest(q, |_| true), brute, "distance {max}");
            }
        }
    }

    #[test]
    fn reencoded_copy_has_the_same_exact_hash() {
        let img = RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 100]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let back = image::load_from_memory(&png).unwrap().to_rgb8();
        let h = ImageHashes::default();
        assert_eq!(h.hash(&img), h.hash(&back));
        let mut other = img.clone();
        other.put_pixel(0, 0, image::Rgb([1, 2, 3]));
        assert_ne!(h.hash(&img).exact, h.hash(&other).exact);
        assert!((h.hash(&img).phash ^ h.hash(&other).phash).count_ones() <= 2, "one pixel barely moves pHash");
    }
}
