//! Latent reading: random-access batches of 256 samples from memory-mapped shards, converted
//! to f32 as the trainer needs them. Run with `cargo bench --profile dev --bench encode`.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lightgen::formats::shards::{serialize, Shard, ShardData};
use rand::{RngExt, SeedableRng};

const ROWS: usize = 2048;
const TOKENS: usize = 256; // 64 px, patch 4
const DIM: usize = 48;
const BATCHES: usize = 40;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3); // fixed seed
    let shards: Vec<Shard> = (0..4)
        .map(|k| {
            let d = ShardData {
                rows: ROWS,
                tokens: TOKENS,
                token_dim: DIM,
                text_len_max: 32,
                latents: (0..ROWS * TOKENS * DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
                latents_flip: None,
                text_ids: vec![2; ROWS * 32],
                text_len: vec![8; ROWS],
                text_features: None,
            };
            let path = dir.path().join(format!("shard-{k}.safetensors"));
            std::fs::write(&path, serialize(&d, "f16", HashMap::new()).unwrap()).unwrap();
            Shard::open(&path).unwrap()
        })
        .collect();
    let picks: Vec<(usize, usize)> =
        (0..BATCHES * 256).map(|_| (rng.random_range(0..4), rng.random_range(0..ROWS))).collect();
    let mut g = c.benchmark_group("encode");
    g.sample_size(10);
    g.throughput(Throughput::Elements((BATCHES * 256) as u64));
    g.bench_function("read_random_batches_256_f16_to_f32", |b| {
        let mut batch = vec![0f32; 256 * TOKENS * DIM];
        b.iter(|| {
            for chunk in picks.chunks(256) {
                for (dst, &(s, r)) in batch.chunks_exact_mut(TOKENS * DIM).zip(chunk) {
                    shards[s].latents_into_slice(r, false, dst);
                }
            }
            batch[0]
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
