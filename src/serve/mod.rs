//! `lightgen serve`: any configured teacher over the OpenAI images protocol
//! (`POST /v1/images/generations`, `b64_json` answers), with a bounded queue and `/health`.
//! One server per GPU box, and `generate` with `teacher = "http"` spreads a run over all of them.

pub mod chaos;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::{GenerateConfig, ImageFormat};
use crate::error::{Error, Result};
use crate::pipeline::teacher::{self, PromptRow, Request, Teacher};
use chaos::{Chaos, Fault};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Requests waiting or running at once; more get 429 (default 64).
    pub queue: usize,
    /// Requests the teacher runs at once (default: one per core).
    pub workers: usize,
    /// Size when a request names none.
    pub default_size: u32,
    pub chaos: Option<(f64, u64, u64)>,
}

struct Server {
    teacher: Box<dyn Teacher>,
    gen: GenerateConfig,
    queue: Arc<Semaphore>,
    queue_cap: usize,
    workers: Arc<Semaphore>,
    default_size: u32,
    served: AtomicU64,
    chaos: Option<Chaos>,
}

/// Serves until the process is stopped. Prints `listening on http://ADDR` once bound.
pub fn run(gen: &GenerateConfig, opts: &ServeOptions) -> Result<()> {
    let teacher = teacher::from_config(gen)?;
    let workers =
        if opts.workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.workers };
    let state = Arc::new(Server {
        teacher,
        gen: gen.clone(),
        queue: Arc::new(Semaphore::new(opts.queue)),
        queue_cap: opts.queue,
        workers: Arc::new(Semaphore::new(workers)),
        default_size: opts.default_size,
        served: AtomicU64::new(0),
        chaos: opts.chaos.map(|(rate, seed, delay)| Chaos::new(rate, seed, delay)),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::invalid("serve", format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|e| Error::invalid("--addr", format!("cannot listen on {}: {e}", opts.addr)))?;
        let local = listener.local_addr().map_err(|e| Error::invalid("--addr", e.to_string()))?;
        // A closed stdout (`lightgen serve … | head -1`) must not stop the server.
        let _ = writeln!(std::io::stdout(), "listening on http://{local}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let app = Router::new()
            .route("/v1/images/generations", post(generations))
            .route("/health", get(health))
            .with_state(state);
        axum::serve(listener, app).await.map_err(|e| Error::invalid("serve", format!("server stopped: {e}")))
    })
}

