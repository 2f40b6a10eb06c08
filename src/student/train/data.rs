//! Training batches from a verified manifest's memory-mapped shards. Step s's global batch is
//! a pure function of (seed, s): epoch e visits the samples in a permutation drawn from
//! (seed, e); each sample's flip (when the shards store the flipped copy) and VAE noise
//! (`DiagonalGaussianDistribution.sample`, logvar clamped to [-30, 20]) come from its own
//! stream, keyed by its position in the run, so a rank can read its share of a step without
//! the others'. A background thread prepares the next batches while the model trains.

use std::path::Path;
use std::sync::mpsc;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::formats::manifest::{selection_rows, Manifest};
use crate::formats::shards::Shard;
use crate::formats::text::TextSpec;
use crate::formats::tokenizer::LatentSpec;

pub struct Dataset {
    shards: Vec<Shard>,
    /// (shard, row) of every training sample.
    index: Vec<(u32, u32)>,
    pub latent: LatentSpec,
    pub text: TextSpec,
    /// Tokens per image and values per model token (half the stored width for VAE moments).
    pub tokens: usize,
    pub token_dim: usize,
    /// Text tokens and feature channels per caption (channels 0 for vocabulary ids).
    pub text_len: usize,
    pub text_channels: usize,
    /// Positions in `index` of the samples the first `focus_steps` steps draw from (the
    /// families `train.focus_families` names); empty = no focus.
    focus: Vec<u32>,
    focus_steps: u64,
}

/// One batch, host-side.
pub struct Batch {
    pub step: u64,
    pub size: usize,
    /// (B, L, C) normalised tokens.
    pub tokens: Vec<f32>,
    /// (B, T) vocabulary ids, or (B, T, Ct) features.
    pub ids: Vec<u32>,
    pub feats: Vec<f32>,
}

impl Dataset {
    /// Opens the shards of a manifest that `manifest::verify` has accepted.
    pub fn open(manifest_path: &Path, m: &Manifest) -> Result<Dataset> {
        let root = manifest_path.parent().unwrap_or(Path::new("."));
        let mut shards = Vec::new();
        let mut index = Vec::new();
        for (k, e) in m.shards.iter().enumerate() {
            let shard = Shard::open(&root.join(&e.path))?;
            let rows: Vec<u32> = match &e.selection {
                Some(sel) => {
                    let p = root.join(&sel.path);
                    selection_rows(&std::fs::read(&p).map_err(|e| Error::io(&p, e))?)
                }
                None => (0..shard.rows as u32).collect(),
            };
            index.extend(rows.into_iter().map(|r| (k as u32, r)));
            shards.push(shard);
        }
        if index.is_empty() {
            return Err(Error::invalid(manifest_path.display().to_string(), "the manifest has no training samples"));
        }
        let stored = m.latent.token_dim as usize;
        let token_dim = if m.latent.moments { stored / 2 } else { stored };
        let text_channels = if m.text.encoder == "vocab" { 0 } else { m.text.dim as usize };
        Ok(Dataset {
            tokens: (m.latent.grid * m.latent.grid) as usize,
            token_dim,
            text_len: m.text.max_len as usize,
            text_channels,
            latent: m.latent.clone(),
            text: m.text.clone(),
            shards,
            index,
            focus: Vec::new(),
            focus_steps: 0,
        })
    }

    /// Steps before `steps` draw only samples of `families` (the shards' index `family`
    /// column), in their own epochs; the steps after draw from every sample. Returns how many
    /// samples the focus holds. No families = no focus.
    pub fn focus_on(&mut self, manifest_path: &Path, m: &Manifest, families: &[String], steps: u64) -> Result<usize> {
        (self.focus, self.focus_steps) = (Vec::new(), 0);
        if families.is_empty() || steps == 0 {
            return Ok(0);
        }
        self.focus = self.of_families(manifest_path, m, families, "train.focus_families")?;
        self.focus_steps = steps;
        Ok(self.focus.len())
    }

