//! Binding of [`crate::index::flat::FlatIndex`].

use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{detached, index_class, metric, results, to_py, RowSearch};
use crate::index::flat;
use crate::util::error::Error;

index_class! { rows
    /// Exact index (see `rankfunnel.FlatIndex` for the documented API).
    FlatIndex(flat::FlatIndex) {
        #[new]
        #[pyo3(signature = (dim, metric_name, prefilter=true))]
        fn new(dim: i64, metric_name: &str, prefilter: bool) -> PyResult<Self> {
            if dim <= 0 {
                return Err(to_py(Error::InvalidArgument(format!("dim must be at least 1, got {dim}"))));
            }
            let idx = flat::FlatIndex::new(dim as usize, metric(metric_name)?, prefilter).map_err(to_py)?;
            Ok(Self::wrap(idx))
        }

        #[getter]
        fn prefilter(&self) -> bool {
            self.inner.read().prefilter()
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
            let s = RowSearch::new(&queries, self.inner.dim(), k, &allow, threads)?;
            let r = detached(py, || self.inner.search(s.q, s.k, &(), s.allow, s.threads))?;
            results(py, r, s.nq, s.k)
        }
    }
}
