//! The PyO3 binding: borrow numpy arrays, release the GIL, call the core, return numpy arrays.
//!
//! Inputs arrive already normalised by the Python layer (C-contiguous float32 / int64); this
//! module only checks shapes, and maps core errors to Python exceptions in [`to_py`]. The
//! methods every index class shares are written once, in [`index_class!`].

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

mod bm25;
mod flat;
mod hnsw;
mod ivf;
mod maxsim;
mod multivector;

use bm25::BM25Index;
use flat::FlatIndex;
use hnsw::HNSWIndex;
use ivf::IVFIndex;
use multivector::MultiVectorIndex;

use crate::format::storage::{IndexFile, Kind};
use crate::index::Index;
use crate::kernels::metric::Metric;
use crate::kernels::topk::Results;
use crate::util::error::Error;
use crate::{kernels::simd, util::parallel};

pyo3::import_exception!(rankfunnel.errors, RankfunnelError);
pyo3::import_exception!(rankfunnel.errors, UnknownIdError);
pyo3::import_exception!(rankfunnel.errors, CorruptFileError);
pyo3::import_exception!(rankfunnel.errors, UnsupportedVersionError);

/// Convert a core error into the matching Python exception (defined in `rankfunnel.errors`;
/// I/O errors become the usual `OSError` subclasses).
pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io(io) => PyErr::from(io),
        Error::InvalidArgument(_) => RankfunnelError::new_err(msg),
        Error::UnknownId(_) => UnknownIdError::new_err(msg),
        Error::CorruptFile(_) => CorruptFileError::new_err(msg),
        Error::UnsupportedVersion { .. } => UnsupportedVersionError::new_err(msg),
    }
}

/// A core index behind locks that survive a panic.
///
/// Searches share the read lock. A call that changes the index (add, remove, train) or must see
/// it unchanged from start to end (save) first takes the edit lock, for its whole length, so
/// such calls run one at a time; it then takes the write lock only for short sections (one
/// chunk of a batch, or the bookkeeping of an HNSW insert), so searches are never held up for
/// the length of a large add or remove. Taking the edit lock before waiting for the write lock
/// also keeps a second writer from queueing on the write lock while the first one holds the
/// read lock, which would stall every new search behind it.
///
/// Waiting for the lock, readers and writers alike first yield their core in a loop for up to
/// [`SPIN`], and only then park: write sections are kept well under a millisecond, while waking
/// a parked thread can take milliseconds on a virtual machine (a halted vCPU), and a parked
/// writer bars new searches until it is awake. A writer lets the searches that are waiting go
/// first before each section, so a search waits out at most about one section; a section ends
/// with a fair unlock (parking_lot's task-fair lock), which hands the lock to parked searches.
/// (Without these a writer takes the lock back at once, section after section, and a search
/// can wait out the whole batch.)
pub(crate) struct Locked<T> {
    data: parking_lot::RwLock<T>,
    edit: parking_lot::Mutex<()>,
    /// Readers spinning for the lock (see [`Locked::read`]).
    waiting: std::sync::atomic::AtomicUsize,
    /// The index's vector dimension, fixed at creation (0 for BM25), read without the lock.
    dim: usize,
}

