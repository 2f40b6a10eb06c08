//! `lightgen train --nproc N`: N local ranks of this same binary, started as torchrun starts
//! workers (its variables set, loopback rendezvous on a free port). When one rank fails the
//! others are stopped, so a job never hangs on a dead peer.

use std::ffi::OsString;
use std::process::{Child, Command};
use std::time::Duration;

use crate::error::{Error, Result};

/// A free TCP port on loopback for the rendezvous (rank 0's TCPStore binds it next).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::invalid("--nproc", format!("no free loopback port for the rendezvous: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::invalid("--nproc", e.to_string()))?.port())
}

/// Runs `args` (this binary's arguments without `--nproc`) as `nproc` ranks and waits for all.
pub fn run_local(nproc: usize, args: &[OsString]) -> Result<()> {
    let exe =
        std::env::current_exe().map_err(|e| Error::invalid("--nproc", format!("cannot find this binary: {e}")))?;
    let port = std::env::var("MASTER_PORT").ok().and_then(|p| p.parse().ok()).map_or_else(free_port, Ok)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / nproc).max(1);
    let mut children: Vec<(usize, Child)> = Vec::new();
    for rank in 0..nproc {
        let mut c = Command::new(&exe);
        c.args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE");
        if std::env::var_os("GLOO_SOCKET_IFNAME").is_none() {
            c.env("GLOO_SOCKET_IFNAME", "lo");
        }
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            // The cores shared out, as torchrun does (it sets 1): N ranks of all-core thread
            // pools on one machine would fight over the cores.
            c.env("OMP_NUM_THREADS", threads.to_string());
        }
        if rank > 0 {
            // Rank 0 prints the summary; the others speak only when they fail (stderr).
            c.stdout(std::process::Stdio::null());
        }
        match c.spawn() {
            Ok(ch) => children.push((rank, ch)),
            Err(e) => {
                stop(&mut children);
                return Err(Error::invalid("--nproc", format!("could not start rank {rank}: {e}")));
            }
        }
    }
    let mut failed: Option<String> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (rank, _) = children.remove(i);
                    if !status.success() && failed.is_none() {
                        failed = Some(format!("rank {rank} of {nproc} {status}"));
                        stop(&mut children);
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    failed.get_or_insert(format!("waiting for rank {}: {e}", children[i].0));
                    stop(&mut children);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match failed {
        Some(m) => Err(Error::invalid("--nproc", format!("{m}; the other ranks were stopped"))),
        None => Ok(()),
    }
}

fn stop(children: &mut Vec<(usize, Child)>) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.clear();
}
