//! Graph primitives of the HNSW index: link-list views, distances with prefetching, the beam
//! search over one layer, greedy descent and hnswlib's neighbour-selection heuristic.
//!
//! Link lists are `u32` arrays of `cap + 1` words: a count followed by `cap` slot numbers.
//! Level 0 holds `m0 = 2 * m` links per node in one flat array; upper levels hold `m` each, in a
//! second array addressed through a per-slot offset.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering as Mem};

use crate::format::storage::{Buf, Mapping};
use crate::util::bitset::{self, Bitset};

/// A node and its distance to the query (lower is better); ordered by distance, then slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cand {
    pub d: f32,
    pub s: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.s.cmp(&o.s))
    }
}

impl PartialOrd for Cand {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Distances from a query to stored nodes, as the graph walk needs them.
pub(crate) trait Dist: Sync {
    /// A query as these distances take it: the `f32` vector, or a form prepared for a
    /// quantized copy.
    type Query: ?Sized;
    /// Distance from a query to a stored vector (lower is better).
    fn dist(&self, q: &Self::Query, s: u32) -> f32;
    /// Ask the CPU to start loading the first `lines` cache lines of a stored vector.
    fn prefetch(&self, s: u32, lines: usize);
    /// Bytes of one stored vector.
    fn row_bytes(&self) -> usize;
}

#[inline]
pub(super) fn prefetch_bytes(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch never faults; the caller keeps `p + off` within one row.
            #[allow(unused_unsafe)]
            unsafe {
                std::arch::x86_64::_mm_prefetch(
                    p.wrapping_add(off) as *const i8,
                    std::arch::x86_64::_MM_HINT_T0,
                )
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// Stored row-major vectors (`f32`, or the bfloat16 copy as `u16`) and the distance of the
/// index metric (lower is better: squared L2, or the negated inner product for cosine and dot).
pub(crate) struct Rows<'a, T> {
    pub data: &'a [T],
    pub d: usize,
    pub l2: bool,
    f: fn(&[f32], &[T]) -> f32,
}

/// The `f32` vectors.
pub(crate) type Space<'a> = Rows<'a, f32>;

/// The bfloat16 copy of the vectors: the walk reads half the bytes; callers rescore in `f32`.
pub(crate) type HalfSpace<'a> = Rows<'a, u16>;

impl<'a> Space<'a> {
    /// A view of row-major `data` with the kernels of the current SIMD level.
    pub fn new(data: &'a [f32], d: usize, l2: bool) -> Space<'a> {
        let k = crate::kernels::simd::kernels();
        Rows { data, d, l2, f: if l2 { k.l2sq } else { k.dot } }
    }

    /// Distance between two stored vectors.
    #[inline]
    pub fn between(&self, a: u32, b: u32) -> f32 {
        self.dist(self.row(a), b)
    }
}

impl<'a> HalfSpace<'a> {
    /// A view of row-major bfloat16 `data` with the kernel of the current SIMD level.
    pub fn new(data: &'a [u16], d: usize, l2: bool) -> HalfSpace<'a> {
        Rows { data, d, l2, f: crate::kernels::simd::kernels().pair_bf16[l2 as usize] }
    }
}

impl<'a, T> Rows<'a, T> {
    #[inline]
    pub fn row(&self, s: u32) -> &'a [T] {
        let at = s as usize * self.d;
        &self.data[at..at + self.d]
    }
}

impl<T: Sync> Dist for Rows<'_, T> {
    type Query = [f32];

    #[inline]
    fn dist(&self, q: &[f32], s: u32) -> f32 {
        let v = (self.f)(q, self.row(s));
        if self.l2 {
            v
        } else {
            -v
        }
    }

    #[inline]
    fn row_bytes(&self) -> usize {
        self.d * std::mem::size_of::<T>()
    }

    #[inline]
    fn prefetch(&self, s: u32, lines: usize) {
        let at = s as usize * self.d;
        if at < self.data.len() {
            let bytes = self.d * std::mem::size_of::<T>();
            prefetch_bytes(self.data[at..].as_ptr() as *const u8, bytes.min(lines.saturating_mul(64)));
        }
    }
}

/// Read access to link lists.
pub(crate) trait Links: Sync {
    /// Replace `out` with the links of `s` at `level`.
    fn get(&self, s: u32, level: usize, out: &mut Vec<u32>);

    /// Ask the CPU to start loading the level-0 list of `s`.
    fn prefetch(&self, _s: u32) {}
}

/// Shape of the link arrays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub m: usize,
    pub m0: usize,
}

impl Shape {
    /// Range of the list of `s` at `level` in its array (level 0: `l0`, else `upper`).
    #[inline]
    pub fn range(&self, up_off: &[u32], s: u32, level: usize) -> (usize, usize) {
        if level == 0 {
            let w = self.m0 + 1;
            (s as usize * w, w)
        } else {
            let w = self.m + 1;
            (up_off[s as usize] as usize + (level - 1) * w, w)
        }
    }

