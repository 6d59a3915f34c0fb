//! Binding of [`crate::index::bm25::BM25Index`].

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{check_k, detached, index_class, optional, results, to_py};
use crate::index::bm25::{self, Analyzer, Params, Stopwords};
use crate::util::error::Error;
use crate::util::parallel;

index_class! { texts
    /// Lexical BM25 index (see `rankfunnel.BM25Index` for the documented API).
    BM25Index(bm25::BM25Index) {
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
            Ok(Self::wrap(bm25::BM25Index::new(params, analyzer)))
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
            let ids = optional(&ids, "ids")?;
            let t = parallel::resolve(threads);
            let out = detached(py, || self.inner.add(&texts, ids, t))?;
            Ok(out.into_pyarray(py))
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
            let allow = optional(&allow, "filter")?;
            let t = parallel::resolve(threads);
            let r = detached(py, || self.inner.read().search(&queries, k, t, allow))?;
            results(py, r, nq, k)
        }
    }
}
