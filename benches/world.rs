//! The shapes world's throughput at 64 px: rendering + PNG encoding, and the analyzer.
//! Run with `cargo bench --profile dev --bench world`. Single-threaded numbers; the generate
//! stage runs one worker per core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lightgen::config::{GenerateConfig, ImageFormat};
use lightgen::pipeline::expand::generator::Generator;
use lightgen::pipeline::expand::rows::{slot_values, spec_json};
use lightgen::pipeline::generate::encode;
use lightgen::taxonomy::Taxonomy;
use lightgen::world::analyze::Analyzer;
use lightgen::world::render::{render, ShapesTeacherConfig};
use lightgen::world::SceneRequest;

const N: usize = 1000;

fn bench(c: &mut Criterion) {
    let tax = Taxonomy::load("builtin:shapes", std::path::Path::new(".")).unwrap();
    // 1,000 real shapes prompts (fixed seed 42), all six families.
    let reqs: Vec<SceneRequest> = Generator::new(&tax, N as u64, 42)
        .map(|p| {
            let spec = spec_json(&tax, &tax.templates[p.template], &p.values, &p.text).unwrap().to_string();
            SceneRequest::from_prompt(Some(&spec), &slot_values(&tax, &p)).unwrap()
        })
        .collect();
    let cfg = GenerateConfig {
        teacher: "builtin:shapes".into(),
        images_per_prompt: 1,
        resolution: 64,
        format: ImageFormat::Png,
        quality: 90,
        part_size: 1000,
        shapes: ShapesTeacherConfig::default(),
        http: None,
        onnx: None,
    };
    let imp = ShapesTeacherConfig::default();
    let mut g = c.benchmark_group("world");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("render_64px_1k", |b| {
        b.iter(|| {
            reqs.iter().enumerate().map(|(i, r)| render(r, i as u64, 64, &imp).unwrap().image.len()).sum::<usize>()
        })
    });
    g.bench_function("render_png_64px_1k", |b| {
        b.iter(|| {
            reqs.iter()
                .enumerate()
                .map(|(i, r)| encode(&render(r, i as u64, 64, &imp).unwrap().image, &cfg).unwrap().len())
                .sum::<usize>()
        })
    });
    let images: Vec<_> = reqs.iter().enumerate().map(|(i, r)| render(r, i as u64, 64, &imp).unwrap().image).collect();
    let an = Analyzer::new();
    g.bench_function("analyze_judge_64px_1k", |b| {
        b.iter(|| images.iter().zip(&reqs).map(|(img, r)| an.judge(img, &r.spec).score).sum::<f32>())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