    /// Capacity of a list at `level`.
    #[inline]
    pub fn cap(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.m
        }
    }
}

/// Link lists shared between inserting threads and searches: readers load without locking
/// (every value ever stored is a valid slot, so a read racing a write sees a usable, if mixed,
/// list); writers hold the node's lock.
pub(crate) struct AtomicLinks<'a> {
    pub l0: &'a [AtomicU32],
    pub up: &'a [AtomicU32],
    pub up_off: &'a [u32],
    pub shape: Shape,
}

impl AtomicLinks<'_> {
    fn list(&self, s: u32, level: usize) -> &[AtomicU32] {
        let (at, w) = self.shape.range(self.up_off, s, level);
        if level == 0 {
            &self.l0[at..at + w]
        } else {
            &self.up[at..at + w]
        }
    }

    /// Overwrite the list of `s` at `level` (the caller holds the lock of `s`).
    pub fn set(&self, s: u32, level: usize, links: &[u32]) {
        let list = self.list(s, level);
        let n = links.len().min(list.len() - 1);
        for (slot, &v) in list[1..].iter().zip(&links[..n]) {
            slot.store(v, Mem::Relaxed);
        }
        list[0].store(n as u32, Mem::Release);
    }
}

impl Links for AtomicLinks<'_> {
    #[inline]
    fn get(&self, s: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let list = self.list(s, level);
        let c = (list[0].load(Mem::Acquire) as usize).min(list.len() - 1);
        out.extend(list[1..1 + c].iter().map(|a| a.load(Mem::Relaxed)));
    }

    #[inline]
    fn prefetch(&self, s: u32) {
        let w = self.shape.m0 + 1;
        let at = s as usize * w;
        if at < self.l0.len() {
            prefetch_bytes(self.l0[at..].as_ptr() as *const u8, w * 4);
        }
    }
}

/// The words of one link array (a count then `cap` slots per list): owned atomics, which an
/// add rewrites while searches read them, or a read-only file mapping, which no one writes
/// (an add first copies it into memory with [`LinkWords::to_mut`]).
pub(crate) enum LinkWords {
    /// Heap memory, written by adds while searches load from it.
    Owned(Vec<AtomicU32>),
    /// A section of a read-only file mapping.
    Mapped(Buf<u32>),
}

impl Default for LinkWords {
    fn default() -> Self {
        LinkWords::Owned(Vec::new())
    }
}

impl LinkWords {
    /// Wrap a buffer read from a file: mapped stays mapped, owned words become atomics.
    pub fn from_buf(b: Buf<u32>) -> LinkWords {
        match b {
            Buf::Owned(v) => LinkWords::Owned(v.into_iter().map(AtomicU32::new).collect()),
            mapped => LinkWords::Mapped(mapped),
        }
    }

    /// The words, for loading.
    pub fn atomics(&self) -> &[AtomicU32] {
        match self {
            LinkWords::Owned(v) => v,
            LinkWords::Mapped(b) => {
                let s = b.as_slice();
                // SAFETY: AtomicU32 has the size, alignment and bit validity of u32. The mapped
                // words are only ever loaded (no one holds a writable view of them: an add copies
                // them first), and loads of read-only memory are fine for lock-free atomics.
                unsafe { &*(s as *const [u32] as *const [AtomicU32]) }
            }
        }
    }

    /// The owned words that an add may write through a shared reference (`None` while mapped).
    pub fn writable(&self) -> Option<&[AtomicU32]> {
        match self {
            LinkWords::Owned(v) => Some(v),
            LinkWords::Mapped(_) => None,
        }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        match self {
            LinkWords::Owned(v) => v.len(),
            LinkWords::Mapped(b) => b.as_slice().len(),
        }
    }

    /// Mutable access, copying a mapped buffer into memory first.
    pub fn to_mut(&mut self) -> &mut Vec<AtomicU32> {
        if let LinkWords::Mapped(b) = self {
            *self = LinkWords::Owned(b.as_slice().iter().map(|&w| AtomicU32::new(w)).collect());
        }
        match self {
            LinkWords::Owned(v) => v,
            LinkWords::Mapped(_) => unreachable!("copied above"),
        }
    }

