//! `HnswIndex`: a hierarchical navigable small-world graph (Malkov & Yashunin) for approximate
//! nearest-neighbour search.
//!
//! Layout, chosen for memory and cache behaviour:
//! - vectors: row-major `f32`, one row per slot (unit length for cosine);
//! - level-0 links: one flat `u32` array, `2 * m + 1` words per slot (count, then links);
//! - upper links: a second flat array, `m + 1` words per slot and level, found through a
//!   per-slot offset (only about `1 / m` of the nodes have any);
//! - a per-thread visited bitset, reused across searches.
//!
//! Builds insert nodes in parallel (rayon), each node's link lists guarded by its own lock while
//! readers walk the graph lock-free through atomic loads. Searches use the same atomic loads, so an
//! add can link its nodes while searches run (see [`HnswIndex::stage`]). Removal marks a slot
//! deleted: it is never returned again but still routes searches until a later add reuses it,
//! rewriting its vector, relinking it and repairing the lists of its old neighbours. A remove
//! needs no exclusive access (see [`HnswIndex::remove_shared`]), so it never stalls a search.

mod builder;
mod codes;
pub use codes::CodeKind;
#[cfg(test)]
mod filter_tests;
mod graph;
mod insert;
pub(crate) use insert::Staged;
mod io;
pub(crate) use io::GraphSections;
mod search;
#[cfg(test)]
mod staged_tests;
#[cfg(test)]
mod stream_tests;
mod tombstones;

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use self::codes::WalkCodes;
use self::graph::{AtomicLinks, LinkWords, Links, Shape, Space};
use self::tombstones::{Book, Tombstones};
use crate::format::storage::{Buf, IndexFile, Kind, Mapping};
use crate::index::{IdIndex, Index};
use crate::invalid;
use crate::kernels::metric::Metric;
use crate::kernels::topk::Results;
use crate::util::error::Result;
use crate::util::rng::Rng;
use crate::util::vectors;

/// Highest level a node can get (levels are drawn as `floor(-ln(U) / ln(m))`).
const MAX_LEVEL: usize = 32;
/// Shared-filter exact scans of at least this many queries gather the allowed rows and use the
/// blocked tile kernels; fewer queries scan the allowed rows in place.
const BATCH_SCAN: usize = 8;
/// Ids [`HnswIndex::remove_shared`] removes per hold of the id map's lock.
const ID_LOCK_BATCH: usize = 64;
/// Largest `m` accepted.
const MAX_M: usize = 2048;

/// Which ids a search may return.
#[derive(Clone, Copy, Debug)]
pub enum Allow<'a> {
    /// Every live id.
    All,
    /// One allow-list for every query (unknown ids are ignored).
    Shared(&'a [i64]),
    /// One allow-list per query.
    PerQuery(&'a [&'a [i64]]),
}

/// How a filtered search runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// Scan the allowed vectors exactly when a cost model says that is cheaper than a walk
    /// (small allow-lists), else walk them as [`FilterMode::Acorn`] does, giving up for the exact
    /// scan once the walk has done a scan's worth of work.
    Auto,
    /// Walk the graph through every node, keeping the allowed ones (hnswlib's filter), falling
    /// back to an exact scan only when the walk finds fewer than `k` allowed results.
    Graph,
    /// Walk only the allowed nodes, reaching past a node outside the filter to its neighbours
    /// (two-hop expansion, as ACORN-1 does), so only allowed vectors are scored; falls back to an
    /// exact scan only when the walk finds fewer than `k` allowed results.
    Acorn,
    /// Always scan the allowed vectors exactly.
    Exact,
}

impl FilterMode {
    /// Parse `"auto" | "graph" | "acorn" | "exact"`.
    pub fn parse(name: &str) -> Result<FilterMode> {
        match name {
            "auto" => Ok(FilterMode::Auto),
            "graph" => Ok(FilterMode::Graph),
            "acorn" => Ok(FilterMode::Acorn),
            "exact" => Ok(FilterMode::Exact),
            other => Err(invalid!(
                "unknown filter_mode {other:?}: expected \"auto\", \"graph\", \"acorn\" or \"exact\""
            )),
        }
    }
}

