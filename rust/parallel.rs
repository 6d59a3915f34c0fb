//! Thread control: `threads=` per call or `RANKFUNNEL_NUM_THREADS`, one cached rayon pool per size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// Threads a call uses when it does not say: `RANKFUNNEL_NUM_THREADS`, else every core.
pub fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("RANKFUNNEL_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// The thread count a call runs with: `threads` when given (>= 1), else [`default_threads`].
pub fn resolve(threads: Option<usize>) -> usize {
    threads.filter(|&t| t > 0).unwrap_or_else(default_threads)
}

fn pool(threads: usize) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("rankfunnel-{i}"))
                    .build()
                    .expect("failed to start a thread pool"),
            )
        })
        .clone()
}

/// Run `f` on a pool of `threads` workers, so rayon calls inside use that many.
pub fn install<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    pool(threads.max(1)).install(f)
}