    /// The samples (positions, ascending) whose family (the shards' index `family` column) is
    /// one of `families`. Each family must have samples: a misspelt one would silently narrow
    /// the set. `what` names the setting in that error.
    pub fn of_families(&self, manifest_path: &Path, m: &Manifest, families: &[String], what: &str) -> Result<Vec<u32>> {
        let root = manifest_path.parent().unwrap_or(Path::new("."));
        // (shard, row) → family, for the rows of each shard.
        let mut family_of: Vec<std::collections::HashMap<u32, String>> = Vec::new();
        for e in &m.shards {
            let f = crate::formats::frame::Frame::read(&root.join(&e.index), Some(&["row", "family"]))?;
            let (rows, fams) = (f.u32("row")?, f.str("family")?);
            let mut map = std::collections::HashMap::new();
            for i in 0..f.height() {
                let row = f.required("row", i, rows.get(i))?;
                map.insert(row, f.required("family", i, fams.get(i))?.to_string());
            }
            family_of.push(map);
        }
        let (mut seen, mut picked) = (std::collections::BTreeSet::new(), Vec::new());
        for (i, &(s, r)) in self.index.iter().enumerate() {
            let fam = family_of[s as usize].get(&r).map_or("", String::as_str);
            seen.insert(fam.to_string());
            if families.iter().any(|f| f == fam) {
                picked.push(i as u32);
            }
        }
        if let Some(missing) = families.iter().find(|f| !seen.contains(*f)) {
            return Err(Error::invalid(
                what,
                format!(
                    "\"{missing}\": no training sample of {} is of this family; it has {:?}",
                    manifest_path.display(),
                    seen
                ),
            ));
        }
        Ok(picked)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// A permutation of `0..n` for epoch key `epoch`.
    fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
        let mut o: Vec<u32> = (0..n as u32).collect();
        o.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch));
        o
    }

    /// The position in `index` of the sample at run position `pos` (of step `step`). Focus
    /// steps walk the focus in epochs of their own (keys with the top bit set); `order`
    /// caches the current epoch's permutation.
    fn pick(&self, seed: u64, step: u64, pos: u64, order: &mut (u64, Vec<u32>)) -> usize {
        let focus = step < self.focus_steps;
        let n = if focus { self.focus.len() } else { self.index.len() } as u64;
        let key = (pos / n) | if focus { 1 << 63 } else { 0 };
        if order.0 != key || order.1.is_empty() {
            *order = (key, Self::epoch_order(seed, key, n as usize));
        }
        let j = order.1[(pos % n) as usize] as usize;
        if focus {
            self.focus[j] as usize
        } else {
            j
        }
    }

    /// Batch `step` of size `b`.
    pub fn batch(&self, seed: u64, step: u64, b: usize, order: &mut (u64, Vec<u32>)) -> Batch {
        self.share(seed, step, b, 0..b, order)
    }

    /// Samples `range` of step `step`'s global batch of `global` samples.
    pub fn share(
        &self,
        seed: u64,
        step: u64,
        global: usize,
        range: std::ops::Range<usize>,
        order: &mut (u64, Vec<u32>),
    ) -> Batch {
        let (l, c) = (self.tokens, self.token_dim);
        let (lo, b) = (range.start, range.len());
        let mut tokens = vec![0.0f32; b * l * c];
        let mut ids = Vec::new();
        let mut feats = Vec::new();
        let mut raw = Vec::new();
        let mut f = Vec::new();
        for i in 0..b {
            let pos = step * global as u64 + (lo + i) as u64;
            let mut rng = sample_rng(seed, pos);
            let (s, r) = self.index[self.pick(seed, step, pos, order)];
            let shard = &self.shards[s as usize];
            let flip = shard.has_flip() && rng.random::<bool>();
            let out = &mut tokens[i * l * c..(i + 1) * l * c];
            if self.latent.moments {
                shard.latents_into(r as usize, flip, &mut raw);
                // Each stored token is (mean · C, logvar · C), channel-major as patchify writes.
                let (scale, shift) = (self.latent.scale, self.latent.shift);
                for t in 0..l {
                    let tok = &raw[t * 2 * c..(t + 1) * 2 * c];
                    for k in 0..c {
                        let std = (0.5 * tok[c + k].clamp(-30.0, 20.0)).exp();
                        let e: f32 = StandardNormal.sample(&mut rng);
                        out[t * c + k] = (tok[k] + std * e - shift) * scale;
                    }
                }
            } else {
                shard.latents_into_slice(r as usize, flip, out);
            }
            if self.text_channels == 0 {
                let (row, _) = shard.text(r as usize);
                ids.extend(row.iter().take(self.text_len));
                ids.resize((i + 1) * self.text_len, 0);
            } else {
                let n = shard.text_features_into(r as usize, &mut f).unwrap_or(0).min(self.text_len);
                feats.extend_from_slice(&f[..n * self.text_channels]);
                feats.resize((i + 1) * self.text_len * self.text_channels, 0.0);
            }
        }
        Batch { step, size: b, tokens, ids, feats }
    }

    /// Sample `i` of the training index as (manifest shard, row).
    pub fn locate(&self, i: usize) -> (usize, usize) {
        let (s, r) = self.index[i];
        (s as usize, r as usize)
    }

    /// Sample `i` alone, without augmentation (no flip; VAE moments at their mean), as a
    /// batch of one.
    pub fn example(&self, i: usize) -> Batch {
        let (l, c) = (self.tokens, self.token_dim);
        let (s, r) = self.locate(i);
        let shard = &self.shards[s];
        let mut tokens = vec![0.0f32; l * c];
        if self.latent.moments {
            let mut raw = Vec::new();
            shard.latents_into(r, false, &mut raw);
            for t in 0..l {
                for k in 0..c {
                    tokens[t * c + k] = (raw[t * 2 * c + k] - self.latent.shift) * self.latent.scale;
                }
            }
        } else {
            shard.latents_into_slice(r, false, &mut tokens);
        }
        let (mut ids, mut feats) = (Vec::new(), Vec::new());
        if self.text_channels == 0 {
            ids = shard.text(r).0.into_iter().take(self.text_len).collect();
            ids.resize(self.text_len, 0);
        } else {
            let n = shard.text_features_into(r, &mut feats).unwrap_or(0).min(self.text_len);
            feats.truncate(n * self.text_channels);
            feats.resize(self.text_len * self.text_channels, 0.0);
        }
        Batch { step: 0, size: 1, tokens, ids, feats }
    }

    /// For steps `from..to`, this rank's micro-batches (`shares` of `b` samples each, out of a
    /// global batch of `global`), from a background thread (a few steps ahead).
    pub fn stream(
        self: &std::sync::Arc<Self>,
        seed: u64,
        (from, to): (u64, u64),
        global: usize,
        b: usize,
        shares: Vec<usize>,
    ) -> mpsc::Receiver<Vec<Batch>> {
        let (tx, rx) = mpsc::sync_channel(3);
        let ds = self.clone();
        std::thread::spawn(move || {
            let mut order = (u64::MAX, Vec::new());
            for s in from..to {
                let micro = shares.iter().map(|&k| ds.share(seed, s, global, k * b..(k + 1) * b, &mut order)).collect();
                if tx.send(micro).is_err() {
                    break;
                }
            }
        });
        rx
    }
}

