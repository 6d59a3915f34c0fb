//! Searching an [`HnswIndex`]: the graph walks (through every node, or two hops over the allowed
//! ones), the cost model that picks a walk or an exact scan of the allowed vectors for filtered
//! searches, and the exact scans themselves.

use std::borrow::Cow;

use rayon::prelude::*;

use super::codes::Walker;
use super::graph::{greedy, search_allowed, search_layer, with_scratch, Cand, Dist, Prefetched};
use super::{Allow, FilterMode, HnswIndex, BATCH_SCAN};
use crate::index::IdIndex;
use crate::invalid;
use crate::kernels::metric::Metric;
use crate::kernels::topk::{self, Results, Source, TopK};
use crate::util::bitset::{self, Bitset};
use crate::util::error::Result;
use crate::util::parallel;
use crate::util::vectors;

/// Cost of the plain walk per unit of `ef` (times `1 / frac`), in vectors of an exact scan (see
/// [`HnswIndex::plan`]).
const WALK_COST: f64 = 48.0;

/// Cost of the two-hop walk per unit of `ef`, in vectors of an exact scan: it reads the links of
/// the disallowed neighbours too and jumps farther, so it costs about 2.5x what a plain walk does
/// per `ef` (measured on 100k MiniLM vectors with 10% allowed, batches of 500 queries: the walk
/// reached recall 0.95 at about 3,100 QPS where the batched scan answered exactly at 6,900).
const TWO_HOP_COST: f64 = 120.0;

/// Allowed fraction of the live vectors from which [`FilterMode::Auto`] walks through every node
/// (the filter barely slows that walk) rather than two hops over the allowed ones.
const GRAPH_FRAC: f64 = 0.4;

/// How one query's search runs (see [`HnswIndex::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Scan the allowed vectors exactly.
    Exact,
    /// Walk the graph through every node, keeping the allowed ones (hnswlib's filter); past
    /// `budget` distances, scan instead.
    Graph {
        /// Distances the walk may compute before it gives up for the exact scan.
        budget: usize,
    },
    /// Walk the allowed nodes with two-hop expansion; past `budget` distances, scan instead.
    TwoHop {
        /// Distances the walk may compute before it gives up for the exact scan.
        budget: usize,
    },
}

