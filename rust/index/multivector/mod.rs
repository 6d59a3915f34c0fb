//! `MultiVectorIndex`: PLAID-style late-interaction retrieval over compressed token vectors.
//!
//! Storage (ColBERTv2 residual compression): token vectors are clustered by k-means (trained on
//! the first `add`, reused afterwards); each token keeps its centroid id (`u32`) and, per
//! dimension, an `nbits` bucket of its residual `x - c`. Each dimension has its own scalar
//! quantizer, fitted to the training residuals by Lloyd-Max (cutoffs halfway between the
//! reconstruction values, each value the mean of the residuals in its bucket), which roughly
//! halves the squared error of plain quantile buckets at 4 bits. Memory per token:
//! `4 + d * nbits / 8` bytes (+ at most 4 bytes of inverted-list entry); `nbits = 0` keeps the
//! f32 tokens (`4 d` bytes) and makes the final scores exact.
//!
//! Search, per query:
//! 1. centroid interaction: the query tokens' scores against every centroid; each query token
//!    probes its `nprobe` best centroids and every document listed under one of them gets, for
//!    that token, the best probed centroid score it holds (a document-level inverted list);
//! 2. the `candidates` best documents by that approximate MaxSim are decompressed;
//! 3. the fused MaxSim kernel scores them exactly (on the decompressed tokens) and the top `k`
//!    are returned, best first, ties to the lower id, padded with id -1 and score -inf;
//! 4. optionally (`refine > 0`, index built with a [`Refine`] copy): the best `refine * k` of
//!    step 3 are rescored with an exact float16 / float32 copy of their tokens, which stays on
//!    disk after a mmapped load; `rerank` uses that copy too.

mod codec;
mod io;
mod search;

use std::collections::HashSet;
use std::path::Path;

use crate::format::storage::{Buf, Dtype, Header, IndexFile, Kind, Mapping, Writer};
use crate::index::ids::IdMap;
use crate::index::{IdIndex, Index};
use crate::kernels::half;
use crate::kernels::kmeans::{self, Init};
use crate::kernels::maxsim::{self, Docs, PackedQuery, Tokens};
use crate::kernels::metric::Metric;
use crate::kernels::topk::{self, Results, TopK};
use crate::util::error::{Error, Result};
use crate::util::parallel;
use crate::util::rng::Rng;
use crate::util::vectors;

/// Residual bit widths supported (a bucket never straddles a byte).
pub const NBITS: [usize; 5] = [0, 1, 2, 4, 8];
/// k-means iterations when training centroids.
const KMEANS_ITERS: usize = 10;
/// Training tokens per centroid (and a cap on the training sample).
const TRAIN_PER_CENTROID: usize = 64;
const TRAIN_MAX: usize = 262_144;
/// Lloyd-Max iterations of the per-dimension residual quantizers.
const LLOYD_ITERS: usize = 300;

/// The optional exact copy of the tokens kept beside the compressed ones (for `refine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refine {
    /// No copy: scores come from the decompressed tokens.
    None,
    /// IEEE half copy (`2 d` bytes per token; relative error <= 2^-11 per value).
    F16,
    /// float32 copy (`4 d` bytes per token).
    F32,
}

impl Refine {
    /// Parse `"none"` / `"f16"` / `"f32"`.
    pub fn parse(s: &str) -> Result<Refine> {
        match s {
            "none" | "" => Ok(Refine::None),
            "f16" | "float16" => Ok(Refine::F16),
            "f32" | "float32" => Ok(Refine::F32),
            other => Err(Error::InvalidArgument(format!(
                "unknown refine dtype {other:?}: expected None, \"f16\" or \"f32\""
            ))),
        }
    }

    /// The name `parse` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Refine::None => "none",
            Refine::F16 => "f16",
            Refine::F32 => "f32",
        }
    }

    fn code(self) -> i64 {
        match self {
            Refine::None => 0,
            Refine::F16 => 1,
            Refine::F32 => 2,
        }
    }
}

