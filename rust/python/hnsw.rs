//! Binding of [`crate::hnsw::HnswIndex`].

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{check_dim, check_k, detached, metric, results, slice, slice1, to_py, Shared};
use crate::error::Error;
use crate::hnsw::{self, Allow, FilterMode};
use crate::parallel;
use crate::storage::IndexFile;

/// HNSW graph index (see `rankfunnel.HNSWIndex` for the documented API).
#[pyclass(frozen, module = "rankfunnel._core")]
pub(crate) struct HNSWIndex {
    inner: Shared<hnsw::HnswIndex>,
}

impl HNSWIndex {
    pub(crate) fn from_file(py: Python<'_>, f: &IndexFile) -> PyResult<Self> {
        let idx = detached(py, || hnsw::HnswIndex::from_file(f))?;
        Ok(HNSWIndex { inner: Shared::new(idx) })
    }
}

fn positive(v: i64, what: &str) -> PyResult<usize> {
    if v <= 0 {
        return Err(to_py(Error::InvalidArgument(format!("{what} must be at least 1, got {v}"))));
    }
    Ok(v as usize)
}

#[pymethods]
impl HNSWIndex {
    #[new]
    #[pyo3(signature = (dim, metric_name, m=16, ef_construction=200, seed=0, prefilter=true))]
    fn new(
        dim: i64,
        metric_name: &str,
        m: i64,
        ef_construction: i64,
        seed: u64,
        prefilter: bool,
    ) -> PyResult<Self> {
        let dim = positive(dim, "dim")?;
        let m = positive(m, "m")?;
        let efc = positive(ef_construction, "ef_construction")?;
        let idx = hnsw::HnswIndex::new(dim, metric(metric_name)?, m, efc, seed, prefilter).map_err(to_py)?;
        Ok(HNSWIndex { inner: Shared::new(idx) })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.read().dim()
    }

    #[getter]
    fn metric(&self) -> &'static str {
        self.inner.read().metric().name()
    }

    #[getter]
    fn m(&self) -> usize {
        self.inner.read().m()
    }

    #[getter]
    fn ef_construction(&self) -> usize {
        self.inner.read().ef_construction()
    }

    #[getter]
    fn prefilter(&self) -> bool {
        self.inner.read().prefilter()
    }

    #[getter]
    fn seed(&self) -> u64 {
        self.inner.read().seed()
    }

    #[getter]
    fn max_level(&self) -> usize {
        self.inner.read().max_level()
    }

    #[getter]
    fn slots(&self) -> usize {
        self.inner.read().slots()
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    #[pyo3(signature = (vectors, ids=None, threads=None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        vectors: PyReadonlyArray2<'py, f32>,
        ids: Option<PyReadonlyArray1<'py, i64>>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        check_dim(vectors.shape()[1], self.inner.read().dim(), "vectors")?;
        let v = slice(&vectors, "vectors")?;
        let ids_slice = match &ids {
            Some(a) => Some(slice1(a, "ids")?),
            None => None,
        };
        let t = parallel::resolve(threads);
        let out = detached(py, || self.inner.write().add(v, ids_slice, t))?;
        Ok(out.into_pyarray(py))
    }

    fn remove(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
        let ids = slice1(&ids, "ids")?;
        detached(py, || self.inner.write().remove(ids))
    }

    #[pyo3(signature = (queries, k, ef, threads=None, allow=None, allow_lists=None, filter_mode="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: i64,
        ef: i64,
        threads: Option<usize>,
        allow: Option<PyReadonlyArray1<'py, i64>>,
        allow_lists: Option<Vec<PyReadonlyArray1<'py, i64>>>,
        filter_mode: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let k = check_k(k)?;
        let ef = positive(ef, "ef")?;
        let mode = FilterMode::parse(filter_mode).map_err(to_py)?;
        check_dim(queries.shape()[1], self.inner.read().dim(), "queries")?;
        let nq = queries.shape()[0];
        let q = slice(&queries, "queries")?;
        let shared = match &allow {
            Some(a) => Some(slice1(a, "filter")?),
            None => None,
        };
        let lists: Option<Vec<&[i64]>> = match &allow_lists {
            Some(ls) => Some(ls.iter().map(|a| slice1(a, "filter")).collect::<PyResult<_>>()?),
            None => None,
        };
        let t = parallel::resolve(threads);
        let r = detached(py, || {
            let allow = match (&shared, &lists) {
                (Some(a), _) => Allow::Shared(a),
                (None, Some(l)) => Allow::PerQuery(l),
                (None, None) => Allow::All,
            };
            self.inner.read().search(q, k, ef, t, allow, mode)
        })?;
        results(py, r, nq, k)
    }

    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let ids = slice1(&ids, "ids")?;
        let n = ids.len();
        let idx = self.inner.read();
        let d = idx.dim();
        let v = idx.get(ids).map_err(to_py)?;
        drop(idx);
        v.into_pyarray(py).reshape([n, d])
    }

    fn contains(&self, id: i64) -> bool {
        self.inner.read().contains(id)
    }

    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.inner.read().ids().into_pyarray(py)
    }

    fn memory_bytes(&self) -> usize {
        self.inner.read().memory_bytes()
    }

    #[getter]
    fn is_mapped(&self) -> bool {
        self.inner.read().is_mapped()
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || self.inner.read().save(&path))
    }

    #[staticmethod]
    #[pyo3(signature = (path, mmap=false))]
    fn load(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Self> {
        let idx = detached(py, || hnsw::HnswIndex::load(&path, mmap))?;
        Ok(HNSWIndex { inner: Shared::new(idx) })
    }
}
