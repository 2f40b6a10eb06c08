//! Deterministic partitioning of a run's parts over N workers, so that any scheduler (Slurm
//! job arrays, Kubernetes Indexed Jobs, a shell loop) can run `distill --worker I/N`.
//!
//! Worker I of N owns the contiguous block of parts `[⌈I·P/N⌉, ⌈(I+1)·P/N⌉)`: every part has
//! exactly one owner, blocks differ in size by at most one, and the assignment depends only
//! on (part, P, N), so rerunning a worker redoes exactly its own parts.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Worker `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Worker {
    pub fn new(index: u32, count: u32) -> Result<Worker> {
        if count == 0 || index >= count {
            return Err(Error::invalid("--worker", format!("expected I/N with 0 ≤ I < N, got {index}/{count}")));
        }
        Ok(Worker { index, count })
    }

    /// `"I/N"`.
    pub fn parse(s: &str) -> Result<Worker> {
        let bad = || Error::invalid("--worker", format!("expected I/N (e.g. 3/8, 0-based), got '{s}'"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        Worker::new(i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?)
    }

    /// The worker from the scheduler's environment: Slurm job arrays
    /// (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`), or a
    /// Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with `count` given, as Kubernetes
    /// does not export the completion count).
    pub fn from_env(env: impl Fn(&str) -> Option<String>, count: Option<u32>) -> Result<Option<Worker>> {
        let num = |name: &str| -> Result<Option<u32>> {
            env(name)
                .map(|v| v.trim().parse().map_err(|_| Error::invalid(name, format!("expected a number, got '{v}'"))))
                .transpose()
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let n = match (count, num("SLURM_ARRAY_TASK_COUNT")?) {
                (Some(n), _) | (None, Some(n)) => n,
                (None, None) => return Err(Error::invalid("SLURM_ARRAY_TASK_COUNT", "not set: pass --workers N")),
            };
            let index = id.checked_sub(min).ok_or_else(|| {
                Error::invalid("SLURM_ARRAY_TASK_ID", format!("{id} is below SLURM_ARRAY_TASK_MIN {min}"))
            })?;
            return Worker::new(index, n).map(Some);
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let n = count.ok_or_else(|| {
                Error::invalid("JOB_COMPLETION_INDEX", "set, but the number of workers is not: pass --workers N")
            })?;
            return Worker::new(index, n).map(Some);
        }
        Ok(None)
    }

    /// The parts this worker owns out of `parts`.
    pub fn parts(&self, parts: u64) -> std::ops::Range<u64> {
        let (i, n) = (self.index as u64, self.count as u64);
        (i * parts).div_ceil(n)..((i + 1) * parts).div_ceil(n)
    }

    /// The worker of `count` that owns `part` of `parts`.
    pub fn owner(part: u64, parts: u64, count: u32) -> Worker {
        Worker { index: ((part as u128 * count as u128) / parts.max(1) as u128) as u32, count }
    }
}

/// A worker's share of a stage: the parts to make, and what to do with each once committed
/// locally (publish it to the store).
#[derive(Clone)]
pub struct Share {
    pub parts: Vec<u64>,
    pub publish: Arc<dyn Fn(&Path, u64) -> Result<()> + Send + Sync>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share({} parts)", self.parts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_has_exactly_one_owner_for_any_n() {
        for parts in 0..60u64 {
            for n in 1..=17u32 {
                let mut seen = vec![0u32; parts as usize];
                for i in 0..n {
                    let w = Worker::new(i, n).unwrap();
                    let r = w.parts(parts);
                    assert!(r.end - r.start <= parts.div_ceil(n as u64), "balanced: {parts} parts over {n}");
                    for k in r {
                        seen[k as usize] += 1;
                        assert_eq!(Worker::owner(k, parts, n), w, "owner agrees with the blocks");
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "{parts} parts over {n} workers: {seen:?}");
            }
        }
    }

    #[test]
    fn assignment_is_stable_for_the_same_n() {
        // a pinned example: a rerun of worker 2/4 over 10 parts always gets parts 5, 6
        assert_eq!(Worker::parse("2/4").unwrap().parts(10), 5..8);
        assert_eq!(Worker::parse("3/4").unwrap().parts(10), 8..10);
        assert_eq!(Worker::parse("0/4").unwrap().parts(10), 0..3);
        assert_eq!(Worker::parse("1/4").unwrap().parts(10), 3..5);
    }

    #[test]
    fn bad_worker_specs_are_refused() {
        for s in ["4/4", "1", "a/3", "0/0", "-1/2"] {
            assert!(Worker::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn schedulers_environment_is_read() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let slurm =
            env(&[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "8")]);
        assert_eq!(Worker::from_env(slurm, None).unwrap(), Some(Worker { index: 4, count: 8 }));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(Worker::from_env(k8s, Some(3)).unwrap(), Some(Worker { index: 2, count: 3 }));
        assert!(Worker::from_env(k8s, None).unwrap_err().to_string().contains("--workers"));
        assert_eq!(Worker::from_env(env(&[]), Some(3)).unwrap(), None);
        assert!(Worker::from_env(env(&[("JOB_COMPLETION_INDEX", "3")]), Some(3)).is_err());
    }
}
