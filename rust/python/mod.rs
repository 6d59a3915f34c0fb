//! The PyO3 binding: borrow numpy arrays, release the GIL, call the core, return numpy arrays.
//!
//! Inputs arrive already normalised by the Python layer (C-contiguous float32 / int64); this
//! module only checks shapes, and maps core errors to Python exceptions in [`to_py`]. The
//! methods every index class shares are written once, in [`index_class!`].

use std::path::PathBuf;

use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
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

/// Declares a `#[pyclass]` named `$name` around the core index `$core` behind a
/// [`Locked`](crate::concurrent::Locked), with one `#[pymethods]` block holding the methods its
/// kind shares with the others, then the class's own methods (`$own`):
///
/// - every kind (`texts`, BM25): `__len__`, `contains`, `ids`, `remove`, `memory_bytes`,
///   `is_mapped`, `save` and the static `load`, plus `from_file` (for [`load`]);
/// - an index of vectors (`tokens`, multi-vector): also the `dim` and `metric` properties;
/// - an index of rows (`rows`: flat, HNSW, IVF): also `add(vectors, ids, threads)` and
///   `get(ids)`.
macro_rules! index_class {
    (texts $(#[$attr:meta])* $name:ident($core:ty) { $($own:tt)* }) => {
        $(#[$attr])*
        #[pyclass(frozen, module = "rankfunnel._core")]
        pub(crate) struct $name {
            inner: $crate::concurrent::Locked<$core>,
        }

        impl $name {
            fn wrap(idx: $core) -> Self {
                $name { inner: $crate::concurrent::Locked::new(idx) }
            }

            pub(crate) fn from_file(py: Python<'_>, f: &$crate::format::storage::IndexFile) -> PyResult<Self> {
                let idx = $crate::python::detached(py, || <$core as $crate::index::IdIndex>::from_file(f))?;
                Ok(Self::wrap(idx))
            }
        }

        #[pymethods]
        impl $name {
            #[getter]
            fn is_mapped(&self) -> bool {
                $crate::index::IdIndex::is_mapped(&*self.inner.read())
            }

            fn __len__(&self) -> usize {
                $crate::index::IdIndex::len(&*self.inner.read())
            }

            fn contains(&self, id: i64) -> bool {
                $crate::index::IdIndex::contains(&*self.inner.read(), id)
            }

            fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<i64>> {
                numpy::IntoPyArray::into_pyarray($crate::index::IdIndex::ids(&*self.inner.read()), py)
            }

            fn remove(&self, py: Python<'_>, ids: numpy::PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
                let ids = $crate::python::slice1(&ids, "ids")?;
                $crate::python::detached(py, || self.inner.remove(ids))
            }

            fn memory_bytes(&self) -> usize {
                $crate::index::IdIndex::memory_bytes(&*self.inner.read())
            }

            fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
                $crate::python::detached(py, || self.inner.save(&path))
            }

            #[staticmethod]
            #[pyo3(signature = (path, mmap=false))]
            fn load(py: Python<'_>, path: std::path::PathBuf, mmap: bool) -> PyResult<Self> {
                let idx = $crate::python::detached(py, || <$core as $crate::index::IdIndex>::load(&path, mmap))?;
                Ok(Self::wrap(idx))
            }

            $($own)*
        }
    };
    (tokens $(#[$attr:meta])* $name:ident($core:ty) { $($own:tt)* }) => {
        $crate::python::index_class! { texts $(#[$attr])* $name($core) {
            #[getter]
            fn dim(&self) -> usize {
                self.inner.dim()
            }

            #[getter]
            fn metric(&self) -> &'static str {
                $crate::index::Index::metric(&*self.inner.read()).name()
            }

            $($own)*
        } }
    };
    (rows $(#[$attr:meta])* $name:ident($core:ty) { $($own:tt)* }) => {
        $crate::python::index_class! { tokens $(#[$attr])* $name($core) {
            #[pyo3(signature = (vectors, ids=None, threads=None))]
            fn add<'py>(
                &self,
                py: Python<'py>,
                vectors: numpy::PyReadonlyArray2<'py, f32>,
                ids: Option<numpy::PyReadonlyArray1<'py, i64>>,
                threads: Option<usize>,
            ) -> PyResult<Bound<'py, numpy::PyArray1<i64>>> {
                let v = $crate::python::rows(&vectors, self.inner.dim(), "vectors")?;
                let ids = $crate::python::optional(&ids, "ids")?;
                let t = $crate::util::parallel::resolve(threads);
                let out = $crate::python::detached(py, || self.inner.add(v, ids, t))?;
                Ok(numpy::IntoPyArray::into_pyarray(out, py))
            }

            fn get<'py>(
                &self,
                py: Python<'py>,
                ids: numpy::PyReadonlyArray1<'py, i64>,
            ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
                let ids = $crate::python::slice1(&ids, "ids")?;
                let v = $crate::python::detached(py, || self.inner.get(ids))?;
                numpy::PyArrayMethods::reshape(&numpy::IntoPyArray::into_pyarray(v, py), [ids.len(), self.inner.dim()])
            }

            $($own)*
        } }
    };
}
pub(crate) use index_class;

/// The queries, allow-list and thread count of a search of rows, checked: what every index of
/// rows reads before it searches.
pub(crate) struct RowSearch<'a> {
    pub q: &'a [f32],
    pub nq: usize,
    pub k: usize,
    pub allow: Option<&'a [i64]>,
    pub threads: usize,
}

impl<'a> RowSearch<'a> {
    pub(crate) fn new(
        queries: &'a PyReadonlyArray2<'_, f32>,
        dim: usize,
        k: i64,
        allow: &'a Option<PyReadonlyArray1<'_, i64>>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        Ok(RowSearch {
            k: check_k(k)?,
            q: rows(queries, dim, "queries")?,
            nq: queries.shape()[0],
            allow: optional(allow, "filter")?,
            threads: parallel::resolve(threads),
        })
    }
}

/// The rows of a 2-d array as one slice, after checking its width against the index's `dim`.
pub(crate) fn rows<'a>(a: &'a PyReadonlyArray2<'_, f32>, dim: usize, what: &str) -> PyResult<&'a [f32]> {
    check_dim(a.shape()[1], dim, what)?;
    slice(a, what)
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
/// panics are caught. The index locks survive a panic (see [`crate::concurrent::Locked`]).
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