/// Late-interaction index over documents of token vectors (see the module docs).
pub struct MultiVectorIndex {
    dim: usize,
    nbits: usize,
    /// Requested number of centroids (0 = chosen from the first batch).
    want_centroids: usize,
    seed: u64,
    centroids: Vec<f32>,
    /// Per dimension: `2^nbits - 1` bucket cutoffs and `2^nbits` reconstruction values.
    cutoffs: Vec<f32>,
    weights: Vec<f32>,
    /// Decoding table: for residual byte `g` of a token and its value `v`, the `8 / nbits`
    /// reconstruction values it stands for (`lut[(g * 256 + v) * per..][..per]`); `d * 256` floats.
    lut: Vec<f32>,
    /// Re-normalise decoded tokens to unit length (set when the training tokens were unit-length).
    normalize: bool,
    codes: Buf<u32>,
    residuals: Buf<u8>,
    /// f32 tokens when `nbits == 0`.
    tokens: Buf<f32>,
    /// The exact copy for `refine` (one of the two, by `refine`).
    refine: Refine,
    exact16: Buf<u16>,
    exact32: Buf<f32>,
    /// Token offsets per slot (`len + 1` entries).
    offsets: Vec<u64>,
    /// Id of each slot; [`DEAD`] for a removed document, whose data stays until a compaction.
    ids: Vec<i64>,
    /// Number of removed slots still held (see [`MultiVectorIndex::compact`]).
    dead: usize,
    idmap: IdMap,
    /// Per centroid, the slots of the documents holding a token of it (ascending).
    lists: Vec<Vec<u32>>,
}

/// Documents to add: all their token vectors back to back, document `i` being rows
/// `offsets[i]..offsets[i + 1]` of `tokens`.
#[derive(Clone, Copy, Debug)]
pub struct TokenDocs<'a> {
    /// Token vectors, row-major.
    pub tokens: &'a [f32],
    /// `n + 1` row offsets.
    pub offsets: &'a [i64],
}

/// The centroid codes and residual codes of a batch's tokens (see
/// [`MultiVectorIndex::encode_docs`]).
pub(crate) struct Encoded {
    /// Centroid of each token.
    pub codes: Vec<u32>,
    /// Residual codes, a fixed number of bytes per token (empty without `nbits`).
    pub residuals: Vec<u8>,
}

/// Search settings of a [`MultiVectorIndex`] besides `k` and the allow-list.
#[derive(Clone, Copy, Debug)]
pub struct SearchParams {
    /// Documents scored exactly.
    pub candidates: usize,
    /// Centroids probed per query token.
    pub nprobe: usize,
    /// Rescore the best `refine * k` with the exact copy (0: off; needs a [`Refine`] copy).
    pub refine: usize,
}

/// The id of a removed slot (ids are non-negative).
pub(crate) const DEAD: i64 = -1;

/// Compact once dead slots are `1 / COMPACT_WHEN_DEAD` of all slots.
const COMPACT_WHEN_DEAD: usize = 4;

/// The live documents' data, back to back: what a compaction keeps and a save writes.
pub(super) struct Live {
    pub codes: Vec<u32>,
    pub residuals: Vec<u8>,
    pub tokens: Vec<f32>,
    pub exact16: Vec<u16>,
    pub exact32: Vec<f32>,
    pub offsets: Vec<u64>,
    pub ids: Vec<i64>,
}

impl MultiVectorIndex {
    /// Copies of the live documents' data, in slot order.
    pub(super) fn live(&self) -> Live {
        let (d, rb) = (self.dim, self.rbytes());
        let mut l = Live {
            codes: Vec::new(),
            residuals: Vec::new(),
            tokens: Vec::new(),
            exact16: Vec::new(),
            exact32: Vec::new(),
            offsets: vec![0u64],
            ids: Vec::with_capacity(self.len()),
        };
        for (s, &id) in self.ids.iter().enumerate() {
            if id == DEAD {
                continue;
            }
            let (a, z) = (self.offsets[s] as usize, self.offsets[s + 1] as usize);
            if self.nbits == 0 {
                l.tokens.extend_from_slice(&self.tokens.as_slice()[a * d..z * d]);
            } else {
                l.residuals.extend_from_slice(&self.residuals.as_slice()[a * rb..z * rb]);
            }
            match self.refine {
                Refine::F16 => l.exact16.extend_from_slice(&self.exact16.as_slice()[a * d..z * d]),
                Refine::F32 => l.exact32.extend_from_slice(&self.exact32.as_slice()[a * d..z * d]),
                Refine::None => {}
            }
            l.codes.extend_from_slice(&self.codes.as_slice()[a..z]);
            l.ids.push(id);
            l.offsets.push(*l.offsets.last().unwrap() + (z - a) as u64);
        }
        l
    }

