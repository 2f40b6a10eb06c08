//! The HTTP teacher against `lightgen serve` with injected faults (429 + Retry-After, 500s,
//! answers past the deadline, truncated base64, wrong sizes, dropped connections): every
//! prompt ends as one image or one recorded failure, reruns complete the failures, nothing is
//! duplicated, the API key never reaches an artifact, and the images equal the built-in
//! teacher's pixel for pixel.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use lightgen::formats::commit;
use lightgen::pipeline::generate::{read_part, Sample};

use crate::{lightgen, root, stderr, write_config};

/// A `lightgen serve` child, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(["serve", "-q", "--config", config.to_str().unwrap(), "--addr", "127.0.0.1:0"])
        .args(extra)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("serve printed {line:?}")).to_string();
    Server { child, url }
}

/// GET with a raw socket (the tests need no HTTP client of their own).
fn get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn samples(stage: &Path) -> Vec<Sample> {
    commit::committed_parts(stage).unwrap().iter().flat_map(|p| read_part(p).unwrap()).collect()
}

fn pixels(s: &Sample) -> Vec<u8> {
    image::load_from_memory(s.image.as_deref().unwrap()).unwrap().to_rgb8().into_raw()
}

fn generate(cfg: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(["generate", "-q", "--json", "--config", cfg])
        .env("LIGHTGEN_TEST_KEY", "sk-test-SECRET-4242")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

const SHAPES: &str =
    "\n[generate]\nteacher = \"builtin:shapes\"\nimages_per_prompt = 2\nresolution = 64\npart_size = 40\n";

#[test]
fn http_teacher_survives_faults_and_reruns_complete_the_failures() {
    let dir = tempfile::tempdir().unwrap();
    // The reference: the same prompts drawn by the built-in teacher.
    let reference = write_config(dir.path(), "ref", "builtin:shapes", 50, SHAPES);
    let reference = reference.to_str().unwrap();
    assert!(lightgen(&["expand", "-q", "--config", reference]).status.success());
    assert_eq!(generate(reference)["failed"], 0);

    let server = serve(Path::new(reference), &["--chaos", "0.35", "--chaos-seed", "3", "--chaos-delay-ms", "1500"]);
    let health = get(&server.url, "/health");
    assert!(health.starts_with("HTTP/1.1 200") && health.contains("\"teacher\":\"builtin:shapes\""), "{health}");

    // Deadline 1 s (slow answers take 1.5 s); one retry, so some samples fail on the first run.
    let http = format!(
        "\n[generate]\nteacher = \"http\"\nimages_per_prompt = 2\nresolution = 64\npart_size = 40\n\
         [generate.http]\nprotocol = \"openai\"\nsend_seed = true\nsend_structure = true\ndeadline_s = 1.0\n\
         retries = 1\nbackoff_ms = 10\nbackoff_max_ms = 50\nbench_after = 4\nbench_s = 0.2\npatience_s = 60\n\
         [[generate.http.endpoints]]\nurl = \"{}\"\nconcurrency = 8\napi_key_env = \"LIGHTGEN_TEST_KEY\"\n",
        server.url
    );
    let cfg = write_config(dir.path(), "h", "builtin:shapes", 50, &http);
    let cfg = cfg.to_str().unwrap();
    assert!(lightgen(&["expand", "-q", "--config", cfg]).status.success());
    let first = generate(cfg);
    assert_eq!(first["samples"], 100);
    assert_eq!(first["ok"].as_u64().unwrap() + first["failed"].as_u64().unwrap(), 100);
    let mut failed = first["failed"].as_u64().unwrap();
    assert!(failed > 0, "with 35% faults and one retry some samples fail (fixed chaos seed 3): {first}");

    let stage = dir.path().join("runs/h/generate");
    let errors: Vec<String> = samples(&stage).into_iter().filter_map(|s| s.error).collect();
    assert_eq!(errors.len() as u64, failed);
    let kinds = ["deadline_s", "base64", "wrong image size", "HTTP 500", "connection failed"];
    let seen: Vec<&str> = kinds.iter().copied().filter(|k| errors.iter().any(|e| e.contains(k))).collect();
    assert!(seen.len() >= 2, "failures say why: {errors:#?}");

    // Reruns make only the failed samples again, until none is left.
    for _ in 0..8 {
        if failed == 0 {
            break;
        }
        let again = generate(cfg);
        assert_eq!(again["made"].as_u64().unwrap(), failed, "a rerun retries only the failures: {again}");
        assert_eq!(again["samples"], 100);
        failed = again["failed"].as_u64().unwrap();
    }
    assert_eq!(failed, 0, "reruns complete every failure");

    let got = samples(&stage);
    let want = samples(&dir.path().join("runs/ref/generate"));
    assert_eq!(got.len(), 100);
    let ids: std::collections::HashSet<&str> = got.iter().map(|s| s.sample_id.as_str()).collect();
    assert_eq!(ids.len(), 100, "no sample is duplicated");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.sample_id.as_str(), g.seed), (w.sample_id.as_str(), w.seed));
        assert_eq!(pixels(g), pixels(w), "{}: the served image equals the built-in teacher's", g.sample_id);
        assert_eq!(g.truth, w.truth, "{}: the server's record of what it drew comes along", g.sample_id);
        let req: serde_json::Value = serde_json::from_str(&g.request).unwrap();
        assert_eq!(req["endpoint"], server.url.as_str());
        assert_eq!(req["request"]["seed"], g.seed);
        assert_eq!(req["request"]["size"], "64x64");
        assert!(req["attempts"].as_u64().unwrap() >= 1);
    }

    // The key went to the server but into no artifact.
    for entry in walk(&dir.path().join("runs/h")) {
        let bytes = std::fs::read(&entry).unwrap();
        let needle = b"sk-test-SECRET-4242";
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds the API key", entry.display());
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_unset_api_key_variable_stops_the_run_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let http = "\n[generate]\nteacher = \"http\"\n[generate.http]\nprotocol = \"a1111\"\n\
                [[generate.http.endpoints]]\nurl = \"http://127.0.0.1:9\"\napi_key_env = \"LIGHTGEN_NO_SUCH_KEY\"\n";
    let cfg = write_config(dir.path(), "k", "builtin:shapes", 5, http);
    let cfg = cfg.to_str().unwrap();
    assert!(lightgen(&["expand", "-q", "--config", cfg]).status.success());
    let out = lightgen(&["generate", "-q", "--config", cfg]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("LIGHTGEN_NO_SUCH_KEY") && err.contains("api_key_env"), "{err}");
}

