//! CLIP's BPE tokenizer with the HF `tokenizers` crate, from a `tokenizer/` folder as diffusers
//! and optimum write it: `tokenizer.json` when present, else `vocab.json` + `merges.txt` built
//! the way `transformers` converts CLIPTokenizer (NFC, whitespace collapse, lowercase; CLIP's
//! split regex, then byte-level; BPE with `</w>` word ends). Output: exactly `max_len` ids,
//! `<|startoftext|>` … `<|endoftext|>`, then padding.

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

/// CLIP's word split (from the original `simple_tokenizer.py`).
const CLIP_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    tok: Tokenizer,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub max_len: usize,
}

impl ClipTokenizer {
    /// Loads `dir` (a `tokenizer/` folder).
    pub fn load(dir: &Path) -> Result<ClipTokenizer, String> {
        let at = |f: &str| dir.join(f);
        let tok = if at("tokenizer.json").is_file() {
            Tokenizer::from_file(at("tokenizer.json"))
                .map_err(|e| format!("{}: {e}", at("tokenizer.json").display()))?
        } else {
            for f in ["vocab.json", "merges.txt"] {
                if !at(f).is_file() {
                    return Err(format!(
                        "{}: missing (a CLIP tokenizer needs tokenizer.json or vocab.json + merges.txt)",
                        at(f).display()
                    ));
                }
            }
            let bpe = BPE::from_file(&at("vocab.json").to_string_lossy(), &at("merges.txt").to_string_lossy())
                .end_of_word_suffix("</w>".into())
                .unk_token("<|endoftext|>".into())
                .build()
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut t = Tokenizer::new(bpe);
            let ws = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(|e| e.to_string())?;
            t.with_normalizer(Some(NormSeq::new(vec![NFC.into(), ws.into(), Lowercase.into()])))
                .map_err(|e| e.to_string())?;
            let split = Split::new(SplitPattern::Regex(CLIP_SPLIT.into()), SplitDelimiterBehavior::Removed, true)
                .map_err(|e| e.to_string())?;
            t.with_pre_tokenizer(Some(PreSeq::new(vec![split.into(), ByteLevel::new(false, true, true).into()])));
            t
        };
        let cfg: serde_json::Value = std::fs::read(at("tokenizer_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let special: serde_json::Value = std::fs::read(at("special_tokens_map.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // A token is a string or {"content": ...}.
        let name = |key: &str, default: &str| -> String {
            let v = if special[key].is_null() { &cfg[key] } else { &special[key] };
            v.as_str().or(v["content"].as_str()).unwrap_or(default).to_string()
        };
        let id =
            |t: &str| tok.token_to_id(t).ok_or_else(|| format!("{}: the vocabulary has no token {t:?}", dir.display()));
        let bos = id(&name("bos_token", "<|startoftext|>"))?;
        let eos = id(&name("eos_token", "<|endoftext|>"))?;
        let pad = id(&name("pad_token", "<|endoftext|>"))?;
        // `model_max_length` is sometimes a huge sentinel; CLIP's text towers take 77.
        let max_len = cfg["model_max_length"].as_u64().filter(|&n| (3..=1024).contains(&n)).unwrap_or(77) as usize;
        Ok(ClipTokenizer { tok, bos, eos, pad, max_len })
    }

    /// Ids of one text: bos, up to `max_len - 2` tokens, eos, padding to `max_len`.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, String> {
        let enc = self.tok.encode(text, false).map_err(|e| format!("cannot tokenize {text:?}: {e}"))?;
        let body = enc.get_ids();
        let keep = body.len().min(self.max_len - 2);
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos as i64);
        ids.extend(body[..keep].iter().map(|&i| i as i64));
        ids.push(self.eos as i64);
        ids.resize(self.max_len, self.pad as i64);
        Ok(ids)
    }
}