    /// Drop the data of removed documents: slots are renumbered, the inverted lists rebuilt.
    fn compact(&mut self) {
        let l = self.live();
        self.codes = Buf::Owned(l.codes);
        self.residuals = Buf::Owned(l.residuals);
        self.tokens = Buf::Owned(l.tokens);
        self.exact16 = Buf::Owned(l.exact16);
        self.exact32 = Buf::Owned(l.exact32);
        self.offsets = l.offsets;
        self.idmap.reset_to(&l.ids);
        self.ids = l.ids;
        self.dead = 0;
        self.rebuild_lists();
    }

    /// An empty index. `n_centroids = 0` picks `2^floor(log2(4 sqrt(tokens)))` on the first add.
    pub fn new(dim: usize, nbits: usize, n_centroids: usize, seed: u64) -> Result<MultiVectorIndex> {
        if dim == 0 || dim > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("dim must be between 1 and 2^32-1, got {dim}")));
        }
        if !NBITS.contains(&nbits) {
            return Err(Error::InvalidArgument(format!("nbits must be 0, 1, 2, 4 or 8, got {nbits}")));
        }
        if nbits > 0 && !(dim * nbits).is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!(
                "dim * nbits must be a multiple of 8 (whole bytes per token), got {dim} * {nbits}"
            )));
        }
        Ok(MultiVectorIndex {
            dim,
            nbits,
            want_centroids: n_centroids,
            seed,
            centroids: Vec::new(),
            cutoffs: Vec::new(),
            weights: Vec::new(),
            lut: Vec::new(),
            normalize: false,
            codes: Buf::default(),
            residuals: Buf::default(),
            tokens: Buf::default(),
            refine: Refine::None,
            exact16: Buf::default(),
            exact32: Buf::default(),
            offsets: vec![0],
            ids: Vec::new(),
            dead: 0,
            idmap: IdMap::new(),
            lists: Vec::new(),
        })
    }

    /// Keep an exact copy of every token for `refine` / `rerank` (only before the first add;
    /// not with `nbits = 0`, whose tokens are exact already).
    pub fn with_refine(mut self, refine: Refine) -> Result<MultiVectorIndex> {
        if refine != Refine::None && self.nbits == 0 {
            return Err(Error::InvalidArgument(
                "nbits=0 keeps exact float32 tokens already; a refine copy needs nbits > 0".into(),
            ));
        }
        if !self.is_empty() {
            return Err(Error::InvalidArgument("the refine copy must be chosen before the first add".into()));
        }
        self.refine = refine;
        Ok(self)
    }

    /// The exact copy kept for `refine`.
    pub fn refine(&self) -> Refine {
        self.refine
    }

    /// Residual bits per dimension (0 = f32 tokens).
    pub fn nbits(&self) -> usize {
        self.nbits
    }

    /// Check a batch of documents (dimension, offsets, finite values, room left, the f16 range
    /// of the refine copy); returns how many documents it holds. Changes nothing.
    pub(crate) fn check_docs(&self, docs: TokenDocs<'_>) -> Result<usize> {
        let TokenDocs { tokens, offsets } = docs;
        let d = self.dim;
        vectors::rows(tokens, d, "document tokens")?;
        Docs::Packed { tokens: Tokens::F32(tokens), offsets }.validate(d)?;
        vectors::check_finite(tokens, d, "document tokens")?;
        let n = offsets.len() - 1;
        if self.ids.len() + n > u32::MAX as usize {
            return Err(Error::InvalidArgument("a MultiVectorIndex holds at most 2^32 - 1 documents".into()));
        }
        if self.refine == Refine::F16 && tokens.iter().any(|x| x.abs() > 65504.0) {
            return Err(Error::InvalidArgument(
                "document tokens exceed the float16 range (|x| > 65504) of the f16 refine copy".into(),
            ));
        }
        Ok(n)
    }

    /// The centroid of each of `tokens` and, with `nbits`, their residual codes: the heavy part
    /// of an add, which changes nothing (so it can run while searches share the index). The
    /// index must have its centroids (the first add trains them).
    pub(crate) fn encode_docs(&self, tokens: &[f32], threads: usize) -> Result<Encoded> {
        if tokens.is_empty() {
            return Ok(Encoded { codes: Vec::new(), residuals: Vec::new() });
        }
        let codes = self.assign(tokens, threads)?;
        let residuals = if self.nbits > 0 { self.encode(tokens, &codes, threads) } else { Vec::new() };
        Ok(Encoded { codes, residuals })
    }

    /// Store checked documents (see [`MultiVectorIndex::check_docs`]) with their `codes` and
    /// `residuals` (from [`MultiVectorIndex::encode_docs`], these tokens' part) under `ids` (or
    /// the next free ids); returns the ids given. Checks the ids before changing anything.
    pub(crate) fn append(
        &mut self,
        docs: TokenDocs<'_>,
        ids: Option<&[i64]>,
        codes: &[u32],
        residuals: &[u8],
    ) -> Result<Vec<i64>> {
        let TokenDocs { tokens, offsets } = docs;
        let d = self.dim;
        let n_tok = tokens.len() / d;
        let n = offsets.len() - 1;
        let new_ids = self.idmap.assign(n, ids, "documents")?;
        if codes.len() != n_tok {
            return Err(Error::InvalidArgument("one centroid code per token expected".into()));
        }
        let base = self.n_tokens() as u64;
        match (self.nbits, self.refine) {
            (0, _) => self.tokens.to_mut().extend_from_slice(tokens),
            (_, Refine::F16) => self.exact16.to_mut().extend(tokens.iter().map(|&x| half::f32_to_f16(x))),
            (_, Refine::F32) => self.exact32.to_mut().extend_from_slice(tokens),
            (_, Refine::None) => {}
        }
        if n_tok > 0 {
            if self.nbits > 0 {
                self.residuals.to_mut().extend_from_slice(residuals);
            }
            let first = self.ids.len();
            if self.lists.len() < self.n_centroids() {
                self.lists.resize(self.n_centroids(), Vec::new());
            }
            let mut seen: Vec<u32> = Vec::new();
            for i in 0..n {
                seen.clear();
                seen.extend(&codes[offsets[i] as usize..offsets[i + 1] as usize]);
                seen.sort_unstable();
                seen.dedup();
                for &c in &seen {
                    self.lists[c as usize].push((first + i) as u32);
                }
            }
            self.codes.to_mut().extend_from_slice(codes);
        }
        for (i, &id) in new_ids.iter().enumerate() {
            self.idmap.insert(id, self.ids.len());
            self.ids.push(id);
            self.offsets.push(base + offsets[i + 1] as u64);
        }
        self.idmap.advance(&new_ids);
        Ok(new_ids)
    }

    /// Number of centroids (0 before the first add).
    pub fn n_centroids(&self) -> usize {
        self.centroids.len() / self.dim
    }

    /// Total tokens stored.
    pub fn n_tokens(&self) -> usize {
        *self.offsets.last().unwrap() as usize
    }

    /// Bytes per token of the exact copy kept for `refine` (0 without one).
    pub fn refine_bytes_per_token(&self) -> usize {
        match self.refine {
            Refine::None => 0,
            Refine::F16 => 2 * self.dim,
            Refine::F32 => 4 * self.dim,
        }
    }

    /// Bytes per stored token of the compressed form (centroid id + residual), or 4 d for f32.
    pub fn bytes_per_token(&self) -> usize {
        if self.nbits == 0 {
            4 * self.dim
        } else {
            4 + self.dim * self.nbits / 8
        }
    }
}

