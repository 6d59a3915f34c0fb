//! Binding of [`crate::index::hnsw::HnswIndex`].

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{
    add_chunked_then, check_dim, check_k, detached, get_rows, index_class, metric, optional, results, slice,
    slice1, to_py, AddArgs, ADD_CHUNK_FLOATS,
};
use crate::index::hnsw::{self, CodeKind, FilterMode, HnswParams};
use crate::index::Index;
use crate::util::error::Error;
use crate::util::parallel;

fn positive(v: i64, what: &str) -> PyResult<usize> {
    if v <= 0 {
        return Err(to_py(Error::InvalidArgument(format!("{what} must be at least 1, got {v}"))));
    }
    Ok(v as usize)
}

index_class! {
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

        #[pyo3(signature = (vectors, ids=None, threads=None))]
        fn add<'py>(
            &self,
            py: Python<'py>,
            vectors: PyReadonlyArray2<'py, f32>,
            ids: Option<PyReadonlyArray1<'py, i64>>,
            threads: Option<usize>,
        ) -> PyResult<Bound<'py, PyArray1<i64>>> {
            // Buffers that must grow are copied aside under the shared lock; the batch is then
            // stored chunk by chunk under short write sections, linked under the shared lock
            // while searches run, and the entry point published under a last short section.
            let a = AddArgs::new(&self.inner, &vectors, &ids, threads)?;
            let out = detached(py, || {
                add_chunked_then(
                    &self.inner,
                    a.n,
                    a.ids,
                    // An empty index takes the batch in one section: no search can wait on it,
                    // and its int8 ranges are then fit on the whole batch.
                    |(_, _, empty)| if *empty { a.n } else { (4 * ADD_CHUNK_FLOATS / a.d.max(1)).max(1) },
                    |g| {
                        crate::util::vectors::check_finite(a.v, a.d, "vectors")?;
                        Ok((g.room_for(a.n), hnsw::Staged::default(), g.slots() == 0))
                    },
                    |g, (room, staged, _), r, chunk_ids| {
                        g.install(room);
                        staged.append(g.stage(a.rows(r), Some(chunk_ids))?);
                        Ok(chunk_ids.to_vec())
                    },
                    |(room, staged, _), all| {
                        drop(room); // the replaced buffers, freed outside the write sections
                        let top = self.inner.read().link(&staged, a.threads);
                        self.inner.section(|g| g.publish(staged, top));
                        Ok(all)
                    },
                )
            })?;
            Ok(out.into_pyarray(py))
        }

        fn get<'py>(&self, py: Python<'py>, ids: PyReadonlyArray1<'py, i64>) -> PyResult<Bound<'py, PyArray2<f32>>> {
            get_rows(py, &self.inner, ids)
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
            check_dim(queries.shape()[1], self.inner.dim(), "queries")?;
            let nq = queries.shape()[0];
            let q = slice(&queries, "queries")?;
            let shared = optional(&allow, "filter")?;
            let lists: Option<Vec<&[i64]>> = match &allow_lists {
                Some(ls) => Some(ls.iter().map(|a| slice1(a, "filter")).collect::<PyResult<_>>()?),
                None => None,
            };
            let t = parallel::resolve(threads);
            let r = detached(py, || {
                let params = HnswParams { ef, mode, allow_lists: lists.as_deref() };
                self.inner.checked()?.search(q, k, &params, shared, t)
            })?;
            results(py, r, nq, k)
        }
    }
}