/// A `[generate]` section whose one endpoint is port 9 (discard), closed here: every
/// connection is refused, retried `retries` times with millisecond backoff.
fn dead_endpoint(retries: u32) -> String {
    format!(
        "\n[generate]\nteacher = \"http\"\nimages_per_prompt = 1\n[generate.http]\nprotocol = \"hf\"\n\
         retries = {retries}\nbackoff_ms = 1\nbackoff_max_ms = 2\nbench_after = 100\n\
         [[generate.http.endpoints]]\nurl = \"http://127.0.0.1:9/models/x\"\n"
    )
}

#[test]
fn a_dead_endpoint_is_a_recorded_failure_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "d", "builtin:shapes", 4, &dead_endpoint(2));
    let cfg = cfg.to_str().unwrap();
    assert!(lightgen(&["expand", "-q", "--config", cfg]).status.success());
    let s = generate(cfg);
    assert_eq!((s["ok"].as_u64(), s["failed"].as_u64()), (Some(0), Some(4)));
    for x in samples(&dir.path().join("runs/d/generate")) {
        let e = x.error.unwrap();
        assert!(
            e.contains("http://127.0.0.1:9/models/x")
                && e.contains("cannot connect")
                && e.contains("3 requests, 2 retries"),
            "{e}"
        );
    }
}

/// A server on its own thread: `handler` answers every POST (any path) from the JSON body.
fn fake_server(
    handler: fn(&serde_json::Value, u64) -> axum::response::Response,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let hits = std::sync::Arc::new(AtomicU64::new(0));
    let h2 = hits.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
                let n = h2.fetch_add(1, Ordering::SeqCst);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                async move { handler(&v, n) }
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{}", rx.recv().unwrap()), hits)
}

