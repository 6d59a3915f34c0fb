//! `HnswIndex`: a hierarchical navigable small-world graph (Malkov & Yashunin) for approximate
//! nearest-neighbour search.
//!
//! Layout, chosen for memory and cache behaviour:
//! - vectors: row-major `f32`, one row per slot (unit length for cosine);
//! - level-0 links: one flat `u32` array, `2 * m + 1` words per slot (count, then links);
//! - upper links: a second flat array, `m + 1` words per slot and level, found through a
//!   per-slot offset (only about `1 / m` of the nodes have any);
//! - a per-thread, generation-stamped visited list, reused across searches.
//!
//! Builds insert nodes in parallel (rayon), each node's link lists guarded by its own lock while
//! readers walk the graph lock-free through atomic loads. Removal marks a slot deleted: it is
//! never returned again but still routes searches until a later add reuses it, rewriting its
//! vector, relinking it and repairing the lists of its old neighbours.

mod graph;
mod io;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use rayon::prelude::*;

use self::graph::{
    greedy, search_layer, select, with_scratch, Cand, Dist, HalfSpace, Links, Plain, Shape, Shared, Space,
};
use crate::error::Result;
use crate::ids::IdMap;
use crate::index::Index;
use crate::invalid;
use crate::metric::Metric;
use crate::parallel;
use crate::rng::Rng;
use crate::storage::{Buf, IndexFile, Kind};
use crate::topk::{self, Results, Source, TopK};
use crate::vectors;

/// Highest level a node can get (levels are drawn as `floor(-ln(U) / ln(m))`).
const MAX_LEVEL: usize = 32;
/// Shared-filter exact scans of at least this many queries gather the allowed rows and use the
/// blocked tile kernels; fewer queries scan the allowed rows in place.
const BATCH_SCAN: usize = 8;
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
    /// Walk the graph or scan the allowed vectors exactly, whichever a cost model says is
    /// cheaper (small allow-lists are scanned).
    Auto,
    /// Always walk the graph (falling back to an exact scan only when the walk finds fewer than
    /// `k` allowed results).
    Graph,
    /// Always scan the allowed vectors exactly.
    Exact,
}

impl FilterMode {
    /// Parse `"auto" | "graph" | "exact"`.
    pub fn parse(name: &str) -> Result<FilterMode> {
        match name {
            "auto" => Ok(FilterMode::Auto),
            "graph" => Ok(FilterMode::Graph),
            "exact" => Ok(FilterMode::Exact),
            other => {
                Err(invalid!("unknown filter_mode {other:?}: expected \"auto\", \"graph\" or \"exact\""))
            }
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
    /// bfloat16 copy of `vectors` walked by searches and inserts (empty without `prefilter`).
    half: Buf<u16>,
    prefilter: bool,
    links0: Buf<u32>,
    upper: Buf<u32>,
    /// Start of each slot's upper lists in `upper` (unused for level-0-only slots).
    up_off: Vec<u32>,
    levels: Vec<u8>,
    /// Label of each slot (stale for deleted slots).
    ids: Vec<i64>,
    /// Bitmap of deleted slots.
    deleted: Vec<u64>,
    /// Deleted slots, reused by later adds (the last one first).
    free: Vec<u32>,
    idmap: IdMap<u32>,
    entry: Option<u32>,
    max_level: usize,
}

#[inline]
fn bit(bits: &[u64], s: u32) -> bool {
    bits[s as usize / 64] >> (s % 64) & 1 == 1
}

/// View a `u32` buffer as atomics for the duration of a parallel build.
fn atomic_view(v: &mut [u32]) -> &[AtomicU32] {
    // SAFETY: AtomicU32 has the size, alignment and bit validity of u32, and the exclusive borrow
    // guarantees nothing else accesses the memory non-atomically while the view lives.
    unsafe { &*(v as *mut [u32] as *const [AtomicU32]) }
}

impl HnswIndex {
    /// An empty index. `m` is the link count of upper levels (level 0 holds `2 * m`),
    /// `ef_construction` the beam width of inserts, `seed` drives the level draws.
    ///
    /// With `prefilter`, the index also keeps a bfloat16 copy of its vectors (+50% memory): graph
    /// walks read that copy, half the bytes, and the candidates they keep are rescored in `f32`,
    /// so reported scores are exact.
    pub fn new(
        dim: usize,
        metric: Metric,
        m: usize,
        ef_construction: usize,
        seed: u64,
        prefilter: bool,
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
            half: Buf::default(),
            prefilter,
            links0: Buf::default(),
            upper: Buf::default(),
            up_off: Vec::new(),
            levels: Vec::new(),
            ids: Vec::new(),
            deleted: Vec::new(),
            free: Vec::new(),
            idmap: IdMap::new(),
            entry: None,
            max_level: 0,
        })
    }

