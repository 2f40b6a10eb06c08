//! The host allocator under libtorch's CPU tensors. A training step frees and re-allocates the
//! same few-MiB activations every step; glibc's defaults then hand the top of the heap back to
//! the kernel after each step (dynamic trim threshold) and fault the pages in again, zeroed,
//! on the next (2–5% of a `tiny` step in `perf`: `clear_page`, page faults). Fixing the mmap
//! threshold at its maximum (32 MiB) keeps such blocks in the heap, and a high trim threshold
//! keeps the heap's top: the step reuses warm memory, as PyTorch's caching allocators do on
//! GPUs. Measured on the `tiny` bench: 171 → 162 ms per step. Either setting alone is worse
//! (a fixed trim threshold alone turns off the dynamic mmap threshold: 341 ms).

use std::sync::Once;

static TUNED: Once = Once::new();

/// Tunes glibc's malloc once per process (no-op elsewhere); `LIGHTGEN_DEFAULT_MALLOC=1` keeps
/// the defaults, and `MALLOC_*_` variables set by the user win.
pub fn tune() {
    TUNED.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let user_set = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LIGHTGEN_DEFAULT_MALLOC"]
                .iter()
                .any(|v| std::env::var_os(v).is_some());
            if !user_set {
                // SAFETY: mallopt only changes malloc's thresholds; it is called before the
                // trainer allocates, and glibc serialises it with allocations.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                    libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                }
            }
        }
    });
}