    /// A copy with room for `n` words in all, or `None` when these have room (and are not
    /// mapped). Built aside while searches read these; see [`super::HnswIndex::room_for`].
    pub fn with_room(&self, n: usize) -> Option<LinkWords> {
        let len = self.len();
        let room = match self {
            LinkWords::Owned(v) => v.capacity() - v.len(),
            LinkWords::Mapped(_) => return Some(self.copy_with(n)),
        };
        (room < n.saturating_sub(len)).then(|| self.copy_with(n))
    }

    fn copy_with(&self, n: usize) -> LinkWords {
        let words = self.atomics();
        let mut v = Vec::with_capacity(crate::util::vectors::grown_capacity(words.len(), n));
        crate::util::pages::advise(&v);
        v.extend(words.iter().map(|w| AtomicU32::new(w.load(Mem::Relaxed))));
        crate::util::pages::prefault(&mut v, n);
        LinkWords::Owned(v)
    }

    /// Grow (or shrink) to `n` words, new ones zero (empty lists).
    pub fn resize(&mut self, n: usize) {
        let v = self.to_mut();
        crate::util::pages::reserve(v, n);
        v.resize_with(n, || AtomicU32::new(0));
    }

    /// A plain copy of the words (for saving).
    pub fn snapshot(&self) -> Vec<u32> {
        self.atomics().iter().map(|w| w.load(Mem::Relaxed)).collect()
    }

    /// The file mapping the words are read from, if any.
    pub fn mapping(&self) -> Option<&Mapping> {
        match self {
            LinkWords::Owned(_) => None,
            LinkWords::Mapped(b) => b.mapping(),
        }
    }

    /// Bytes of heap memory held (0 for a mapping).
    pub fn heap_bytes(&self) -> usize {
        match self {
            LinkWords::Owned(v) => v.capacity() * 4,
            LinkWords::Mapped(_) => 0,
        }
    }
}

/// Per-thread "visited" marks: one bit per slot (100k slots take 12.5 KiB, which stays in the
/// L1 and L2 caches where a stamp per slot would not), cleared word by word from the list of
/// words a search set.
pub(crate) struct Visited {
    bits: Bitset,
    touched: Vec<u32>,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.touched.len() > bitset::words_for(n) / 8 {
            self.bits.reset(n);
        } else {
            for &w in &self.touched {
                self.bits.clear_word(w as usize);
            }
        }
        self.touched.clear();
        self.bits.grow(n);
    }

    /// Mark `s`; true when it was not marked yet in this search.
    #[inline]
    fn insert(&mut self, s: u32) -> bool {
        let w = s as usize / 64;
        if self.bits.word(w) == 0 {
            self.touched.push(w as u32);
        }
        self.bits.insert(s as usize)
    }
}

/// Reusable per-thread buffers of the graph walk.
pub(crate) struct Scratch {
    visited: Visited,
    cand: BinaryHeap<Reverse<Cand>>,
    top: BinaryHeap<Cand>,
    links: Vec<u32>,
    fresh: Vec<u32>,
    /// Neighbours outside the filter of the node being expanded (the two-hop walk).
    hops: Vec<u32>,
    /// The links of one of `hops`.
    second: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Visited { bits: Bitset::empty(), touched: Vec::new() },
            cand: BinaryHeap::new(),
            top: BinaryHeap::new(),
            links: Vec::new(),
            fresh: Vec::new(),
            hops: Vec::new(),
            second: Vec::new(),
        })
    };
}

/// Run `f` with this thread's scratch buffers.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with_borrow_mut(f)
}

/// Rows whose loads a walk starts ahead of use: a few at a time, not all at once. Prefetching
/// every neighbour's row up front issues more misses than the core can track, and the
/// prefetches themselves then stall. About 24 cache lines in flight did best, measured on
/// 384-d MiniLM vectors (int8 walks: 22-25% more queries per second than every row up front)
/// and on generated 32- to 768-d data with int8 and float32 walks: 16 rows of one line ahead,
/// 4 rows of six lines, 2 rows of twelve or more.
pub(crate) struct Prefetched<'a, S: Dist, T: Slot = u32> {
    space: &'a S,
    items: &'a [T],
    ahead: usize,
    at: usize,
}

/// An item that names a stored row: a slot, or a candidate.
pub(crate) trait Slot: Copy {
    /// The slot of the row.
    fn slot(self) -> u32;
}

impl Slot for u32 {
    #[inline]
    fn slot(self) -> u32 {
        self
    }
}

impl Slot for Cand {
    #[inline]
    fn slot(self) -> u32 {
        self.s
    }
}

