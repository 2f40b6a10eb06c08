//! The student: LightGen's text-to-image MAR in candle.
//!
//! - [`config`]: architecture and presets (`tiny`, `small`, `base`, `large`).
//! - [`mar`]: the Fluid backbone (MAE encoder/decoder + cross-attention over text).
//! - [`text`]: the text aligner (T5 features or vocabulary ids).
//! - [`diffloss`] and [`diffusion`]: the diffusion-MLP head and its cosine schedule.
//! - [`sampler`]: masked-autoregressive sampling with CFG (and inpainting canvases).
//! - [`store`] and [`layers`], [`blocks`]: seeded parameters and the building blocks.
//!
//! Reference: `../shared/reference/lightgen.md` (what `XianfengWu01/LightGen` and
//! `LTH14/mar` do); where the paper and the code differ, this follows the code.

pub mod blocks;
pub mod config;
pub mod diffloss;
pub mod diffusion;
pub mod layers;
pub mod mar;
pub mod sampler;
pub mod store;
pub mod text;

pub use config::{MarConfig, PosInit, Prediction, TextSource};
pub use mar::{Mar, Mask};
pub use store::ParamStore;

#[cfg(test)]
mod tests {
    use super::layers::Ctx;
    use super::text::TextInput;
    use super::*;
    use candle_core::{Device, Tensor};

    pub fn micro() -> MarConfig {
        MarConfig { text_depth: 1, ..MarConfig::tiny().for_data(12, 4, TextSource::Vocab { vocab: 10 }, 0, 5) }.shrunk()
    }

    impl MarConfig {
        fn shrunk(mut self) -> MarConfig {
            self.width = 32;
            self.heads = 2;
            self.caption_channels = 16;
            self.diffloss_width = 32;
            self.diffloss_depth = 2;
            self
        }
    }

    fn ids(b: usize) -> TextInput {
        TextInput::Ids(
            Tensor::from_vec((0..b * 5).map(|i| (i % 10) as u32).collect::<Vec<_>>(), (b, 5), &Device::Cpu).unwrap(),
        )
    }

    #[test]
    fn counted_parameters_equal_the_built_model() {
        let cfg = micro();
        let mut store = ParamStore::new(0, &Device::Cpu);
        Mar::new(&cfg, &mut store).unwrap();
        let (body, head) = cfg.parameter_count();
        assert_eq!(store.count() as u64, body + head);
        let head_built: usize =
            store.vars.iter().filter(|(k, _)| k.starts_with("diffloss.")).map(|(_, v)| v.elem_count()).sum();
        assert_eq!(head_built as u64, head);
        assert!(store.vars.contains_key("cross_attn_blocks.0.attn.query_linear.weight"));
        assert!(store.vars.contains_key("diffloss.net.res_blocks.1.adaLN_modulation.1.weight"));
    }

