//! Binding of [`crate::flat::FlatIndex`].

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{check_dim, check_k, detached, metric, results, slice, slice1, to_py, Shared};
use crate::error::Error;
use crate::storage::IndexFile;
use crate::{flat, parallel};

/// Exact index (see `rankfunnel.FlatIndex` for the documented API).
#[pyclass(frozen, module = "rankfunnel._core")]
pub(crate) struct FlatIndex {
    inner: Shared<flat::FlatIndex>,
}

impl FlatIndex {
    pub(crate) fn from_file(py: Python<'_>, f: &IndexFile) -> PyResult<Self> {
        let idx = detached(py, || flat::FlatIndex::from_file(f))?;
        Ok(FlatIndex { inner: Shared::new(idx) })
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
        Ok(FlatIndex { inner: Shared::new(idx) })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.read().dim()
    }

    #[getter]
    fn metric(&self) -> &'static str {
        self.inner.read().metric().name()
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    #[pyo3(signature = (vectors, ids=None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        vectors: PyReadonlyArray2<'py, f32>,
        ids: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        check_dim(vectors.shape()[1], self.inner.read().dim(), "vectors")?;
        let v = slice(&vectors, "vectors")?;
        let ids_slice = match &ids {
            Some(a) => Some(slice1(a, "ids")?),
            None => None,
        };
        let out = detached(py, || self.inner.write().add(v, ids_slice))?;
        Ok(out.into_pyarray(py))
    }

    fn remove(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
        let ids = slice1(&ids, "ids")?;
        detached(py, || self.inner.write().remove(ids))
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
        check_dim(queries.shape()[1], self.inner.read().dim(), "queries")?;
        let nq = queries.shape()[0];
        let q = slice(&queries, "queries")?;
        let allow = match &allow {
            Some(a) => Some(slice1(a, "filter")?),
            None => None,
        };
        let t = parallel::resolve(threads);
        let r = detached(py, || self.inner.read().search(q, k, t, allow))?;
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
        self.inner.read().ids().to_vec().into_pyarray(py)
    }

    fn memory_bytes(&self) -> usize {
        self.inner.read().memory_bytes()
    }

    #[getter]
    fn prefilter(&self) -> bool {
        self.inner.read().prefilter()
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
        let idx = detached(py, || flat::FlatIndex::load(&path, mmap))?;
        Ok(FlatIndex { inner: Shared::new(idx) })
    }
}
