//! What the Rust side of every C ABI shim over libtorch shares (`shim.h` is the C++ side):
//! tensor handles for the shim, and the error buffer its entry points write a C++ exception's
//! message into.

use std::ffi::{c_char, c_int, c_void};

use tch::Tensor;

/// Bytes of the error buffer passed to every shim entry point.
pub const ERR_LEN: usize = 4096;

/// tch tensors as the `at::Tensor*` handles the shims take. The tensors must outlive the call.
pub fn handles(ts: &[&Tensor]) -> Vec<*mut c_void> {
    ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// Calls `f` with an error buffer of [`ERR_LEN`] bytes; `Err(message)` when it fails, which
/// is when `failed` says so of its result (a non-zero status, a null handle).
pub fn call<T>(f: impl FnOnce(*mut c_char) -> T, failed: impl FnOnce(&T) -> bool) -> Result<T, String> {
    let mut err = vec![0u8; ERR_LEN];
    let out = f(err.as_mut_ptr() as *mut c_char);
    if failed(&out) {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        return Err(String::from_utf8_lossy(&err[..end]).trim().to_string());
    }
    Ok(out)
}

/// [`call`] for an entry point that returns 0 on success.
pub fn status(f: impl FnOnce(*mut c_char) -> c_int) -> Result<(), String> {
    call(f, |&rc| rc != 0).map(|_| ())
}
