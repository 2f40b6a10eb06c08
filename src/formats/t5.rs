//! `t5`: an ONNX T5 encoder (`input_ids`, `attention_mask` → `last_hidden_state`) with its
//! sentencepiece tokenizer (`tokenizer.json`, through the `tokenizers` crate). Features are
//! computed once per unique prompt and kept only up to the prompt's true token length, so a
//! T5-XXL corpus does not store 128 × 4096 padding per image (`pipeline.md` §5).

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::config::T5Config;
use crate::onnx::model::{port, Feed, Model};

pub struct T5 {
    model: Model,
    tok: Tokenizer,
    eos: Option<u32>,
    pub dim: usize,
    pub max_len: usize,
    pub batch: usize,
    /// `t5:<folder>@<blake3>`.
    pub id: String,
}

fn find(root: &Path) -> Option<PathBuf> {
    ["model.onnx", "encoder_model.onnx", "text_encoder_3/model.onnx"]
        .into_iter()
        .map(|f| root.join(f))
        .find(|p| p.is_file())
}

impl T5 {
    pub fn load(cfg: &T5Config, max_len: usize) -> Result<T5, String> {
        let root = &cfg.model;
        let path = find(root)
            .ok_or_else(|| format!("{}: no model.onnx or encoder_model.onnx (a T5 encoder export)", root.display()))?;
        let tj = root.join("tokenizer.json");
        let tok = Tokenizer::from_file(&tj).map_err(|e| format!("{}: {e}", tj.display()))?;
        let rt = crate::onnx::runtime::get(cfg.runtime.as_deref())?;
        let model = Model::load(
            rt,
            &path,
            &cfg.device,
            &[port("input_ids", 2), port("attention_mask", 2)],
            &[port("last_hidden_state", 3)],
        )?;
        let dim = model
            .outputs
            .iter()
            .find(|p| p.name == "last_hidden_state")
            .and_then(|p| p.shape.get(2).copied())
            .filter(|d| *d > 0);
        let mut t5 = T5 {
            eos: tok.token_to_id("</s>"),
            model,
            tok,
            dim: dim.unwrap_or(0) as usize,
            max_len,
            batch: cfg.batch as usize,
            id: crate::onnx::model_id("t5", root)?,
        };
        if t5.dim == 0 {
            // A dynamic width: ask the model once.
            t5.dim = t5.features(&["a"])?[0].len() / t5.ids("a")?.len().max(1);
        }
        Ok(t5)
    }

    /// Token ids of `text`: its pieces, cut to `max_len − 1`, then `</s>`.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.tok.encode(text, false).map_err(|e| format!("cannot tokenize {text:?}: {e}"))?;
        let mut ids: Vec<u32> =
            enc.get_ids().iter().copied().take(self.max_len - self.eos.is_some() as usize).collect();
        ids.extend(self.eos);
        Ok(ids)
    }

    /// Features of each text: (len_i, dim) values, len_i its true token count.
    pub fn features(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(t)).collect::<Result<_, _>>()?;
        let longest = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let b = texts.len();
        // (B, longest) ids and mask, padded with 0 (T5's <pad>).
        let mut flat = vec![0i64; b * longest];
        let mut mask = vec![0i64; b * longest];
        for (r, row) in ids.iter().enumerate() {
            for (k, &t) in row.iter().enumerate() {
                flat[r * longest + k] = t as i64;
                mask[r * longest + k] = 1;
            }
        }
        let shape = vec![b as i64, longest as i64];
        let feeds = vec![
            ("input_ids", Feed::I64(shape.clone(), flat).into()),
            ("attention_mask", Feed::I64(shape, mask).into()),
        ];
        let (s, v) = self.model.run(feeds, &["last_hidden_state"])?.remove(0);
        let d = *s.last().unwrap_or(&0) as usize;
        if s.len() != 3 || d == 0 || v.len() != b * longest * d {
            return Err(format!(
                "{}: last_hidden_state has shape {s:?}, expected [{b}, {longest}, D]",
                self.model.path.display()
            ));
        }
        Ok(ids.iter().enumerate().map(|(r, row)| v[r * longest * d..(r * longest + row.len()) * d].to_vec()).collect())
    }
}