/// Search settings of an [`HnswIndex`].
#[derive(Clone, Copy, Debug)]
pub struct HnswParams<'a> {
    /// Beam width of the walk (raised to `k`).
    pub ef: usize,
    /// How a filtered search runs.
    pub mode: FilterMode,
    /// One allow-list per query, used when the shared `allow` of [`Index::search`] is `None`.
    pub allow_lists: Option<&'a [&'a [i64]]>,
}

impl HnswParams<'_> {
    /// Beam width `ef`, [`FilterMode::Auto`], no per-query allow-lists.
    pub fn ef(ef: usize) -> Self {
        HnswParams { ef, mode: FilterMode::Auto, allow_lists: None }
    }
}

/// Approximate nearest-neighbour index over an HNSW graph.
///
/// Ids are non-negative `i64` labels; internally nodes live in `u32` slots.
pub struct HnswIndex {
    dim: usize,
    metric: Metric,
    shape: Shape,
    ef_construction: usize,
    seed: u64,
    rng: Rng,
    vectors: Buf<f32>,
    /// The compact copy of `vectors` that searches and inserts walk, if any.
    codes: WalkCodes,
    /// Level-0 link lists; an add rewrites them while searches read (see [`HnswIndex::link`]).
    links0: LinkWords,
    /// Upper-level link lists, likewise.
    upper: LinkWords,
    /// Start of each slot's upper lists in `upper` (unused for level-0-only slots).
    up_off: Vec<u32>,
    levels: Vec<u8>,
    /// Label of each slot (stale for deleted slots).
    ids: Vec<i64>,
    /// Bitmap of deleted slots (marked through `&self`).
    deleted: Tombstones,
    /// Id map and free slots, behind their own lock so a remove needs only `&self`.
    book: parking_lot::RwLock<Book>,
    entry: Option<u32>,
    max_level: usize,
    /// Level-0 in-degree of every slot, kept from one add to the next (so that a small add does
    /// not recount the whole graph) and recounted by each full pass; not saved.
    indeg: Vec<AtomicU32>,
    /// Nodes linked since the last full pass ([`NEVER_COUNTED`] until the first one): see
    /// [`HnswIndex::full_pass`].
    since_full: AtomicUsize,
}

/// [`HnswIndex::since_full`] of an index whose in-degrees were never counted (new or loaded).
const NEVER_COUNTED: usize = usize::MAX;

/// An add makes a full pass over the graph (recount in-degrees, reconnect islands) once the
/// nodes linked since the last one reach `1 / FULL_PASS_EVERY` of the index: the pass costs
/// O(n) whatever the batch, so a stream of single-vector adds would otherwise pay O(n) each.
const FULL_PASS_EVERY: usize = 32;

impl HnswIndex {
    /// An empty index. `m` is the link count of upper levels (level 0 holds `2 * m`),
    /// `ef_construction` the beam width of inserts, `seed` drives the level draws.
    ///
    /// With `prefilter`, the index also keeps a bfloat16 copy of its vectors (+50% memory): graph
    /// walks read that copy, half the bytes, and the candidates they keep are rescored in `f32`,
    /// so reported scores are exact. [`HnswIndex::with_codes`] picks any copy.
    pub fn new(
        dim: usize,
        metric: Metric,
        m: usize,
        ef_construction: usize,
        seed: u64,
        prefilter: bool,
    ) -> Result<HnswIndex> {
        let codes = if prefilter { CodeKind::Bf16 } else { CodeKind::None };
        HnswIndex::with_codes(dim, metric, m, ef_construction, seed, codes)
    }

