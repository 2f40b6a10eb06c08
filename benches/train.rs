//! The student on CPU: one training step (forward + backward + AdamW + EMA) of the `tiny` and
//! `small` presets at their configs' batch on the data shape of the side-by-side with the
//! reference (`scripts/reference-speed.py`: 8×8 tokens of 48 values, 32 vocabulary ids, DiffLoss
//! 2 × 192, no caption in the decoder, as the demo was until it moved to one-object tokens), and
//! sampling throughput (images/s) with the tiny config's sampler; and the demo's own step
//! (`demo_step`) on its one-object tokens at batch 32 and 64.
//! Run: `cargo bench --profile dev --bench train`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lightgen::student::model::sampler::{sample_tokens, Canvas};
use lightgen::student::model::text::TextInput;
use lightgen::student::model::TextSource;
use lightgen::student::train::config::Precision;
use lightgen::student::train::data::Batch;
use lightgen::student::train::objects::PixelTokens;
use lightgen::student::train::{TrainConfig, Trainer};
use rand::SeedableRng;
use tch::Device;

fn trainer(preset: &str) -> Trainer {
    let base = preset.strip_suffix("_bf16");
    let mut cfg = TrainConfig::preset(base.unwrap_or(preset)).unwrap();
    if base.is_some() {
        cfg.train.precision = Precision::Bf16;
    }
    // The reference script's model (its head, no caption in the decoder: LightGen has none),
    // so that the two numbers stay comparable; the demo's own step is in its training log.
    // The label read-out is not in the reference either.
    if cfg.model.preset == "tiny" {
        (cfg.model.diffloss_width, cfg.model.text_prefix) = (Some(192), Some(false));
        cfg.train.label_loss_weight = 0.0;
    }
    let model = cfg.model_config().unwrap().for_data(48, 8, TextSource::Vocab { vocab: 96 }, 0, 32);
    let mut tr = Trainer::new(cfg, model, 8, Device::Cpu).unwrap();
    // The demo's pixel tokens (32 px, patch 4), for the object weight's foreground test.
    tr.pixels = Some(PixelTokens { patch: 4, grid: 8, scale: 1.0 / 127.5, shift: 127.5 });
    tr
}

fn batch(b: usize) -> Batch {
    let tokens = (0..b * 64 * 48).map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0).collect();
    let ids = (0..b * 32).map(|i| (i % 20) as u32 + 2).collect();
    Batch { step: 0, size: b, tokens, ids, feats: vec![] }
}

fn steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    // `tiny_bf16` (with LIGHTGEN_BENCH_BF16=1): the same step under CPU bf16 autocast, f32
    // masters. On AVX2 libtorch emulates bf16 (~19x slower); with AVX-512 BF16 it is still
    // 1.4x slower at this width (the casts outweigh the matmuls; docs/performance.md).
    let bf16 = std::env::var_os("LIGHTGEN_BENCH_BF16").is_some();
    let presets: &[&str] = if bf16 { &["tiny", "tiny_bf16", "small"] } else { &["tiny", "small"] };
    for &preset in presets {
        let mut tr = trainer(preset);
        let b = batch(tr.cfg.train.batch_size);
        g.throughput(Throughput::Elements((b.size * 64) as u64)); // tokens
        let mut s = 0;
        g.bench_function(preset, |bench| {
            bench.iter(|| {
                s += 1;
                tr.step(&b, s).unwrap()
            })
        });
    }
    g.finish();
}

/// A batch on the demo's data shape: 32 px, 4×4 tokens of 8×8 px (192 values), a plain grey
/// background with two flat red 6×6 squares, on tokens that move with the sample.
fn demo_batch(b: usize) -> Batch {
    use lightgen::formats::tokenizer::patchify;
    let mut tokens = Vec::with_capacity(b * 16 * 192);
    for s in 0..b {
        let mut planes = vec![(140.0 - 127.5) / 127.5; 3 * 32 * 32];
        for t in [s % 16, (s * 7 + 3) % 16] {
            let (ty, tx) = (t / 4 * 8, t % 4 * 8);
            for y in ty + 1..ty + 7 {
                for x in tx + 1..tx + 7 {
                    for (c, v) in [220.0f32, 40.0, 40.0].into_iter().enumerate() {
                        planes[c * 1024 + y * 32 + x] = (v - 127.5) / 127.5;
                    }
                }
            }
        }
        tokens.extend(patchify(&planes, 3, 32, 32, 8));
    }
    let ids = (0..b * 32).map(|i| (i % 20) as u32 + 2).collect();
    Batch { step: 0, size: b, tokens, ids, feats: vec![] }
}

/// The demo's own step (configs/train-tiny.toml on the demo's token shape: DiffLoss 384, the
/// caption in the decoder, the object weight, the label read-out) at its batch (32) and at
/// twice it; and at 32 without the label read-out (whose labels the analyzer reads off every
/// sample of every step).
fn demo_steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("demo_step");
    g.sample_size(10);
    for (name, batch, labels) in [("batch_32", 32, 0.1), ("batch_64", 64, 0.1), ("batch_32_no_labels", 32, 0.0)] {
        let mut cfg = TrainConfig::preset("tiny").unwrap();
        cfg.train.batch_size = batch;
        cfg.train.label_loss_weight = labels;
        let model = cfg.model_config().unwrap().for_data(192, 4, TextSource::Vocab { vocab: 96 }, 0, 32);
        let mut tr = Trainer::new(cfg, model, 4, Device::Cpu).unwrap();
        tr.pixels = Some(PixelTokens { patch: 8, grid: 4, scale: 1.0 / 127.5, shift: 127.5 });
        let b = demo_batch(tr.cfg.train.batch_size);
        g.throughput(Throughput::Elements((b.size * 16) as u64)); // tokens
        let mut s = 0;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                s += 1;
                tr.step(&b, s).unwrap()
            })
        });
    }
    g.finish();
}

fn sampling(c: &mut Criterion) {
    let mut g = c.benchmark_group("sample");
    g.sample_size(10);
    let tr = trainer("tiny");
    let n = 16;
    let ids: Vec<u32> = (0..n * 32).map(|i| (i % 20) as u32 + 2).collect();
    g.throughput(Throughput::Elements(n as u64)); // images
    g.bench_function("tiny_16_images", |bench| {
        bench.iter(|| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            sample_tokens(
                &tr.model,
                &TextInput::from_host(&ids, &[], n, 32, 0, Device::Cpu),
                Canvas::blank(n, 64, 48),
                8,
                &tr.cfg.sample,
                &mut rng,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, steps, demo_steps, sampling);
criterion_main!(benches);
