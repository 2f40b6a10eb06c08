//! Who this process is in a data-parallel job, read the way PyTorch jobs are launched:
//! torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
//! Slurm's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the first node of
//! `SLURM_JOB_NODELIST` as master), or `lightgen train --nproc N`, which starts N local ranks
//! of itself with torchrun's variables set.

use std::collections::BTreeMap;

use super::c10d::Rendezvous;
use crate::error::{Error, Result};

/// torchrun's default port, also used under Slurm when `MASTER_PORT` is unset.
pub const DEFAULT_PORT: u16 = 29500;

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub rendezvous: Rendezvous,
    /// The rank's index on its machine (its GPU under `--device cuda`).
    pub local_rank: usize,
    /// Which launcher set the variables (for messages).
    pub by: &'static str,
}

fn parse<T: std::str::FromStr>(env: &BTreeMap<String, String>, key: &str) -> Result<Option<T>> {
    match env.get(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("environment variable {key}"), format!("{v:?} is not a number"))),
    }
}

/// The first host of a Slurm node list: `gpu[03-04,07],cpu1` → `gpu03`.
pub fn first_node(list: &str) -> String {
    let list = list.trim();
    match list.find(['[', ',']) {
        Some(i) if list.as_bytes()[i] == b'[' => {
            let inner = &list[i + 1..list[i..].find(']').map_or(list.len(), |j| i + j)];
            let first = inner.split([',', '-']).next().unwrap_or("");
            format!("{}{first}", &list[..i])
        }
        Some(i) => list[..i].to_string(),
        None => list.to_string(),
    }
}

impl Launch {
    /// The job this process belongs to, from `env`; None for a single process (no variables,
    /// or a world of one).
    pub fn from_env(env: &BTreeMap<String, String>, timeout_s: u64) -> Result<Option<Launch>> {
        let port = parse::<u16>(env, "MASTER_PORT")?.unwrap_or(DEFAULT_PORT);
        let iface = env.get("GLOO_SOCKET_IFNAME").cloned().unwrap_or_default();
        let (rank, world, local, host, by) = if let Some(world) = parse::<usize>(env, "WORLD_SIZE")? {
            let rank = parse::<usize>(env, "RANK")?.ok_or_else(|| {
                Error::invalid("environment", "WORLD_SIZE is set but RANK is not (torchrun sets both)")
            })?;
            let local = parse::<usize>(env, "LOCAL_RANK")?.unwrap_or(rank);
            let host = env.get("MASTER_ADDR").cloned().unwrap_or_else(|| "127.0.0.1".into());
            (rank, world, local, host, "torchrun")
        } else if let Some(world) = parse::<usize>(env, "SLURM_NTASKS")? {
            let rank = parse::<usize>(env, "SLURM_PROCID")?.unwrap_or(0);
            let local = parse::<usize>(env, "SLURM_LOCALID")?.unwrap_or(0);
            let host = match env.get("MASTER_ADDR") {
                Some(h) => h.clone(),
                None => first_node(env.get("SLURM_JOB_NODELIST").or(env.get("SLURM_NODELIST")).ok_or_else(|| {
                    Error::invalid("environment", "under Slurm, set MASTER_ADDR or SLURM_JOB_NODELIST")
                })?),
            };
            (rank, world, local, host, "Slurm")
        } else {
            return Ok(None);
        };
        if world == 0 || rank >= world {
            return Err(Error::invalid(
                format!("{by} environment"),
                format!("rank {rank} is outside a world of {world}"),
            ));
        }
        if world == 1 {
            return Ok(None);
        }
        let agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        // torchrun's workers meet in the agent's store under the restart's prefix, as
        // `torch.distributed`'s env:// rendezvous does.
        let prefix = if agent_store {
            format!("/worker/attempt_{}", env.get("TORCHELASTIC_RESTART_COUNT").map_or("0", |s| s.as_str()))
        } else {
            String::new()
        };
        Ok(Some(Launch {
            rendezvous: Rendezvous { host, port, rank, world, agent_store, prefix, iface, timeout_s },
            local_rank: local,
            by,
        }))
    }

    /// From this process's environment.
    pub fn from_process(timeout_s: u64) -> Result<Option<Launch>> {
        Launch::from_env(&std::env::vars().collect(), timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "n0"),
            ("MASTER_PORT", "1234"),
        ]);
        let l = Launch::from_env(&e, 60).unwrap().unwrap();
        assert_eq!((l.rendezvous.rank, l.rendezvous.world, l.local_rank), (3, 8, 1));
        assert_eq!((l.rendezvous.host.as_str(), l.rendezvous.port, l.by), ("n0", 1234, "torchrun"));
        assert!(!l.rendezvous.agent_store && l.rendezvous.prefix.is_empty());
        let mut e = e;
        e.insert("TORCHELASTIC_USE_AGENT_STORE".into(), "True".into());
        e.insert("TORCHELASTIC_RESTART_COUNT".into(), "2".into());
        let l = Launch::from_env(&e, 60).unwrap().unwrap();
        assert!(l.rendezvous.agent_store);
        assert_eq!(l.rendezvous.prefix, "/worker/attempt_2");
    }

    #[test]
    fn slurm_variables_and_node_lists() {
        let e = env(&[
            ("SLURM_NTASKS", "16"),
            ("SLURM_PROCID", "9"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[03-04]"),
        ]);
        let l = Launch::from_env(&e, 60).unwrap().unwrap();
        assert_eq!((l.rendezvous.rank, l.rendezvous.world, l.local_rank), (9, 16, 1));
        assert_eq!((l.rendezvous.host.as_str(), l.rendezvous.port, l.by), ("gpu03", DEFAULT_PORT, "Slurm"));
        assert_eq!(first_node("a1,b2"), "a1");
        assert_eq!(first_node("node[007,9-12],x"), "node007");
        assert_eq!(first_node("solo"), "solo");
    }

    #[test]
    fn single_process_and_bad_values() {
        assert_eq!(Launch::from_env(&env(&[]), 60).unwrap(), None);
        assert_eq!(Launch::from_env(&env(&[("RANK", "0"), ("WORLD_SIZE", "1")]), 60).unwrap(), None);
        let e = Launch::from_env(&env(&[("RANK", "4"), ("WORLD_SIZE", "2")]), 60).unwrap_err().to_string();
        assert!(e.contains("rank 4 is outside a world of 2"), "{e}");
        let e = Launch::from_env(&env(&[("WORLD_SIZE", "two"), ("RANK", "0")]), 60).unwrap_err().to_string();
        assert!(e.contains("WORLD_SIZE") && e.contains("\"two\""), "{e}");
        let e = Launch::from_env(&env(&[("WORLD_SIZE", "2")]), 60).unwrap_err().to_string();
        assert!(e.contains("RANK is not"), "{e}");
    }
}
