//! Work across cores for the image stages: chunks handed out on demand, results in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `f` over `items` in chunks of `chunk` on `threads` workers (each with its own state
/// from `init`, e.g. a hasher) and returns the results in item order. `done` is called with
/// each chunk's size as it finishes (a progress bar's `inc`).
pub fn map_chunks<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    chunk: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &[T]) -> Vec<R> + Sync,
    done: impl Fn(u64) + Sync,
) -> Vec<R> {
    let chunk = chunk.max(1);
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, Vec<R>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut state = init();
                loop {
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    let lo = c * chunk;
                    if lo >= items.len() {
                        break;
                    }
                    let slice = &items[lo..(lo + chunk).min(items.len())];
                    let r = f(&mut state, slice);
                    done(slice.len() as u64);
                    out.lock().unwrap_or_else(|p| p.into_inner()).push((c, r));
                }
            });
        }
    });
    let mut parts = out.into_inner().unwrap_or_else(|p| p.into_inner());
    parts.sort_by_key(|(c, _)| *c);
    parts.into_iter().flat_map(|(_, v)| v).collect()
}

/// Worker threads: `requested`, or one per core when 0.
pub fn threads(requested: usize) -> usize {
    if requested == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        requested
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_item_order_whatever_the_threads() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [1, 2, 7] {
            let out = super::map_chunks(&items, threads, 13, || 0u32, |_, c| c.iter().map(|x| x * 2).collect(), |_| {});
            assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
    }
}