impl<T> Locked<T> {
    pub(crate) fn new(v: T) -> Self {
        Locked {
            data: parking_lot::RwLock::new(v),
            edit: parking_lot::Mutex::new(()),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            dim: 0,
        }
    }
    /// The shared lock (see [`Locked`] for how it waits).
    pub(crate) fn read(&self) -> parking_lot::RwLockReadGuard<'_, T> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(g) = self.data.try_read() {
            return g;
        }
        self.waiting.fetch_add(1, Relaxed);
        let g = spin_then(|| self.data.try_read(), || self.data.read());
        self.waiting.fetch_sub(1, Relaxed);
        g
    }
    /// The write lock, for one-off changes (train, a new coarse quantizer).
    pub(crate) fn write(&self) -> parking_lot::RwLockWriteGuard<'_, T> {
        self.data.write()
    }
    /// One short write section of a longer change: lets the searches waiting for the lock go
    /// first, then runs `f` under the write lock, then hands the lock to parked searches, if
    /// any, before the caller can take it again.
    pub(crate) fn section<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let start = std::time::Instant::now();
        while self.waiting.load(std::sync::atomic::Ordering::Relaxed) > 0 && start.elapsed() < SPIN {
            std::thread::yield_now();
        }
        let mut g = self
            .data
            .try_write()
            .unwrap_or_else(|| spin_then(|| self.data.try_write(), || self.data.write()));
        let r = f(&mut g);
        parking_lot::RwLockWriteGuard::unlock_fair(g);
        r
    }
    /// The edit lock: held for the whole of a call that changes the index or saves it.
    pub(crate) fn edit(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.edit.lock()
    }
}

impl<T: Index> Locked<T> {
    /// An index behind the lock, its dimension kept aside for [`Locked::dim`].
    pub(crate) fn index(v: T) -> Self {
        let dim = v.dim();
        Locked { dim, ..Locked::new(v) }
    }
    /// The index's vector dimension, without taking the lock (it never changes).
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }
    /// A shared guard, after checking that the file the index is mapped from has not been
    /// truncated or modified (see [`Index::check_mapping`]): for calls that read the data.
    pub(crate) fn checked(&self) -> crate::Result<parking_lot::RwLockReadGuard<'_, T>> {
        let g = self.read();
        g.check_mapping()?;
        Ok(g)
    }
}

/// How long [`Locked::read`] and [`Locked::section`] yield in a loop for the lock before they
/// park (write sections are kept well under this).
const SPIN: std::time::Duration = std::time::Duration::from_millis(2);

