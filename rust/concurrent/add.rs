//! The add of each index kind while other threads search: the batch's heavy work first, under
//! the shared lock, then the batch stored in short write sections (see
//! [`Locked::add_chunked`]).

use super::Locked;
use crate::index::bm25::BM25Index;
use crate::index::flat::FlatIndex;
use crate::index::hnsw::{self, HnswIndex};
use crate::index::ivf::IvfIndex;
use crate::index::multivector::{Encoded, MultiVectorIndex, TokenDocs};
use crate::index::IdIndex;
use crate::util::error::Result;
use crate::util::vectors;

/// About this many floats are stored per write section of an add (a row in block layout writes
/// one cache line per dimension: 192 rows of 128 dimensions take about 0.3 ms). Searches wait
/// out at most about one section, and a writer lets a waiting search go first before each one
/// (see [`Locked`]), so smaller sections cost the add throughput while searches run.
pub const ADD_CHUNK_FLOATS: usize = 3 << 13;

/// Documents stored per write section of a BM25 add.
const ADD_CHUNK_DOCS: usize = 1024;

/// Rows of `d` floats per write section: about [`ADD_CHUNK_FLOATS`] values.
fn rows_per_chunk(d: usize) -> usize {
    (ADD_CHUNK_FLOATS / d.max(1)).max(1)
}

impl Locked<FlatIndex> {
    /// Add `vectors` (`n x dim`, row-major) under `ids` (or the next free ids) while other
    /// threads search; returns the ids given. All or nothing.
    ///
    /// When the buffers must grow, the whole batch is added to a grown copy while searches
    /// share the index, and the copy is swapped in by one short write section; otherwise the
    /// rows are written in place, chunk by chunk.
    pub fn add(&self, vectors: &[f32], ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let d = self.dim();
        let n = vectors::rows(vectors, d, "vectors")?;
        let mut retired = None; // the replaced buffers, freed after the write section
        let out = self.add_chunked(
            n,
            ids,
            |copy: &Option<FlatIndex>| if copy.is_some() { n } else { rows_per_chunk(d) },
            |g| {
                vectors::check_finite(vectors, d, "vectors")?;
                let ids = g.assign_ids(n, ids)?;
                g.with_added(vectors, &ids)
            },
            |g, copy, r, chunk_ids| match copy.take() {
                Some(c) => {
                    retired = Some(std::mem::replace(g, c));
                    Ok(chunk_ids.to_vec())
                }
                None => {
                    crate::index::Index::add(g, &vectors[r.start * d..r.end * d], Some(chunk_ids), threads)
                }
            },
        );
        drop(retired);
        out
    }
}

impl Locked<HnswIndex> {
    /// Add `vectors` (`n x dim`, row-major) under `ids` (or the next free ids) on up to
    /// `threads` threads while other threads search; returns the ids given. All or nothing.
    ///
    /// Buffers that must grow are copied aside under the shared lock; the batch is then stored
    /// chunk by chunk in short write sections, linked into the graph under the shared lock while
    /// searches run, and the entry point published by a last short section.
    pub fn add(&self, vectors: &[f32], ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let d = self.dim();
        let n = vectors::rows(vectors, d, "vectors")?;
        self.add_chunked_then(
            n,
            ids,
            // An empty index takes the batch in one section: no search can wait on it, and its
            // int8 ranges are then fit on the whole batch.
            |(_, _, empty)| if *empty { n } else { 4 * rows_per_chunk(d) },
            |g| {
                vectors::check_finite(vectors, d, "vectors")?;
                Ok((g.room_for(n), hnsw::Staged::default(), g.slots() == 0))
            },
            |g, (room, staged, _), r, chunk_ids| {
                g.install(room);
                staged.append(g.stage(&vectors[r.start * d..r.end * d], Some(chunk_ids))?);
                Ok(chunk_ids.to_vec())
            },
            |(room, staged, _), all| {
                drop(room); // the replaced buffers, freed outside the write sections
                let top = self.read().link(&staged, threads);
                self.section(|g| g.publish(staged, top));
                Ok(all)
            },
        )
    }
}

