//! rankfunnel core: SIMD similarity kernels, exact top-k search and the index types.
//!
//! This crate is pure Rust. The Python binding lives in [`python`] behind the `python` feature, so
//! `cargo test` and the criterion benches link the core without a Python interpreter.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod concurrent;
pub mod format;
pub mod index;
pub mod kernels;
pub mod util;

#[cfg(feature = "python")]
pub mod python;

pub use index::bm25::BM25Index;
pub use index::flat::FlatIndex;
pub use index::hnsw::HnswIndex;
pub use index::ivf::IvfIndex;
pub use index::multivector::MultiVectorIndex;
pub use index::{IdIndex, Index};
pub use kernels::metric::Metric;
pub use util::error::{Error, Result};