impl<'a, S: Dist, T: Slot> Prefetched<'a, S, T> {
    /// Cache lines to keep loading at once.
    const LINES: usize = 24;

    /// Start loading the rows of the first `items`.
    #[inline]
    pub fn new(space: &'a S, items: &'a [T]) -> Self {
        let ahead = (Self::LINES / space.row_bytes().div_ceil(64).max(1)).clamp(2, 16);
        for &t in items.iter().take(ahead) {
            space.prefetch(t.slot(), usize::MAX);
        }
        Prefetched { space, items, ahead, at: 0 }
    }
}

impl<S: Dist, T: Slot> Iterator for Prefetched<'_, S, T> {
    type Item = T;

    /// The next item, starting the load of the row `ahead` places on.
    #[inline]
    fn next(&mut self) -> Option<T> {
        let t = *self.items.get(self.at)?;
        if let Some(&later) = self.items.get(self.at + self.ahead) {
            self.space.prefetch(later.slot(), usize::MAX);
        }
        self.at += 1;
        Some(t)
    }
}

/// Greedy descent: from `ep`, move to the closest neighbour at `level` until none is closer.
pub(crate) fn greedy<L: Links, S: Dist>(
    space: &S,
    links: &L,
    q: &S::Query,
    mut ep: Cand,
    level: usize,
    sc: &mut Scratch,
) -> Cand {
    loop {
        let mut changed = false;
        links.get(ep.s, level, &mut sc.links);
        for n in Prefetched::new(space, &sc.links) {
            let d = space.dist(q, n);
            if d < ep.d {
                ep = Cand { d, s: n };
                changed = true;
            }
        }
        if !changed {
            return ep;
        }
    }
}

/// Beam search over one layer from `eps`, keeping the `ef` closest nodes that pass `ok`.
///
/// Nodes that fail `ok` (deleted, or outside an allow-list) are still walked through. When every
/// node passes (`all_ok`) the walk stops as soon as the closest unexpanded candidate is farther
/// than the worst kept result; otherwise it goes on until `ef` results are kept (hnswlib's rule).
/// Results are appended to `out`, unsorted. Past `budget` distances the walk stops early and
/// returns false, leaving `out` as it was.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_layer<L: Links, S: Dist>(
    space: &S,
    links: &L,
    q: &S::Query,
    eps: &[Cand],
    level: usize,
    ef: usize,
    n: usize,
    ok: impl Fn(u32) -> bool,
    all_ok: bool,
    budget: usize,
    sc: &mut Scratch,
    out: &mut Vec<Cand>,
) -> bool {
    let Scratch { visited, cand, top, links: buf, fresh, .. } = sc;
    visited.reset(n);
    cand.clear();
    top.clear();
    let mut bound = f32::INFINITY;
    let mut spent = 0usize;
    for &e in eps {
        if !visited.insert(e.s) {
            continue;
        }
        cand.push(Reverse(e));
        if ok(e.s) {
            top.push(e);
            if top.len() > ef {
                top.pop();
            }
        }
    }
    if top.len() >= ef || all_ok {
        bound = top.peek().map_or(f32::INFINITY, |c| c.d);
    }
    while let Some(Reverse(c)) = cand.pop() {
        if c.d > bound && (top.len() >= ef || all_ok) {
            break;
        }
        if level == 0 {
            if let Some(Reverse(next)) = cand.peek() {
                links.prefetch(next.s);
            }
        }
        links.get(c.s, level, buf);
        fresh.clear();
        for &nb in buf.iter() {
            if visited.insert(nb) {
                fresh.push(nb);
            }
        }
        spent += fresh.len();
        if spent > budget {
            return false;
        }
        keep_closest(space, q, fresh, ef, &ok, all_ok, cand, top, &mut bound);
    }
    out.extend(top.drain());
    true
}

/// Score the nodes of `fresh` and keep each one that can still matter: as a candidate to expand,
/// and among the `ef` results when it passes `ok`. `bound` follows the worst kept result once
/// `ef` are kept (from the first one with `tight`, for walks where every node passes).
#[inline]
#[allow(clippy::too_many_arguments)]
fn keep_closest<S: Dist>(
    space: &S,
    q: &S::Query,
    fresh: &[u32],
    ef: usize,
    ok: impl Fn(u32) -> bool,
    tight: bool,
    cand: &mut BinaryHeap<Reverse<Cand>>,
    top: &mut BinaryHeap<Cand>,
    bound: &mut f32,
) {
    for nb in Prefetched::new(space, fresh) {
        let d = space.dist(q, nb);
        if top.len() < ef || d < *bound {
            cand.push(Reverse(Cand { d, s: nb }));
            if ok(nb) {
                top.push(Cand { d, s: nb });
                if top.len() > ef {
                    top.pop();
                }
                if top.len() >= ef || tight {
                    *bound = top.peek().map_or(f32::INFINITY, |c| c.d);
                }
            }
        }
    }
}

