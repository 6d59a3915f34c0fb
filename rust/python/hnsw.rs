//! Binding of [`crate::index::hnsw::HnswIndex`].

use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{detached, index_class, metric, results, slice1, to_py, RowSearch};
use crate::index::hnsw::{self, CodeKind, FilterMode, HnswParams};
use crate::util::error::Error;

fn positive(v: i64, what: &str) -> PyResult<usize> {
    if v <= 0 {
        return Err(to_py(Error::InvalidArgument(format!("{what} must be at least 1, got {v}"))));
    }
    Ok(v as usize)
}

index_class! { rows
    /// HNSW graph index (see `rankfunnel.HNSWIndex` for the documented API).
    HNSWIndex(hnsw::HnswIndex) {
        #[new]
        #[pyo3(signature = (dim, metric_name, m=16, ef_construction=200, seed=0, prefilter=true, codes=None))]
        fn new(
            dim: i64,
            metric_name: &str,
            m: i64,
            ef_construction: i64,
            seed: u64,
            prefilter: bool,
            codes: Option<&str>,
        ) -> PyResult<Self> {
            let dim = positive(dim, "dim")?;
            let m = positive(m, "m")?;
            let efc = positive(ef_construction, "ef_construction")?;
            // `codes` names the walk copy; without it `prefilter` picks bfloat16 or none.
            let kind = match codes {
                Some(name) => CodeKind::parse(name).map_err(to_py)?,
                None if prefilter => CodeKind::Bf16,
                None => CodeKind::None,
            };
            let idx = hnsw::HnswIndex::with_codes(dim, metric(metric_name)?, m, efc, seed, kind).map_err(to_py)?;
            Ok(Self::wrap(idx))
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
        fn codes(&self) -> &'static str {
            self.inner.read().codes().name()
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
            let s = RowSearch::new(&queries, self.inner.dim(), k, &allow, threads)?;
            let ef = positive(ef, "ef")?;
            let mode = FilterMode::parse(filter_mode).map_err(to_py)?;
            let lists: Option<Vec<&[i64]>> = match &allow_lists {
                Some(ls) => Some(ls.iter().map(|a| slice1(a, "filter")).collect::<PyResult<_>>()?),
                None => None,
            };
            let r = detached(py, || {
                let params = HnswParams { ef, mode, allow_lists: lists.as_deref() };
                self.inner.search(s.q, s.k, &params, s.allow, s.threads)
            })?;
            results(py, r, s.nq, s.k)
        }
    }
}