impl HnswIndex {
    /// Approximate top-`k` for `queries` (`nq x dim`) with beam width `ef` (raised to `k`); the
    /// [`Index::search`] of this index, with per-query allow-lists spelled as an [`Allow`].
    ///
    /// `allow` restricts results to some ids; `mode` picks between the walks and an exact scan of
    /// the allowed vectors (see [`FilterMode`]). A query whose walk finds fewer than `k` results
    /// while more exist falls back to the exact scan, so every query gets `min(k, allowed)`
    /// results.
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
        // A beam wider than the index holds nothing more; bounding it keeps a huge `ef` or `k` cheap.
        let ef = ef.max(k).min(self.len().max(1));
        let shared = match allow {
            Allow::Shared(ids) => Some(self.bitmap(ids)),
            _ => None,
        };
        if let Some((bits, count)) = &shared {
            // Batches go through the tile kernels over a gathered copy; a few queries scan in place.
            if nq >= BATCH_SCAN && self.plan(*count, nq, ef, mode) == Plan::Exact {
                return self.exact_batch(&queries, bits.words(), k, threads);
            }
        }
        let one = |qi: usize| -> TopK {
            let q = &queries[qi * d..(qi + 1) * d];
            match allow {
                Allow::All => {
                    if mode == FilterMode::Exact {
                        self.exact_one(q, k, None)
                    } else {
                        self.walk(q, k, ef, None, self.len(), Plan::Graph { budget: usize::MAX })
                    }
                }
                Allow::Shared(_) => {
                    let (bits, count) = shared.as_ref().expect("built above");
                    self.walk(q, k, ef, Some(bits.words()), *count, self.plan(*count, nq, ef, mode))
                }
                Allow::PerQuery(lists) => {
                    let (bits, count) = self.bitmap(lists[qi]);
                    self.walk(q, k, ef, Some(bits.words()), count, self.plan(count, 1, ef, mode))
                }
            }
        };
        let sels: Vec<TopK> = if nq <= 1 || threads <= 1 {
            (0..nq).map(one).collect()
        } else {
            parallel::install(threads, || (0..nq).into_par_iter().with_min_len(4).map(one).collect())
        };
        Results::from_selections(sels, k, self.metric)
    }

    /// Bitmap over slots of the live ids in `ids`, and how many there are.
    pub(super) fn bitmap(&self, ids: &[i64]) -> (Bitset, usize) {
        let mut bits = Bitset::new(self.ids.len());
        let mut count = 0;
        let book = self.book.read();
        for id in ids {
            if let Some(s) = book.idmap.get(*id) {
                count += bits.insert(s as usize) as usize;
            }
        }
        (bits, count)
    }

    /// How a filtered search over `allowed` live ids runs, for a batch of `nq` queries.
    ///
    /// [`FilterMode::Auto`] compares an exact scan, which reads every allowed vector once (a
    /// quarter of that per query for batches, which the tile kernels serve from cache), with a
    /// walk: the two-hop walk scores about as many nodes as an unfiltered walk of width `ef` but
    /// reads more links (`TWO_HOP_COST * ef`, in scanned rows: its reads are random); where at
    /// least `GRAPH_FRAC` of the vectors are allowed, the plain walk through every node, which
    /// scores `1 / frac` times as many (`WALK_COST * ef / frac`), is used instead (the filter
    /// barely slows it). The walk it picks gives up and scans once it has computed as many
    /// distances as the scan would, so a filter whose allowed vectors lie far from the query (or
    /// split into islands the walk cannot cross) costs at most about twice the scan.
    pub(super) fn plan(&self, allowed: usize, nq: usize, ef: usize, mode: FilterMode) -> Plan {
        match mode {
            FilterMode::Exact => Plan::Exact,
            FilterMode::Graph => Plan::Graph { budget: usize::MAX },
            FilterMode::Acorn => Plan::TwoHop { budget: usize::MAX },
            FilterMode::Auto => {
                let frac = allowed as f64 / self.len().max(1) as f64;
                let graph = frac >= GRAPH_FRAC;
                let walk = ef as f64 * if graph { WALK_COST / frac } else { TWO_HOP_COST };
                let exact = allowed as f64 * if nq >= BATCH_SCAN { 0.25 } else { 1.0 };
                if exact <= walk {
                    Plan::Exact
                } else if graph {
                    Plan::Graph { budget: allowed }
                } else {
                    Plan::TwoHop { budget: allowed }
                }
            }
        }
    }

    /// One query's search by `plan`: an exact scan, or greedy descent through the upper levels
    /// and then a beam of width `ef` on level 0 keeping nodes that are live and allowed (every
    /// node routes the walk for [`Plan::Graph`]; [`Plan::TwoHop`] walks the allowed ones only).
    /// A walk that finds fewer than `min(k, eligible)` results, or runs over its budget, is
    /// replaced by the exact scan.
    pub(super) fn walk(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&[u64]>,
        eligible: usize,
        plan: Plan,
    ) -> TopK {
        let mut sel = TopK::new(k);
        let Some(entry) = self.entry else { return sel };
        if eligible == 0 {
            return sel;
        }
        if plan == Plan::Exact {
            return self.exact_one(q, k, allow);
        }
        // A beam wider than the allowed set never fills, and the walk would visit every node.
        let ef = ef.min(eligible);
        let space = self.space();
        let mut found = Vec::with_capacity(ef);
        let walker = self.codes.walker(self.dim, self.metric == Metric::L2);
        let done = match &walker {
            Walker::F32 => self.walk_with(&space, q, entry, ef, allow, plan, &mut found),
            Walker::Bf16(half) => self.walk_with(half, q, entry, ef, allow, plan, &mut found),
            Walker::Int8(codes) => {
                let p = codes.prepare(q);
                self.walk_with(codes, &p, entry, ef, allow, plan, &mut found)
            }
        };
        if !done {
            return self.exact_one(q, k, allow);
        }
        if let Walker::F32 = walker {
            for c in &found {
                sel.push(-c.d, self.ids[c.s as usize]);
            }
        } else {
            // The walk's distances are approximate: rescore what it kept in f32.
            for c in Prefetched::new(&space, &found) {
                sel.push(-space.dist(q, c.s), self.ids[c.s as usize]);
            }
        }
        if sel.len() < k.min(eligible) {
            return self.exact_one(q, k, allow);
        }
        sel
    }

    /// The walk of [`HnswIndex::walk`] over `walk`'s distances from `q` (the query as `walk`
    /// takes it); appends what it keeps to `found` and returns false when a [`Plan::TwoHop`] ran
    /// over its budget.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn walk_with<W: Dist>(
        &self,
        walk: &W,
        q: &W::Query,
        entry: u32,
        ef: usize,
        allow: Option<&[u64]>,
        plan: Plan,
        found: &mut Vec<Cand>,
    ) -> bool {
        let links = self.links();
        let deleted = &self.deleted;
        let all_ok = allow.is_none() && !deleted.any();
        let n = self.ids.len();
        with_scratch(|sc| {
            let mut cur = Cand { d: walk.dist(q, entry), s: entry };
            for l in (1..=self.max_level).rev() {
                cur = greedy(walk, &links, q, cur, l, sc);
            }
            let ok = |s: u32| !deleted.has(s) && allow.is_none_or(|a| bitset::test(a, s as usize));
            match plan {
                Plan::TwoHop { budget } if allow.is_some() => {
                    let cap = self.shape.m0;
                    search_allowed(walk, &links, q, cur, ef, cap, n, ok, budget, sc, found).is_some()
                }
                Plan::TwoHop { budget } | Plan::Graph { budget } => {
                    search_layer(walk, &links, q, &[cur], 0, ef, n, ok, all_ok, budget, sc, found)
                }
                Plan::Exact => unreachable!("exact plans do not walk"),
            }
        })
    }

    /// Exact top-`k` of one query over the live (and allowed) slots.
    pub(super) fn exact_one(&self, q: &[f32], k: usize, allow: Option<&[u64]>) -> TopK {
        let space = self.space();
        let mut sel = TopK::new(k);
        let n = self.ids.len();
        // A word of the bitmap at a time: a small allow-list skips 64 slots per test.
        for w in 0..self.deleted.len_words() {
            let dead = self.deleted.word(w);
            let mut live = !dead & allow.map_or(u64::MAX, |a| a[w]);
            if w == n / 64 {
                live &= (1u64 << (n % 64)).wrapping_sub(1);
            }
            while live != 0 {
                let s = (w * 64) as u32 + live.trailing_zeros();
                live &= live - 1;
                sel.push(-space.dist(q, s), self.ids[s as usize]);
            }
        }
        sel
    }

    /// Exact top-`k` of a batch over the slots of `bits` with the blocked tile kernels.
    pub(super) fn exact_batch(
        &self,
        queries: &[f32],
        bits: &[u64],
        k: usize,
        threads: usize,
    ) -> Result<Results> {
        let d = self.dim;
        let mut slots: Vec<u32> =
            (0..self.ids.len() as u32).filter(|&s| bitset::test(bits, s as usize)).collect();
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
