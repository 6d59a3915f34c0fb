//! Graph primitives of the HNSW index: link-list views, distances with prefetching, the beam
//! search over one layer, greedy descent and hnswlib's neighbour-selection heuristic.
//!
//! Link lists are `u32` arrays of `cap + 1` words: a count followed by `cap` slot numbers.
//! Level 0 holds `m0 = 2 * m` links per node in one flat array; upper levels hold `m` each, in a
//! second array addressed through a per-slot offset.

mod links;
mod rows;
mod scratch;
mod walk;

pub(crate) use links::*;
pub(crate) use rows::*;
pub(crate) use scratch::*;
pub(crate) use walk::*;