    /// True when the index keeps the bfloat16 copy its walks read.
    pub fn prefilter(&self) -> bool {
        self.prefilter
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

    fn plain(&self) -> Plain<'_> {
        Plain {
            l0: self.links0.as_slice(),
            up: self.upper.as_slice(),
            up_off: &self.up_off,
            shape: self.shape,
        }
    }

    fn space(&self) -> Space<'_> {
        Space::new(self.vectors.as_slice(), self.dim, self.metric == Metric::L2)
    }

    /// Insert (or relink) the nodes in `order`, in parallel.
    fn build(&mut self, order: &[u32], old: &HashMap<u32, Vec<Vec<u32>>>, threads: usize) {
        let total = self.ids.len();
        let locks: Vec<Mutex<()>> = (0..total).map(|_| Mutex::new(())).collect();
        let w0 = self.shape.m0 + 1;
        let indeg: Vec<AtomicU32> = (0..total).map(|_| AtomicU32::new(0)).collect();
        for list in self.links0.as_slice().chunks_exact(w0) {
            for &t in &list[1..1 + (list[0] as usize).min(w0 - 1)] {
                indeg[t as usize].fetch_add(1, Relaxed);
            }
        }
        let l2 = self.metric == Metric::L2;
        let b = Builder {
            indeg: &indeg,
            space: Space::new(self.vectors.as_slice(), self.dim, l2),
            half: self.prefilter.then(|| HalfSpace::new(self.half.as_slice(), self.dim, l2)),
            links: Shared {
                l0: atomic_view(self.links0.to_mut()),
                up: atomic_view(self.upper.to_mut()),
                up_off: &self.up_off,
                shape: self.shape,
            },
            locks: &locks,
            levels: &self.levels,
            deleted: &self.deleted,
            efc: self.ef_construction,
            n: total,
            top: Mutex::new((self.entry, self.max_level)),
        };
        let mut rest = order;
        if b.top.lock().unwrap_or_else(|e| e.into_inner()).0.is_none() {
            b.insert(order[0], None);
            rest = &order[1..];
        }
        let one = |&s: &u32| b.insert(s, old.get(&s).map(|v| &v[..]));
        if threads <= 1 || rest.len() < 2 {
            rest.iter().for_each(one);
        } else {
            parallel::install(threads, || rest.par_iter().with_min_len(8).for_each(one));
        }
        let (entry, level) = *b.top.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entry {
            b.reconnect(e);
        }
        self.entry = entry;
        self.max_level = level;
    }

    /// Approximate top-`k` for `queries` (`nq x dim`) with beam width `ef` (raised to `k`); the
    /// [`Index::search`] of this index, with per-query allow-lists spelled as an [`Allow`].
    ///
    /// `allow` restricts results to some ids: the walk then skips other nodes when collecting
    /// results (it still routes through them); `mode` picks between that walk and an exact scan
    /// of the allowed vectors. A query whose walk finds fewer than `k` results while more exist
    /// falls back to the exact scan, so every query gets `min(k, allowed)` results.
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        ef: usize,
        threads: usize,
        allow: Allow,
        mode: FilterMode,
    ) -> Result<Results> {
        if k == 0 {
            return Err(invalid!("k must be at least 1"));
        }
        let d = self.dim;
        let nq = vectors::rows(queries, d, "queries")?;
        vectors::check_finite(queries, d, "queries")?;
        if let Allow::PerQuery(lists) = allow {
            if lists.len() != nq {
                return Err(invalid!("got {} filter lists for {nq} queries", lists.len()));
            }
        }
        let queries: Cow<[f32]> = if self.metric == Metric::Cosine {
            Cow::Owned(vectors::normalized(queries, d))
        } else {
            Cow::Borrowed(queries)
        };
        let ef = ef.max(k);
        let shared = match allow {
            Allow::Shared(ids) => Some(self.bitmap(ids)),
            _ => None,
        };
        let mut scan = false;
        if let Some((bits, count)) = &shared {
            scan =
                mode == FilterMode::Exact || (mode == FilterMode::Auto && self.prefer_exact(*count, nq, ef));
            // Batches go through the tile kernels over a gathered copy; a few queries scan in place.
            if scan && nq >= BATCH_SCAN {
                return self.exact_batch(&queries, bits, k, threads);
            }
        }
        let one = |qi: usize| -> TopK {
            let q = &queries[qi * d..(qi + 1) * d];
            match allow {
                Allow::All => {
                    if mode == FilterMode::Exact {
                        self.exact_one(q, k, None)
                    } else {
                        self.walk(q, k, ef, None, self.len())
                    }
                }
                Allow::Shared(_) => {
                    let (bits, count) = shared.as_ref().expect("built above");
                    if scan {
                        self.exact_one(q, k, Some(bits))
                    } else {
                        self.walk(q, k, ef, Some(bits), *count)
                    }
                }
                Allow::PerQuery(lists) => {
                    let (bits, count) = self.bitmap(lists[qi]);
                    let exact = mode == FilterMode::Exact
                        || (mode == FilterMode::Auto && self.prefer_exact(count, 1, ef));
                    if exact {
                        self.exact_one(q, k, Some(&bits))
                    } else {
                        self.walk(q, k, ef, Some(&bits), count)
                    }
                }
            }
        };
        let sels: Vec<TopK> = if nq <= 1 || threads <= 1 {
            (0..nq).map(one).collect()
        } else {
            parallel::install(threads, || (0..nq).into_par_iter().with_min_len(4).map(one).collect())
        };
        Ok(Results::from_selections(sels, k, self.metric))
    }

    /// Bitmap over slots of the live ids in `ids`, and how many there are.
    fn bitmap(&self, ids: &[i64]) -> (Vec<u64>, usize) {
        let mut bits = vec![0u64; self.ids.len().div_ceil(64)];
        let mut count = 0;
        for id in ids {
            if let Some(s) = self.idmap.get(*id) {
                let w = &mut bits[s as usize / 64];
                let b = 1u64 << (s % 64);
                if *w & b == 0 {
                    *w |= b;
                    count += 1;
                }
            }
        }
        (bits, count)
    }

    /// Cost model of filtered search: a walk that keeps only a fraction `f` of the nodes visits
    /// about `24 * ef / f` of them; an exact scan reads every allowed vector once (a quarter of
    /// that per query for batches, which the tile kernels serve from cache).
    fn prefer_exact(&self, allowed: usize, nq: usize, ef: usize) -> bool {
        let live = self.len().max(1) as f64;
        let frac = (allowed as f64 / live).max(1e-9);
        let walk = (24.0 * ef as f64 / frac).min(live);
        let exact = allowed as f64 * if nq >= BATCH_SCAN { 0.25 } else { 1.0 };
        exact <= walk
    }

    /// The graph walk for one query: greedy descent through the upper levels, then a beam of
    /// width `ef` on level 0 keeping nodes that are live and allowed.
    fn walk(&self, q: &[f32], k: usize, ef: usize, allow: Option<&[u64]>, eligible: usize) -> TopK {
        let mut sel = TopK::new(k);
        let Some(entry) = self.entry else { return sel };
        if eligible == 0 {
            return sel;
        }
        let space = self.space();
        let mut found = Vec::with_capacity(ef);
        if self.prefilter {
            let half = HalfSpace::new(self.half.as_slice(), self.dim, self.metric == Metric::L2);
            self.walk_with(&half, q, entry, ef, allow, &mut found);
            for c in &found {
                space.prefetch(c.s, 32);
            }
            for c in &found {
                sel.push(-space.dist(q, c.s), self.ids[c.s as usize]);
            }
        } else {
            self.walk_with(&space, q, entry, ef, allow, &mut found);
            for c in &found {
                sel.push(-c.d, self.ids[c.s as usize]);
            }
        }
        if sel.len() < k.min(eligible) {
            return self.exact_one(q, k, allow);
        }
        sel
    }

    fn walk_with<W: Dist>(
        &self,
        walk: &W,
        q: &[f32],
        entry: u32,
        ef: usize,
        allow: Option<&[u64]>,
        found: &mut Vec<Cand>,
    ) {
        let links = self.plain();
        let deleted = &self.deleted;
        let all_ok = allow.is_none() && self.free.is_empty();
        with_scratch(|sc| {
            let mut cur = Cand { d: walk.dist(q, entry), s: entry };
            for l in (1..=self.max_level).rev() {
                cur = greedy(walk, &links, q, cur, l, sc);
            }
            let ok = |s: u32| !bit(deleted, s) && allow.is_none_or(|a| bit(a, s));
            search_layer(walk, &links, q, &[cur], 0, ef, self.ids.len(), ok, all_ok, sc, found);
        });
    }

    /// Exact top-`k` of one query over the live (and allowed) slots.
    fn exact_one(&self, q: &[f32], k: usize, allow: Option<&[u64]>) -> TopK {
        let space = self.space();
        let mut sel = TopK::new(k);
        for s in 0..self.ids.len() as u32 {
            if bit(&self.deleted, s) || allow.is_some_and(|a| !bit(a, s)) {
                continue;
            }
            sel.push(-space.dist(q, s), self.ids[s as usize]);
        }
        sel
    }

    /// Exact top-`k` of a batch over the slots of `bits` with the blocked tile kernels.
    fn exact_batch(&self, queries: &[f32], bits: &[u64], k: usize, threads: usize) -> Result<Results> {
        let d = self.dim;
        let mut slots: Vec<u32> = (0..self.ids.len() as u32).filter(|&s| bit(bits, s)).collect();
        // Rows in label order, so ties (broken by row number) go to the lower id.
        slots.sort_unstable_by_key(|&s| self.ids[s as usize]);
        let data = self.vectors.as_slice();
        let mut rows = Vec::with_capacity(slots.len() * d);
        for &s in &slots {
            rows.extend_from_slice(&data[s as usize * d..(s as usize + 1) * d]);
        }
        let source = Source::Rows { rows: &rows, n: slots.len(), d, normalize: false };
        let mut r = topk::search(queries, source, self.metric, k, threads)?;
        for id in r.ids.iter_mut().filter(|id| **id >= 0) {
            *id = self.ids[slots[*id as usize] as usize];
        }
        Ok(r)
    }
}