    /// An empty index whose graph walks read the copy `codes` of the vectors (see
    /// [`CodeKind`]); the other parameters are those of [`HnswIndex::new`]. Candidates found
    /// over a copy are rescored in `f32`, so reported scores are exact either way.
    pub fn with_codes(
        dim: usize,
        metric: Metric,
        m: usize,
        ef_construction: usize,
        seed: u64,
        codes: CodeKind,
    ) -> Result<HnswIndex> {
        if dim == 0 || dim > u32::MAX as usize {
            return Err(invalid!("dim must be between 1 and 2^32-1, got {dim}"));
        }
        if !(2..=MAX_M).contains(&m) {
            return Err(invalid!("m must be between 2 and {MAX_M}, got {m}"));
        }
        if ef_construction == 0 {
            return Err(invalid!("ef_construction must be at least 1"));
        }
        Ok(HnswIndex {
            dim,
            metric,
            shape: Shape { m, m0: 2 * m },
            ef_construction,
            seed,
            rng: Rng::new(seed),
            vectors: Buf::default(),
            codes: WalkCodes::new(codes),
            links0: LinkWords::default(),
            upper: LinkWords::default(),
            up_off: Vec::new(),
            levels: Vec::new(),
            ids: Vec::new(),
            deleted: Tombstones::default(),
            book: parking_lot::RwLock::default(),
            entry: None,
            max_level: 0,
            indeg: Vec::new(),
            since_full: AtomicUsize::new(NEVER_COUNTED),
        })
    }

    /// Whether linking `batch` more nodes into an index of `total` slots makes a full pass:
    /// when the in-degrees were never counted, or when the nodes linked since the last pass
    /// (this batch included) reach `total / FULL_PASS_EVERY`.
    fn full_pass(&self, batch: usize, total: usize) -> bool {
        let since = self.since_full.load(Ordering::Relaxed);
        since == NEVER_COUNTED || since.saturating_add(batch) >= total / FULL_PASS_EVERY
    }

    /// True when the index keeps the bfloat16 copy its walks read.
    pub fn prefilter(&self) -> bool {
        self.codes.kind() == CodeKind::Bf16
    }

    /// The copy of the vectors graph walks read.
    pub fn codes(&self) -> CodeKind {
        self.codes.kind()
    }

    /// Links per node on upper levels (level 0 holds twice as many).
    pub fn m(&self) -> usize {
        self.shape.m
    }

    /// Beam width used when inserting.
    pub fn ef_construction(&self) -> usize {
        self.ef_construction
    }

    /// Seed of the level draws.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of graph slots, live or deleted.
    pub fn slots(&self) -> usize {
        self.ids.len()
    }

    /// Level of the entry point (the graph's height).
    pub fn max_level(&self) -> usize {
        self.max_level
    }

    fn draw_level(&mut self) -> usize {
        let mult = 1.0 / (self.shape.m as f64).ln();
        let u = 1.0 - self.rng.f64(); // (0, 1]
        ((-u.ln() * mult).floor() as usize).min(MAX_LEVEL)
    }

    /// The link lists, for reading (concurrent adds may rewrite them; see [`HnswIndex::link`]).
    fn links(&self) -> AtomicLinks<'_> {
        AtomicLinks {
            l0: self.links0.atomics(),
            up: self.upper.atomics(),
            up_off: &self.up_off,
            shape: self.shape,
        }
    }

    fn space(&self) -> Space<'_> {
        Space::new(self.vectors.as_slice(), self.dim, self.metric == Metric::L2)
    }

    /// Remove ids through a shared reference, while searches run; an unknown id is an error and
    /// then nothing is removed. Returns the count.
    ///
    /// Each id leaves the id map, then its slot is marked deleted. A search that overlaps sees
    /// each id either present or removed (a batch may be part applied when it looks), and never
    /// waits: the id map's own lock is held for [`ID_LOCK_BATCH`] ids at a time, and only searches
    /// with an allow-list read it. Run one remove or add at a time (the edit lock of `Locked`).
    pub fn remove_shared(&self, ids: &[i64]) -> Result<usize> {
        self.book.read().idmap.check_known(ids)?;
        let mut removed = 0;
        for chunk in ids.chunks(ID_LOCK_BATCH) {
            let mut book = self.book.write();
            for id in chunk {
                if let Some(s) = book.idmap.remove(*id) {
                    self.deleted.mark(s);
                    book.free.push(s);
                    removed += 1;
                }
            }
            parking_lot::RwLockWriteGuard::unlock_fair(book);
        }
        Ok(removed)
    }
}