async fn health(State(s): State<Arc<Server>>) -> Response {
    let queued = s.queue_cap - s.queue.available_permits();
    let body = json!({
        "status": "ok",
        "teacher": s.teacher.id(),
        "queued": queued,
        "queue": s.queue_cap,
        "served": s.served.load(Ordering::Relaxed),
        "chaos": s.chaos.as_ref().map(|c| c.rate),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": { "message": msg.into(), "type": kind } }))).into_response()
}

fn too_many(msg: &str) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", msg);
    r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

/// A parsed request.
#[derive(Debug)]
struct Ask {
    row: PromptRow,
    n: usize,
    width: u32,
    height: u32,
    seed: u64,
}

fn parse(body: &[u8], default_size: u32) -> std::result::Result<Ask, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let text = v["prompt"].as_str().filter(|p| !p.trim().is_empty()).ok_or("\"prompt\" must be a non-empty string")?;
    let n =
        v.get("n").map_or(Some(1), Value::as_u64).filter(|n| (1..=10).contains(n)).ok_or("\"n\" must be 1 to 10")?;
    let (width, height) = match v.get("size").and_then(Value::as_str) {
        None | Some("auto") => (default_size, default_size),
        Some(s) => s
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .filter(|&(w, h): &(u32, u32)| (8..=4096).contains(&w) && (8..=4096).contains(&h))
            .ok_or_else(|| format!("\"size\" = {s:?}: expected WIDTHxHEIGHT, e.g. 64x64"))?,
    };
    match v.get("response_format").and_then(Value::as_str) {
        None | Some("b64_json") => {}
        Some(f) => return Err(format!("\"response_format\" = {f:?}: this server answers b64_json only")),
    }
    // Without a seed the prompt decides it, so the same request gets the same image.
    let seed = match v.get("seed") {
        None | Some(Value::Null) => {
            u64::from_le_bytes(blake3::hash(text.as_bytes()).as_bytes()[..8].try_into().expect("8 bytes"))
        }
        Some(s) => s.as_u64().ok_or("\"seed\" must be a non-negative integer")?,
    };
    let lg = &v["lightgen"];
    let slots: BTreeMap<String, Vec<String>> = serde_json::from_value(lg["slots"].clone()).unwrap_or_default();
    let row = PromptRow {
        index: 0,
        prompt_id: lg["prompt_id"].as_str().unwrap_or("").to_string(),
        text: text.to_string(),
        family: String::new(),
        spec: lg["spec"].as_str().map(str::to_string),
        slots,
    };
    Ok(Ask { row, n: n as usize, width, height, seed })
}

async fn generations(State(s): State<Arc<Server>>, body: Bytes) -> Response {
    let ask = match parse(&body, s.default_size) {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
    };
    let fault = s.chaos.as_ref().and_then(|c| c.roll(&ask.row.text, ask.seed));
    match fault {
        Some(Fault::RateLimit) => return too_many("chaos: rate limited"),
        Some(Fault::ServerError) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "chaos: internal error")
        }
        Some(Fault::Slow) => {
            tokio::time::sleep(Duration::from_millis(s.chaos.as_ref().map_or(0, |c| c.delay_ms))).await
        }
        _ => {}
    }
    let Ok(_queued) = s.queue.clone().try_acquire_owned() else {
        return too_many("the queue is full; retry later");
    };
    let _working = s.workers.clone().acquire_owned().await.expect("semaphore never closes");
    let s2 = s.clone();
    let made = tokio::task::spawn_blocking(move || {
        let reqs: Vec<Request<'_>> = (0..ask.n)
            .map(|i| Request {
                prompt: &ask.row,
                seed: ask.seed.wrapping_add(i as u64),
                width: ask.width,
                height: ask.height,
            })
            .collect();
        let out = s2.teacher.generate(&reqs);
        let png = |img: &image::RgbImage| {
            let cfg = GenerateConfig { format: ImageFormat::Png, ..s2.gen.clone() };
            crate::pipeline::generate::encode(img, &cfg)
        };
        out.into_iter()
            .map(|o| {
                let o = o?;
                let img = if fault == Some(Fault::WrongSize) {
                    image::imageops::thumbnail(&o.image, (ask.width / 2).max(1), (ask.height / 2).max(1))
                } else {
                    o.image
                };
                Ok((png(&img)?, o.truth))
            })
            .collect::<std::result::Result<Vec<(Vec<u8>, Option<Value>)>, String>>()
    })
    .await;
    let made = match made {
        Ok(Ok(p)) => p,
        Ok(Err(m)) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", m),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", format!("the teacher failed: {e}")),
    };
    s.served.fetch_add(made.len() as u64, Ordering::Relaxed);
    let data: Vec<Value> = made
        .iter()
        .map(|(p, truth)| {
            let mut b = base64::engine::general_purpose::STANDARD.encode(p);
            if fault == Some(Fault::Truncated) {
                b.truncate(b.len() / 2 + 1);
            }
            // The teacher's own record of what it drew (the shapes world's), for lightgen
            // clients: curation can then be scored against it as for an in-process run.
            match truth {
                Some(t) => json!({ "b64_json": b, "lightgen_truth": t }),
                None => json!({ "b64_json": b }),
            }
        })
        .collect();
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let body = serde_json::to_vec(&json!({ "created": created, "data": data })).expect("json");
    if fault == Some(Fault::Drop) {
        // Half the body, then the connection breaks.
        let half = Bytes::from(body[..body.len() / 2].to_vec());
        let parts: Vec<std::result::Result<Bytes, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "chaos: dropped"))];
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::iter(parts)))
            .expect("response");
    }
    Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from(body)).expect("response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let a = parse(br#"{"prompt":"a red circle","size":"32x48","seed":5,"n":2}"#, 64).unwrap();
        assert_eq!((a.width, a.height, a.seed, a.n), (32, 48, 5, 2));
        assert!(parse(br#"{"prompt":""}"#, 64).unwrap_err().contains("prompt"));
        assert!(parse(br#"{"prompt":"x","size":"big"}"#, 64).unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse(br#"{"prompt":"x","response_format":"url"}"#, 64).unwrap_err().contains("b64_json"));
        assert!(parse(br#"{"prompt":"x","n":11}"#, 64).unwrap_err().contains("1 to 10"));
        let same = parse(br#"{"prompt":"x"}"#, 64).unwrap().seed;
        assert_eq!(same, parse(br#"{"prompt":"x"}"#, 64).unwrap().seed, "no seed: the prompt decides it");
    }
}
