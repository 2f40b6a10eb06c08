//! The text side (`models/utils.py`, `Text_Embedding`): features → PixArt caption projection
//! (linear, tanh-GELU, linear) → ViT blocks → LayerNorm. For T5 the features are the stored
//! encoder outputs; for the shapes world's vocabulary ids they are a learned word table plus
//! learned positions (word ids carry no context of their own).

use candle_core::{Device, Result, Tensor};

use super::blocks::Block;
use super::config::{MarConfig, TextSource};
use super::layers::{Ctx, LayerNorm, Linear};
use super::store::Scope;

/// What a batch's captions are.
pub enum TextInput {
    /// (B, T) u32 vocabulary ids.
    Ids(Tensor),
    /// (B, T, C) encoder features, zero past each caption's length.
    Features(Tensor),
}

impl TextInput {
    /// Host-side captions as the model's input: (B, T) ids when `channels` is 0, else (B, T,
    /// channels) features.
    pub fn from_host(ids: &[u32], feats: &[f32], b: usize, t: usize, channels: usize, dev: &Device) -> Result<Self> {
        Ok(if channels == 0 {
            TextInput::Ids(Tensor::from_slice(ids, (b, t), dev)?)
        } else {
            TextInput::Features(Tensor::from_slice(feats, (b, t, channels), dev)?)
        })
    }
}

pub struct TextAligner {
    table: Option<(Tensor, Tensor)>,
    linear_1: Linear,
    linear_2: Linear,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl TextAligner {
    pub fn new(s: &mut Scope, cfg: &MarConfig) -> Result<TextAligner> {
        let (c, d) = (cfg.caption_channels, cfg.width);
        let table = match cfg.text {
            TextSource::Vocab { vocab } => Some((
                // N(0, 1) as `nn.Embedding`: the stand-in for T5 features, which are O(1). At
                // 0.02 the captions differed by ~1% after the aligner's LayerNorm. Positions get
                // the same scale so that word order (which colour goes with which shape) shows.
                s.normal("word_embed", &[vocab, c], 1.0)?,
                s.normal("word_pos_embed", &[1, cfg.text_len, c], 1.0)?,
            )),
            TextSource::Features => None,
        };
        let mut p = s.pp("caption_projection");
        let linear_1 = Linear::xavier(&mut p.pp("linear_1"), c, d)?;
        let linear_2 = Linear::xavier(&mut p.pp("linear_2"), d, d)?;
        let blocks = (0..cfg.text_depth)
            .map(|i| {
                Block::new(&mut s.pp("blocks").pp(i), d, cfg.heads, cfg.mlp_ratio, cfg.attn_dropout, cfg.proj_dropout)
            })
            .collect::<Result<_>>()?;
        Ok(TextAligner { table, linear_1, linear_2, blocks, norm: LayerNorm::new(&mut s.pp("norm"), d)? })
    }

    /// → (B, T, D).
    pub fn forward(&self, text: &TextInput, ctx: &Ctx) -> Result<Tensor> {
        let feats = match (text, &self.table) {
            (TextInput::Ids(ids), Some((table, pos))) => {
                let (b, t) = ids.dims2()?;
                let e = table.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, table.dim(1)?))?; // (B, T, C)
                e.broadcast_add(&pos.narrow(1, 0, t)?)?
            }
            (TextInput::Features(f), None) => f.clone(),
            _ => candle_core::bail!("the text input does not match the model's text source (vocab ids vs features)"),
        };
        let feats = ctx.cast(&feats)?;
        let mut x = self.linear_2.forward(&self.linear_1.forward(&feats)?.gelu()?)?; // (B, T, D)
        for b in &self.blocks {
            x = b.forward(&x, ctx)?;
        }
        self.norm.forward(&x)
    }
}