/// After a `try_lock` that failed: yield the core and `try_lock` again until it succeeds, for up
/// to [`SPIN`]; then `lock` (which parks).
fn spin_then<G>(try_lock: impl Fn() -> Option<G>, lock: impl FnOnce() -> G) -> G {
    let start = std::time::Instant::now();
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

/// Declares a `#[pyclass]` named `$name` around the core index `$core` (any [`Index`]) and one
/// `#[pymethods]` block with the methods every index class has: the `dim`, `metric` and
/// `is_mapped` properties, `__len__`, `contains`, `ids`, `remove`, `memory_bytes`, `save` and
/// the static `load`, followed by the class's own methods (`$own`). It also gives the class
/// `wrap` (around a core index) and `from_file` (for [`load`]).
macro_rules! index_class {
    ($(#[$attr:meta])* $name:ident($core:ty) { $($own:tt)* }) => {
        $(#[$attr])*
        #[pyclass(frozen, module = "rankfunnel._core")]
        pub(crate) struct $name {
            inner: $crate::python::Locked<$core>,
        }

        impl $name {
            fn wrap(idx: $core) -> Self {
                $name { inner: $crate::python::Locked::index(idx) }
            }

            pub(crate) fn from_file(py: Python<'_>, f: &$crate::format::storage::IndexFile) -> PyResult<Self> {
                let idx = $crate::python::detached(py, || <$core as $crate::index::Index>::from_file(f))?;
                Ok(Self::wrap(idx))
            }
        }

        #[pymethods]
        impl $name {
            #[getter]
            fn dim(&self) -> usize {
                self.inner.dim()
            }

            #[getter]
            fn metric(&self) -> &'static str {
                $crate::index::Index::metric(&*self.inner.read()).name()
            }

            #[getter]
            fn is_mapped(&self) -> bool {
                $crate::index::Index::is_mapped(&*self.inner.read())
            }

            fn __len__(&self) -> usize {
                $crate::index::Index::len(&*self.inner.read())
            }

            fn contains(&self, id: i64) -> bool {
                $crate::index::Index::contains(&*self.inner.read(), id)
            }

            fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<i64>> {
                numpy::IntoPyArray::into_pyarray($crate::index::Index::ids(&*self.inner.read()), py)
            }

            fn remove(&self, py: Python<'_>, ids: numpy::PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
                let ids = $crate::python::slice1(&ids, "ids")?;
                $crate::python::detached(py, || $crate::python::remove_ids(&self.inner, ids))
            }

            fn memory_bytes(&self) -> usize {
                $crate::index::Index::memory_bytes(&*self.inner.read())
            }

            fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
                $crate::python::detached(py, || {
                    let _e = self.inner.edit();
                    $crate::index::Index::save(&*self.inner.checked()?, &path)
                })
            }

            #[staticmethod]
            #[pyo3(signature = (path, mmap=false))]
            fn load(py: Python<'_>, path: std::path::PathBuf, mmap: bool) -> PyResult<Self> {
                let idx = $crate::python::detached(py, || <$core as $crate::index::Index>::load(&path, mmap))?;
                Ok(Self::wrap(idx))
            }

            $($own)*
        }
    };
}
pub(crate) use index_class;

/// What [`add_chunked`] and [`remove_ids`] need of an index: every [`Index`], and the BM25 index.
pub(crate) trait Edit {
    /// See [`Index::assign_ids`].
    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> crate::Result<Vec<i64>>;
    /// See [`Index::remove`].
    fn remove(&mut self, ids: &[i64]) -> crate::Result<usize>;
    /// See [`Index::contains`].
    fn contains(&self, id: i64) -> bool;
    /// See [`Index::check_mapping`].
    fn check_mapping(&self) -> crate::Result<()>;
    /// See [`Index::remove_batch`].
    fn remove_batch(&self) -> usize {
        REMOVE_CHUNK
    }
    /// See [`Index::remove_concurrent`].
    fn remove_concurrent(&self, ids: &[i64]) -> Option<crate::Result<usize>> {
        let _ = ids;
        None
    }
}

impl<T: Index> Edit for T {
    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> crate::Result<Vec<i64>> {
        Index::assign_ids(self, n, ids)
    }
    fn remove(&mut self, ids: &[i64]) -> crate::Result<usize> {
        Index::remove(self, ids)
    }
    fn contains(&self, id: i64) -> bool {
        Index::contains(self, id)
    }
    fn check_mapping(&self) -> crate::Result<()> {
        Index::check_mapping(self)
    }
    fn remove_batch(&self) -> usize {
        Index::remove_batch(self)
    }
    fn remove_concurrent(&self, ids: &[i64]) -> Option<crate::Result<usize>> {
        Index::remove_concurrent(self, ids)
    }
}

impl Edit for crate::index::bm25::BM25Index {
    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> crate::Result<Vec<i64>> {
        crate::index::bm25::BM25Index::assign_ids(self, n, ids)
    }
    fn remove(&mut self, ids: &[i64]) -> crate::Result<usize> {
        crate::index::bm25::BM25Index::remove(self, ids)
    }
    fn contains(&self, id: i64) -> bool {
        crate::index::bm25::BM25Index::contains(self, id)
    }
    fn check_mapping(&self) -> crate::Result<()> {
        Ok(())
    }
}

/// Ids removed per write-lock section by [`remove_ids`], unless the index asks for fewer
/// ([`Edit::remove_batch`]).
const REMOVE_CHUNK: usize = 4096;

/// `remove` of every index class: check every id first (an unknown one fails the call before
/// anything is removed), then remove them in chunks of [`Edit::remove_batch`], each under the write
/// lock, so searches run between chunks; each one sees every id either present or removed. An
/// index that removes through a shared reference ([`Edit::remove_concurrent`]) takes only the
/// read lock, so searches never wait.
pub(crate) fn remove_ids<T: Edit>(inner: &Locked<T>, ids: &[i64]) -> crate::Result<usize> {
    let _e = inner.edit();
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let unique: Vec<i64> = ids.iter().copied().filter(|&id| seen.insert(id)).collect();
    {
        let g = inner.read();
        g.check_mapping()?;
        if let Some(&bad) = unique.iter().find(|&&id| !g.contains(id)) {
            return Err(Error::UnknownId(bad));
        }
    }
    let per = inner.read().remove_batch().max(1);
    let mut removed = 0;
    for chunk in unique.chunks(per) {
        let shared = {
            let g = inner.read();
            g.check_mapping()?;
            g.remove_concurrent(chunk)
        };
        removed += match shared {
            Some(r) => r?,
            None => inner.section(|g| g.check_mapping().and_then(|()| g.remove(chunk)))?,
        };
    }
    Ok(removed)
}

/// Adds `n` items under the edit lock in chunks of `per_chunk(&prepared)`, each chunk applied by `apply`
/// (given the index, what `prepare` returned, the chunk's item range and its ids) under the
/// write lock, so searches run between chunks and see a prefix of the batch, each item whole.
///
/// `prepare` runs first, under the read lock (searches go on): it checks the whole batch's data
/// and may do the batch's heavy work. The ids are checked and assigned next, before anything
/// changes, so the call stays all-or-nothing. Should a later chunk still fail,
/// the chunks already added are removed again before the error is returned.
pub(crate) fn add_chunked<T: Edit, P>(
    inner: &Locked<T>,
    n: usize,
    ids: Option<&[i64]>,
    per_chunk: impl FnOnce(&P) -> usize,
    prepare: impl FnOnce(&T) -> crate::Result<P>,
    apply: impl FnMut(&mut T, &mut P, std::ops::Range<usize>, &[i64]) -> crate::Result<Vec<i64>>,
) -> crate::Result<Vec<i64>> {
    add_chunked_then(inner, n, ids, per_chunk, prepare, apply, |_, all| Ok(all))
}

/// [`add_chunked`], then `finish` (given what `prepare` returned, after every chunk, and the ids)
/// still under the edit lock: an HNSW add links the staged chunks there, while searches run.
pub(crate) fn add_chunked_then<T: Edit, P>(
    inner: &Locked<T>,
    n: usize,
    ids: Option<&[i64]>,
    per_chunk: impl FnOnce(&P) -> usize,
    prepare: impl FnOnce(&T) -> crate::Result<P>,
    mut apply: impl FnMut(&mut T, &mut P, std::ops::Range<usize>, &[i64]) -> crate::Result<Vec<i64>>,
    finish: impl FnOnce(P, Vec<i64>) -> crate::Result<Vec<i64>>,
) -> crate::Result<Vec<i64>> {
    let _e = inner.edit();
    let (mut prep, all) = {
        let g = inner.read();
        g.check_mapping()?;
        (prepare(&g)?, g.assign_ids(n, ids)?)
    };
    if n == 0 {
        inner.section(|g| g.check_mapping().and_then(|()| apply(g, &mut prep, 0..0, &[])))?;
        return finish(prep, all);
    }
    let per_chunk = per_chunk(&prep).max(1);
    let mut start = 0;
    while start < n {
        let r = start..(start + per_chunk).min(n);
        let done = inner
            .section(|g| g.check_mapping().and_then(|()| apply(g, &mut prep, r.clone(), &all[r.clone()])));
        if let Err(e) = done {
            if start > 0 {
                // Best effort: the ids were just added, so removing them cannot be refused.
                let _ = inner.section(|g| g.remove(&all[..start]));
            }
            return Err(e);
        }
        start = r.end;
    }
    finish(prep, all)
}

/// Rows per chunk of an add ([`AddArgs::per_chunk`]): about this many floats per write-lock
/// section (a row in block layout writes one cache line per dimension: 192 rows of 128
/// dimensions take about 0.3 ms). Searches wait out at most about one section, and a writer
/// lets a waiting search go first before each one (see [`Locked`]), so smaller sections cost
/// the add throughput while searches run.
pub(crate) const ADD_CHUNK_FLOATS: usize = 3 << 13;

/// Rows of `vectors` checked against the index width, with the optional ids and thread count
/// of an `add` call.
pub(crate) struct AddArgs<'a> {
    pub v: &'a [f32],
    pub ids: Option<&'a [i64]>,
    pub n: usize,
    pub d: usize,
    pub threads: usize,
}

