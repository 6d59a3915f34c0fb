//! Binding of [`crate::index::ivf::IvfIndex`].

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{detached, index_class, metric, results, rows, to_py, RowSearch};
use crate::index::ivf::{self, Coarse, IvfParams, Storage};
use crate::index::IdIndex;
use crate::util::error::Error;
use crate::util::parallel;

index_class! { rows
    /// Inverted-file index (see `rankfunnel.IVFIndex` for the documented API).
    IVFIndex(ivf::IvfIndex) {
        #[new]
        #[pyo3(signature = (dim, nlist, metric_name, storage, coarse="auto"))]
        fn new(dim: i64, nlist: i64, metric_name: &str, storage: &str, coarse: &str) -> PyResult<Self> {
            if dim <= 0 || nlist <= 0 {
                return Err(to_py(Error::InvalidArgument(format!(
                    "dim and nlist must be at least 1, got dim={dim}, nlist={nlist}"
                ))));
            }
            let s = Storage::parse(storage).map_err(to_py)?;
            let c = Coarse::parse(coarse).map_err(to_py)?;
            let mut idx = ivf::IvfIndex::new(dim as usize, nlist as usize, metric(metric_name)?, s).map_err(to_py)?;
            idx.set_coarse(c, 1).map_err(to_py)?;
            Ok(Self::wrap(idx))
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
        fn coarse(&self) -> &'static str {
            self.inner.read().coarse().name()
        }

        #[getter]
        fn has_graph(&self) -> bool {
            self.inner.read().has_graph()
        }

        #[pyo3(signature = (coarse, threads=None))]
        fn set_coarse(&self, py: Python<'_>, coarse: &str, threads: Option<usize>) -> PyResult<()> {
            let c = Coarse::parse(coarse).map_err(to_py)?;
            let t = parallel::resolve(threads);
            detached(py, || self.inner.exclusive(|g| g.set_coarse(c, t)))
        }

        #[getter]
        fn is_trained(&self) -> bool {
            self.inner.read().is_trained()
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
            let x = rows(&sample, self.inner.dim(), "training vectors")?;
            let t = parallel::resolve(threads);
            detached(py, || self.inner.exclusive(|g| g.train(x, iters, seed, t)))
        }

        #[pyo3(signature = (queries, k, nprobe, refine, threads=None, allow=None, coarse_ef=0))]
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
            coarse_ef: usize,
        ) -> PyResult<Bound<'py, PyTuple>> {
            let s = RowSearch::new(&queries, self.inner.dim(), k, &allow, threads)?;
            if nprobe <= 0 {
                return Err(to_py(Error::InvalidArgument(format!("nprobe must be at least 1, got {nprobe}"))));
            }
            let params = IvfParams { nprobe: nprobe as usize, refine, coarse_ef };
            let r = detached(py, || self.inner.search(s.q, s.k, &params, s.allow, s.threads))?;
            results(py, r, s.nq, s.k)
        }
    }
}