impl Index for HnswIndex {
    type Data<'a> = &'a [f32];
    type Queries<'a> = &'a [f32];
    type Params<'a> = HnswParams<'a>;

    const KIND: Kind = Kind::Hnsw;

    /// Vector dimension.
    fn dim(&self) -> usize {
        self.dim
    }

    /// Metric.
    fn metric(&self) -> Metric {
        self.metric
    }

    /// Number of live (not removed) vectors.
    fn len(&self) -> usize {
        self.idmap.len()
    }

    /// True when `id` is stored.
    fn contains(&self, id: i64) -> bool {
        self.idmap.contains(id)
    }

    /// Live ids in slot order.
    fn ids(&self) -> Vec<i64> {
        (0..self.ids.len() as u32).filter(|&s| !bit(&self.deleted, s)).map(|s| self.ids[s as usize]).collect()
    }

    /// The stored vectors of `ids` (unit length for cosine), row-major.
    fn get(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let d = self.dim;
        let mut out = vec![0f32; ids.len() * d];
        let data = self.vectors.as_slice();
        for (row, id) in out.chunks_exact_mut(d).zip(ids) {
            let s = self.idmap.slot(*id)? as usize;
            row.copy_from_slice(&data[s * d..(s + 1) * d]);
        }
        Ok(out)
    }

