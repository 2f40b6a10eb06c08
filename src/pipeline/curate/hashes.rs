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
        Hashes {
            exact: *h.finalize().as_bytes(),
            phash: word(self.phash.hash_image(img).as_bytes()),
            dhash: word(self.dhash.hash_image(img).as_bytes()),
        }
    }
}

/// Multi-index hashing (Norouzi et al.): each 64-bit hash is filed under its four 16-bit
/// chunks. Two hashes within distance d agree within ⌊d/4⌋ bits on at least one chunk
/// (pigeonhole), so a query probes only the buckets that close to its own chunks.
pub struct NearIndex {
    max_distance: u32,
    /// 4 × 65536 buckets of (hash, id).
    buckets: Vec<Vec<(u64, u32)>>,
    /// Every 16-bit mask with at most ⌊d/4⌋ bits set.
    probes: Vec<u16>,
}

impl NearIndex {
    pub fn new(max_distance: u32) -> NearIndex {
        let r = (max_distance / 4).min(16);
        let probes = (0..=u16::MAX).filter(|m| m.count_ones() <= r).collect();
        NearIndex { max_distance, buckets: vec![Vec::new(); 4 * 65536], probes }
    }

    pub fn insert(&mut self, hash: u64, id: u32) {
        for c in 0..4 {
            let chunk = (hash >> (16 * c)) as u16;
            self.buckets[c * 65536 + chunk as usize].push((hash, id));
        }
    }

    /// The nearest stored hash within the distance, as (id, distance); ties go to the lowest id.
    /// `accept` can veto a candidate (e.g. a second hash that must agree too).
    pub fn nearest(&self, hash: u64, mut accept: impl FnMut(u32) -> bool) -> Option<(u32, u32)> {
        let mut best: Option<(u32, u32)> = None;
        for c in 0..4 {
            let chunk = (hash >> (16 * c)) as u16;
            for &m in &self.probes {
                for &(h, id) in &self.buckets[c * 65536 + (chunk ^ m) as usize] {
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
        let mut idx = NearIndex::new(10);
        for (i, &h) in stored.iter().enumerate().take(2000) {
            idx.insert(h, i as u32);
        }
        for &q in &stored[2000..] {
            let brute = stored[..2000]
                .iter()
                .enumerate()
                .map(|(i, &h)| ((h ^ q).count_ones(), i as u32))
                .filter(|&(d, _)| d <= 10)
                .min()
                .map(|(d, i)| (i, d));
            assert_eq!(idx.nearest(q, |_| true), brute);
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
