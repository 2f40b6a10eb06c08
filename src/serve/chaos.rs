//! Fault injection for `lightgen serve --chaos`: a reproducible share of answers goes wrong in
//! the ways real image servers do, so clients (ours included) can be tested against them.

use std::collections::HashMap;
use std::sync::Mutex;

/// What goes wrong with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: 1`.
    RateLimit,
    /// 500 with a JSON error.
    ServerError,
    /// The answer comes after `delay_ms` (past a client's deadline).
    Slow,
    /// The base64 image is cut short.
    Truncated,
    /// An image of half the asked size.
    WrongSize,
    /// The connection drops in the middle of the body.
    Drop,
}

pub const FAULTS: [Fault; 6] =
    [Fault::RateLimit, Fault::ServerError, Fault::Slow, Fault::Truncated, Fault::WrongSize, Fault::Drop];

pub struct Chaos {
    pub rate: f64,
    pub seed: u64,
    pub delay_ms: u64,
    /// Attempts seen per request key, so a retry of the same request rolls again.
    attempts: Mutex<HashMap<String, u32>>,
}

impl Chaos {
    pub fn new(rate: f64, seed: u64, delay_ms: u64) -> Chaos {
        Chaos { rate, seed, delay_ms, attempts: Mutex::new(HashMap::new()) }
    }

    /// The fault for this attempt at a request, if any: a function of (seed, request, attempt),
    /// so a run against the same server sees the same faults.
    pub fn roll(&self, prompt: &str, seed: u64) -> Option<Fault> {
        if self.rate <= 0.0 {
            return None;
        }
        let key = format!("{prompt}\u{0}{seed}");
        let attempt = {
            let mut m = self.attempts.lock().expect("chaos lock");
            let a = m.entry(key.clone()).or_insert(0);
            *a += 1;
            *a
        };
        let h = blake3::hash(format!("{}:{key}:{attempt}", self.seed).as_bytes());
        let b = h.as_bytes();
        let u = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
        (u < self.rate).then(|| FAULTS[b[8] as usize % FAULTS.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_come_at_the_asked_rate_and_every_kind_occurs() {
        let c = Chaos::new(0.3, 7, 0);
        let mut seen = HashMap::new();
        for i in 0..20_000u64 {
            if let Some(f) = c.roll("p", i) {
                *seen.entry(format!("{f:?}")).or_insert(0u32) += 1;
            }
        }
        let total: u32 = seen.values().sum();
        assert!((5_400..6_600).contains(&total), "{total} faults in 20000 (fixed seed 7)");
        assert_eq!(seen.len(), FAULTS.len(), "{seen:?}");
        assert!(Chaos::new(0.0, 7, 0).roll("p", 1).is_none());
    }

    #[test]
    fn a_retry_rolls_again() {
        let c = Chaos::new(0.5, 1, 0);
        let rolls: Vec<_> = (0..40).map(|_| c.roll("same", 9).is_some()).collect();
        assert!(rolls.contains(&true) && rolls.contains(&false));
    }
}