impl IdIndex for MultiVectorIndex {
    const KIND: Kind = Kind::MultiVector;

    /// Token dimension.
    fn dim(&self) -> usize {
        self.dim
    }

    /// Number of documents.
    fn len(&self) -> usize {
        self.ids.len() - self.dead
    }

    /// True when `id` is stored.
    fn contains(&self, id: i64) -> bool {
        self.idmap.contains(id)
    }

    fn ids(&self) -> Vec<i64> {
        self.ids.iter().copied().filter(|&id| id != DEAD).collect()
    }

    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        self.idmap.assign(n, ids, "documents")
    }

    /// Remove documents by id; all must exist (else nothing changes). Returns how many.
    /// Remove documents: each id leaves the id map and its slot is marked dead (searches skip
    /// it), so a remove costs O(ids), not a rewrite of the index; the data of dead slots is
    /// dropped by a compaction once they are a quarter of the slots (amortized O(1) per removed
    /// document), and a save writes live documents only.
    fn remove(&mut self, ids: &[i64]) -> Result<usize> {
        let mut gone = HashSet::with_capacity(ids.len());
        for &id in ids {
            if !self.idmap.contains(id) {
                return Err(Error::UnknownId(id));
            }
            gone.insert(id);
        }
        for &id in &gone {
            let s = self.idmap.remove(id).expect("checked above");
            self.ids[s] = DEAD;
            self.dead += 1;
        }
        if self.dead > 0 && self.dead * COMPACT_WHEN_DEAD >= self.ids.len() {
            self.compact();
        }
        Ok(gone.len())
    }

    fn save(&self, path: &Path) -> Result<()> {
        self.write_file(path)
    }

    fn from_file(f: &IndexFile) -> Result<MultiVectorIndex> {
        MultiVectorIndex::read_file(f)
    }

    fn memory_bytes(&self) -> usize {
        self.codes.heap_bytes()
            + self.residuals.heap_bytes()
            + self.tokens.heap_bytes()
            + self.exact16.heap_bytes()
            + self.exact32.heap_bytes()
            + 4 * (self.centroids.capacity() + self.cutoffs.capacity() + self.weights.capacity())
            + self.lists.iter().map(|l| l.capacity() * 4 + 24).sum::<usize>()
            + self.offsets.capacity() * 8
            + self.ids.capacity() * 8
            + self.idmap.capacity() * 24
    }

    fn mapped_file(&self) -> Option<&Mapping> {
        self.codes.mapping().or(self.tokens.mapping()).or(self.exact16.mapping()).or(self.exact32.mapping())
    }
}