impl Locked<IvfIndex> {
    /// Add `vectors` (`n x dim`, row-major) under `ids` (or the next free ids) while other
    /// threads search; returns the ids given. All or nothing; the index must be trained.
    ///
    /// The lists are chosen for the whole batch first, and lists too small to take it are
    /// grown as copies, sharing the index with searches; the copies are swapped in and the rows
    /// stored chunk by chunk.
    pub fn add(&self, vectors: &[f32], ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let d = self.dim();
        let n = vectors::rows(vectors, d, "vectors")?;
        self.add_chunked(
            n,
            ids,
            |_| rows_per_chunk(d),
            |g| {
                let lists = g.route(vectors, threads)?;
                let room = g.room_for(&lists);
                Ok((lists, room))
            },
            |g, (lists, room), r, chunk_ids| {
                if r.start == 0 {
                    // Swap in the grown copies; the old buffers are dropped with `room`, after
                    // the add, outside the lock.
                    *room = g.install(std::mem::take(room));
                }
                g.add_routed(&vectors[r.start * d..r.end * d], Some(chunk_ids), &lists[r])
            },
        )
    }
}

impl Locked<MultiVectorIndex> {
    /// Add documents (`docs`: token rows and offsets) under `ids` (or the next free ids) on up
    /// to `threads` threads while other threads search; returns the ids given. All or nothing.
    ///
    /// Once the centroids exist, the tokens are encoded for the whole batch first, sharing the
    /// index with searches, and the documents stored chunk by chunk; the first add, which
    /// trains the centroids on its tokens, is stored in one piece.
    pub fn add(&self, docs: TokenDocs<'_>, ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let d = self.dim();
        let n = docs.offsets.len().saturating_sub(1);
        let n_tok = docs.tokens.len() / d.max(1);
        self.add_chunked(
            n,
            ids,
            |enc: &Option<Encoded>| {
                if enc.is_some() {
                    (rows_per_chunk(d) * n / n_tok.max(1)).max(1)
                } else {
                    n
                }
            },
            |g| {
                g.check_docs(docs)?;
                if g.n_centroids() == 0 {
                    return Ok(None);
                }
                g.encode_docs(docs.tokens, threads).map(Some)
            },
            |g, enc, r, chunk_ids| match enc {
                None => crate::index::Index::add(g, docs, Some(chunk_ids), threads),
                Some(enc) => {
                    let (a, b) = (docs.offsets[r.start] as usize, docs.offsets[r.end] as usize);
                    let offsets: Vec<i64> =
                        docs.offsets[r.start..=r.end].iter().map(|&o| o - a as i64).collect();
                    let per_tok = enc.residuals.len() / enc.codes.len().max(1);
                    let part = TokenDocs { tokens: &docs.tokens[a * d..b * d], offsets: &offsets };
                    g.append(
                        part,
                        Some(chunk_ids),
                        &enc.codes[a..b],
                        &enc.residuals[a * per_tok..b * per_tok],
                    )
                }
            },
        )
    }
}

impl Locked<BM25Index> {
    /// Add `texts` under `ids` (or the next free ids), analyzed on up to `threads` threads while
    /// other threads search; returns the ids given. All or nothing.
    ///
    /// The texts are analyzed first, sharing the index with searches; the documents are then
    /// stored chunk by chunk.
    pub fn add<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        ids: Option<&[i64]>,
        threads: usize,
    ) -> Result<Vec<i64>> {
        self.add_chunked(
            texts.len(),
            ids,
            |_| ADD_CHUNK_DOCS,
            |g| Ok(g.analyze_all(texts, threads)),
            |g, analyzed, r, chunk_ids| {
                let part: Vec<Vec<String>> = analyzed[r].iter_mut().map(std::mem::take).collect();
                g.add_analyzed(part, Some(chunk_ids))
            },
        )
    }
}
