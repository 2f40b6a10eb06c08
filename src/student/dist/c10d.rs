//! A process group of libtorch's c10d (the engine under `torch.distributed`), through the C ABI
//! in `c10d.cpp`: a TCPStore rendezvous and Gloo collectives. Gloo runs on host tensors; the
//! trainer stages CUDA gradients through one flat host buffer.

use std::ffi::{c_char, c_int, c_long, c_void, CString};

use tch::Tensor;

use crate::error::{Error, Result};
use crate::student::ffi::{self, ERR_LEN};

extern "C" {
    fn lg_c10d_init(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        agent_store: c_int,
        prefix: *const c_char,
        iface: *const c_char,
        timeout_ms: c_long,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn lg_c10d_allreduce_sum(g: *mut c_void, ts: *mut *mut c_void, n: usize, err: *mut c_char, len: usize) -> c_int;
    fn lg_c10d_broadcast(
        g: *mut c_void,
        ts: *mut *mut c_void,
        n: usize,
        root: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn lg_c10d_barrier(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn lg_c10d_free(g: *mut c_void);
}

/// Where and how to meet the other ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendezvous {
    pub host: String,
    pub port: u16,
    pub rank: usize,
    pub world: usize,
    /// torchrun's elastic agent already serves the store at host:port (keys under `prefix`).
    pub agent_store: bool,
    pub prefix: String,
    /// The network interface Gloo binds (`GLOO_SOCKET_IFNAME`); empty = the hostname's address.
    pub iface: String,
    /// How long a collective (and the rendezvous) may wait for a peer before failing.
    pub timeout_s: u64,
}

/// A joined Gloo process group.
pub struct Group {
    raw: *mut c_void,
    pub rank: usize,
    pub world: usize,
}

// The group is used from one thread at a time (the training loop); c10d's objects are safe to
// move between threads.
unsafe impl Send for Group {}

fn cstr(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid("distributed", format!("{what} {s:?} holds a NUL byte")))
}

impl Group {
    /// Joins the group; blocks until all `world` ranks have arrived or the timeout passes.
    pub fn join(r: &Rendezvous) -> Result<Group> {
        let (host, prefix, iface) =
            (cstr(&r.host, "MASTER_ADDR")?, cstr(&r.prefix, "prefix")?, cstr(&r.iface, "GLOO_SOCKET_IFNAME")?);
        // SAFETY: every pointer is valid for the call; the shim copies the strings it keeps.
        let raw = ffi::call(
            |err| unsafe {
                lg_c10d_init(
                    host.as_ptr(),
                    r.port as c_int,
                    r.rank as c_int,
                    r.world as c_int,
                    r.agent_store as c_int,
                    prefix.as_ptr(),
                    iface.as_ptr(),
                    (r.timeout_s * 1000) as c_long,
                    err,
                    ERR_LEN,
                )
            },
            |raw| raw.is_null(),
        )
        .map_err(|m| {
            Error::invalid(
                format!("distributed rendezvous at {}:{} (rank {} of {})", r.host, r.port, r.rank, r.world),
                m,
            )
        })?;
        Ok(Group { raw, rank: r.rank, world: r.world })
    }

    fn call(&self, what: &str, f: impl FnOnce(*mut c_char) -> c_int) -> Result<()> {
        ffi::status(f).map_err(|m| {
            Error::invalid(
                format!("distributed {what} (rank {} of {})", self.rank, self.world),
                format!("{m}; another rank probably failed or stopped (see its output)"),
            )
        })
    }

    /// Sums host tensors in place across ranks (one collective for all of them).
    pub fn all_reduce_sum(&self, ts: &[&Tensor]) -> Result<()> {
        let mut ptrs = ffi::handles(ts);
        // SAFETY: the tensors outlive the call; the shim only reads the handles.
        self.call("all-reduce", |e| unsafe {
            lg_c10d_allreduce_sum(self.raw, ptrs.as_mut_ptr(), ptrs.len(), e, ERR_LEN)
        })
    }

    /// Overwrites every rank's tensors with rank `root`'s.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        let mut ptrs = ffi::handles(ts);
        // SAFETY: as above.
        self.call("broadcast", |e| unsafe {
            lg_c10d_broadcast(self.raw, ptrs.as_mut_ptr(), ptrs.len(), root as c_int, e, ERR_LEN)
        })
    }

    /// Waits until every rank has reached this point.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: `raw` is a live group.
        self.call("barrier", |e| unsafe { lg_c10d_barrier(self.raw, e, ERR_LEN) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `lg_c10d_init` and is freed once.
        unsafe { lg_c10d_free(self.raw) }
    }
}
