//! Building an [`HnswIndex`] graph: parallel inserts (rayon), each node's link lists guarded by
//! its own lock while readers walk the graph through atomic loads, with the neighbour-selection
//! heuristic, in-degree bookkeeping and the repair of reused slots.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use rayon::prelude::*;

use super::codes::Walker;
use super::graph::{greedy, search_layer, select, with_scratch, AtomicLinks, Cand, Dist, Links, Space};
use super::tombstones::Tombstones;
use super::HnswIndex;
use crate::kernels::metric::Metric;
use crate::util::parallel;

impl HnswIndex {
    /// Insert (or relink) the nodes in `order`, in parallel; returns the new entry point and its
    /// level. Writes the link lists through atomics, so searches may walk them meanwhile (see
    /// [`HnswIndex::link`]).
    pub(super) fn build(
        &self,
        order: &[u32],
        old: &HashMap<u32, Vec<Vec<u32>>>,
        threads: usize,
    ) -> (Option<u32>, usize) {
        let total = self.ids.len();
        let locks: Vec<Mutex<()>> = (0..total).map(|_| Mutex::new(())).collect();
        let w0 = self.shape.m0 + 1;
        let (Some(l0), Some(up)) = (self.links0.writable(), self.upper.writable()) else {
            unreachable!("HnswIndex::stage copies mapped link lists into memory")
        };
        // The in-degrees carry over from the last add; a full pass recounts them (they drift a
        // little under concurrent inserts) and then reconnects islands, both O(n).
        let full = self.full_pass(order.len(), total);
        let indeg = &self.indeg[..total];
        if full {
            indeg.iter().for_each(|c| c.store(0, Relaxed));
            for list in l0.chunks_exact(w0) {
                let c = (list[0].load(Relaxed) as usize).min(w0 - 1);
                for t in &list[1..1 + c] {
                    indeg[t.load(Relaxed) as usize].fetch_add(1, Relaxed);
                }
            }
        }
        let l2 = self.metric == Metric::L2;
        let b = Builder {
            indeg,
            space: Space::new(self.vectors.as_slice(), self.dim, l2),
            walk: self.codes.walker(self.dim, l2),
            links: AtomicLinks { l0, up, up_off: &self.up_off, shape: self.shape },
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
        let top = *b.top.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(e), true) = (top.0, full) {
            b.reconnect(e);
        }
        let since = if full { 0 } else { self.since_full.load(Relaxed) + order.len() };
        self.since_full.store(since, Relaxed);
        top
    }
}

/// AtomicLinks state of one parallel build.
struct Builder<'a> {
    /// What the insert walks read: the walk copy when there is one.
    walk: Walker<'a>,
    /// Level-0 in-degree of every slot (kept approximately under concurrency), so pruning
    /// never drops a node's last incoming link.
    indeg: &'a [AtomicU32],
    space: Space<'a>,
    links: AtomicLinks<'a>,
    locks: &'a [Mutex<()>],
    levels: &'a [u8],
    deleted: &'a Tombstones,
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
        let q = self.space.row(s);
        match &self.walk {
            Walker::F32 => self.insert_with(&self.space, q, q, s, old),
            Walker::Bf16(h) => self.insert_with(h, q, q, s, old),
            Walker::Int8(c) => self.insert_with(c, q, &c.prepare(q), s, old),
        }
    }

    /// [`Builder::insert`] walking the graph with `walk` from `wq` (the vector `q` of `s` as
    /// `walk` takes it); candidates found over a walk copy are rescored in `f32` before the
    /// heuristic picks neighbours.
    fn insert_with<W: Dist>(&self, walk: &W, q: &[f32], wq: &W::Query, s: u32, old: Option<&[Vec<u32>]>) {
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
        let ok = |x: u32| x != s && !self.deleted.has(x);
        with_scratch(|sc| {
            let mut cur = Cand { d: walk.dist(wq, ep), s: ep };
            for l in (level + 1..=max_level).rev() {
                cur = greedy(walk, &self.links, wq, cur, l, sc);
            }
            let mut eps = vec![cur];
            let mut found = Vec::with_capacity(self.efc);
            let mut chosen = Vec::new();
            let mut ids = Vec::new();
            for l in (0..=level.min(max_level)).rev() {
                found.clear();
                search_layer(
                    walk,
                    &self.links,
                    wq,
                    &eps,
                    l,
                    self.efc,
                    self.n,
                    ok,
                    false,
                    usize::MAX,
                    sc,
                    &mut found,
                );
                if !matches!(self.walk, Walker::F32) {
                    for c in found.iter_mut() {
                        c.d = self.space.dist(q, c.s);
                    }
                }
                found.sort_unstable();
                select(&self.space, &found, self.links.shape.m, &mut chosen);
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
            if seen[x as usize] || self.deleted.has(x) {
                continue;
            }
            let q = self.space.row(x);
            found.clear();
            with_scratch(|sc| {
                let ep = Cand { d: self.space.dist(q, entry), s: entry };
                let ok = |u: u32| u != x && seen[u as usize];
                search_layer(
                    &self.space,
                    &self.links,
                    q,
                    &[ep],
                    0,
                    self.efc,
                    n,
                    ok,
                    false,
                    usize::MAX,
                    sc,
                    &mut found,
                );
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
            .filter(|&&x| x != s && x != u && !self.deleted.has(x))
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
            .filter(|&&u| u != x && !self.deleted.has(u))
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
