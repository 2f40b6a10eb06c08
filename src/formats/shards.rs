//! Latent shards: safetensors files, memory-mapped for reading. Each holds `latents`
//! (N, L, D), optionally `latents_flip` (N, L, D), `text_ids` (N, T) u32 and `text_len` (N,)
//! u32. A row is a fixed-size slice at a computed offset: the trainer reads any sample with
//! no parsing beyond the header, which is read once per shard. With T5 features: `text_feat`
//! (Σ len, D) once per unique prompt of the shard, cut at its true length, `text_feat_offsets`
//! (U + 1,) u32 token offsets and `text_feat_row` (N,) u32, each row's prompt.

use std::collections::HashMap;
use std::path::Path;

use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// One shard's contents before writing.
pub struct ShardData {
    pub rows: usize,
    pub tokens: usize,
    pub token_dim: usize,
    pub text_len_max: usize,
    /// rows · tokens · token_dim values.
    pub latents: Vec<f32>,
    pub latents_flip: Option<Vec<f32>>,
    pub text_ids: Vec<u32>,
    pub text_len: Vec<u32>,
    pub text_features: Option<TextFeatures>,
}

/// Text features stored once per unique prompt.
pub struct TextFeatures {
    pub dim: usize,
    /// bf16 | f16 | f32 on disk.
    pub dtype: String,
    /// Each row's prompt (index into the offsets).
    pub row_prompt: Vec<u32>,
    /// Token offsets of each unique prompt, U + 1 entries.
    pub offsets: Vec<u32>,
    /// Σ len · dim values.
    pub values: Vec<f32>,
}

fn dtype_of(name: &str) -> Result<Dtype> {
    match name {
        "f16" => Ok(Dtype::F16),
        "bf16" => Ok(Dtype::BF16),
        "f32" => Ok(Dtype::F32),
        other => Err(Error::invalid("encode.dtype", format!("\"{other}\": expected f16, bf16 or f32"))),
    }
}