impl<'a> AddArgs<'a> {
    pub(crate) fn new<T: Index>(
        inner: &Locked<T>,
        vectors: &'a PyReadonlyArray2<'_, f32>,
        ids: &'a Option<PyReadonlyArray1<'_, i64>>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let d = inner.dim();
        check_dim(vectors.shape()[1], d, "vectors")?;
        Ok(AddArgs {
            v: slice(vectors, "vectors")?,
            ids: optional(ids, "ids")?,
            n: vectors.shape()[0],
            d,
            threads: parallel::resolve(threads),
        })
    }

    /// Rows `r` of the batch.
    pub(crate) fn rows(&self, r: std::ops::Range<usize>) -> &'a [f32] {
        &self.v[r.start * self.d..r.end * self.d]
    }

    /// Rows per write-lock section: about [`ADD_CHUNK_FLOATS`] values.
    pub(crate) fn per_chunk(&self) -> usize {
        (ADD_CHUNK_FLOATS / self.d.max(1)).max(1)
    }
}

/// `get` of an index of vectors: the stored vectors of `ids` as an `(n, dim)` array.
pub(crate) fn get_rows<'py, T: Index + Send + Sync>(
    py: Python<'py>,
    inner: &Locked<T>,
    ids: PyReadonlyArray1<'py, i64>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let ids = slice1(&ids, "ids")?;
    let d = inner.dim();
    let v = detached(py, || inner.checked()?.get(ids))?;
    v.into_pyarray(py).reshape([ids.len(), d])
}

