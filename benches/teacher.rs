//! Teachers: the HTTP client's request rate against a local server that answers at once with a
//! small image (the client must never limit a fleet: ≥ 2,000 requests/s on ≤ 2 cores), and the
//! ONNX teacher's overhead around its model calls on the fixture export (≤ 10% of step time).
//! Run with `cargo bench --profile dev --bench teacher`.

use std::collections::BTreeMap;

use axum::routing::post;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lightgen::config::{HttpConfig, OnnxTeacherConfig, Protocol, SchedulerKind};
use lightgen::pipeline::teacher::diffusers::OnnxTeacher;
use lightgen::pipeline::teacher::http::HttpTeacher;
use lightgen::pipeline::teacher::{PromptRow, Request, Teacher};

const BATCH: usize = 2000;

/// A server on its own single thread that answers every request with one 16×16 PNG.
fn instant_server() -> String {
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 128]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let body = format!(
        r#"{{"created":0,"data":[{{"b64_json":"{}"}}]}}"#,
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route(
                "/v1/images/generations",
                post(move || {
                    let b = body.clone();
                    async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], b) }
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn row(i: usize) -> PromptRow {
    PromptRow {
        index: i as u64,
        prompt_id: format!("p{i}"),
        text: format!("a photo of {i} red circles"),
        family: "f".into(),
        spec: None,
        slots: BTreeMap::new(),
    }
}

fn bench_http(c: &mut Criterion) {
    let url = instant_server();
    let cfg: HttpConfig =
        toml::from_str(&format!("protocol = \"openai\"\nendpoints = [{{ url = \"{url}\", concurrency = 64 }}]"))
            .unwrap();
    assert_eq!(cfg.protocol, Protocol::Openai);
    let teacher = HttpTeacher::new(&cfg).unwrap();
    let rows: Vec<PromptRow> = (0..BATCH).map(row).collect();
    let reqs: Vec<Request<'_>> =
        rows.iter().map(|p| Request { prompt: p, seed: p.index, width: 16, height: 16 }).collect();
    let mut g = c.benchmark_group("teacher");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("http_openai_requests_16px_instant_server", |b| {
        b.iter(|| {
            let out = teacher.generate(&reqs);
            assert!(out.iter().all(Result::is_ok));
        })
    });
    g.finish();
}

fn bench_onnx(c: &mut Criterion) {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/sd-tiny");
    let rows: Vec<PromptRow> = (0..4).map(row).collect();
    for size in [64u32, 256] {
        let cfg = OnnxTeacherConfig {
            model: model.clone(),
            steps: 4,
            guidance: 2.0,
            scheduler: SchedulerKind::Auto,
            negative_prompt: String::new(),
            batch: 1,
            device: "cpu".into(),
            runtime: None,
        };
        let teacher = OnnxTeacher::load(&cfg).unwrap();
        let reqs: Vec<Request<'_>> =
            rows.iter().map(|p| Request { prompt: p, seed: p.index, width: size, height: size }).collect();
        let mut g = c.benchmark_group("teacher");
        g.sample_size(20);
        g.throughput(Throughput::Elements(reqs.len() as u64));
        g.bench_function(format!("onnx_sd_tiny_{size}px_4_steps_cfg"), |b| b.iter(|| teacher.generate(&reqs)));
        g.finish();
        let t = teacher.timing();
        eprintln!(
            "onnx teacher, {size} px: denoising steps {:.1}% outside the UNet call ({:.2} s UNet of {:.2} s in \
             steps); all of generate {:.1}% outside model calls ({:.2} s models of {:.2} s)",
            100.0 * (1.0 - t.unet_s / t.steps_s),
            t.unet_s,
            t.steps_s,
            100.0 * (1.0 - t.models_s / t.total_s),
            t.models_s,
            t.total_s,
        );
    }
}

criterion_group!(benches, bench_http, bench_onnx);
criterion_main!(benches);
