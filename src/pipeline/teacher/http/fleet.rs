//! The endpoints of an HTTP teacher and their health: weighted least-load picking, a
//! concurrency limit and a request rate per endpoint, pauses for 429s, and setting aside an
//! endpoint that keeps failing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::protocol;
use crate::config::HttpConfig;
use crate::error::{Error, Result};

pub struct Endpoint {
    /// As configured (recorded in every sample).
    pub name: String,
    /// Where requests go.
    pub url: String,
    pub key: Option<String>,
    weight: f64,
    pub slots: Semaphore,
    /// Requests assigned and not finished (queued for a slot or in flight).
    load: AtomicUsize,
    /// Seconds between requests when rate-limited by config.
    interval: Option<Duration>,
    state: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Consecutive failures.
    fails: u32,
    /// Not picked before this (set aside after failures, or told to wait by a 429).
    until: Option<Instant>,
    /// The earliest start of the next request under the configured rate.
    next_slot: Option<Instant>,
}

/// Holds a unit of an endpoint's load until dropped.
pub struct Assigned<'a>(pub &'a Endpoint);

impl Drop for Assigned<'_> {
    fn drop(&mut self) {
        self.0.load.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    /// Waits for the configured request rate.
    pub async fn pace(&self) {
        let Some(iv) = self.interval else { return };
        let slot = {
            let mut h = self.state.lock().expect("health lock");
            let now = Instant::now();
            let slot = h.next_slot.map_or(now, |s| s.max(now));
            h.next_slot = Some(slot + iv);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    pub fn succeeded(&self) {
        self.state.lock().expect("health lock").fails = 0;
    }

    /// Counts a failure; after `after` in a row the endpoint is set aside for `pause`. When it
    /// comes back, one more failure sets it aside again.
    pub fn failed(&self, after: u32, pause: Duration) -> bool {
        let mut h = self.state.lock().expect("health lock");
        h.fails += 1;
        if h.fails >= after {
            h.until = Some(Instant::now() + pause);
            h.fails = after.saturating_sub(1);
            tracing::warn!(endpoint = %self.name, seconds = pause.as_secs_f64(), "endpoint keeps failing: set aside");
            return true;
        }
        false
    }

    /// The server asked us to wait (429 + Retry-After).
    pub fn pause(&self, d: Duration) {
        let mut h = self.state.lock().expect("health lock");
        let until = Instant::now() + d;
        h.until = Some(h.until.map_or(until, |u| u.max(until)));
    }
}

pub struct Fleet {
    pub endpoints: Vec<Endpoint>,
}

impl Fleet {
    pub fn new(cfg: &HttpConfig) -> Result<Fleet> {
        let mut endpoints = Vec::new();
        for (i, e) in cfg.endpoints.iter().enumerate() {
            let key = match &e.api_key_env {
                None => None,
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    Error::invalid(
                        format!("generate.http.endpoints[{i}].api_key_env"),
                        format!("the environment variable {var} is not set (it should hold the API key)"),
                    )
                })?),
            };
            endpoints.push(Endpoint {
                name: e.url.clone(),
                url: protocol::post_url(&e.url, cfg.protocol),
                key,
                weight: e.weight,
                slots: Semaphore::new(e.concurrency as usize),
                load: AtomicUsize::new(0),
                interval: (e.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / e.rate)),
                state: Mutex::new(Health::default()),
            });
        }
        Ok(Fleet { endpoints })
    }

    /// Total concurrency.
    pub fn capacity(&self) -> usize {
        self.endpoints.iter().map(|e| e.slots.available_permits()).sum()
    }

    /// The available endpoint with the least load for its weight, or how long until one is.
    pub fn pick(&self) -> std::result::Result<Assigned<'_>, Duration> {
        let now = Instant::now();
        let mut best: Option<(&Endpoint, f64)> = None;
        let mut soonest = Duration::from_secs(3600);
        for e in &self.endpoints {
            let until = e.state.lock().expect("health lock").until;
            if let Some(u) = until.filter(|u| *u > now) {
                soonest = soonest.min(u - now);
                continue;
            }
            let score = (e.load.load(Ordering::Relaxed) + 1) as f64 / e.weight;
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((e, score));
            }
        }
        match best {
            Some((e, _)) => {
                e.load.fetch_add(1, Ordering::Relaxed);
                Ok(Assigned(e))
            }
            None => Err(soonest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(weights: &[f64]) -> Fleet {
        let eps: Vec<String> =
            weights.iter().enumerate().map(|(i, w)| format!("{{ url = \"http://h{i}:1\", weight = {w} }}")).collect();
        let cfg: HttpConfig =
            toml::from_str(&format!("protocol = \"openai\"\nendpoints = [{}]", eps.join(", "))).unwrap();
        Fleet::new(&cfg).unwrap()
    }

    #[test]
    fn load_follows_the_weights() {
        let f = fleet(&[3.0, 1.0]);
        // Hold every assignment: the least-load-for-weight rule fills 3:1.
        let held: Vec<Assigned<'_>> = (0..40).map(|_| f.pick().unwrap()).collect();
        let on0 = held.iter().filter(|a| a.0.name == "http://h0:1").count();
        assert_eq!(on0, 30, "3:1 of 40");
        drop(held);
        // Released, the next pick goes to the heaviest weight again.
        assert_eq!(f.pick().unwrap().0.name, "http://h0:1");
    }

    #[test]
    fn failing_and_paused_endpoints_are_skipped_until_their_time() {
        let f = fleet(&[1.0, 1.0]);
        let pause = Duration::from_secs(60);
        assert!(!f.endpoints[0].failed(2, pause));
        assert!(f.endpoints[0].failed(2, pause), "the second failure in a row sets it aside");
        for _ in 0..5 {
            assert_eq!(f.pick().unwrap().0.name, "http://h1:1");
        }
        f.endpoints[1].pause(Duration::from_secs(30));
        let wait = f.pick().err().expect("both are out");
        assert!(wait <= Duration::from_secs(30) && wait > Duration::from_secs(29), "{wait:?}: the sooner one");
        // A success clears the count of failures.
        let g = fleet(&[1.0]);
        g.endpoints[0].failed(3, pause);
        g.endpoints[0].succeeded();
        assert!(!g.endpoints[0].failed(3, pause) && !g.endpoints[0].failed(3, pause));
    }

    #[test]
    fn the_request_rate_is_kept() {
        let cfg: HttpConfig =
            toml::from_str("protocol = \"openai\"\nendpoints = [{ url = \"http://h:1\", rate = 100.0 }]").unwrap();
        let f = Fleet::new(&cfg).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let t = std::time::Instant::now();
        rt.block_on(async {
            for _ in 0..11 {
                f.endpoints[0].pace().await;
            }
        });
        // 11 requests at 100/s: the last may start 100 ms after the first.
        assert!(t.elapsed() >= Duration::from_millis(99), "{:?}", t.elapsed());
    }
}