impl Index for MultiVectorIndex {
    type Data<'a> = TokenDocs<'a>;
    type Queries<'a> = &'a [&'a [f32]];
    type Params<'a> = SearchParams;

    /// [`Metric::Dot`]: MaxSim sums inner products.
    fn metric(&self) -> Metric {
        Metric::Dot
    }

    /// Decompressed tokens of the documents `ids`, back to back (`n_i x d` each).
    fn get(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let slots = ids.iter().map(|&id| self.idmap.slot(id)).collect::<Result<Vec<usize>>>()?;
        let mut out = Vec::new();
        for s in slots {
            self.decode_into(s, &mut out);
        }
        Ok(out)
    }

    /// Add documents: `tokens` holds all their token vectors back to back, document `i` being
    /// rows `offsets[i]..offsets[i + 1]`. The first add trains the centroids. Returns the ids.
    ///
    /// Everything is checked before anything changes, so a failed add leaves the index as it was.
    fn add(&mut self, docs: TokenDocs<'_>, ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let n = self.check_docs(docs)?;
        self.idmap.assign(n, ids, "documents")?;
        if !docs.tokens.is_empty() && self.centroids.is_empty() {
            self.train(docs.tokens, threads)?;
        }
        let enc = self.encode_docs(docs.tokens, threads)?;
        self.append(docs, ids, &enc.codes, &enc.residuals)
    }

    /// Heap bytes used: tokens, centroids, inverted lists, offsets and ids (mapped pages excluded).
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        p: &SearchParams,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        self.search_queries(queries, k, p, allow, threads)
    }
}