/// Borrow an optional 1-d array (ids, an allow-list) as a slice.
pub(crate) fn optional<'a, T: numpy::Element>(
    a: &'a Option<PyReadonlyArray1<'_, T>>,
    what: &str,
) -> PyResult<Option<&'a [T]>> {
    a.as_ref().map(|a| slice1(a, what)).transpose()
}

/// Error unless `got` (the width of `what`) equals the index dimension `dim`.
pub(crate) fn check_dim(got: usize, dim: usize, what: &str) -> PyResult<()> {
    if got != dim {
        return Err(to_py(Error::InvalidArgument(format!(
            "dimension mismatch: {what} have {got} dimensions, the index has {dim}"
        ))));
    }
    Ok(())
}

/// Run `f` with the GIL released and map its error; a panic inside `f` (a bug, or a mapped
/// file changed under the index) becomes a `RankfunnelError`, never a `PanicException`.
///
/// Every call into the core that can fail goes through here, so this is the one place where
/// panics are caught. The index locks survive a panic (see [`Locked`]).
pub(crate) fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    let caught = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    match caught {
        Ok(r) => r.map_err(to_py),
        Err(payload) => Err(RankfunnelError::new_err(format!(
            "internal error: {} (please report this bug)",
            panic_message(payload.as_ref())
        ))),
    }
}

/// The text of a caught panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

pub(crate) fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
}

pub(crate) fn slice1<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be contiguous")))
}

pub(crate) fn metric(name: &str) -> PyResult<Metric> {
    Metric::parse(name).map_err(to_py)
}

pub(crate) fn results<'py>(
    py: Python<'py>,
    r: Results,
    nq: usize,
    k: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let scores = r.scores.into_pyarray(py).reshape([nq, k])?;
    let ids = r.ids.into_pyarray(py).reshape([nq, k])?;
    PyTuple::new(py, [scores.into_any(), ids.into_any()])
}

