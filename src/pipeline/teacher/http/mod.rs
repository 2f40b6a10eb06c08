//! `http`: a fleet of image servers as a teacher (reqwest + tokio). Every request either ends
//! as an image of the requested size or as a failure with its reason, after a bounded number
//! of retries; rate limits (429 + `Retry-After`) are waited out without spending retries.

pub mod fleet;
pub mod protocol;

use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use serde_json::json;

use super::{Output, Request, Teacher};
use crate::config::HttpConfig;
use crate::error::{Error, Result};
use fleet::{Endpoint, Fleet};
use protocol::Answer;

pub struct HttpTeacher {
    cfg: HttpConfig,
    fleet: Fleet,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    deadline: Duration,
    threads: usize,
}

/// Why one attempt failed.
enum Fail {
    /// 429: wait this long, then try again (no retry spent).
    RateLimited(Duration),
    /// Worth another attempt: 5xx, a reset, a timeout, a bad answer.
    Retry(String),
    /// Another attempt would get the same answer (a 4xx such as 400 or 401).
    Final(String),
}

impl HttpTeacher {
    pub fn new(cfg: &HttpConfig) -> Result<HttpTeacher> {
        let fleet = Fleet::new(cfg)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("lightgen-http")
            .enable_all()
            .build()
            .map_err(|e| Error::invalid("generate.http", format!("cannot start the async runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("lightgen/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(fleet.capacity())
            .connect_timeout(Duration::from_secs(10).min(Duration::from_secs_f64(cfg.deadline_s)))
            .build()
            .map_err(|e| Error::invalid("generate.http", format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpTeacher {
            cfg: cfg.clone(),
            fleet,
            client,
            rt,
            deadline: Duration::from_secs_f64(cfg.deadline_s),
            threads,
        })
    }

    /// One sample, with retries.
    async fn one(&self, r: &Request<'_>) -> std::result::Result<Output, String> {
        let body = protocol::body(&self.cfg, r);
        let bytes = bytes::Bytes::from(serde_json::to_vec(&body).expect("json"));
        let start = Instant::now();
        let patience = Duration::from_secs_f64(self.cfg.patience_s);
        let (mut attempts, mut failures) = (0u32, 0u32);
        // Jitter only: it changes timing, never images.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(r.seed);
        loop {
            let assigned = match self.fleet.pick() {
                Ok(a) => a,
                Err(wait) => {
                    if start.elapsed() + wait > patience {
                        return Err(format!("no endpoint available within patience_s ({} s)", self.cfg.patience_s));
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let ep = assigned.0;
            let permit = ep.slots.acquire().await.expect("semaphore never closes");
            ep.pace().await;
            attempts += 1;
            let res = self.attempt(ep, bytes.clone(), r).await;
            drop(permit);
            drop(assigned);
            let msg = match res {
                Ok((image, truth)) => {
                    ep.succeeded();
                    let params = json!({
                        "teacher": "http",
                        "endpoint": ep.name,
                        "protocol": self.cfg.protocol,
                        "request": body,
                        "attempts": attempts,
                    });
                    return Ok(Output { image, params, truth });
                }
                Err(Fail::RateLimited(wait)) => {
                    ep.pause(wait);
                    if start.elapsed() + wait > patience {
                        return Err(format!(
                            "{}: rate limited (429) for longer than patience_s ({} s)",
                            ep.name, self.cfg.patience_s
                        ));
                    }
                    continue;
                }
                Err(Fail::Final(m)) => return Err(format!("{}: {m}", ep.name)),
                Err(Fail::Retry(m)) => m,
            };
            failures += 1;
            ep.failed(self.cfg.bench_after, Duration::from_secs_f64(self.cfg.bench_s));
            if failures > self.cfg.retries {
                // 429s spend no retry, so requests and retries are counted apart.
                let retries = failures - 1;
                let plural = |n: u32, w: &str| if n == 1 { format!("{n} {w}") } else { format!("{n} {w}s") };
                return Err(format!(
                    "{}: {msg} (gave up after {}, {})",
                    ep.name,
                    plural(attempts, "request"),
                    plural(retries, "retry").replace("retrys", "retries")
                ));
            }
            tracing::debug!(endpoint = %ep.name, attempt = attempts, "retrying: {msg}");
            // Exponential backoff with full jitter.
            let cap = self.cfg.backoff_max_ms.min(self.cfg.backoff_ms.saturating_mul(1 << (failures - 1).min(20)));
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..=cap))).await;
        }
    }

    /// One HTTP exchange and the checks on its answer. Every message it returns has the
    /// endpoint's API key blanked out: a server that echoes the key back in an error body
    /// (`401 {"error": "invalid api key: Bearer sk-…"}`) must not get it printed, stored in the
    /// parts' `error` column or in the reports.
    async fn attempt(
        &self,
        ep: &Endpoint,
        body: bytes::Bytes,
        r: &Request<'_>,
    ) -> std::result::Result<(image::RgbImage, Option<serde_json::Value>), Fail> {
        let redact = |m: String| match ep.key.as_deref() {
            Some(k) if !k.is_empty() => m.replace(k, "[redacted]"),
            _ => m,
        };
        self.exchange(ep, body, r).await.map_err(|f| match f {
            Fail::Retry(m) => Fail::Retry(redact(m)),
            Fail::Final(m) => Fail::Final(redact(m)),
            other => other,
        })
    }

    async fn exchange(
        &self,
        ep: &Endpoint,
        body: bytes::Bytes,
        r: &Request<'_>,
    ) -> std::result::Result<(image::RgbImage, Option<serde_json::Value>), Fail> {
        let mut req = self
            .client
            .post(&ep.url)
            .timeout(self.deadline)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(k) = &ep.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| Fail::Retry(self.describe(&e)))?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let wait = retry_after(resp.headers()).unwrap_or(Duration::from_millis(self.cfg.backoff_ms.max(100)));
            return Err(Fail::RateLimited(wait));
        }
        let ct =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = resp.bytes().await.map_err(|e| Fail::Retry(self.describe(&e)))?;
        if !status.is_success() {
            let m = format!("HTTP {status}: {}", protocol::snippet(&body));
            let retry = status.is_server_error() || status.as_u16() == 408;
            return Err(if retry { Fail::Retry(m) } else { Fail::Final(m) });
        }
        // What a lightgen server knows it drew (the shapes world's record), when it says.
        let truth = (self.cfg.protocol == crate::config::Protocol::Openai)
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| v["data"][0].get("lightgen_truth").cloned())
            .filter(|t| !t.is_null());
        let bytes = match protocol::parse(self.cfg.protocol, &ct, &body).map_err(Fail::Retry)? {
            Answer::Bytes(b) => b,
            Answer::Url(u) => {
                let got = self.client.get(&u).timeout(self.deadline).send().await;
                let got = got.and_then(|g| g.error_for_status()).map_err(|e| Fail::Retry(self.describe(&e)))?;
                got.bytes().await.map_err(|e| Fail::Retry(self.describe(&e)))?.to_vec()
            }
        };
        let img = image::load_from_memory(&bytes).map_err(|e| Fail::Retry(format!("not a decodable image ({e})")))?;
        if (img.width(), img.height()) != (r.width, r.height) {
            return Err(Fail::Retry(format!(
                "wrong image size: asked for {}x{}, got {}x{}",
                r.width,
                r.height,
                img.width(),
                img.height()
            )));
        }
        Ok((img.to_rgb8(), truth))
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no complete answer within deadline_s ({} s)", self.cfg.deadline_s);
        }
        let mut m = if e.is_connect() { "cannot connect".to_string() } else { "connection failed".to_string() };
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = src {
            m.push_str(&format!(": {s}"));
            src = s.source();
        }
        m
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from image servers; it falls back to
/// the backoff).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<f64>().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v.min(3600.0)))
}

impl Teacher for HttpTeacher {
    fn id(&self) -> &str {
        "http"
    }

    /// Enough requests per call to keep every endpoint's slots full.
    fn batch_size(&self) -> usize {
        (2 * self.fleet.capacity() / self.threads).max(16)
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }

    fn generate(&self, batch: &[Request<'_>]) -> Vec<std::result::Result<Output, String>> {
        self.rt.block_on(futures_util::future::join_all(batch.iter().map(|r| self.one(r))))
    }
}
