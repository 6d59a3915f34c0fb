//! rankfunnel core: SIMD similarity kernels, exact top-k search and the index types.
//!
//! This crate is pure Rust. The Python binding lives in [`python`] behind the `python` feature, so
//! `cargo test` and the criterion benches link the core without a Python interpreter.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod bm25;
pub mod error;
pub mod flat;
pub mod half;
pub mod hnsw;
pub mod ids;
pub mod index;
pub mod ivf;
pub mod kmeans;
pub mod layout;
pub mod maxsim;
pub mod metric;
pub mod multivector;
pub mod pack;
pub mod pages;
pub mod parallel;
pub mod rng;
pub mod simd;
pub mod sq8;
pub mod storage;
pub mod topk;
pub mod vectors;

#[cfg(feature = "python")]
pub mod python;

pub use bm25::BM25Index;
pub use error::{Error, Result};
pub use flat::FlatIndex;
pub use hnsw::HnswIndex;
pub use index::Index;
pub use ivf::IvfIndex;
pub use metric::Metric;
pub use multivector::MultiVectorIndex;
