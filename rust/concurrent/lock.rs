//! [`Locked`]: the locks, and how a thread waits for them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::index::{IdIndex, Index};
use crate::kernels::topk::Results;
use crate::util::error::Result;

/// A shared guard of a [`Locked`] index: searches and other reads hold one.
pub type ReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;

/// An index that threads search while one thread at a time changes it (see the
/// [module docs](crate::concurrent)). The locks survive a panic.
///
/// Waiting for the lock, readers and writers alike first yield their core in a loop for up to
/// [`SPIN`], and only then park: write sections are kept well under a millisecond, while waking
/// a parked thread can take milliseconds on a virtual machine (a halted vCPU), and a parked
/// writer bars new searches until it is awake. A writer lets the searches that are waiting go
/// first before each section, so a search waits out at most about one section; a section ends
/// with a fair unlock (parking_lot's task-fair lock), which hands the lock to parked searches.
/// (Without these a writer takes the lock back at once, section after section, and a search
/// can wait out the whole batch.) Taking the edit lock before waiting for the write lock also
/// keeps a second writer from queueing on the write lock while the first one holds the read
/// lock, which would stall every new search behind it.
pub struct Locked<T> {
    data: parking_lot::RwLock<T>,
    edit: parking_lot::Mutex<()>,
    /// Readers spinning for the lock (see [`Locked::read`]).
    waiting: AtomicUsize,
    /// Write sections run so far (see [`Locked::sections`]).
    sections: AtomicU64,
    /// The index's vector dimension, fixed at creation (0 for BM25), read without the lock.
    dim: usize,
}

/// How long [`Locked::read`] and a write section yield in a loop for the lock before they park
/// (write sections are kept well under this).
pub const SPIN: Duration = Duration::from_millis(2);

impl<T: IdIndex> Locked<T> {
    /// `index` behind the locks.
    pub fn new(index: T) -> Self {
        Locked {
            dim: index.dim(),
            data: parking_lot::RwLock::new(index),
            edit: parking_lot::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            sections: AtomicU64::new(0),
        }
    }

    /// The index's vector dimension, without taking a lock (it never changes).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The index, the locks gone.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// A shared guard: for reads that need no check of a mapped file (counts, settings).
    pub fn read(&self) -> ReadGuard<'_, T> {
        if let Some(g) = self.data.try_read() {
            return g;
        }
        self.waiting.fetch_add(1, Relaxed);
        let g = spin_then(|| self.data.try_read(), || self.data.read());
        self.waiting.fetch_sub(1, Relaxed);
        g
    }

    /// A shared guard, after checking that the file the index is mapped from has not been
    /// truncated or modified (see [`IdIndex::check_mapping`]): for calls that read the data.
    pub fn checked(&self) -> Result<ReadGuard<'_, T>> {
        let g = self.read();
        g.check_mapping()?;
        Ok(g)
    }

    /// Runs `f` with the index to itself (the edit lock, then the write lock): for one-off
    /// changes that cannot be split into sections, such as training.
    pub fn exclusive<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _e = self.edit.lock();
        let r = f(&mut self.data.write());
        self.sections.fetch_add(1, Relaxed);
        r
    }

    /// Write sections run so far: a search that took the read lock after `a` and before `b`
    /// sections waited out `b - a` of them.
    pub fn sections(&self) -> u64 {
        self.sections.load(Relaxed)
    }

    /// The edit lock: held for the whole of a call that changes the index or saves it.
    pub(crate) fn edit(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.edit.lock()
    }

    /// One short write section of a longer change: lets the searches waiting for the lock go
    /// first, then runs `f` under the write lock, then hands the lock to parked searches, if
    /// any, before the caller can take it again. The caller holds the edit lock.
    pub(crate) fn section<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let start = Instant::now();
        while self.waiting.load(Relaxed) > 0 && start.elapsed() < SPIN {
            std::thread::yield_now();
        }
        let mut g = self
            .data
            .try_write()
            .unwrap_or_else(|| spin_then(|| self.data.try_write(), || self.data.write()));
        let r = f(&mut g);
        self.sections.fetch_add(1, Relaxed);
        parking_lot::RwLockWriteGuard::unlock_fair(g);
        r
    }
}

impl<T: Index> Locked<T> {
    /// [`Index::search`] under the shared lock, after checking a mapped file.
    pub fn search(
        &self,
        queries: T::Queries<'_>,
        k: usize,
        params: &T::Params<'_>,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        self.checked()?.search(queries, k, params, allow, threads)
    }

    /// [`Index::get`] under the shared lock, after checking a mapped file.
    pub fn get(&self, ids: &[i64]) -> Result<Vec<f32>> {
        self.checked()?.get(ids)
    }
}

/// After a `try_lock` that failed: yield the core and `try_lock` again until it succeeds, for up
/// to [`SPIN`]; then `lock` (which parks).
fn spin_then<G>(try_lock: impl Fn() -> Option<G>, lock: impl FnOnce() -> G) -> G {
    let start = Instant::now();
    loop {
        std::thread::yield_now();
        if let Some(g) = try_lock() {
            return g;
        }
        if start.elapsed() >= SPIN {
            return lock();
        }
    }
}
