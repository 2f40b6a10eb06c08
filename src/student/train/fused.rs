//! libtorch's fused optimizer kernels through the C ABI in `fused.cpp` (tch binds no
//! `_fused_*` or `_foreach_*` op): one call updates every parameter, where a loop over them
//! costs a dozen dispatched ops per tensor.

use std::ffi::{c_char, c_int, c_void};

use tch::Tensor;

use crate::error::{Error, Result};
use crate::student::ffi::{self, handles, ERR_LEN};

extern "C" {
    fn lg_fused_adamw(
        params: *mut *mut c_void,
        grads: *mut *mut c_void,
        m: *mut *mut c_void,
        v: *mut *mut c_void,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        step: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn lg_clip_grad_norm(
        grads: *mut *mut c_void,
        n: usize,
        clip: f64,
        norm: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn lg_ema_update(
        ema: *mut *mut c_void,
        params: *mut *mut c_void,
        n: usize,
        rate: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

fn call(what: &str, f: impl FnOnce(*mut c_char) -> c_int) -> Result<()> {
    ffi::status(f).map_err(|m| Error::invalid(what, m))
}

/// The hyper-parameters of one AdamW update.
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    /// The update's number, from 1 (bias correction).
    pub step: u64,
}

/// One AdamW update of `params` in place with their gradients and moments (all the same
/// length, each a tensor of the parameter's shape on its device).
pub fn adamw(params: &[&Tensor], grads: &[&Tensor], m: &[&Tensor], v: &[&Tensor], h: &AdamWStep) -> Result<()> {
    let n = params.len();
    assert!(grads.len() == n && m.len() == n && v.len() == n, "one gradient and two moments per parameter");
    let (mut p, mut g, mut m, mut v) = (handles(params), handles(grads), handles(m), handles(v));
    // SAFETY: the tensors outlive the call; the shim updates them in place through the handles.
    call("fused AdamW", |e| unsafe {
        lg_fused_adamw(
            p.as_mut_ptr(),
            g.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            n,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            h.step as f64,
            e,
            ERR_LEN,
        )
    })
}

/// The global L2 norm of `grads` as a device scalar; when `clip` > 0 they are scaled in place
/// to a norm of at most `clip` (`clip_grad_norm_`).
pub fn clip_grad_norm(grads: &[&Tensor], clip: f64) -> Result<Tensor> {
    let mut g = handles(grads);
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: as above; on success the shim hands over a new tensor, which tch then owns.
    call("gradient clipping", |e| unsafe { lg_clip_grad_norm(g.as_mut_ptr(), g.len(), clip, &mut out, e, ERR_LEN) })?;
    // SAFETY: `out` is a heap `at::Tensor*` made by the shim, as tch's own C API returns them.
    Ok(unsafe { Tensor::from_ptr(out as *mut _) })
}

/// ema ← ema · rate + param · (1 − rate), in place.
pub fn ema_update(ema: &[&Tensor], params: &[&Tensor], rate: f64) -> Result<()> {
    assert_eq!(ema.len(), params.len(), "one EMA tensor per parameter");
    let (mut e, mut p) = (handles(ema), handles(params));
    // SAFETY: as above.
    call("EMA update", |err| unsafe { lg_ema_update(e.as_mut_ptr(), p.as_mut_ptr(), e.len(), rate, err, ERR_LEN) })
}
