//! The walks: greedy descent, the beam search over one layer, the filtered (ACORN-style)
//! two-hop walk, and hnswlib's neighbour-selection heuristic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

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