fn png(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(seed % 251) as u8, x as u8, y as u8]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn rows(n: usize) -> Vec<lightgen::pipeline::teacher::PromptRow> {
    (0..n)
        .map(|i| lightgen::pipeline::teacher::PromptRow {
            index: i as u64,
            prompt_id: format!("p{i}"),
            text: format!("prompt {i}"),
            family: "f".into(),
            spec: None,
            slots: Default::default(),
        })
        .collect()
}

fn run_teacher(toml_text: &str, n: usize) -> Vec<Result<lightgen::pipeline::teacher::Output, String>> {
    use lightgen::pipeline::teacher::{http::HttpTeacher, Request, Teacher};
    let cfg: lightgen::config::HttpConfig = toml::from_str(toml_text).unwrap();
    let t = HttpTeacher::new(&cfg).unwrap();
    let rows = rows(n);
    let reqs: Vec<Request<'_>> =
        rows.iter().map(|p| Request { prompt: p, seed: (1 << 40) + p.index, width: 24, height: 16 }).collect();
    t.generate(&reqs)
}

#[test]
fn a1111_and_hf_protocols_send_their_fields_and_read_their_answers() {
    use axum::response::IntoResponse;
    use base64::Engine;
    // A1111: JSON with images[0] base64; the seed must fit numpy's 32 bits.
    let (a1111, _) = fake_server(|v, _| {
        assert_eq!(v["steps"], 20);
        assert_eq!(v["cfg_scale"], 6.5);
        assert_eq!(v["negative_prompt"], "blurry");
        let seed = v["seed"].as_u64().unwrap();
        assert!(seed < 1 << 32, "a1111 seeds are 32-bit");
        let b64 = base64::engine::general_purpose::STANDARD.encode(png(
            v["width"].as_u64().unwrap() as u32,
            v["height"].as_u64().unwrap() as u32,
            seed,
        ));
        axum::Json(serde_json::json!({ "images": [b64], "parameters": v, "info": "{}" })).into_response()
    });
    let out = run_teacher(
        &format!("protocol = \"a1111\"\nsteps = 20\nguidance = 6.5\nnegative_prompt = \"blurry\"\nendpoints = [{{ url = \"{a1111}\" }}]"),
        6,
    );
    for (i, o) in out.iter().enumerate() {
        let o = o.as_ref().unwrap();
        assert_eq!(o.image.dimensions(), (24, 16));
        assert_eq!(o.params["request"]["seed"], ((1u64 << 40) + i as u64) & 0xFFFF_FFFF);
        assert_eq!(o.params["protocol"], "a1111");
    }
    // HF: raw image bytes back; the first answer is a 429 with Retry-After, waited out.
    let (hf, hits) = fake_server(|v, n| {
        if n == 0 {
            return (axum::http::StatusCode::TOO_MANY_REQUESTS, [(axum::http::header::RETRY_AFTER, "1")], "slow down")
                .into_response();
        }
        let p = &v["parameters"];
        assert_eq!(p["num_inference_steps"], 4);
        (
            [(axum::http::header::CONTENT_TYPE, "image/png")],
            png(p["width"].as_u64().unwrap() as u32, p["height"].as_u64().unwrap() as u32, p["seed"].as_u64().unwrap()),
        )
            .into_response()
    });
    let t0 = std::time::Instant::now();
    let out = run_teacher(
        &format!("protocol = \"hf\"\nsteps = 4\nretries = 0\nendpoints = [{{ url = \"{hf}/models/x\" }}]"),
        3,
    );
    assert!(
        out.iter().all(Result::is_ok),
        "a 429 spends no retry: {:?}",
        out.iter().filter_map(|o| o.as_ref().err()).collect::<Vec<_>>()
    );
    assert!(t0.elapsed() >= std::time::Duration::from_millis(900), "Retry-After: 1 was honoured");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 4);
}

