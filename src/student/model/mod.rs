//! The student: LightGen's text-to-image MAR on libtorch (`tch`).
//!
//! - [`config`]: architecture and presets (`tiny`, `small`, `base`, `large`).
//! - [`mar`]: the Fluid backbone (MAE encoder/decoder + cross-attention over text).
//! - [`text`]: the text aligner (T5 features or vocabulary ids).
//! - [`diffloss`] and [`diffusion`]: the diffusion-MLP head and its cosine schedule.
//! - [`sampler`]: masked-autoregressive sampling with CFG (and inpainting canvases).
//! - [`store`] and [`layers`], [`blocks`]: seeded parameters and the building blocks.
//!
//! Reference: the released code of `XianfengWu01/LightGen` (FLUID) and `LTH14/mar`; where the
//! paper and the code differ, this follows the code.

pub mod blocks;
pub mod config;
pub mod diffloss;
pub mod diffusion;
pub mod layers;
pub mod mar;
pub mod positions;
pub mod rope;
pub mod sampler;
pub mod store;
pub mod text;

pub use config::{MarConfig, PosInit, Prediction, TextSource};
pub use mar::{Mar, Mask};
pub use store::ParamStore;

#[cfg(test)]
mod tests {
    use super::layers::{to_host, Ctx};
    use super::text::TextInput;
    use super::*;
    use tch::{Device, Kind, Tensor};

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
        let v: Vec<u32> = (0..b * 5).map(|i| (i % 10) as u32).collect();
        TextInput::from_host(&v, &[], b, 5, 0, Device::Cpu)
    }

    #[test]
    fn counted_parameters_equal_the_built_model() {
        let cfg = micro();
        let mut store = ParamStore::new(0, Device::Cpu);
        Mar::new(&cfg, &mut store).unwrap();
        let (body, head) = cfg.parameter_count();
        assert_eq!(store.count() as u64, body + head);
        let head_built: i64 =
            store.vars.iter().filter(|(k, _)| k.starts_with("diffloss.")).map(|(_, v)| v.numel() as i64).sum();
        assert_eq!(head_built as u64, head);
        assert!(store.vars.contains_key("cross_attn_blocks.0.attn.query_linear.weight"));
        assert!(store.vars.contains_key("diffloss.net.res_blocks.1.adaLN_modulation.1.weight"));
        // The x0 read-out, when on, is counted with the backbone.
        let with = MarConfig { x0_head: true, ..micro() };
        let mut st = ParamStore::new(0, Device::Cpu);
        Mar::new(&with, &mut st).unwrap();
        assert_eq!(st.count() as u64, with.parameter_count().0 + head);
        assert!(st.vars.contains_key("x0_head.weight"));
        // As an MLP: two layers of its own names, counted too; z → (…, C) either way.
        let mlp = MarConfig { x0_head: true, x0_hidden: 24, ..micro() };
        let mut st = ParamStore::new(0, Device::Cpu);
        let m = Mar::new(&mlp, &mut st).unwrap();
        assert_eq!(st.count() as u64, mlp.parameter_count().0 + head);
        assert_eq!(st.vars["x0_head.fc1.weight"].size(), [24, mlp.width as i64]);
        assert_eq!(st.vars["x0_head.fc2.weight"].size(), [mlp.token_dim as i64, 24]);
        assert!(!st.vars.contains_key("x0_head.weight"));
        let z = tch::Tensor::ones([3, mlp.width as i64], (tch::Kind::Float, Device::Cpu));
        assert_eq!(m.x0_head.as_ref().unwrap().forward(&z).size(), [3, mlp.token_dim as i64]);
        // The code read-out, counted too.
        let coded = MarConfig { codes: 16, ..micro() };
        let mut st = ParamStore::new(0, Device::Cpu);
        Mar::new(&coded, &mut st).unwrap();
        assert_eq!(st.count() as u64, coded.parameter_count().0 + head);
        assert_eq!(st.vars["code_head.weight"].size(), [16, coded.width as i64]);
        // The text path carries the reference's names (`Text_Embedding`).
        assert!(store.vars.contains_key("text_emb.text_proj.linear_1.weight"));
        assert!(store.vars.contains_key("text_emb.text_aligner.0.attn.qkv.weight"));
        assert!(store.vars.contains_key("text_emb.text_aligner_norm.weight"));
    }

    #[test]
    fn same_seed_same_weights() {
        let mut a = ParamStore::new(5, Device::Cpu);
        Mar::new(&micro(), &mut a).unwrap();
        let mut b = ParamStore::new(5, Device::Cpu);
        Mar::new(&micro(), &mut b).unwrap();
        let w = |s: &ParamStore| to_host(&s.vars["encoder_blocks.1.mlp.fc1.weight"]);
        assert_eq!(w(&a), w(&b));
    }

    #[test]
    fn zero_visible_tokens_give_finite_outputs() {
        let cfg = micro();
        let mut store = ParamStore::new(1, Device::Cpu);
        let m = Mar::new(&cfg, &mut store).unwrap();
        let ctx = Ctx::eval();
        let text = m.text.forward(&ids(2), &ctx).unwrap();
        let tokens = Tensor::zeros([2, 16, 12], (Kind::Float, Device::Cpu));
        let all = Mask { batch: 2, len: 16, masked: vec![true; 32] };
        let z = m.forward_z(&tokens, &all, &text, 4, &ctx);
        assert_eq!(z.size(), [2, 16, 32]);
        assert!(to_host(&z).iter().all(|x| x.is_finite()));
        // Half visible, and a larger grid through the interpolated positions.
        let orders: Vec<Vec<usize>> = vec![(0..36).collect(), (0..36).rev().collect()];
        let half = Mask::from_orders(&orders, 36, 18);
        let tokens = Tensor::ones([2, 36, 12], (Kind::Float, Device::Cpu));
        let z = m.forward_z(&tokens, &half, &text, 6, &ctx);
        assert_eq!(z.size(), [2, 36, 32]);
    }

    #[test]
    fn z_at_chosen_rows_is_z_at_those_rows() {
        // Seeded (store seed 3, manual_seed 0): the row-only path (the last decoder block
        // queried at the rows, the cross stack on them only) gives the full path's rows, with
        // and without rotary positions (the rows' angles for the queries, all for the keys).
        for rope in [false, true] {
            z_rows_match(MarConfig { rope, ..micro() });
        }
        // And with the neighbour window (its projection made non-zero): the window's rows too.
        z_rows_match(MarConfig { neighbours: true, ..micro() });
        // And with the caption prepended to the decoder: the rows sit after the prefix.
        for rope in [false, true] {
            z_rows_match(MarConfig { text_prefix: true, rope, ..micro() });
        }
    }

    #[test]
    fn a_caption_prefix_lets_the_decoder_see_the_text() {
        // Seeded (store seed 6). Without cross-attention blocks the reference's stack never
        // sees the caption: z is the same for two captions. With the caption prepended to the
        // decoder it is not. The prefix's projection is counted.
        let bare = MarConfig { cross_depth: 0, ..micro() };
        let prefixed = MarConfig { text_prefix: true, ..bare.clone() };
        for (cfg, sees) in [(bare, false), (prefixed, true)] {
            let mut store = ParamStore::new(6, Device::Cpu);
            let m = Mar::new(&cfg, &mut store).unwrap();
            assert_eq!(store.count() as u64, cfg.parameter_count().0 + cfg.parameter_count().1);
            assert_eq!(store.vars.contains_key("decoder_text_embed.weight"), sees);
            let ctx = Ctx::eval();
            let caption = |w: [u32; 5]| m.text.forward(&TextInput::from_host(&w, &[], 1, 5, 0, Device::Cpu), &ctx);
            let (a, b) = (caption([1, 2, 3, 4, 5]).unwrap(), caption([6, 2, 3, 4, 5]).unwrap());
            let tokens = Tensor::ones([1, 16, 12], (Kind::Float, Device::Cpu));
            let mask = Mask::from_orders(&[(0..16).collect()], 16, 8);
            let (za, zb) = (m.forward_z(&tokens, &mask, &a, 4, &ctx), m.forward_z(&tokens, &mask, &b, 4, &ctx));
            let diff = (&za - &zb).abs().max().double_value(&[]);
            assert_eq!(diff > 1e-4, sees, "text_prefix {}: |Δz| {diff}", cfg.text_prefix);
        }
    }

    fn z_rows_match(cfg: MarConfig) {
        let mut store = ParamStore::new(3, Device::Cpu);
        let m = Mar::new(&cfg, &mut store).unwrap();
        if let Some(w) = store.vars.get("nbr_proj.weight") {
            let mut w = w.shallow_clone();
            tch::no_grad(|| w.copy_(&w.randn_like()));
        }
        let ctx = Ctx::eval();
        let text = m.text.forward(&ids(2), &ctx).unwrap();
        tch::manual_seed(0);
        let tokens = Tensor::randn([2, 16, 12], (Kind::Float, Device::Cpu));
        let orders: Vec<Vec<usize>> = vec![(0..16).collect(), (0..16).rev().collect()];
        let mask = Mask::from_orders(&orders, 16, 10);
        let full = m.forward_z(&tokens, &mask, &text, 4, &ctx).view([32, -1]); // (B·L, D)
        for rows in [mask.rows(true), vec![1, 5, 17, 30], (0..32).collect()] {
            let got = m.forward_z_rows(&tokens, &mask, &text, 4, &ctx, &rows);
            let want = full.index_select(0, &Tensor::from_slice(&rows));
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "rows {rows:?}: {diff}");
        }
    }

    #[test]
    fn a_centred_head_denoises_around_the_read_out() {
        // head_centre: the head at (x, z) is the plain head at x − sqrt(ᾱ)·x0(z), through the
        // read-out's own weights (shared handles: a change to x0_head reaches the head).
        // Weights drawn with tch::manual_seed(1); store seed 3.
        let cfg = MarConfig { x0_head: true, head_centre: true, ..micro() };
        let mut store = ParamStore::new(3, Device::Cpu);
        let mut m = Mar::new(&cfg, &mut store).unwrap();
        tch::manual_seed(1);
        for (name, w) in &store.vars {
            // The head's zero-initialised output layers, so that its output depends on its input.
            if name.starts_with("diffloss.net.final_layer") || name.starts_with("x0_head") {
                let mut w = w.shallow_clone();
                tch::no_grad(|| w.copy_(&(w.randn_like() * 0.3)));
            }
        }
        let (c, d) = (cfg.token_dim as i64, cfg.width as i64);
        let x = Tensor::randn([6, c], (Kind::Float, Device::Cpu));
        let z = Tensor::randn([3, d], (Kind::Float, Device::Cpu)); // each row twice (mul 2)
        let t = [900f32, 900., 20., 900., 900., 20.];
        let sa = Tensor::from_slice(&[0.1f32, 0.1, 0.9, 0.1, 0.1, 0.9]).view([6, 1]);
        let centred = m.diffloss.net(&x, &t, &z, &sa);
        let mu = m.x0_head.as_ref().unwrap().forward(&z).repeat([2, 1]); // (6, C)
        let read_out = m.diffloss.centre.take().expect("head_centre sets the head's centre");
        let plain = m.diffloss.net(&(&x - &mu * &sa), &t, &z, &sa);
        assert!((&centred - &plain).abs().max().double_value(&[]) < 1e-5);
        assert!((&centred - m.diffloss.net(&x, &t, &z, &sa)).abs().max().double_value(&[]) > 1e-3);
        m.diffloss.centre = Some(read_out);
        let mut w = store.vars["x0_head.weight"].shallow_clone();
        tch::no_grad(|| w.copy_(&(&w * 2.0)));
        assert!((&centred - m.diffloss.net(&x, &t, &z, &sa)).abs().max().double_value(&[]) > 1e-3);
        // It needs the read-out.
        let bare = MarConfig { head_centre: true, ..micro() };
        assert!(bare.check().unwrap_err().contains("head_centre"));
    }

    #[test]
    fn the_neighbour_window_lists_visible_neighbours_and_their_visibility() {
        // A 3×3 grid of one-value tokens 1..9; tokens 0 and 4 (the centre) hidden.
        let tokens = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6., 7., 8., 9.]).view([1, 9, 1]);
        let vis = Tensor::from_slice(&[0f32, 1., 1., 1., 0., 1., 1., 1., 1.]).view([1, 9, 1]);
        let w = mar::neighbour_window(&tokens, &vis, 3);
        assert_eq!(w.size(), [1, 9, 18]);
        let row = |l: i64| to_host(&w.get(0).get(l));
        // The centre's window is the whole grid: values (hidden ones 0), then visibility.
        assert_eq!(row(4), [0., 2., 3., 4., 0., 6., 7., 8., 9., 0., 1., 1., 1., 0., 1., 1., 1., 1.]);
        // The top-left corner: only itself (hidden), its right, below and below-right tokens.
        assert_eq!(row(0), [0., 0., 0., 0., 0., 2., 0., 4., 0., 0., 0., 0., 0., 0., 1., 0., 1., 0.]);
    }

    #[test]
    fn the_neighbour_window_starts_at_zero_and_is_counted() {
        // Seeded (store seed 4): with the window on, the other weights are the same draws and
        // its projection starts at zero, so z is the model's without it until training moves it.
        let with = MarConfig { neighbours: true, ..micro() };
        let mut a = ParamStore::new(4, Device::Cpu);
        let ma = Mar::new(&micro(), &mut a).unwrap();
        let mut b = ParamStore::new(4, Device::Cpu);
        let mb = Mar::new(&with, &mut b).unwrap();
        assert_eq!(b.count() as u64, with.parameter_count().0 + with.parameter_count().1);
        assert_eq!(b.count() - a.count(), 9 * 13 * 32 + 32);
        let ctx = Ctx::eval();
        let text = ma.text.forward(&ids(1), &ctx).unwrap();
        let tokens = Tensor::ones([1, 16, 12], (Kind::Float, Device::Cpu));
        let mask = Mask::from_orders(&[(0..16).collect()], 16, 8);
        let (za, zb) = (ma.forward_z(&tokens, &mask, &text, 4, &ctx), mb.forward_z(&tokens, &mask, &text, 4, &ctx));
        assert_eq!(to_host(&za), to_host(&zb));
        // A non-zero projection makes a hidden token's z depend on its visible neighbours.
        let mut w = b.vars["nbr_proj.weight"].shallow_clone();
        tch::no_grad(|| w.copy_(&w.ones_like()));
        let zc = mb.forward_z(&tokens, &mask, &text, 4, &ctx);
        assert_ne!(to_host(&za), to_host(&zc));
    }

    #[test]
    fn sincos_positions_start_known_and_local() {
        // MAE's table: position (0, 0) is [sin 0…, cos 0…] twice; (y, x) = (1, 2) has sin(1·ω_0) =
        // sin 1 in channel 0 and sin(2·ω_0) = sin 2 in channel d/2. Neighbours are more alike than
        // far positions, which is what the N(0, 0.02²) init lacks.
        let (g, d) = (8, 32);
        let t = positions::sincos_2d(g, d);
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
        let mut store = ParamStore::new(0, Device::Cpu);
        Mar::new(&cfg, &mut store).unwrap();
        let want = positions::sincos_2d(cfg.pos_grid, cfg.width);
        for name in ["encoder_pos_embed_learned", "decoder_pos_embed_learned", "last_pos_embed_learned"] {
            assert_eq!(to_host(&store.vars[name]), want, "{name}");
        }
        let (body, head) = cfg.parameter_count();
        assert_eq!(store.count() as u64, body + head);
        assert!(MarConfig { width: 30, heads: 2, ..cfg }.check().unwrap_err().contains("divisible by 4"));
    }

    #[test]
    fn position_resize_is_pytorch_bicubic() {
        // Same grid: no change. Upsampling 4 → 8 with scale 8.1/4 (the reference's +0.1) puts
        // output 3 at source 3.5/2.025 − 0.5 = 1.228…: Keys' cubic (A = −0.75) weights over
        // sources 0..3 from t = 0.228…, checked against the hand formula on a one-hot row
        // per source position (each channel is one source).
        let eye: Vec<f32> = (0..16).flat_map(|p| (0..16).map(move |c| f32::from(u8::from(p == c)))).collect();
        let table = Tensor::from_slice(&eye).view([1, 16, 16]); // (1, 4×4, D = 16)
        let same = positions::resize_positions(&table, 4, 4);
        assert_eq!(to_host(&same), eye);
        let big = to_host(&positions::resize_positions(&table, 4, 8)); // (1, 64, 16)
        let scale: f64 = 8.1 / 4.0;
        let src = 3.5 / scale - 0.5;
        let t = src - src.floor();
        const A: f64 = -0.75;
        let c1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let c2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        let w = [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)];
        // Output (y = 0, x = 3) is separable: source row 0's total weight for y = 0 times
        // column j's weight for x = 3. For y = 0 the source is −0.253, i0 = −1, and the taps
        // −2, −1, 0 clamp onto row 0 (PyTorch bounds each access, not the coordinate).
        let sy = 0.5 / scale - 0.5;
        let ty = sy - sy.floor();
        let wy = [c2(ty + 1.0), c1(ty), c1(1.0 - ty), c2(2.0 - ty)];
        let wy0 = wy[0] + wy[1] + wy[2];
        for (j, wx) in w.iter().enumerate() {
            let got = big[3 * 16 + j] as f64; // output pixel (0, 3), channel = source (0, j)
            assert!((got - wy0 * wx).abs() < 1e-5, "x weight {j}: {got} vs {}", wy0 * wx);
        }
        // Every output is a convex-ish combination: weights sum to 1.
        for o in 0..64 {
            let s: f32 = big[o * 16..(o + 1) * 16].iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{o}: {s}");
        }
    }

    #[test]
    fn inpainting_keeps_known_tokens_bit_exact_and_fills_the_unknown_ones() {
        use rand::SeedableRng;
        let cfg = micro(); // 4×4 grid of 12-value tokens
        let mut store = ParamStore::new(3, Device::Cpu);
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
        let out = sampler::sample_tokens(&m, &ids(2), canvas, 4, &opts, &mut rng).unwrap();
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

    /// Two blank canvases of micro's 4×4 tokens of 12 values sampled under `opts`, at a fixed
    /// seed (5): the same noise each call, so options can be compared draw for draw.
    fn sample_two(m: &Mar, opts: &sampler::SampleOptions) -> Result<Vec<f32>, String> {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        sampler::sample_tokens(m, &ids(2), sampler::Canvas::blank(2, 16, 12), 4, opts, &mut rng)
    }

    /// Two AR steps of 10 diffusion steps at CFG 2, on micro's 12-value tokens of 3 channels:
    /// the sampler options the noise-option tests below change one field of.
    fn guided_two_steps() -> sampler::SampleOptions {
        sampler::SampleOptions { steps: 2, diffusion_steps: 10, cfg: 2.0, channels: 3, ..Default::default() }
    }

    #[test]
    fn the_temperature_moves_from_start_to_end_with_the_revealed_share() {
        let o = sampler::SampleOptions { temperature: 1.0, temperature_end: Some(0.2), ..Default::default() };
        assert_eq!(sampler::temperature_at(&o, 0.0), 1.0);
        assert!((sampler::temperature_at(&o, 0.5) - 0.6).abs() < 1e-12);
        assert!((sampler::temperature_at(&o, 1.0) - 0.2).abs() < 1e-12);
        let flat = sampler::SampleOptions { temperature: 0.7, ..Default::default() };
        assert_eq!(sampler::temperature_at(&flat, 1.0), 0.7, "None keeps the reference's constant");
        // In the sampler: one AR step reveals everything, so its temperature is the end value.
        let m = Mar::new(&micro(), &mut ParamStore::new(3, Device::Cpu)).unwrap();
        let draw = |temperature: f64, temperature_end: Option<f64>| {
            let opts = sampler::SampleOptions {
                steps: 1,
                diffusion_steps: 10,
                cfg: 1.0,
                temperature,
                temperature_end,
                ..Default::default()
            };
            sample_two(&m, &opts).unwrap()
        };
        assert_eq!(draw(1.0, Some(0.1)), draw(0.1, None));
        assert_ne!(draw(1.0, Some(0.1)), draw(1.0, None));
    }

    #[test]
    fn mean_noise_needs_the_channels_and_changes_only_what_it_is_asked_to() {
        let m = Mar::new(&micro(), &mut ParamStore::new(3, Device::Cpu)).unwrap();
        let draw = |mean_noise: f64, channels: usize| {
            let opts = sampler::SampleOptions { clip_x0: Some(1.0), mean_noise, channels, ..guided_two_steps() };
            sample_two(&m, &opts)
        };
        let plain = draw(1.0, 0).unwrap();
        assert_eq!(draw(1.0, 3).unwrap(), plain, "scale 1 is the reference's noise, channels known or not");
        assert_ne!(draw(0.0, 3).unwrap(), plain, "scale 0 draws other tokens");
        let e = draw(0.0, 0).unwrap_err();
        assert!(e.contains("sample.mean_noise = 0 needs the token's channels"), "{e}");
        assert!(draw(0.5, 5).unwrap_err().contains("to divide its 12 values"));
    }

    #[test]
    fn object_prior_needs_pixel_tokens_and_changes_only_the_draws_it_is_asked_to() {
        use crate::student::train::objects::PixelTokens;
        let m = Mar::new(&micro(), &mut ParamStore::new(3, Device::Cpu)).unwrap();
        // micro's tokens are 12 values: 2×2-px pixel patches of 3 channels.
        let px = PixelTokens { patch: 2, grid: 1, scale: 1.0 / 127.5, shift: 127.5 };
        let draw = |object_prior: f64, pixels: Option<PixelTokens>| {
            let opts = sampler::SampleOptions { object_prior, pixels, ..guided_two_steps() };
            sample_two(&m, &opts)
        };
        let plain = draw(1.0, None).unwrap();
        assert_eq!(draw(1.0, Some(px)).unwrap(), plain, "prior 1 is the reference's sampler");
        // An untrained head's 2×2 draws are noise, some of which the foreground test calls objects.
        assert_ne!(draw(4.0, Some(px)).unwrap(), plain, "prior 4 redraws object tokens");
        assert!(draw(4.0, None).unwrap_err().contains("objects are found in pixel tokens"));
        assert!(draw(0.5, Some(px)).unwrap_err().contains("expected the object weight's prior, ≥ 1"));
    }
}