/// Beam search on level 0 over the nodes that pass `ok` only, with two-hop expansion (ACORN-1,
/// Patel et al. 2024): an expanded node's neighbours that pass are candidates, and for each
/// neighbour that fails, its own neighbours that pass are (until `cap` new candidates per
/// expansion). Only nodes that pass get distances, so a selective filter costs about what an
/// unfiltered walk of the allowed nodes does, where [`search_layer`] scores every node it routes
/// through. An expansion that finds no new allowed node while fewer than `ef` are kept (the walk
/// has not reached the allowed part of the graph, or that part is split) routes through the
/// failing neighbours instead, scoring them as [`search_layer`] does.
///
/// Stops as an unfiltered walk does: when the closest unexpanded candidate is farther than the
/// worst of `ef` kept results. Appends the kept results to `out`, unsorted, and returns the work
/// done (distances plus a quarter per extra link list read); past `budget` it stops early and
/// returns `None`, leaving `out` as it was.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_allowed<L: Links, S: Dist>(
    space: &S,
    links: &L,
    q: &S::Query,
    ep: Cand,
    ef: usize,
    cap: usize,
    n: usize,
    ok: impl Fn(u32) -> bool,
    budget: usize,
    sc: &mut Scratch,
    out: &mut Vec<Cand>,
) -> Option<usize> {
    let Scratch { visited, cand, top, links: buf, fresh, hops, second } = sc;
    visited.reset(n);
    cand.clear();
    top.clear();
    visited.insert(ep.s);
    cand.push(Reverse(ep));
    if ok(ep.s) {
        top.push(ep);
    }
    let mut bound = if top.len() >= ef { ep.d } else { f32::INFINITY };
    // Work in quarter distances: a distance is 4, an extra list read 1.
    let (mut spent, limit) = (0usize, budget.saturating_mul(4));
    while let Some(Reverse(c)) = cand.pop() {
        if c.d > bound {
            break;
        }
        if let Some(Reverse(next)) = cand.peek() {
            links.prefetch(next.s);
        }
        links.get(c.s, 0, buf);
        fresh.clear();
        hops.clear();
        for &nb in buf.iter() {
            if ok(nb) {
                if visited.insert(nb) {
                    fresh.push(nb);
                }
            } else {
                hops.push(nb);
            }
        }
        if fresh.len() < cap {
            for &h in hops.iter() {
                links.prefetch(h);
            }
        }
        // Two hops: the allowed neighbours of the neighbours that fail the filter. A failing
        // neighbour is marked when its list is read; `hops` keeps just those.
        let mut read = 0;
        for i in 0..hops.len() {
            if fresh.len() >= cap {
                break;
            }
            let h = hops[i];
            if !visited.insert(h) {
                continue;
            }
            hops[read] = h;
            read += 1;
            links.get(h, 0, second);
            for &nb in second.iter() {
                if ok(nb) && visited.insert(nb) {
                    fresh.push(nb);
                    if fresh.len() >= cap {
                        break;
                    }
                }
            }
        }
        spent += read;
        if fresh.is_empty() && top.len() < ef {
            // Nothing allowed within two hops: route through the failing neighbours.
            for h in Prefetched::new(space, &hops[..read]) {
                cand.push(Reverse(Cand { d: space.dist(q, h), s: h }));
            }
            spent += 4 * read;
        }
        // Every node of `fresh` passes the filter.
        keep_closest(space, q, fresh, ef, |_| true, false, cand, top, &mut bound);
        spent += 4 * fresh.len();
        if spent > limit {
            return None;
        }
    }
    out.extend(top.drain());
    Some(spent / 4)
}

/// hnswlib's `getNeighborsByHeuristic2`: from candidates sorted closest first, keep a candidate
/// only if it is closer to the base than to every neighbour kept so far, up to `m`.
pub(crate) fn select(space: &Space, sorted: &[Cand], m: usize, out: &mut Vec<Cand>) {
    out.clear();
    if sorted.len() <= m {
        out.extend_from_slice(sorted);
        return;
    }
    for &c in sorted {
        if out.len() >= m {
            break;
        }
        if out.iter().all(|s| space.between(s.s, c.s) >= c.d) {
            out.push(c);
        }
    }
}
