//! Binding of [`crate::kernels::maxsim`]: MaxSim over a list of arrays or packed tokens.

use numpy::{
    IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use super::{detached, slice, slice1, to_py};
use crate::kernels::maxsim::{self, Docs, Scale, Tokens};
use crate::util::error::Error;
use crate::util::parallel;

fn dim_of(queries: &[PyReadonlyArray2<'_, f32>]) -> PyResult<usize> {
    let d = match queries.first() {
        Some(q) => q.shape()[1],
        None => return Err(to_py(Error::InvalidArgument("no queries given".into()))),
    };
    for (i, q) in queries.iter().enumerate() {
        if q.shape()[1] != d {
            return Err(to_py(Error::InvalidArgument(format!(
                "dimension mismatch: query {i} has {} dimensions, query 0 has {d}",
                q.shape()[1]
            ))));
        }
    }
    Ok(d)
}

fn query_slices<'a>(queries: &'a [PyReadonlyArray2<'_, f32>]) -> PyResult<Vec<&'a [f32]>> {
    queries.iter().map(|q| slice(q, "queries")).collect()
}

fn output<'py>(py: Python<'py>, s: Vec<f32>, nq: usize, nd: usize) -> PyResult<Bound<'py, PyArray2<f32>>> {
    s.into_pyarray(py).reshape([nq, nd])
}

/// MaxSim of each query (m_q, d) against each document (n_i, d): returns (nq, n_docs) float32.
#[pyfunction]
#[pyo3(signature = (queries, docs, threads=None))]
pub(crate) fn maxsim_list<'py>(
    py: Python<'py>,
    queries: Vec<PyReadonlyArray2<'py, f32>>,
    docs: Vec<PyReadonlyArray2<'py, f32>>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let d = dim_of(&queries)?;
    let mut doc_slices = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        if doc.shape()[1] != d {
            return Err(to_py(Error::InvalidArgument(format!(
                "dimension mismatch: document {i} has {} dimensions, the queries have {d}",
                doc.shape()[1]
            ))));
        }
        doc_slices.push(slice(doc, "documents")?);
    }
    let qs = query_slices(&queries)?;
    let t = parallel::resolve(threads);
    let (nq, nd) = (qs.len(), doc_slices.len());
    let s = detached(py, || maxsim::maxsim(&qs, d, &Docs::List(&doc_slices), t))?;
    output(py, s, nq, nd)
}

/// MaxSim against packed tokens (N, d) of float32, float16 (as uint16 bits) or int8 with `scale`
/// (per token when `per_token`, else per dimension); `offsets` has n_docs + 1 entries.
#[pyfunction]
#[pyo3(signature = (queries, tokens, offsets, scale=None, per_token=true, threads=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn maxsim_packed<'py>(
    py: Python<'py>,
    queries: Vec<PyReadonlyArray2<'py, f32>>,
    tokens: &Bound<'py, PyAny>,
    offsets: PyReadonlyArray1<'py, i64>,
    scale: Option<PyReadonlyArray1<'py, f32>>,
    per_token: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let d = dim_of(&queries)?;
    let qs = query_slices(&queries)?;
    let offs = slice1(&offsets, "offsets")?;
    let t = parallel::resolve(threads);
    let (nq, nd) = (qs.len(), offs.len().saturating_sub(1));
    let check_d = |got: usize| -> PyResult<()> {
        if got != d {
            return Err(to_py(Error::InvalidArgument(format!(
                "dimension mismatch: the documents have {got} dimensions, the queries have {d}"
            ))));
        }
        Ok(())
    };
    let s = if let Ok(a) = tokens.extract::<PyReadonlyArray2<'py, f32>>() {
        check_d(a.shape()[1])?;
        let x = slice(&a, "tokens")?;
        detached(py, || maxsim::maxsim(&qs, d, &Docs::Packed { tokens: Tokens::F32(x), offsets: offs }, t))?
    } else if let Ok(a) = tokens.extract::<PyReadonlyArray2<'py, u16>>() {
        check_d(a.shape()[1])?;
        let x = slice(&a, "tokens")?;
        detached(py, || maxsim::maxsim(&qs, d, &Docs::Packed { tokens: Tokens::F16(x), offsets: offs }, t))?
    } else if let Ok(a) = tokens.extract::<PyReadonlyArray2<'py, i8>>() {
        check_d(a.shape()[1])?;
        let x = slice(&a, "tokens")?;
        let sc = match &scale {
            Some(s) => slice1(s, "scale")?,
            None => return Err(to_py(Error::InvalidArgument("int8 tokens need a scale".into()))),
        };
        let scale = if per_token { Scale::Token(sc) } else { Scale::Dim(sc) };
        let tokens = Tokens::I8 { codes: x, scale };
        detached(py, || maxsim::maxsim(&qs, d, &Docs::Packed { tokens, offsets: offs }, t))?
    } else {
        return Err(to_py(Error::InvalidArgument(
            "packed tokens must be a 2-D float32, uint16 (float16 bits) or int8 array".into(),
        )));
    };
    output(py, s, nq, nd)
}