pub(crate) fn check_k(k: i64) -> PyResult<usize> {
    if k <= 0 {
        return Err(to_py(Error::InvalidArgument(format!("k must be at least 1, got {k}"))));
    }
    Ok(k as usize)
}

/// The SIMD level in use.
#[pyfunction]
fn simd_level() -> PyResult<&'static str> {
    if let Some(e) = simd::env_error() {
        return Err(to_py(Error::InvalidArgument(e)));
    }
    Ok(simd::level().name())
}

/// The message for a `RANKFUNNEL_HUGE_PAGES` value that was not understood, if any.
#[pyfunction]
fn _huge_pages_env_error() -> Option<String> {
    crate::util::pages::env_error()
}

/// Every SIMD level this CPU supports, scalar first.
#[pyfunction]
fn simd_levels() -> Vec<&'static str> {
    simd::available().iter().map(|l| l.name()).collect()
}

/// Force a SIMD level for the whole process (testing aid).
#[pyfunction]
fn _force_simd_level(name: &str) -> PyResult<()> {
    simd::Level::parse(name).and_then(simd::force_level).map_err(to_py)
}

/// Allow or forbid the VNNI u8 kernels (testing aid); returns the previous setting.
#[pyfunction]
fn _allow_vnni(allowed: bool) -> bool {
    simd::allow_vnni(allowed)
}

/// Whether the int8 IVF scan uses VNNI instructions at the current level.
#[pyfunction]
fn _vnni_in_use() -> bool {
    simd::vnni_in_use()
}

/// Panic inside the core (testing aid): proves a panic reaches Python as a `RankfunnelError`.
#[pyfunction]
fn _panic(py: Python<'_>) -> PyResult<()> {
    detached(py, || -> crate::Result<()> { panic!("a deliberate panic (testing aid)") })
}

/// Threads used when a call does not pass `threads`.
#[pyfunction]
fn default_threads() -> usize {
    parallel::default_threads()
}

/// Every accepted metric name mapped to its canonical name (the core's one table).
#[pyfunction]
fn metric_names() -> Vec<(&'static str, &'static str)> {
    Metric::NAMES.iter().map(|&(n, m)| (n, m.name())).collect()
}

/// Exact top-k of `queries` (nq, d) against `corpus` (n, d).
#[pyfunction]
#[pyo3(signature = (queries, corpus, k, metric_name, threads=None))]
fn topk<'py>(
    py: Python<'py>,
    queries: PyReadonlyArray2<'py, f32>,
    corpus: PyReadonlyArray2<'py, f32>,
    k: i64,
    metric_name: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let k = check_k(k)?;
    let m = metric(metric_name)?;
    let (nq, d) = (queries.shape()[0], queries.shape()[1]);
    if corpus.shape()[1] != d {
        return Err(to_py(Error::InvalidArgument(format!(
            "dimension mismatch: queries have {d} dimensions, corpus has {}",
            corpus.shape()[1]
        ))));
    }
    if d == 0 {
        return Err(to_py(Error::InvalidArgument("vectors must have at least 1 dimension".into())));
    }
    let q = slice(&queries, "queries")?;
    let c = slice(&corpus, "corpus")?;
    let t = parallel::resolve(threads);
    let r = detached(py, || crate::kernels::topk::topk(q, c, d, m, k, t))?;
    results(py, r, nq, k)
}

