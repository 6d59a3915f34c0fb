//! Binding of [`crate::index::flat::FlatIndex`].

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{
    add_chunked, check_dim, check_k, detached, get_rows, index_class, metric, optional, results, slice,
    to_py, AddArgs,
};
use crate::index::Index;
use crate::util::error::Error;
use crate::{index::flat, util::parallel};

index_class! {
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

        #[pyo3(signature = (vectors, ids=None, threads=None))]
        fn add<'py>(
            &self,
            py: Python<'py>,
            vectors: PyReadonlyArray2<'py, f32>,
            ids: Option<PyReadonlyArray1<'py, i64>>,
            threads: Option<usize>,
        ) -> PyResult<Bound<'py, PyArray1<i64>>> {
            // When the buffers must grow, the whole batch is added to a grown copy while searches
            // share the index, and the copy is swapped in by one short write section; otherwise
            // the rows are written in place, chunk by chunk.
            let a = AddArgs::new(&self.inner, &vectors, &ids, threads)?;
            let out = detached(py, || {
                let mut retired = None; // the replaced buffers, freed after the write section
                add_chunked(
                    &self.inner,
                    a.n,
                    a.ids,
                    |copy: &Option<flat::FlatIndex>| if copy.is_some() { a.n } else { a.per_chunk() },
                    |g| {
                        crate::util::vectors::check_finite(a.v, a.d, "vectors")?;
                        let ids = g.assign_ids(a.n, a.ids)?;
                        g.with_added(a.v, &ids)
                    },
                    |g, copy, r, chunk_ids| match copy.take() {
                        Some(c) => {
                            retired = Some(std::mem::replace(g, c));
                            Ok(chunk_ids.to_vec())
                        }
                        None => g.add(a.rows(r), Some(chunk_ids), a.threads),
                    },
                )
            })?;
            Ok(out.into_pyarray(py))
        }

        fn get<'py>(&self, py: Python<'py>, ids: PyReadonlyArray1<'py, i64>) -> PyResult<Bound<'py, PyArray2<f32>>> {
            get_rows(py, &self.inner, ids)
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
            check_dim(queries.shape()[1], self.inner.dim(), "queries")?;
            let nq = queries.shape()[0];
            let q = slice(&queries, "queries")?;
            let allow = optional(&allow, "filter")?;
            let t = parallel::resolve(threads);
            let r = detached(py, || self.inner.checked()?.search(q, k, &(), allow, t))?;
            results(py, r, nq, k)
        }
    }
}