    #[test]
    fn same_seed_same_weights() {
        let a = ParamStore::new(5, &Device::Cpu);
        let mut a = a;
        Mar::new(&micro(), &mut a).unwrap();
        let mut b = ParamStore::new(5, &Device::Cpu);
        Mar::new(&micro(), &mut b).unwrap();
        let w = |s: &ParamStore| -> Vec<f32> {
            s.vars["encoder_blocks.1.mlp.fc1.weight"].flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(w(&a), w(&b));
    }

    #[test]
    fn zero_visible_tokens_give_finite_outputs() {
        let cfg = micro();
        let mut store = ParamStore::new(1, &Device::Cpu);
        let m = Mar::new(&cfg, &mut store).unwrap();
        let ctx = Ctx::eval();
        let text = m.text.forward(&ids(2), &ctx).unwrap();
        let tokens = Tensor::zeros((2, 16, 12), candle_core::DType::F32, &Device::Cpu).unwrap();
        let all = Mask { batch: 2, len: 16, masked: vec![true; 32] };
        let z = m.forward_z(&tokens, &all, &text, 4, &ctx).unwrap();
        assert_eq!(z.dims(), &[2, 16, 32]);
        let v: Vec<f32> = z.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
        // Half visible, and a larger grid through the interpolated positions.
        let orders: Vec<Vec<usize>> = vec![(0..36).collect(), (0..36).rev().collect()];
        let half = Mask::from_orders(&orders, 36, 18);
        let tokens = Tensor::ones((2, 36, 12), candle_core::DType::F32, &Device::Cpu).unwrap();
        let z = m.forward_z(&tokens, &half, &text, 6, &ctx).unwrap();
        assert_eq!(z.dims(), &[2, 36, 32]);
    }

    #[test]
    fn sincos_positions_start_known_and_local() {
        // MAE's table: position (0, 0) is [sin 0…, cos 0…] twice; (y, x) = (1, 2) has sin(1·ω_0) =
        // sin 1 in channel 0 and sin(2·ω_0) = sin 2 in channel d/2. Neighbours are more alike than
        // far positions, which is what the N(0, 0.02²) init lacks.
        let (g, d) = (8, 32);
        let t = mar::sincos_2d(g, d);
        assert_eq!(t.len(), g * g * d);
        assert_eq!(&t[..d], [[0.0f32; 8], [1.0; 8], [0.0; 8], [1.0; 8]].concat().as_slice());
        let at = |y: usize, x: usize| &t[(y * g + x) * d..(y * g + x + 1) * d];
        assert!((at(1, 2)[0] - 1f32.sin()).abs() < 1e-6 && (at(1, 2)[16] - 2f32.sin()).abs() < 1e-6);
        let cos = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
        };
        assert!(cos(at(3, 3), at(3, 4)) > cos(at(3, 3), at(3, 7)) + 0.1);
        assert!(cos(at(3, 3), at(4, 3)) > cos(at(3, 3), at(0, 3)) + 0.1);
        // The model starts its three tables there; the parameter count does not change.
        let cfg = MarConfig { pos_init: PosInit::Sincos, ..micro() };
        let mut store = ParamStore::new(0, &Device::Cpu);
        Mar::new(&cfg, &mut store).unwrap();
        let want = mar::sincos_2d(cfg.pos_grid, cfg.width);
        for name in ["encoder_pos_embed_learned", "decoder_pos_embed_learned", "last_pos_embed_learned"] {
            assert_eq!(store.vars[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(), want, "{name}");
        }
        let (body, head) = cfg.parameter_count();
        assert_eq!(store.count() as u64, body + head);
        assert!(MarConfig { width: 30, heads: 2, ..cfg }.check().unwrap_err().contains("divisible by 4"));
    }

    #[test]
    fn bicubic_resize_is_exact_on_identity_and_linear_ramps() {
        let id = mar::bicubic_matrix(5, 5, 1.0);
        for o in 0..5 {
            for i in 0..5 {
                assert!((id[o * 5 + i] - f64::from(u8::from(o == i))).abs() < 1e-12);
            }
        }
        // Hand-computed Keys weights (A = −0.75) at t = 0.25: c2(1.25), c1(0.25), c1(0.75), c2(1.75)
        // = −0.10546875, 0.87890625, 0.26171875, −0.03515625. Upsampling 4 → 8 with scale 2 puts
        // output 3 at source (3.5)/2 − 0.5 = 1.25, i.e. i0 = 1, t = 0.25.
        let m = mar::bicubic_matrix(4, 8, 2.0);
        let row = &m[3 * 4..4 * 4];
        for (a, b) in row.iter().zip([-0.10546875, 0.87890625, 0.26171875, -0.03515625]) {
            assert!((a - b).abs() < 1e-12, "{row:?}");
        }
        // Every row sums to 1 (borders clamp onto the edge), at LightGen's 16 → 32 scale too.
        let m = mar::bicubic_matrix(16, 32, 32.1 / 16.0);
        for o in 0..32 {
            assert!(((0..16).map(|i| m[o * 16 + i]).sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn inpainting_keeps_known_tokens_bit_exact_and_fills_the_unknown_ones() {
        use rand::SeedableRng;
        let cfg = micro(); // 4×4 grid of 12-value tokens
        let mut store = ParamStore::new(3, &Device::Cpu);
        let m = Mar::new(&cfg, &mut store).unwrap();
        let known: Vec<f32> = (0..2 * 16 * 12).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        // 5 unknown tokens per sample, at different places
        let mut unknown = vec![false; 32];
        for i in [0, 3, 5, 9, 15, 16 + 1, 16 + 2, 16 + 7, 16 + 8, 16 + 14] {
            unknown[i] = true;
        }
        let canvas = sampler::Canvas { tokens: known.clone(), unknown: unknown.clone() };
        let opts = sampler::SampleOptions { steps: 3, diffusion_steps: 10, cfg: 2.0, ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0); // fixed seed
        let out: Vec<f32> = sampler::sample_tokens(&m, &ids(2), canvas, 4, &opts, &mut rng)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for t in 0..32 {
            let (a, b) = (&out[t * 12..(t + 1) * 12], &known[t * 12..(t + 1) * 12]);
            if unknown[t] {
                assert_ne!(a, b, "unknown token {t} was sampled");
            } else {
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "known token {t} kept"
                );
            }
        }
        // unequal unknown counts per sample are refused rather than mis-sampled
        let mut uneven = unknown;
        uneven[1] = true;
        let canvas = sampler::Canvas { tokens: known, unknown: uneven };
        assert!(sampler::sample_tokens(&m, &ids(2), canvas, 4, &opts, &mut rng).is_err());
    }
}