/// k-means: returns (centroids (k, d), assignments (n,), inertia).
#[pyfunction]
#[pyo3(signature = (data, k, iters, seed, init, spherical, threads=None))]
#[allow(clippy::too_many_arguments)]
fn kmeans<'py>(
    py: Python<'py>,
    data: PyReadonlyArray2<'py, f32>,
    k: i64,
    iters: usize,
    seed: u64,
    init: &Bound<'py, PyAny>,
    spherical: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let k = check_k(k)?;
    let d = data.shape()[1];
    let x = slice(&data, "data")?;
    let init_arr: Option<PyReadonlyArray2<'py, f32>> = init.extract().ok();
    let init_name: Option<String> = init.extract().ok();
    let centroids = match &init_arr {
        Some(a) => Some(slice(a, "init")?),
        None => None,
    };
    let how = match (centroids, init_name.as_deref()) {
        (Some(c), _) => crate::kernels::kmeans::Init::Centroids(c),
        (None, Some("k-means++")) => crate::kernels::kmeans::Init::KMeansPlusPlus,
        (None, Some("random")) => crate::kernels::kmeans::Init::Random,
        _ => {
            return Err(to_py(Error::InvalidArgument(
                "init must be \"k-means++\", \"random\" or a (k, d) float32 array".into(),
            )))
        }
    };
    let t = parallel::resolve(threads);
    let r = detached(py, || crate::kernels::kmeans::kmeans(x, d, k, iters, seed, how, spherical, t))?;
    let c = r.centroids.into_pyarray(py).reshape([k, d])?;
    let a: Vec<i64> = r.assignments.iter().map(|&v| v as i64).collect();
    PyTuple::new(py, [c.into_any(), a.into_pyarray(py).into_any(), r.inertia.into_pyobject(py)?.into_any()])
}

/// The kind of index a file holds ("FlatIndex", ...), after verifying it.
#[pyfunction]
fn file_kind(py: Python<'_>, path: PathBuf) -> PyResult<&'static str> {
    let f = detached(py, || IndexFile::open(&path, true))?;
    Ok(f.header().kind.name())
}

/// Load any index file.
#[pyfunction]
#[pyo3(signature = (path, mmap=false))]
fn load(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Py<PyAny>> {
    let f = detached(py, || IndexFile::open(&path, mmap))?;
    match f.header().kind {
        Kind::Flat => Ok(Py::new(py, FlatIndex::from_file(py, &f)?)?.into_any()),
        Kind::Ivf => Ok(Py::new(py, IVFIndex::from_file(py, &f)?)?.into_any()),
        Kind::Hnsw => Ok(Py::new(py, HNSWIndex::from_file(py, &f)?)?.into_any()),
        Kind::MultiVector => Ok(Py::new(py, MultiVectorIndex::from_file(py, &f)?)?.into_any()),
        Kind::Bm25 => Ok(Py::new(py, BM25Index::from_file(py, &f)?)?.into_any()),
    }
}

/// The compiled core of rankfunnel.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_levels, m)?)?;
    m.add_function(wrap_pyfunction!(_huge_pages_env_error, m)?)?;
    m.add_function(wrap_pyfunction!(_force_simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(_allow_vnni, m)?)?;
    m.add_function(wrap_pyfunction!(_vnni_in_use, m)?)?;
    m.add_function(wrap_pyfunction!(_panic, m)?)?;
    m.add_function(wrap_pyfunction!(default_threads, m)?)?;
    m.add_function(wrap_pyfunction!(metric_names, m)?)?;
    m.add_function(wrap_pyfunction!(topk, m)?)?;
    m.add_function(wrap_pyfunction!(file_kind, m)?)?;
    m.add_function(wrap_pyfunction!(kmeans, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(maxsim::maxsim_list, m)?)?;
    m.add_function(wrap_pyfunction!(maxsim::maxsim_packed, m)?)?;
    m.add_class::<FlatIndex>()?;
    m.add_class::<IVFIndex>()?;
    m.add_class::<HNSWIndex>()?;
    m.add_class::<MultiVectorIndex>()?;
    m.add_class::<BM25Index>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("IVF_GRAPH_MIN_NLIST", crate::index::ivf::GRAPH_MIN_NLIST)?;
    Ok(())
}
