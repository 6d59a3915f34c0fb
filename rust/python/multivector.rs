//! Binding of [`crate::index::multivector::MultiVectorIndex`].

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{check_k, detached, index_class, optional, results, slice, slice1, to_py};
use crate::concurrent::Locked;
use crate::index::multivector::{self, SearchParams, TokenDocs};
use crate::util::error::Error;
use crate::util::parallel;

/// The query token matrices as slices, each checked against the index dimension.
fn queries<'a>(
    inner: &Locked<multivector::MultiVectorIndex>,
    queries: &'a [PyReadonlyArray2<'_, f32>],
) -> PyResult<Vec<&'a [f32]>> {
    let d = inner.dim();
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            if q.shape()[1] != d {
                return Err(to_py(Error::InvalidArgument(format!(
                    "dimension mismatch: query {i} has {} dimensions, the index has {d}",
                    q.shape()[1]
                ))));
            }
            slice(q, "queries")
        })
        .collect()
}

index_class! { tokens
    /// Late-interaction index (see `rankfunnel.MultiVectorIndex` for the documented API).
    MultiVectorIndex(multivector::MultiVectorIndex) {
        #[new]
        #[pyo3(signature = (dim, nbits=2, n_centroids=0, seed=0, refine_dtype="none"))]
        fn new(dim: i64, nbits: i64, n_centroids: i64, seed: u64, refine_dtype: &str) -> PyResult<Self> {
            if dim <= 0 || nbits < 0 || n_centroids < 0 {
                return Err(to_py(Error::InvalidArgument(format!(
                    "dim must be at least 1 and nbits, n_centroids non-negative (got {dim}, {nbits}, {n_centroids})"
                ))));
            }
            let refine = multivector::Refine::parse(refine_dtype).map_err(to_py)?;
            let idx =
                multivector::MultiVectorIndex::new(dim as usize, nbits as usize, n_centroids as usize, seed)
                    .and_then(|i| i.with_refine(refine))
                    .map_err(to_py)?;
            Ok(Self::wrap(idx))
        }

        #[getter]
        fn nbits(&self) -> usize {
            self.inner.read().nbits()
        }

        #[getter]
        fn n_centroids(&self) -> usize {
            self.inner.read().n_centroids()
        }

        #[getter]
        fn n_tokens(&self) -> usize {
            self.inner.read().n_tokens()
        }

        #[getter]
        fn bytes_per_token(&self) -> usize {
            self.inner.read().bytes_per_token()
        }

        #[getter]
        fn refine_dtype(&self) -> &'static str {
            self.inner.read().refine().name()
        }

        #[getter]
        fn refine_bytes_per_token(&self) -> usize {
            self.inner.read().refine_bytes_per_token()
        }

        #[pyo3(signature = (tokens, offsets, ids=None, threads=None))]
        fn add<'py>(
            &self,
            py: Python<'py>,
            tokens: PyReadonlyArray2<'py, f32>,
            offsets: PyReadonlyArray1<'py, i64>,
            ids: Option<PyReadonlyArray1<'py, i64>>,
            threads: Option<usize>,
        ) -> PyResult<Bound<'py, PyArray1<i64>>> {
            let d = self.inner.dim();
            if tokens.shape()[1] != d {
                return Err(to_py(Error::InvalidArgument(format!(
                    "dimension mismatch: document tokens have {} dimensions, the index has {d}",
                    tokens.shape()[1]
                ))));
            }
            let docs = TokenDocs { tokens: slice(&tokens, "tokens")?, offsets: slice1(&offsets, "offsets")? };
            let ids = optional(&ids, "ids")?;
            let t = parallel::resolve(threads);
            let out = detached(py, || self.inner.add(docs, ids, t))?;
            Ok(out.into_pyarray(py))
        }

        #[pyo3(signature = (queries, k, candidates, nprobe, threads=None, allow=None, refine=0))]
        #[allow(clippy::too_many_arguments)]
        fn search<'py>(
            &self,
            py: Python<'py>,
            queries: Vec<PyReadonlyArray2<'py, f32>>,
            k: i64,
            candidates: i64,
            nprobe: i64,
            threads: Option<usize>,
            allow: Option<PyReadonlyArray1<'py, i64>>,
            refine: usize,
        ) -> PyResult<Bound<'py, PyTuple>> {
            let k = check_k(k)?;
            let candidates = check_k(candidates)?;
            let nprobe = check_k(nprobe)?;
            let qs = self::queries(&self.inner, &queries)?;
            let allow = optional(&allow, "filter")?;
            let p = SearchParams { candidates, nprobe, refine };
            let t = parallel::resolve(threads);
            let r = detached(py, || self.inner.search(&qs, k, &p, allow, t))?;
            results(py, r, qs.len(), k)
        }

        #[pyo3(signature = (queries, ids, k, threads=None))]
        fn rerank<'py>(
            &self,
            py: Python<'py>,
            queries: Vec<PyReadonlyArray2<'py, f32>>,
            ids: PyReadonlyArray1<'py, i64>,
            k: i64,
            threads: Option<usize>,
        ) -> PyResult<Bound<'py, PyTuple>> {
            let k = check_k(k)?;
            let qs = self::queries(&self.inner, &queries)?;
            let ids = slice1(&ids, "candidate_ids")?;
            let t = parallel::resolve(threads);
            let r = detached(py, || self.inner.checked()?.rerank(&qs, ids, k, t))?;
            results(py, r, qs.len(), k)
        }

        /// The decompressed tokens of one document, `(n_tokens, dim)`.
        fn get<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyArray2<f32>>> {
            let d = self.inner.dim();
            let v = detached(py, || self.inner.get(&[id]))?;
            let n = v.len() / d;
            v.into_pyarray(py).reshape([n, d])
        }
    }
}
