//! The PyO3 binding: borrow numpy arrays, release the GIL, call the core, return numpy arrays.
//!
//! Inputs arrive already normalised by the Python layer (C-contiguous float32 / int64); this
//! module only checks shapes, and maps core errors to Python exceptions in [`to_py`].

use std::path::PathBuf;
use std::sync::RwLock;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::error::Error;
use crate::metric::Metric;
use crate::storage::{IndexFile, Kind};
use crate::topk::Results;
use crate::{flat, parallel, simd};

/// Convert a core error into the matching Python exception (defined in `rankfunnel.errors`).
fn to_py(e: Error) -> PyErr {
    let class = match &e {
        Error::Io(_) => {
            let Error::Io(io) = e else { unreachable!() };
            return PyErr::from(io);
        }
        Error::InvalidArgument(_) => "RankfunnelError",
        Error::UnknownId(_) => "UnknownIdError",
        Error::CorruptFile(_) => "CorruptFileError",
        Error::UnsupportedVersion { .. } => "UnsupportedVersionError",
    };
    let msg = e.to_string();
    Python::attach(|py| match py.import("rankfunnel.errors").and_then(|m| m.getattr(class)) {
        Ok(cls) => match cls.call1((msg.clone(),)) {
            Ok(inst) => PyErr::from_value(inst),
            Err(err) => err,
        },
        Err(_) => PyValueError::new_err(msg),
    })
}

/// Run `f` with the GIL released and map its error.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    py.detach(f).map_err(to_py)
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
}

fn slice1<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be contiguous")))
}

fn metric(name: &str) -> PyResult<Metric> {
    Metric::parse(name).map_err(to_py)
}

fn results<'py>(py: Python<'py>, r: Results, nq: usize, k: usize) -> PyResult<Bound<'py, PyTuple>> {
    let scores = r.scores.into_pyarray(py).reshape([nq, k])?;
    let ids = r.ids.into_pyarray(py).reshape([nq, k])?;
    PyTuple::new(py, [scores.into_any(), ids.into_any()])
}

fn check_k(k: i64) -> PyResult<usize> {
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

/// Threads used when a call does not pass `threads`.
#[pyfunction]
fn default_threads() -> usize {
    parallel::default_threads()
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
    let r = detached(py, || crate::topk::topk(q, c, d, m, k, t))?;
    results(py, r, nq, k)
}

/// Exact index (see `rankfunnel.FlatIndex` for the documented API).
#[pyclass(frozen, module = "rankfunnel._core")]
struct FlatIndex {
    inner: RwLock<flat::FlatIndex>,
}

impl FlatIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, flat::FlatIndex> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, flat::FlatIndex> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
    fn check_dim(&self, got: usize, what: &str) -> PyResult<()> {
        let d = self.read().dim();
        if got != d {
            return Err(to_py(Error::InvalidArgument(format!(
                "dimension mismatch: {what} have {got} dimensions, the index has {d}"
            ))));
        }
        Ok(())
    }
}

#[pymethods]
impl FlatIndex {
    #[new]
    #[pyo3(signature = (dim, metric_name, prefilter=true))]
    fn new(dim: i64, metric_name: &str, prefilter: bool) -> PyResult<Self> {
        if dim <= 0 {
            return Err(to_py(Error::InvalidArgument(format!("dim must be at least 1, got {dim}"))));
        }
        let idx = flat::FlatIndex::new(dim as usize, metric(metric_name)?, prefilter).map_err(to_py)?;
        Ok(FlatIndex { inner: RwLock::new(idx) })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.read().dim()
    }

    #[getter]
    fn metric(&self) -> &'static str {
        self.read().metric().name()
    }

    fn __len__(&self) -> usize {
        self.read().len()
    }

    #[pyo3(signature = (vectors, ids=None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        vectors: PyReadonlyArray2<'py, f32>,
        ids: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.check_dim(vectors.shape()[1], "vectors")?;
        let v = slice(&vectors, "vectors")?;
        let ids_slice = match &ids {
            Some(a) => Some(slice1(a, "ids")?),
            None => None,
        };
        let out = detached(py, || self.write().add(v, ids_slice))?;
        Ok(out.into_pyarray(py))
    }

    fn remove(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
        let ids = slice1(&ids, "ids")?;
        detached(py, || self.write().remove(ids))
    }

    #[pyo3(signature = (queries, k, threads=None, allow=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: i64,
        threads: Option<usize>,
        allow: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let k = check_k(k)?;
        self.check_dim(queries.shape()[1], "queries")?;
        let nq = queries.shape()[0];
        let q = slice(&queries, "queries")?;
        let allow = match &allow {
            Some(a) => Some(slice1(a, "filter")?),
            None => None,
        };
        let t = parallel::resolve(threads);
        let r = detached(py, || self.read().search(q, k, t, allow))?;
        results(py, r, nq, k)
    }

    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let ids = slice1(&ids, "ids")?;
        let n = ids.len();
        let idx = self.read();
        let d = idx.dim();
        let v = idx.get(ids).map_err(to_py)?;
        drop(idx);
        v.into_pyarray(py).reshape([n, d])
    }

    fn contains(&self, id: i64) -> bool {
        self.read().contains(id)
    }

    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.read().ids().to_vec().into_pyarray(py)
    }

    fn memory_bytes(&self) -> usize {
        self.read().memory_bytes()
    }

    #[getter]
    fn prefilter(&self) -> bool {
        self.read().prefilter()
    }

    #[getter]
    fn is_mapped(&self) -> bool {
        self.read().is_mapped()
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || self.read().save(&path))
    }

    #[staticmethod]
    #[pyo3(signature = (path, mmap=false))]
    fn load(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Self> {
        let idx = detached(py, || flat::FlatIndex::load(&path, mmap))?;
        Ok(FlatIndex { inner: RwLock::new(idx) })
    }
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
        Kind::Flat => {
            let idx = detached(py, || flat::FlatIndex::from_file(&f))?;
            Ok(Py::new(py, FlatIndex { inner: RwLock::new(idx) })?.into_any())
        }
        other => {
            Err(PyRuntimeError::new_err(format!("{} files are not supported by this build", other.name())))
        }
    }
}

/// The compiled core of rankfunnel.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_levels, m)?)?;
    m.add_function(wrap_pyfunction!(_force_simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(default_threads, m)?)?;
    m.add_function(wrap_pyfunction!(topk, m)?)?;
    m.add_function(wrap_pyfunction!(file_kind, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_class::<FlatIndex>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