    /// Add `vectors` (`n x dim`, row-major) using up to `threads` threads; returns their ids.
    ///
    /// Deleted slots are reused first. Everything is checked before anything changes, so a
    /// failed add leaves the index as it was.
    fn add(&mut self, vectors: &[f32], ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let d = self.dim;
        let n = vectors::rows(vectors, d, "vectors")?;
        vectors::check_finite(vectors, d, "vectors")?;
        let new_ids = self.idmap.assign(n, ids, "vectors")?;
        if n == 0 {
            return Ok(new_ids);
        }
        let rows: Cow<[f32]> = if self.metric == Metric::Cosine {
            Cow::Owned(vectors::normalized(vectors, d))
        } else {
            Cow::Borrowed(vectors)
        };
        let reuse = n.min(self.free.len());
        let old_n = self.ids.len();
        let total = old_n + (n - reuse);
        if total >= u32::MAX as usize {
            return Err(invalid!("an HnswIndex holds at most 2^32-2 vectors"));
        }
        let fresh_levels: Vec<usize> = (0..n - reuse).map(|_| self.draw_level()).collect();
        let up_w = self.shape.m + 1;
        let extra: usize = fresh_levels.iter().map(|&l| l * up_w).sum();
        if self.upper.as_slice().len() + extra > u32::MAX as usize {
            return Err(invalid!("too many upper-level links for one index"));
        }

        // Nothing fails from here on.
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut old_links: HashMap<u32, Vec<Vec<u32>>> = HashMap::new();
        for _ in 0..reuse {
            let s = self.free.pop().expect("counted above");
            let plain = self.plain();
            let mut lists = Vec::new();
            for l in 0..=self.levels[s as usize] as usize {
                let mut v = Vec::new();
                plain.get(s, l, &mut v);
                lists.push(v);
            }
            old_links.insert(s, lists);
            order.push(s);
        }
        order.extend(old_n as u32..total as u32);
        let mut up_len = self.upper.as_slice().len();
        for &l in &fresh_levels {
            self.up_off.push(up_len as u32);
            self.levels.push(l as u8);
            up_len += l * up_w;
        }
        self.upper.to_mut().resize(up_len, 0);
        self.links0.to_mut().resize(total * (self.shape.m0 + 1), 0);
        self.ids.resize(total, -1);
        self.deleted.resize(total.div_ceil(64), 0);
        let data = self.vectors.to_mut();
        data.resize(total * d, 0.0);
        for ((&s, row), &id) in order.iter().zip(rows.chunks_exact(d)).zip(&new_ids) {
            let s = s as usize;
            data[s * d..(s + 1) * d].copy_from_slice(row);
            self.ids[s] = id;
            self.deleted[s / 64] &= !(1u64 << (s % 64));
            self.idmap.insert(id, s as u32);
        }
        if self.prefilter {
            let half = self.half.to_mut();
            half.resize(total * d, 0);
            for (&s, row) in order.iter().zip(rows.chunks_exact(d)) {
                let s = s as usize;
                for (h, &x) in half[s * d..(s + 1) * d].iter_mut().zip(row) {
                    *h = crate::half::to_bf16(x);
                }
            }
        }
        self.idmap.advance(&new_ids);
        self.build(&order, &old_links, threads);
        Ok(new_ids)
    }

