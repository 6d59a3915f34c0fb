//! Searching an [`HnswIndex`]: the graph walk, the cost model that picks it or an exact scan of
//! the allowed vectors for filtered searches, and the exact scans themselves.

use std::borrow::Cow;

use rayon::prelude::*;

use super::graph::{greedy, search_layer, with_scratch, Cand, Dist, HalfSpace};
use super::{bit, Allow, FilterMode, HnswIndex, BATCH_SCAN};
use crate::error::Result;
use crate::index::Index;
use crate::invalid;
use crate::metric::Metric;
use crate::parallel;
use crate::topk::{self, Results, Source, TopK};
use crate::vectors;

impl HnswIndex {
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
        // A beam wider than the index holds nothing more; bounding it keeps a huge `ef` or `k` cheap.
        let ef = ef.max(k).min(self.len().max(1));
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
        Results::from_selections(sels, k, self.metric)
    }

    /// Bitmap over slots of the live ids in `ids`, and how many there are.
    pub(super) fn bitmap(&self, ids: &[i64]) -> (Vec<u64>, usize) {
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
    pub(super) fn prefer_exact(&self, allowed: usize, nq: usize, ef: usize) -> bool {
        let live = self.len().max(1) as f64;
        let frac = (allowed as f64 / live).max(1e-9);
        let walk = (24.0 * ef as f64 / frac).min(live);
        let exact = allowed as f64 * if nq >= BATCH_SCAN { 0.25 } else { 1.0 };
        exact <= walk
    }

    /// The graph walk for one query: greedy descent through the upper levels, then a beam of
    /// width `ef` on level 0 keeping nodes that are live and allowed.
    pub(super) fn walk(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&[u64]>,
        eligible: usize,
    ) -> TopK {
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

    pub(super) fn walk_with<W: Dist>(
        &self,
        walk: &W,
        q: &[f32],
        entry: u32,
        ef: usize,
        allow: Option<&[u64]>,
        found: &mut Vec<Cand>,
    ) {
        let links = self.links();
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
    pub(super) fn exact_one(&self, q: &[f32], k: usize, allow: Option<&[u64]>) -> TopK {
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
    pub(super) fn exact_batch(
        &self,
        queries: &[f32],
        bits: &[u64],
        k: usize,
        threads: usize,
    ) -> Result<Results> {
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