fn to_bytes(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Serialises a shard (safetensors bytes); `meta` goes into the header's metadata.
pub fn serialize(d: &ShardData, dtype: &str, meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let dt = dtype_of(dtype)?;
    let shape = vec![d.rows, d.tokens, d.token_dim];
    let lat = to_bytes(&d.latents, dt);
    let flip = d.latents_flip.as_ref().map(|f| to_bytes(f, dt));
    let ids: Vec<u8> = d.text_ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lens: Vec<u8> = d.text_len.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bad = |e: safetensors::SafeTensorError| Error::invalid("shard", e.to_string());
    let mut views = vec![
        ("latents", TensorView::new(dt, shape.clone(), &lat).map_err(bad)?),
        ("text_ids", TensorView::new(Dtype::U32, vec![d.rows, d.text_len_max], &ids).map_err(bad)?),
        ("text_len", TensorView::new(Dtype::U32, vec![d.rows], &lens).map_err(bad)?),
    ];
    if let Some(f) = &flip {
        views.push(("latents_flip", TensorView::new(dt, shape, f).map_err(bad)?));
    }
    let feats = match &d.text_features {
        Some(t) => {
            let fdt = dtype_of(&t.dtype)?;
            let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            Some((fdt, t, to_bytes(&t.values, fdt), u32s(&t.offsets), u32s(&t.row_prompt)))
        }
        None => None,
    };
    if let Some((fdt, t, vals, offs, rows)) = &feats {
        let total = t.values.len() / t.dim.max(1);
        views.push(("text_feat", TensorView::new(*fdt, vec![total, t.dim], vals).map_err(bad)?));
        views.push(("text_feat_offsets", TensorView::new(Dtype::U32, vec![t.offsets.len()], offs).map_err(bad)?));
        views.push(("text_feat_row", TensorView::new(Dtype::U32, vec![d.rows], rows).map_err(bad)?));
    }
    safetensors::serialize(views, Some(meta)).map_err(bad)
}

/// A memory-mapped shard.
pub struct Shard {
    map: Mmap,
    /// (byte offset, bytes per row) of each tensor.
    latents: (usize, usize),
    flip: Option<(usize, usize)>,
    ids: (usize, usize),
    lens: usize,
    pub rows: usize,
    pub tokens: usize,
    pub token_dim: usize,
    pub text_max: usize,
    dtype: Dtype,
    /// (values offset, dim, dtype), offsets offset, row-prompt offset.
    feat: Option<((usize, usize, Dtype), usize, usize)>,
}

impl Shard {
    pub fn open(path: &Path) -> Result<Shard> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // Safety: the shard is immutable once committed (written under a temporary name and
        // renamed); nothing writes to it while it is mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |m: String| Error::invalid(path.display().to_string(), m);
        let st = SafeTensors::deserialize(&map).map_err(|e| bad(format!("not a readable safetensors shard: {e}")))?;
        let base = map.as_ptr() as usize;
        let place = |name: &str| -> Result<Option<(usize, usize, Vec<usize>, Dtype)>> {
            match st.tensor(name) {
                Ok(t) => {
                    let rows = t.shape().first().copied().unwrap_or(0).max(1);
                    Ok(Some((t.data().as_ptr() as usize - base, t.data().len() / rows, t.shape().to_vec(), t.dtype())))
                }
                Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
                Err(e) => Err(bad(e.to_string())),
            }
        };
        let (lo, lrow, lshape, dtype) = place("latents")?.ok_or_else(|| bad("no `latents` tensor".into()))?;
        let (io, irow, ishape, _) = place("text_ids")?.ok_or_else(|| bad("no `text_ids` tensor".into()))?;
        let (no, _, _, _) = place("text_len")?.ok_or_else(|| bad("no `text_len` tensor".into()))?;
        let flip = place("latents_flip")?.map(|(o, r, _, _)| (o, r));
        let feat = match (place("text_feat")?, place("text_feat_offsets")?, place("text_feat_row")?) {
            (Some((vo, _, vs, vd)), Some((oo, _, _, _)), Some((ro, _, _, _))) if vs.len() == 2 => {
                Some(((vo, vs[1], vd), oo, ro))
            }
            (None, None, None) => None,
            _ => {
                return Err(bad(
                    "incomplete text features: need text_feat (T, D), text_feat_offsets and text_feat_row".into()
                ))
            }
        };
        if lshape.len() != 3 || ishape.len() != 2 || ishape[0] != lshape[0] {
            return Err(bad(format!("unexpected shapes: latents {lshape:?}, text_ids {ishape:?}")));
        }
        drop(st);
        Ok(Shard {
            latents: (lo, lrow),
            flip,
            ids: (io, irow),
            lens: no,
            rows: lshape[0],
            tokens: lshape[1],
            token_dim: lshape[2],
            text_max: ishape[1],
            dtype,
            feat,
            map,
        })
    }

    /// Row `i`'s tokens (or its flipped copy's) as f32, into `out` (tokens · token_dim).
    pub fn latents_into(&self, i: usize, flip: bool, out: &mut Vec<f32>) {
        out.resize(self.tokens * self.token_dim, 0.0);
        self.latents_into_slice(i, flip, out);
    }

    /// Like [`Shard::latents_into`], into a slice of exactly tokens · token_dim values (a row of
    /// a batch buffer). f16 converts with the CPU's half-float instructions where it has them.
    pub fn latents_into_slice(&self, i: usize, flip: bool, out: &mut [f32]) {
        use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
        let (off, row) = if flip { self.flip.unwrap_or(self.latents) } else { self.latents };
        let bytes = &self.map[off + i * row..off + (i + 1) * row];
        match self.dtype {
            Dtype::F16 | Dtype::BF16 => {
                // Safety: f16 and bf16 are plain 2-byte values (repr(transparent) u16); align_to
                // only yields the aligned middle, and rows of a shard start 2-aligned.
                let (pre, mid, post) = unsafe { bytes.align_to::<u16>() };
                if pre.is_empty() && post.is_empty() {
                    if self.dtype == Dtype::F16 {
                        mid.reinterpret_cast::<half::f16>().convert_to_f32_slice(out);
                    } else {
                        mid.reinterpret_cast::<half::bf16>().convert_to_f32_slice(out);
                    }
                } else {
                    let conv = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
                    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                        *o = if self.dtype == Dtype::F16 {
                            half::f16::from_bits(conv(b)).to_f32()
                        } else {
                            half::bf16::from_bits(conv(b)).to_f32()
                        };
                    }
                }
            }
            _ => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }

    pub fn has_flip(&self) -> bool {
        self.flip.is_some()
    }

    fn u32_at(&self, off: usize, i: usize) -> usize {
        let b = &self.map[off + 4 * i..off + 4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    /// Row `i`'s text features ((len, dim) values, len its true token count) into `out`;
    /// `None` when the shard has none (the `vocab` text encoder).
    pub fn text_features_into(&self, i: usize, out: &mut Vec<f32>) -> Option<usize> {
        let ((vo, dim, dt), oo, ro) = self.feat?;
        let p = self.u32_at(ro, i);
        let (a, b) = (self.u32_at(oo, p), self.u32_at(oo, p + 1));
        let width = if dt == Dtype::F32 { 4 } else { 2 };
        let bytes = &self.map[vo + a * dim * width..vo + b * dim * width];
        out.clear();
        out.extend(bytes.chunks_exact(width).map(|c| match dt {
            Dtype::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
            Dtype::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            _ => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        }));
        Some(b - a)
    }

    /// Row `i`'s text ids (padded) and true length.
    pub fn text(&self, i: usize) -> (Vec<u32>, u32) {
        let (off, row) = self.ids;
        let ids = self.map[off + i * row..off + (i + 1) * row]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let l = &self.map[self.lens + i * 4..self.lens + i * 4 + 4];
        (ids, u32::from_le_bytes([l[0], l[1], l[2], l[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_written() {
        let (rows, tokens, dim) = (3, 4, 2);
        let latents: Vec<f32> = (0..rows * tokens * dim).map(|i| i as f32 / 32.0 - 0.5).collect();
        let flip: Vec<f32> = latents.iter().map(|v| -v).collect();
        let d = ShardData {
            rows,
            tokens,
            token_dim: dim,
            text_len_max: 3,
            latents: latents.clone(),
            latents_flip: Some(flip),
            text_ids: vec![5, 6, 0, 7, 0, 0, 8, 9, 10],
            text_len: vec![2, 1, 3],
            // Rows 0 and 2 share a prompt of 2 tokens; row 1's has 1 token; dim 2.
            text_features: Some(TextFeatures {
                dim: 2,
                dtype: "bf16".into(),
                row_prompt: vec![0, 1, 0],
                offsets: vec![0, 2, 3],
                values: vec![0.5, -1.0, 2.0, 0.25, 3.0, -0.125],
            }),
        };
        for dtype in ["f32", "f16"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.safetensors");
            std::fs::write(&path, serialize(&d, dtype, HashMap::new()).unwrap()).unwrap();
            let s = Shard::open(&path).unwrap();
            assert_eq!((s.rows, s.tokens, s.token_dim, s.text_max), (3, 4, 2, 3));
            let mut out = Vec::new();
            s.latents_into(1, false, &mut out);
            assert_eq!(out, latents[8..16].to_vec(), "{dtype}");
            s.latents_into(1, true, &mut out);
            assert_eq!(out, latents[8..16].iter().map(|v| -v).collect::<Vec<_>>());
            assert_eq!(s.text(1), (vec![7, 0, 0], 1));
            let mut f = Vec::new();
            assert_eq!(s.text_features_into(2, &mut f), Some(2));
            assert_eq!(f, vec![0.5, -1.0, 2.0, 0.25]);
            assert_eq!(s.text_features_into(1, &mut f), Some(1));
            assert_eq!(f, vec![3.0, -0.125]);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
        let err = Shard::open(&path).err().unwrap().to_string();
        assert!(err.contains("bad.safetensors") && err.contains("not a readable safetensors shard"), "{err}");
    }
}
