//! Thread control: `threads=` per call or `RANKFUNNEL_NUM_THREADS`, one cached rayon pool per size.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, OnceLock};

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
            .min(MAX_THREADS)
    })
}

/// The most threads one call runs with: a larger `threads=` (or `RANKFUNNEL_NUM_THREADS`) is
/// clamped to it, since every distinct count keeps a pool of that many threads alive.
pub const MAX_THREADS: usize = 256;

/// The thread count a call runs with: `threads` when given (>= 1), else [`default_threads`];
/// at most [`MAX_THREADS`].
pub fn resolve(threads: Option<usize>) -> usize {
    threads.filter(|&t| t > 0).unwrap_or_else(default_threads).min(MAX_THREADS)
}

/// The cached pools, behind a lock that survives `fork`.
///
/// A forked child has only the thread that called `fork`: the workers of every pool the parent
/// started are gone, so a call that waited on them would hang forever (a `multiprocessing.Pool`,
/// `gunicorn --preload` or Celery prefork after any multithreaded call). The pools therefore
/// remember the process that started them, and a child starts its own on first use, leaving the
/// parent's unreachable ones behind (they cannot be shut down: their threads do not exist here).
/// The lock word holds the id of the process whose thread holds it, so a child whose parent
/// forked while one of its threads held the lock takes it over instead of waiting for a thread
/// that does not exist in the child.
struct Pools {
    holder: AtomicU32,
    cell: UnsafeCell<(u32, HashMap<usize, Arc<ThreadPool>>)>,
}

// SAFETY: `cell` is only reached through `Pools::with`, under the lock word `holder`.
unsafe impl Sync for Pools {}

impl Pools {
    fn new() -> Self {
        Pools { holder: AtomicU32::new(0), cell: UnsafeCell::new((0, HashMap::new())) }
    }

    /// Runs `f` on this process's pools, under the lock.
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<usize, Arc<ThreadPool>>) -> R) -> R {
        let me = std::process::id();
        loop {
            match self.holder.compare_exchange(0, me, Acquire, Relaxed) {
                Ok(_) => break,
                // Held in the parent at the fork: no thread of this process holds it.
                Err(h) if h != me && self.holder.compare_exchange(h, me, Acquire, Relaxed).is_ok() => break,
                Err(_) => std::thread::yield_now(),
            }
        }
        // Released on the way out, a panic (no thread could be started) included.
        struct Unlock<'a>(&'a AtomicU32);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                self.0.store(0, Release);
            }
        }
        let _unlock = Unlock(&self.holder);
        // SAFETY: the lock is held (above) until `_unlock` drops, after the last use of `pools`.
        let (owner, pools) = unsafe { &mut *self.cell.get() };
        if *owner != me {
            // Inherited from the parent: its workers are not in this process.
            std::mem::forget(std::mem::take(pools));
            *owner = me;
        }
        f(pools)
    }
}

fn pool(threads: usize) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(Pools::new).with(|pools| {
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
    })
}

/// Run `f` on a pool of `threads` workers, so rayon calls inside use that many.
pub fn install<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    pool(threads.clamp(1, MAX_THREADS)).install(f)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use rayon::prelude::*;

    use super::*;

    fn sum(threads: usize) -> u64 {
        install(threads, || (0..10_000u64).into_par_iter().sum())
    }

    /// Forks after the pools have started, runs `child` in the child and returns its exit code
    /// (or fails if it hangs).
    fn in_child(child: impl FnOnce() -> bool) -> i32 {
        // SAFETY: the child only runs `child` (rankfunnel code) and then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = child();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let start = std::time::Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: waits for the child started above.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                return libc::WEXITSTATUS(status);
            }
            if start.elapsed() > std::time::Duration::from_secs(30) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hung on the parent's thread pool");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_forked_child_starts_its_own_pools() {
        let want: u64 = (0..10_000u64).sum();
        assert_eq!(sum(2), want);
        assert_eq!(sum(3), want);
        assert_eq!(in_child(|| sum(2) == want && sum(3) == want && sum(1) == want), 0);
        // The parent's pools still work after the fork.
        assert_eq!(sum(2), want);
    }

    #[test]
    fn a_lock_held_in_the_parent_is_taken_over_in_the_child() {
        let pools = Pools::new();
        // As if another thread held the lock at the fork: the word names the parent.
        pools.holder.store(std::process::id(), Release);
        let code = in_child(|| pools.with(|p| p.is_empty()) && pools.holder.load(Acquire) == 0);
        assert_eq!(code, 0);
    }

    #[test]
    fn thread_counts_are_clamped() {
        assert_eq!(resolve(Some(1_000_000)), MAX_THREADS);
        assert!(default_threads() <= MAX_THREADS);
        assert_eq!(resolve(Some(0)), default_threads());
    }
}