/// The random stream of the sample at position `pos` of a run (step × global batch + index).
fn sample_rng(seed: u64, pos: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x7361_6d70_6c65_7321);
    r.set_stream(pos);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "manifests/shapes-tiny/manifest.json";

    /// The family of each training sample of the example manifest, by index position.
    fn families(ds: &Dataset, m: &Manifest) -> Vec<String> {
        let mut by_row = std::collections::HashMap::new();
        for (k, e) in m.shards.iter().enumerate() {
            let f =
                crate::formats::frame::Frame::read(&Path::new("manifests/shapes-tiny").join(&e.index), None).unwrap();
            let (rows, fams) = (f.u32("row").unwrap(), f.str("family").unwrap());
            for i in 0..f.height() {
                by_row.insert((k, rows.get(i).unwrap() as usize), fams.get(i).unwrap().to_string());
            }
        }
        (0..ds.len()).map(|i| by_row[&ds.locate(i)].clone()).collect()
    }

    #[test]
    fn focus_steps_draw_only_the_named_families_then_every_sample_as_before() {
        let p = Path::new(MANIFEST);
        let m = crate::formats::manifest::verify(p).unwrap();
        let plain = Dataset::open(p, &m).unwrap();
        let mut ds = Dataset::open(p, &m).unwrap();
        let want = ["single_object".to_string(), "colors".to_string()];
        let n = ds.focus_on(p, &m, &want, 6).unwrap();
        let fam = families(&ds, &m);
        assert_eq!(n, fam.iter().filter(|f| want.contains(f)).count());
        assert!(n > 0 && n < ds.len(), "the example manifest has {n} of {} samples in focus", ds.len());
        // Seed 3 (fixed); a batch of 4 over 6 focus steps walks the focus more than once.
        let (mut order, mut plain_order) = ((u64::MAX, Vec::new()), (u64::MAX, Vec::new()));
        let mut drawn = std::collections::BTreeSet::new();
        for step in 0..6u64 {
            for i in 0..4 {
                let j = ds.pick(3, step, step * 4 + i, &mut order);
                assert!(want.contains(&fam[j]), "step {step} drew a {} sample", fam[j]);
                drawn.insert(j);
            }
        }
        assert_eq!(drawn.len(), n, "the focus steps visit every focus sample");
        // After the focus, the same samples as a run without one, all families included.
        let mut later = std::collections::BTreeSet::new();
        for step in 6..20u64 {
            for i in 0..4 {
                let pos = step * 4 + i;
                let j = ds.pick(3, step, pos, &mut order);
                assert_eq!(j, plain.pick(3, step, pos, &mut plain_order));
                later.insert(fam[j].clone());
            }
        }
        assert!(later.len() > want.len(), "{later:?}");
    }

    #[test]
    fn a_focus_on_families_the_manifest_lacks_names_those_it_has() {
        let p = Path::new(MANIFEST);
        let m = crate::formats::manifest::verify(p).unwrap();
        let mut ds = Dataset::open(p, &m).unwrap();
        let e = ds.focus_on(p, &m, &["single_object".into(), "colour".into()], 10).unwrap_err().to_string();
        assert!(e.contains("train.focus_families") && e.contains("\"colour\"") && e.contains("colors"), "{e}");
    }
}
