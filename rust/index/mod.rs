//! [`Index`]: what every index is, whatever its structure: a set of vectors (or documents) under
//! non-negative `i64` ids that can be added, removed, fetched, searched, saved and loaded.
//!
//! FlatIndex, HnswIndex, IvfIndex and MultiVectorIndex implement it; what differs between them
//! (the input of `add`, the shape of the queries, the search settings) is an associated type.
//! BM25Index, an index of texts, implements the shared part, [`IdIndex`].

pub mod bm25;
pub mod flat;
pub mod hnsw;
pub mod ids;
pub mod ivf;
pub mod multivector;

use std::path::Path;

use crate::format::storage::{IndexFile, Kind, Mapping};
use crate::kernels::metric::Metric;
use crate::kernels::topk::Results;
use crate::util::error::Result;

/// The part of the contract every index shares, whatever it stores (vectors or texts): a set of
/// items under non-negative `i64` ids that can be counted, listed, removed, saved and loaded.
/// [`crate::concurrent::Locked`] needs only this to remove and save while searches run.
pub trait IdIndex: Sized {
    /// The kind written in this index's files.
    const KIND: Kind;

    /// Vector dimension (0 for an index of texts).
    fn dim(&self) -> usize;

    /// Number of stored items (vectors, documents).
    fn len(&self) -> usize;

    /// True when nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `id` is stored.
    fn contains(&self, id: i64) -> bool;

    /// Stored ids in slot order.
    fn ids(&self) -> Vec<i64>;

    /// The ids an add of `n` items with `ids` (or the next free ids) would get, after checking
    /// them (no duplicates, none already held); changes nothing. Lets a caller validate a whole
    /// batch before adding it in parts.
    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> Result<Vec<i64>>;

    /// Remove `ids`; an unknown id is an error and then nothing is removed. Returns the count.
    fn remove(&mut self, ids: &[i64]) -> Result<usize>;

    /// How many ids one [`IdIndex::remove`] call should take so it stays short (a few
    /// milliseconds): callers that share the index with searches remove in parts of this size.
    fn remove_batch(&self) -> usize {
        4096
    }

    /// Remove `ids` through a shared reference, while searches run, where the index can (as
    /// [`IdIndex::remove`] otherwise); `None` where a remove needs exclusive access. Callers run
    /// one edit at a time.
    fn remove_concurrent(&self, ids: &[i64]) -> Option<Result<usize>> {
        let _ = ids;
        None
    }

    /// Save atomically to `path` (temporary file, fsync, rename).
    fn save(&self, path: &Path) -> Result<()>;

    /// Load from an opened file (see [`IndexFile::open`]); with mmap, the large sections stay
    /// mapped.
    fn from_file(f: &IndexFile) -> Result<Self>;

    /// Open `path` and load it.
    fn load(path: &Path, mmap: bool) -> Result<Self> {
        Self::from_file(&IndexFile::open(path, mmap)?)
    }

    /// Heap bytes used; a mapped file's pages are not counted.
    fn memory_bytes(&self) -> usize;

    /// The file mapping (part of) the index is read from, if it was loaded with mmap.
    fn mapped_file(&self) -> Option<&Mapping> {
        None
    }

    /// True while (part of) the index is read from an mmapped file.
    fn is_mapped(&self) -> bool {
        self.mapped_file().is_some()
    }

    /// Error when the file the index is mapped from was truncated or modified since it was
    /// loaded (see [`Mapping::check`]); call before reading the index.
    fn check_mapping(&self) -> Result<()> {
        self.mapped_file().map_or(Ok(()), Mapping::check)
    }
}

/// The operations of an index of vectors: [`IdIndex`], plus adding, fetching and searching.
pub trait Index: IdIndex {
    /// What [`Index::add`] stores besides the ids: `n x dim` row-major vectors, or documents.
    type Data<'a>;
    /// The queries of one [`Index::search`]: `nq x dim` rows, or one token matrix per query.
    type Queries<'a>;
    /// Index-specific search settings (beam width, lists probed, ...); `()` when there are none.
    type Params<'a>;

    /// Metric of the scores.
    fn metric(&self) -> Metric;

    /// The stored vectors of `ids`, row-major (unit length for cosine; decoded for quantized
    /// storage; every token of each document, back to back, for a multi-vector index). An
    /// unknown id is [`crate::Error::UnknownId`].
    fn get(&self, ids: &[i64]) -> Result<Vec<f32>>;

    /// Add `data` under `ids` (or the next free ids) using up to `threads` threads; returns the
    /// ids given. Everything is checked first, so a failed add leaves the index as it was.
    fn add(&mut self, data: Self::Data<'_>, ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>>;

    /// Top-`k` of each query, best first, padded with id -1; `allow` restricts the results to
    /// those ids.
    fn search(
        &self,
        queries: Self::Queries<'_>,
        k: usize,
        params: &Self::Params<'_>,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results>;
}
