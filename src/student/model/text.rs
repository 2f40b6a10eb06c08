//! The text side (`models/utils.py`, `Text_Embedding`): features → PixArt caption projection
//! `text_proj` (linear, tanh-GELU, linear) → ViT blocks `text_aligner` → LayerNorm
//! `text_aligner_norm` (the reference's names). For T5 the features are the stored encoder
//! outputs; for the shapes world's vocabulary ids they are a learned word table plus learned
//! positions (word ids carry no context of their own).

use tch::{Device, Tensor};

use super::blocks::Block;
use super::config::{MarConfig, TextSource};
use super::layers::{tensor_f32, Ctx, LayerNorm, Linear};
use super::store::Scope;

/// What a batch's captions are.
pub enum TextInput {
    /// (B, T) i64 vocabulary ids.
    Ids(Tensor),
    /// (B, T, C) f32 encoder features, zero past each caption's length.
    Features(Tensor),
}

impl TextInput {
    /// Host-side captions as the model's input: (B, T) ids when `channels` is 0, else (B, T,
    /// channels) features.
    pub fn from_host(ids: &[u32], feats: &[f32], b: usize, t: usize, channels: usize, dev: Device) -> TextInput {
        if channels == 0 {
            let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
            TextInput::Ids(Tensor::from_slice(&ids).reshape([b as i64, t as i64]).to_device(dev))
        } else {
            TextInput::Features(tensor_f32(feats, &[b, t, channels], dev))
        }
    }
}

/// Checkpoints written before the text path took the reference's names.
pub const LEGACY_NAMES: [(&str, &str); 3] = [
    ("text_emb.caption_projection.", "text_emb.text_proj."),
    ("text_emb.blocks.", "text_emb.text_aligner."),
    ("text_emb.norm.", "text_emb.text_aligner_norm."),
];

pub struct TextAligner {
    table: Option<(Tensor, Tensor)>,
    linear_1: Linear,
    linear_2: Linear,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl TextAligner {
    pub fn new(s: &mut Scope, cfg: &MarConfig) -> TextAligner {
        let (c, d) = (cfg.caption_channels, cfg.width);
        let table = match cfg.text {
            TextSource::Vocab { vocab } => Some((
                // N(0, 1) as `nn.Embedding`: the stand-in for T5 features, which are O(1). At
                // 0.02 the captions differed by ~1% after the aligner's LayerNorm. Positions get
                // the same scale so that word order (which colour goes with which shape) shows.
                s.normal("word_embed", &[vocab, c], 1.0),
                s.normal("word_pos_embed", &[1, cfg.text_len, c], 1.0),
            )),
            TextSource::Features => None,
        };
        let mut p = s.pp("text_proj");
        let linear_1 = Linear::xavier(&mut p.pp("linear_1"), c, d);
        let linear_2 = Linear::xavier(&mut p.pp("linear_2"), d, d);
        let blocks = (0..cfg.text_depth)
            .map(|i| {
                Block::new(
                    &mut s.pp("text_aligner").pp(i),
                    d,
                    cfg.heads,
                    cfg.mlp_ratio,
                    cfg.attn_dropout,
                    cfg.proj_dropout,
                )
            })
            .collect();
        TextAligner { table, linear_1, linear_2, blocks, norm: LayerNorm::new(&mut s.pp("text_aligner_norm"), d) }
    }

    /// → (B, T, D); an error when the input is not what the model was built for.
    pub fn forward(&self, text: &TextInput, ctx: &Ctx) -> Result<Tensor, String> {
        let feats = match (text, &self.table) {
            (TextInput::Ids(ids), Some((table, pos))) => {
                let (b, t) = ids.size2().expect("(B, T)");
                let c = table.size()[1];
                let e = table.index_select(0, &ids.reshape([-1])).view([b, t, c]); // (B, T, C)
                e + pos.narrow(1, 0, t)
            }
            (TextInput::Features(f), None) => f.shallow_clone(),
            _ => return Err("the text input does not match the model's text source (vocab ids vs features)".into()),
        };
        let feats = ctx.cast(&feats);
        let mut x = self.linear_2.forward(&self.linear_1.forward(&feats).gelu("tanh")); // (B, T, D)
        for b in &self.blocks {
            x = b.forward(&x, ctx);
        }
        Ok(self.norm.forward(&x))
    }
}