#[test]
fn a_dead_endpoint_is_set_aside_and_the_live_one_takes_the_work() {
    use axum::response::IntoResponse;
    let (live, hits) = fake_server(|v, _| {
        let b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            png(24, 16, v["seed"].as_u64().unwrap_or(0)),
        );
        axum::Json(serde_json::json!({ "data": [{ "b64_json": b64 }] })).into_response()
    });
    // Port 9 refuses connections. Equal weights: the dead one is picked first half the time.
    let out = run_teacher(
        &format!(
            "protocol = \"openai\"\nretries = 3\nbackoff_ms = 1\nbackoff_max_ms = 5\nbench_after = 2\nbench_s = 60\n\
             endpoints = [{{ url = \"http://127.0.0.1:9\" }}, {{ url = \"{live}\" }}]"
        ),
        40,
    );
    assert!(out.iter().all(Result::is_ok), "{:?}", out.iter().filter_map(|o| o.as_ref().err()).next());
    assert!(out.iter().all(|o| o.as_ref().unwrap().params["endpoint"] == live.as_str()));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 40, "each sample asked the live server once");
}

#[test]
fn issue_19_a_distill_whose_teacher_made_nothing_fails_with_the_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let http = dead_endpoint(1); // no image at all
                                 // curate and encode as the shapes config has them, so a manifest would follow generate.
    let shapes = std::fs::read_to_string(super::root().join("configs/shapes.toml")).unwrap();
    let rest = &shapes[shapes.find("[curate]").unwrap()..];
    let cfg = write_config(dir.path(), "e", "builtin:shapes", 3, &format!("{http}\n{rest}"));
    let cfg = cfg.to_str().unwrap();
    let o = lightgen(&["distill", "-q", "--config", cfg]);
    let e = super::stderr(&o);
    assert!(!o.status.success(), "an empty run must not exit 0");
    assert!(e.contains("all 3 samples failed") && e.contains("3 × ") && e.contains("cannot connect"), "{e}");
    assert!(!dir.path().join("runs/e/manifest.json").exists(), "nothing is published");
    let o = lightgen(&["distill", "-q", "--config", cfg, "--allow-empty"]);
    assert!(o.status.success(), "{}", super::stderr(&o));
    assert!(dir.path().join("runs/e/manifest.json").exists(), "--allow-empty publishes the empty run");
}

#[test]
fn issue_19_an_echoed_api_key_is_never_printed_or_stored() {
    use axum::response::IntoResponse;
    const KEY: &str = "sk-test-SECRET-4242"; // what `generate()` puts in LIGHTGEN_TEST_KEY
    let (url, hits) = fake_server(|_, _| {
        let body = format!(r#"{{"error": "invalid api key: Bearer {KEY}"}}"#);
        (axum::http::StatusCode::UNAUTHORIZED, body).into_response()
    });
    let dir = tempfile::tempdir().unwrap();
    let http = format!(
        "\n[generate]\nteacher = \"http\"\nimages_per_prompt = 1\n[generate.http]\nprotocol = \"hf\"\nretries = 1\n\
         backoff_ms = 1\nbackoff_max_ms = 2\n[[generate.http.endpoints]]\nurl = \"{url}/models/x\"\n\
         api_key_env = \"LIGHTGEN_TEST_KEY\"\n"
    );
    let cfg = write_config(dir.path(), "k", "builtin:shapes", 3, &http);
    let cfg = cfg.to_str().unwrap();
    assert!(lightgen(&["expand", "-q", "--config", cfg]).status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_lightgen"))
        .args(["generate", "--config", cfg])
        .env("LIGHTGEN_TEST_KEY", KEY)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 3, "the server was asked");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!printed.contains(KEY), "printed: {printed}");
    let report = lightgen(&["report", "generate", dir.path().join("runs/k").to_str().unwrap()]);
    let printed = format!("{}{}", String::from_utf8_lossy(&report.stdout), stderr(&report));
    assert!(!printed.contains(KEY) && printed.contains("[redacted]"), "report: {printed}");
    // Every file the run wrote, raw, and the parts' error column decoded.
    fn walk(p: &Path, key: &str) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, key);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "{} holds the key", p.display());
            }
        }
    }
    walk(&dir.path().join("runs/k"), KEY);
    let errors: Vec<String> =
        samples(&dir.path().join("runs/k/generate")).into_iter().filter_map(|s| s.error).collect();
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e.contains("401") && e.contains("[redacted]") && !e.contains(KEY)), "{errors:?}");
}
