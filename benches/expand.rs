//! Expansion throughput: the prompt generator alone, and generator + Parquet parts on disk.
//! Run with `cargo bench --profile dev --bench expand` (the one build profile; see README).
//! The 2M-prompt run with peak memory is `scripts/bench-expand-2m.sh`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lightgen::config::{Overrides, Plan, PromptsConfig, RunConfig, RunSection};
use lightgen::pipeline::expand::{self, generator::Generator, ExpandOptions};
use lightgen::taxonomy::Taxonomy;

const N: u64 = 100_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("expand");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    for name in ["general", "shapes"] {
        let tax = Taxonomy::load(&format!("builtin:{name}"), Path::new(".")).unwrap();
        g.bench_function(format!("generate_{name}_100k"), |b| {
            b.iter(|| Generator::new(&tax, N, 42).map(|p| p.text.len()).sum::<usize>())
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let config = RunConfig {
        run: RunSection { name: "bench".into(), output_dir: dir.path().to_path_buf(), seed: 42 },
        prompts: PromptsConfig {
            taxonomy: "builtin:general".into(),
            count: N,
            part_size: 100_000,
            row_group_size: 16_384,
            write_geneval: false,
        },
        generate: None,
        curate: None,
        encode: None,
    };
    let plan = Plan::resolve(config, &dir.path().join("bench.toml"), &Overrides::default()).unwrap();
    g.bench_function("parquet_general_100k", |b| {
        b.iter(|| expand::run(&plan, &ExpandOptions { force: true, progress: false }).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
