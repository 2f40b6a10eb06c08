//! Curation throughput: decode + exact hash + pHash + dHash per image (64 and 512 px), and
//! near-duplicate search over 1M hashes. Run with `cargo bench --profile dev --bench curate`.

use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lightgen::pipeline::curate::hashes::{ImageHashes, NearIndex};
use lightgen::world::render::{render, ShapesTeacherConfig};
use lightgen::world::{ObjectSpec, SceneRequest, Spec};
use rand::{RngExt, SeedableRng};

fn pngs(size: u32, n: usize) -> Vec<Vec<u8>> {
    let req = SceneRequest {
        spec: Spec {
            tag: "two_object".into(),
            include: vec![
                ObjectSpec { class: "star".into(), count: 1, color: None, position: None },
                ObjectSpec { class: "heart".into(), count: 1, color: None, position: None },
            ],
            exclude: vec![],
            prompt: String::new(),
        },
        sizes: vec![],
        background: Some("textured".into()),
        style: None,
    };
    (0..n)
        .map(|i| {
            let img = render(&req, i as u64, size, &ShapesTeacherConfig::none()).unwrap().image;
            let mut buf = Vec::new();
            img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png).unwrap();
            buf
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("curate");
    g.sample_size(10);
    let hasher = ImageHashes::default();
    for (size, n) in [(64u32, 1000usize), (512, 100)] {
        let images = pngs(size, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("decode_hash_{size}px"), |b| {
            b.iter(|| {
                images
                    .iter()
                    .map(|p| hasher.hash(&image::load_from_memory(p).unwrap().to_rgb8()).phash)
                    .fold(0, |a, h| a ^ h)
            })
        });
    }
    // Decoding alone, to see what hashing adds.
    let big = pngs(512, 20);
    g.throughput(Throughput::Elements(20));
    g.bench_function("decode_only_512px", |b| {
        b.iter(|| big.iter().map(|p| image::load_from_memory(p).unwrap().width()).sum::<u32>())
    });
    // 250k hashes by default, 1M with LIGHTGEN_BENCH_1M=1 (about 50 s an iteration here).
    // Fixed seed: random hashes, 10% of them planted near copies (1 to 8 bits flipped).
    let n = if std::env::var_os("LIGHTGEN_BENCH_1M").is_some() { 1_000_000 } else { 250_000 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut hashes: Vec<u64> = Vec::with_capacity(n);
    while hashes.len() < n {
        if hashes.len() > 10 && rng.random_bool(0.1) {
            let mut h = hashes[rng.random_range(0..hashes.len())];
            for _ in 0..rng.random_range(1..=8) {
                h ^= 1 << rng.random_range(0..64);
            }
            hashes.push(h);
        } else {
            hashes.push(rng.random());
        }
    }
    g.throughput(Throughput::Elements(hashes.len() as u64));
    g.bench_function(format!("near_dup_{}k_distance_10", n / 1000), |b| {
        b.iter(|| {
            let mut idx = NearIndex::new(10);
            let mut dups = 0;
            for (i, &h) in hashes.iter().enumerate() {
                if idx.nearest(h, |_| true).is_some() {
                    dups += 1;
                } else {
                    idx.insert(h, i as u32);
                }
            }
            dups
        })
    });
    g.finish();
}

/// SemDeDup over 20,000 unit 512-d embeddings (CLIP B/32's width) in 200 clusters, 10 k-means
/// iterations; fixed seed, 10% planted near copies.
fn bench_semdedup(c: &mut Criterion) {
    use lightgen::pipeline::curate::semdedup::semdedup;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (n, d) = (20_000, 512);
    let unit = |v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let mut pts: Vec<Vec<f32>> = Vec::with_capacity(n);
    while pts.len() < n {
        if pts.len() > 10 && rng.random_bool(0.1) {
            let base = pts[rng.random_range(0..pts.len())].clone();
            pts.push(unit(base.iter().map(|x| x + rng.random_range(-0.002f32..0.002)).collect()));
        } else {
            pts.push(unit((0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect()));
        }
    }
    let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
    let order: Vec<usize> = (0..n).collect();
    let mut g = c.benchmark_group("curate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("semdedup_20k_512d_200_clusters", |b| {
        b.iter(|| semdedup(&refs, &order, 200, 0.05, 10, 2).iter().filter(|v| v.is_some()).count())
    });
    g.finish();
}

criterion_group!(benches, bench, bench_semdedup);
criterion_main!(benches);
