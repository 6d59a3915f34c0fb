//! Binding of [`crate::ivf::IvfIndex`].

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{check_dim, check_k, detached, metric, results, slice, slice1, to_py, Shared};
use crate::error::Error;
use crate::ivf::{self, Storage};
use crate::parallel;
use crate::storage::IndexFile;

/// Inverted-file index (see `rankfunnel.IVFIndex` for the documented API).
#[pyclass(frozen, module = "rankfunnel._core")]
pub(crate) struct IVFIndex {
    inner: Shared<ivf::IvfIndex>,
}

impl IVFIndex {
    pub(crate) fn from_file(py: Python<'_>, f: &IndexFile) -> PyResult<Self> {
        let idx = detached(py, || ivf::IvfIndex::from_file(f))?;
        Ok(IVFIndex { inner: Shared::new(idx) })
    }
}

#[pymethods]
impl IVFIndex {
    #[new]
    fn new(dim: i64, nlist: i64, metric_name: &str, storage: &str) -> PyResult<Self> {
        if dim <= 0 || nlist <= 0 {
            return Err(to_py(Error::InvalidArgument(format!(
                "dim and nlist must be at least 1, got dim={dim}, nlist={nlist}"
            ))));
        }
        let s = Storage::parse(storage).map_err(to_py)?;
        let idx = ivf::IvfIndex::new(dim as usize, nlist as usize, metric(metric_name)?, s).map_err(to_py)?;
        Ok(IVFIndex { inner: Shared::new(idx) })
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
    fn nlist(&self) -> usize {
        self.inner.read().nlist()
    }
    #[getter]
    fn storage(&self) -> &'static str {
        self.inner.read().storage().name()
    }
    #[getter]
    fn is_trained(&self) -> bool {
        self.inner.read().is_trained()
    }
    fn __len__(&self) -> usize {
        self.inner.read().len()
    }
    fn contains(&self, id: i64) -> bool {
        self.inner.read().contains(id)
    }
    fn memory_bytes(&self) -> usize {
        self.inner.read().memory_bytes()
    }
    fn refine_bytes(&self) -> usize {
        self.inner.read().refine_bytes()
    }
    fn list_sizes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.inner.read().list_sizes().into_iter().map(|s| s as i64).collect::<Vec<_>>().into_pyarray(py)
    }
    fn centroids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let idx = self.inner.read();
        let (n, d) = (if idx.is_trained() { idx.nlist() } else { 0 }, idx.dim());
        idx.centroids().to_vec().into_pyarray(py).reshape([n, d])
    }

    #[pyo3(signature = (sample, iters, seed, threads=None))]
    fn train(
        &self,
        py: Python<'_>,
        sample: PyReadonlyArray2<'_, f32>,
        iters: usize,
        seed: u64,
        threads: Option<usize>,
    ) -> PyResult<()> {
        check_dim(sample.shape()[1], self.inner.read().dim(), "training vectors")?;
        let x = slice(&sample, "sample")?;
        let t = parallel::resolve(threads);
        detached(py, || self.inner.write().train(x, iters, seed, t))
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

    #[pyo3(signature = (queries, k, nprobe, refine, threads=None, allow=None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: i64,
        nprobe: i64,
        refine: usize,
        threads: Option<usize>,
        allow: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let k = check_k(k)?;
        if nprobe <= 0 {
            return Err(to_py(Error::InvalidArgument(format!("nprobe must be at least 1, got {nprobe}"))));
        }
        check_dim(queries.shape()[1], self.inner.read().dim(), "queries")?;
        let nq = queries.shape()[0];
        let q = slice(&queries, "queries")?;
        let allow = match &allow {
            Some(a) => Some(slice1(a, "filter")?),
            None => None,
        };
        let t = parallel::resolve(threads);
        let r = detached(py, || self.inner.read().search(q, k, nprobe as usize, refine, t, allow))?;
        results(py, r, nq, k)
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || self.inner.read().save(&path))
    }

    #[staticmethod]
    #[pyo3(signature = (path, mmap=false))]
    fn load(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Self> {
        let idx = detached(py, || ivf::IvfIndex::load(&path, mmap))?;
        Ok(IVFIndex { inner: Shared::new(idx) })
    }
}