    /// Remove ids; an unknown id is an error and then nothing is removed. Returns the count.
    ///
    /// Removed nodes stay in the graph as waypoints (never returned) until an add reuses them.
    fn remove(&mut self, ids: &[i64]) -> Result<usize> {
        self.idmap.check_known(ids)?;
        let mut removed = 0;
        for id in ids {
            if let Some(s) = self.idmap.remove(*id) {
                self.deleted[s as usize / 64] |= 1u64 << (s % 64);
                self.free.push(s);
                removed += 1;
            }
        }
        Ok(removed)
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

    /// Heap bytes used (vectors, links, ids, id map); a mapped file's pages are not counted.
    fn memory_bytes(&self) -> usize {
        self.vectors.heap_bytes()
            + self.half.heap_bytes()
            + self.links0.heap_bytes()
            + self.upper.heap_bytes()
            + self.up_off.capacity() * 4
            + self.levels.capacity()
            + self.ids.capacity() * 8
            + self.deleted.capacity() * 8
            + self.free.capacity() * 4
            + self.idmap.capacity() * 17
    }

    /// True while vectors and links are read from an mmapped file.
    fn is_mapped(&self) -> bool {
        self.vectors.is_mapped() || self.links0.is_mapped()
    }

    fn save(&self, path: &Path) -> Result<()> {
        self.write_file(path)
    }

    fn from_file(f: &IndexFile) -> Result<HnswIndex> {
        HnswIndex::read_file(f)
    }
}

/// Shared state of one parallel build.
struct Builder<'a> {
    /// What the insert walks read: the bfloat16 copy when there is one.
    half: Option<HalfSpace<'a>>,
    /// Level-0 in-degree of every slot (kept approximately under concurrency), so pruning
    /// never drops a node's last incoming link.
    indeg: &'a [AtomicU32],
    space: Space<'a>,
    links: Shared<'a>,
    locks: &'a [Mutex<()>],
    levels: &'a [u8],
    deleted: &'a [u64],
    efc: usize,
    n: usize,
    /// Entry point and its level.
    top: Mutex<(Option<u32>, usize)>,
}

fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Builder<'_> {
    /// Link slot `s` (its vector already written) into the graph. `old` holds the lists a
    /// reused slot had, whose owners are repaired.
    fn insert(&self, s: u32, old: Option<&[Vec<u32>]>) {
        match &self.half {
            Some(h) => self.insert_with(h, s, old),
            None => self.insert_with(&self.space, s, old),
        }
    }

    /// [`Builder::insert`] walking the graph with `walk`; the candidates are rescored in `f32`
    /// before the heuristic picks neighbours.
    fn insert_with<W: Dist>(&self, walk: &W, s: u32, old: Option<&[Vec<u32>]>) {
        let q = self.space.row(s);
        let level = self.levels[s as usize] as usize;
        let mut g = self.top.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ep) = g.0 else {
            *g = (Some(s), level);
            return;
        };
        let max_level = g.1;
        let hold = if level > max_level {
            Some(g)
        } else {
            drop(g);
            None
        };
        let ok = |x: u32| x != s && !bit(self.deleted, x);
        with_scratch(|sc| {
            let mut cur = Cand { d: walk.dist(q, ep), s: ep };
            for l in (level + 1..=max_level).rev() {
                cur = greedy(walk, &self.links, q, cur, l, sc);
            }
            let mut eps = vec![cur];
            let mut found = Vec::with_capacity(self.efc);
            let mut chosen = Vec::new();
            let mut ids = Vec::new();
            for l in (0..=level.min(max_level)).rev() {
                found.clear();
                search_layer(walk, &self.links, q, &eps, l, self.efc, self.n, ok, false, sc, &mut found);
                if self.half.is_some() {
                    for c in found.iter_mut() {
                        c.d = self.space.dist(q, c.s);
                    }
                }
                found.sort_unstable();
                select(&self.space, &found, self.links.shape.cap(l), &mut chosen);
                ids.clear();
                ids.extend(chosen.iter().map(|c| c.s));
                let mut before = Vec::new();
                {
                    let _g = lock(&self.locks[s as usize]);
                    self.links.get(s, l, &mut before);
                    self.replace(s, l, &ids, &before);
                }
                for c in &chosen {
                    self.connect(c.s, s, c.d, l);
                }
                if l == 0 && self.indeg[s as usize].load(Relaxed) == 0 {
                    self.adopt(s, &[], &ids);
                }
                if let Some(lists) = old.and_then(|o| o.get(l)) {
                    for &u in lists {
                        if u != s && !ids.contains(&u) {
                            self.repair(u, s, lists, l);
                        }
                    }
                    if l == 0 {
                        for &x in &before {
                            if x != s && self.indeg[x as usize].load(Relaxed) == 0 {
                                self.adopt(x, &before, &ids);
                            }
                        }
                    }
                }
                if !found.is_empty() {
                    std::mem::swap(&mut eps, &mut found);
                }
            }
        });
        if let Some(mut g) = hold {
            *g = (Some(s), level);
        }
    }

    /// Make every live node reachable on level 0 from the entry point: pruning can leave small
    /// islands (nodes linked only among themselves). Each one found by a traversal gets a link
    /// from its closest reachable node. Runs once per add, single-threaded.
    fn reconnect(&self, entry: u32) {
        let n = self.n;
        let mut seen = vec![false; n];
        let mut stack = vec![entry];
        let mut buf = Vec::new();
        seen[entry as usize] = true;
        let mut flood = |stack: &mut Vec<u32>, seen: &mut Vec<bool>| {
            while let Some(u) = stack.pop() {
                self.links.get(u, 0, &mut buf);
                for &t in &buf {
                    if !seen[t as usize] {
                        seen[t as usize] = true;
                        stack.push(t);
                    }
                }
            }
        };
        flood(&mut stack, &mut seen);
        let mut found = Vec::new();
        for x in 0..n as u32 {
            if seen[x as usize] || bit(self.deleted, x) {
                continue;
            }
            let q = self.space.row(x);
            found.clear();
            with_scratch(|sc| {
                let ep = Cand { d: self.space.dist(q, entry), s: entry };
                let ok = |u: u32| u != x && seen[u as usize];
                search_layer(&self.space, &self.links, q, &[ep], 0, self.efc, n, ok, false, sc, &mut found);
            });
            let Some(u) = found.iter().min().copied() else { continue };
            let cap = self.links.shape.m0;
            let mut before = Vec::with_capacity(cap);
            self.links.get(u.s, 0, &mut before);
            let mut ids = before.clone();
            if ids.len() < cap {
                ids.push(x);
            } else {
                let j = self.spare(&ids, &before).unwrap_or(cap - 1);
                ids[j] = x;
            }
            self.replace(u.s, 0, &ids, &before);
            seen[x as usize] = true;
            stack.push(x);
            flood(&mut stack, &mut seen);
        }
    }

    /// Add the link `n -> s` at `level`, pruning `n`'s list with the heuristic when full.
    fn connect(&self, n: u32, s: u32, d_ns: f32, level: usize) {
        let cap = self.links.shape.cap(level);
        let _g = lock(&self.locks[n as usize]);
        let mut list = Vec::with_capacity(cap + 1);
        self.links.get(n, level, &mut list);
        if list.contains(&s) {
            return;
        }
        if list.len() < cap {
            let before = list.clone();
            list.push(s);
            self.replace(n, level, &list, &before);
            return;
        }
        let mut cands: Vec<Cand> = list.iter().map(|&x| Cand { d: self.space.between(n, x), s: x }).collect();
        cands.push(Cand { d: d_ns, s });
        self.reselect(n, level, cap, cands, &list);
    }

    /// `u` linked to slot `s`, whose vector was replaced: drop that link and refill `u`'s list
    /// from its other links and `s`'s old neighbours.
    fn repair(&self, u: u32, s: u32, old_s: &[u32], level: usize) {
        if level > 0 && (self.levels[u as usize] as usize) < level {
            return;
        }
        let cap = self.links.shape.cap(level);
        let _g = lock(&self.locks[u as usize]);
        let mut list = Vec::with_capacity(cap + 1);
        self.links.get(u, level, &mut list);
        if !list.contains(&s) {
            return;
        }
        let cands: Vec<Cand> = list
            .iter()
            .chain(old_s)
            .filter(|&&x| x != s && x != u && !bit(self.deleted, x))
            .map(|&x| Cand { d: self.space.between(u, x), s: x })
            .collect();
        self.reselect(u, level, cap, cands, &list);
    }

    /// Rewrite `n`'s list at `level` (lock held) with the heuristic's choice among `cands`, but
    /// on level 0 keep any current link that is its target's last incoming one.
    fn reselect(&self, n: u32, level: usize, cap: usize, mut cands: Vec<Cand>, before: &[u32]) {
        cands.sort_unstable();
        cands.dedup();
        let mut chosen = Vec::with_capacity(cap);
        select(&self.space, &cands, cap, &mut chosen);
        let mut ids: Vec<u32> = chosen.iter().map(|c| c.s).collect();
        if level == 0 {
            for &x in before {
                if ids.contains(&x) || self.indeg[x as usize].load(Relaxed) > 1 {
                    continue;
                }
                if ids.len() < cap {
                    ids.push(x);
                } else if let Some(j) = self.spare(&ids, before) {
                    ids[j] = x;
                }
            }
        }
        self.replace(n, level, &ids, before);
    }

    /// The farthest entry of `ids` (sorted closest first) whose target keeps another incoming
    /// link if this list drops it.
    fn spare(&self, ids: &[u32], before: &[u32]) -> Option<usize> {
        (0..ids.len()).rev().find(|&j| {
            let x = ids[j];
            let others = self.indeg[x as usize].load(Relaxed).saturating_sub(before.contains(&x) as u32);
            others >= 1
        })
    }

    /// Write `n`'s list at `level` (its lock held), keeping level-0 in-degrees up to date.
    fn replace(&self, n: u32, level: usize, ids: &[u32], before: &[u32]) {
        self.links.set(n, level, ids);
        if level == 0 {
            for &x in before {
                if !ids.contains(&x) {
                    self.indeg[x as usize].fetch_sub(1, Relaxed);
                }
            }
            for &x in ids {
                if !before.contains(&x) {
                    self.indeg[x as usize].fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Give `x`, which lost its last level-0 incoming link, one from the closest node among
    /// `near` (the neighbourhoods it was part of).
    fn adopt(&self, x: u32, old: &[u32], new: &[u32]) {
        let best = old
            .iter()
            .chain(new)
            .filter(|&&u| u != x && !bit(self.deleted, u))
            .map(|&u| Cand { d: self.space.between(x, u), s: u })
            .min();
        let Some(u) = best else { return };
        let cap = self.links.shape.m0;
        let _g = lock(&self.locks[u.s as usize]);
        let mut before = Vec::with_capacity(cap);
        self.links.get(u.s, 0, &mut before);
        if before.contains(&x) {
            return;
        }
        let mut ids = before.clone();
        if ids.len() < cap {
            ids.push(x);
        } else if let Some(j) = self.spare(&ids, &before) {
            ids[j] = x;
        } else {
            return;
        }
        self.replace(u.s, 0, &ids, &before);
    }
}
