//! Text encoders: prompt → what the trainer reads. `vocab` is the embedded default: a word
//! vocabulary built from the taxonomy, stored as token ids (the trainer learns embeddings).
//! `t5` (`t5.rs`) stores T5 encoder features.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::taxonomy::{Piece, Taxonomy};

/// What the text features are: recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TextSpec {
    /// `vocab` or `t5`.
    pub encoder: String,
    /// Vocabulary size (ids) or feature width (t5).
    pub dim: u32,
    pub max_len: u32,
    /// u32 ids, or the float dtype of stored features.
    pub dtype: String,
    /// blake3 of the vocabulary (`vocab.json`).
    pub vocab_hash: Option<String>,
    /// The model that made the features (`t5:<name>@<hash>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Lowercased words, punctuation dropped ("a red circle, flat style" → a red circle flat style).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
}

/// Id 0 pads, id 1 is an unknown word, then the taxonomy's words in sorted order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    pub words: Vec<String>,
    #[serde(skip)]
    index: BTreeMap<String, u32>,
}

pub const PAD: u32 = 0;
pub const UNK: u32 = 1;

impl Vocab {
    /// Every word a prompt of the taxonomy can contain: template text and every value's forms.
    pub fn from_taxonomy(tax: &Taxonomy) -> Vocab {
        let mut set = BTreeSet::new();
        for t in &tax.templates {
            for p in &t.pieces {
                if let Piece::Lit(s) = p {
                    set.extend(words(s));
                }
            }
        }
        for s in &tax.slots {
            for v in &s.values {
                set.extend(words(&v.text));
                for f in v.forms.values() {
                    set.extend(words(f));
                }
            }
        }
        Vocab::from_words(set.into_iter().collect())
    }

    pub fn from_words(words: Vec<String>) -> Vocab {
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32 + 2)).collect();
        Vocab { words, index }
    }

    pub fn len(&self) -> u32 {
        self.words.len() as u32 + 2
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Ids of `text`, padded with 0 or truncated to `max_len`, and the true length (≤ max_len).
    pub fn encode(&self, text: &str, max_len: usize) -> (Vec<u32>, u32) {
        let mut ids: Vec<u32> = words(text).map(|w| self.index.get(&w).copied().unwrap_or(UNK)).take(max_len).collect();
        let n = ids.len() as u32;
        ids.resize(max_len, PAD);
        (ids, n)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter(|&&i| i != PAD)
            .map(|&i| if i == UNK { "<unk>" } else { self.words.get(i as usize - 2).map_or("<unk>", String::as_str) })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shapes_prompt_is_in_vocabulary() {
        let tax = Taxonomy::load("builtin:shapes", std::path::Path::new(".")).unwrap();
        let v = Vocab::from_taxonomy(&tax);
        for p in crate::pipeline::expand::generator::Generator::new(&tax, 3000, 1) {
            let (ids, n) = v.encode(&p.text, 32);
            assert!(ids[..n as usize].iter().all(|&i| i >= 2), "{}", p.text);
            assert_eq!(v.decode(&ids), words(&p.text).collect::<Vec<_>>().join(" "));
        }
        let (ids, n) = v.encode("a zebra", 4);
        assert_eq!((ids[1], n), (UNK, 2));
        assert_eq!(ids[2..], [PAD, PAD]);
    }
}