impl IdIndex for HnswIndex {
    const KIND: Kind = Kind::Hnsw;

    /// Vector dimension.
    fn dim(&self) -> usize {
        self.dim
    }

    /// Number of live (not removed) vectors.
    fn len(&self) -> usize {
        self.book.read().idmap.len()
    }

    /// True when `id` is stored.
    fn contains(&self, id: i64) -> bool {
        self.book.read().idmap.contains(id)
    }

    /// Live ids in slot order.
    fn ids(&self) -> Vec<i64> {
        (0..self.ids.len() as u32).filter(|&s| !self.deleted.has(s)).map(|s| self.ids[s as usize]).collect()
    }

    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        self.book.read().idmap.assign(n, ids, "vectors")
    }

    /// Remove ids; an unknown id is an error and then nothing is removed. Returns the count.
    ///
    /// Removed nodes stay in the graph as waypoints (never returned) until an add reuses them.
    /// See [`HnswIndex::remove_shared`], which needs no exclusive access.
    fn remove(&mut self, ids: &[i64]) -> Result<usize> {
        self.remove_shared(ids)
    }

    fn remove_concurrent(&self, ids: &[i64]) -> Option<Result<usize>> {
        Some(self.remove_shared(ids))
    }

    /// Heap bytes used (vectors, walk copy, links, ids, id map); a mapped file's pages are not
    /// counted.
    fn memory_bytes(&self) -> usize {
        let book = self.book.read();
        self.vectors.heap_bytes()
            + self.codes.heap_bytes()
            + self.links0.heap_bytes()
            + self.upper.heap_bytes()
            + self.up_off.capacity() * 4
            + self.levels.capacity()
            + self.ids.capacity() * 8
            + self.deleted.heap_bytes()
            + book.free.capacity() * 4
            + book.idmap.capacity() * 17
            + self.indeg.capacity() * 4
    }

    fn mapped_file(&self) -> Option<&Mapping> {
        self.vectors.mapping().or(self.links0.mapping()).or(self.codes.mapping())
    }

    fn save(&self, path: &Path) -> Result<()> {
        self.write_file(path)
    }

    fn from_file(f: &IndexFile) -> Result<HnswIndex> {
        HnswIndex::read_file(f)
    }
}

impl Index for HnswIndex {
    type Data<'a> = &'a [f32];
    type Queries<'a> = &'a [f32];
    type Params<'a> = HnswParams<'a>;

    /// Metric.
    fn metric(&self) -> Metric {
        self.metric
    }

    /// The stored vectors of `ids` (unit length for cosine), row-major.
    fn get(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let d = self.dim;
        let mut out = vec![0f32; ids.len() * d];
        let data = self.vectors.as_slice();
        let book = self.book.read();
        for (row, id) in out.chunks_exact_mut(d).zip(ids) {
            let s = book.idmap.slot(*id)? as usize;
            row.copy_from_slice(&data[s * d..(s + 1) * d]);
        }
        Ok(out)
    }

    /// Add `vectors` (`n x dim`, row-major) using up to `threads` threads; returns their ids.
    ///
    /// Deleted slots are reused first. Everything is checked before anything changes, so a
    /// failed add leaves the index as it was. This is [`HnswIndex::stage`], [`HnswIndex::link`]
    /// and [`HnswIndex::publish`] in a row; a caller that serves searches while it adds runs
    /// `link` under a shared lock instead.
    fn add(&mut self, vectors: &[f32], ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let staged = self.stage(vectors, ids)?;
        let top = self.link(&staged, threads);
        Ok(self.publish(staged, top))
    }

    fn search(
        &self,
        queries: &[f32],
        k: usize,
        params: &HnswParams<'_>,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        let allow = match (allow, params.allow_lists) {
            (Some(ids), _) => Allow::Shared(ids),
            (None, Some(lists)) => Allow::PerQuery(lists),
            (None, None) => Allow::All,
        };
        self.search_filtered(queries, k, params.ef, threads, allow, params.mode)
    }
}
