//! Binding of [`crate::index::bm25::BM25Index`].

use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{add_chunked, check_k, detached, remove_ids, results, slice1, to_py, Locked};
use crate::format::storage::IndexFile;
use crate::index::bm25::{self, Analyzer, Params, Stopwords};
use crate::util::error::Error;
use crate::util::parallel;

/// Documents stored per write-lock section by `add`.
const ADD_CHUNK_DOCS: usize = 1024;

/// Lexical BM25 index (see `rankfunnel.BM25Index` for the documented API).
#[pyclass(frozen, module = "rankfunnel._core")]
pub(crate) struct BM25Index {
    inner: Locked<bm25::BM25Index>,
}

impl BM25Index {
    pub(crate) fn from_file(py: Python<'_>, f: &IndexFile) -> PyResult<Self> {
        let idx = detached(py, || bm25::BM25Index::from_file(f))?;
        Ok(BM25Index { inner: Locked::new(idx) })
    }
}

#[pymethods]
impl BM25Index {
    /// `stopwords`: "english", "none", or "custom" with `stopword_list`.
    #[new]
    #[pyo3(signature = (k1, b, language, stopwords, stopword_list=None))]
    fn new(
        k1: f64,
        b: f64,
        language: Option<&str>,
        stopwords: &str,
        stopword_list: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let stop = match (stopwords, stopword_list) {
            ("english", None) => Stopwords::English,
            ("none", None) => Stopwords::None,
            ("custom", Some(list)) => Stopwords::Custom(list),
            _ => {
                return Err(to_py(Error::InvalidArgument(format!(
                    "stopwords must be \"english\", \"none\" or \"custom\" with a list, got {stopwords:?}"
                ))))
            }
        };
        let params = Params::new(k1, b).map_err(to_py)?;
        let analyzer = Analyzer::new(language, stop).map_err(to_py)?;
        Ok(BM25Index { inner: Locked::new(bm25::BM25Index::new(params, analyzer)) })
    }

    #[getter]
    fn k1(&self) -> f32 {
        self.inner.read().params().k1
    }

    #[getter]
    fn b(&self) -> f32 {
        self.inner.read().params().b
    }

    #[getter]
    fn language(&self) -> Option<&'static str> {
        self.inner.read().analyzer().language()
    }

    /// The stopwords removed, as a list (empty when none).
    #[getter]
    fn stopwords(&self) -> (&'static str, Vec<String>) {
        match self.inner.read().analyzer().stopwords() {
            Stopwords::None => ("none", Vec::new()),
            Stopwords::English => {
                ("english", bm25::ENGLISH_STOPWORDS.iter().map(|s| s.to_string()).collect())
            }
            Stopwords::Custom(l) => ("custom", l.clone()),
        }
    }

    #[getter]
    fn vocab_len(&self) -> usize {
        self.inner.read().vocab_len()
    }

    #[getter]
    fn avgdl(&self) -> f64 {
        self.inner.read().avgdl()
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    fn analyze(&self, text: &str) -> Vec<String> {
        self.inner.read().analyze(text)
    }

    #[pyo3(signature = (texts, ids=None, threads=None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        ids: Option<PyReadonlyArray1<'py, i64>>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids_slice = match &ids {
            Some(a) => Some(slice1(a, "ids")?),
            None => None,
        };
        let t = parallel::resolve(threads);
        // The texts are analyzed first, sharing the index with searches; the documents are then
        // stored chunk by chunk (see `add_chunked`).
        let n = texts.len();
        let out = detached(py, || {
            add_chunked(
                &self.inner,
                n,
                ids_slice,
                |_| ADD_CHUNK_DOCS,
                |g| Ok(g.analyze_all(&texts, t)),
                |g, analyzed, r, chunk_ids| {
                    let part: Vec<Vec<String>> = analyzed[r].iter_mut().map(std::mem::take).collect();
                    g.add_analyzed(part, Some(chunk_ids))
                },
            )
        })?;
        Ok(out.into_pyarray(py))
    }

    fn remove(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
        let ids = slice1(&ids, "ids")?;
        detached(py, || remove_ids(&self.inner, ids))
    }

    #[pyo3(signature = (queries, k, threads=None, allow=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<String>,
        k: i64,
        threads: Option<usize>,
        allow: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let k = check_k(k)?;
        let nq = queries.len();
        let allow = match &allow {
            Some(a) => Some(slice1(a, "filter")?),
            None => None,
        };
        let t = parallel::resolve(threads);
        let r = detached(py, || self.inner.read().search(&queries, k, t, allow))?;
        results(py, r, nq, k)
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

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || {
            let _e = self.inner.edit();
            self.inner.read().save(&path)
        })
    }

    /// Load a saved index; `mmap` is accepted for the shared `load` signature, and the
    /// postings are always read into memory.
    #[staticmethod]
    #[pyo3(signature = (path, mmap=false))]
    fn load(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Self> {
        let _ = mmap;
        let idx = detached(py, || bm25::BM25Index::load(&path))?;
        Ok(BM25Index { inner: Locked::new(idx) })
    }
}
