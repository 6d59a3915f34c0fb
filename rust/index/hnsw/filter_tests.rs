//! Filtered search: the two-hop walk, the budgets that hand a walk over to the exact scan, and
//! the plan [`FilterMode::Auto`] picks, each checked against brute force.

use super::search::Plan;
use super::{Allow, CodeKind, FilterMode, HnswIndex};
use crate::index::{IdIndex, Index};
use crate::kernels::metric::Metric;
use crate::util::rng::Rng;

const D: usize = 16;

/// `n` vectors around 8 centres, and the index over them (ids = row numbers).
fn build(n: usize, codes: CodeKind) -> (HnswIndex, Vec<f32>) {
    let mut r = Rng::new(3);
    let centres: Vec<f32> = (0..8 * D).map(|_| r.f64() as f32 - 0.5).collect();
    let x: Vec<f32> =
        (0..n * D).map(|i| centres[(i / D % 8) * D + i % D] + 0.2 * (r.f64() as f32 - 0.5)).collect();
    let mut idx = HnswIndex::with_codes(D, Metric::L2, 8, 64, 1, codes).unwrap();
    idx.add(&x, None, 1).unwrap();
    (idx, x)
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Exact top-`k` ids among `allow` (ascending distance, ties to the lower id).
fn brute(x: &[f32], q: &[f32], allow: &[i64], k: usize) -> Vec<i64> {
    let mut all: Vec<(f32, i64)> = allow.iter().map(|&i| (l2(q, &x[i as usize * D..][..D]), i)).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Every `step`-th id, a random-looking allow-list (rows cycle through the centres).
fn every(n: usize, step: usize) -> Vec<i64> {
    (0..n as i64).step_by(step).collect()
}

/// The ids of one centre: a filter correlated with where the vectors lie.
fn one_cluster(n: usize, c: usize) -> Vec<i64> {
    (0..n as i64).filter(|i| *i as usize % 8 == c).collect()
}

fn check(idx: &HnswIndex, x: &[f32], allow: &[i64], mode: FilterMode, ef: usize, floor: f64) {
    let mut r = Rng::new(9);
    let (nq, k) = (20, 10);
    let q: Vec<f32> =
        (0..nq * D).map(|i| x[(i / D * 131 % (x.len() / D)) * D + i % D] + 0.05 * r.f64() as f32).collect();
    let res = idx.search_filtered(&q, k, ef, 1, Allow::Shared(allow), mode).unwrap();
    let mut hit = 0;
    for (qi, (ids, scores)) in res.ids.chunks(k).zip(res.scores.chunks(k)).enumerate() {
        let qv = &q[qi * D..(qi + 1) * D];
        let want = brute(x, qv, allow, k);
        let valid: Vec<i64> = ids.iter().copied().filter(|&i| i >= 0).collect();
        assert_eq!(valid.len(), k.min(allow.len()), "{mode:?}: every query gets min(k, allowed)");
        for (&id, &s) in valid.iter().zip(scores) {
            assert!(allow.contains(&id), "{mode:?}: id {id} is not allowed");
            let exact = l2(qv, &x[id as usize * D..][..D]);
            assert!((s - exact).abs() <= 1e-5 * exact.max(1.0), "{mode:?}: score {s}, exact {exact}");
        }
        hit += valid.iter().filter(|i| want.contains(i)).count();
    }
    let recall = hit as f64 / (nq * k.min(allow.len())) as f64;
    assert!(recall >= floor, "{mode:?}, {} allowed: recall {recall}", allow.len());
}

#[test]
fn two_hop_walk_finds_the_allowed_neighbours() {
    for codes in [CodeKind::None, CodeKind::Bf16, CodeKind::Int8] {
        let (idx, x) = build(3000, codes);
        for allow in [every(3000, 2), every(3000, 10), one_cluster(3000, 3), every(3000, 100)] {
            check(&idx, &x, &allow, FilterMode::Acorn, 96, 0.9);
            check(&idx, &x, &allow, FilterMode::Auto, 96, 0.9);
            check(&idx, &x, &allow, FilterMode::Exact, 96, 1.0);
        }
        // Fewer allowed than k, and nothing allowed.
        check(&idx, &x, &[4, 17, 2999], FilterMode::Acorn, 32, 1.0);
        let r = idx.search_filtered(&x[..D], 5, 32, 1, Allow::Shared(&[]), FilterMode::Acorn).unwrap();
        assert!(r.ids.iter().all(|&i| i == -1));
    }
}

#[test]
fn a_walk_over_budget_hands_over_to_the_exact_scan() {
    let (idx, x) = build(2000, CodeKind::Bf16);
    let allow = one_cluster(2000, 5);
    let (bits, count) = idx.bitmap(&allow);
    // A query far from the allowed cluster: the walk would have to cross the graph.
    let q = &x[D..2 * D];
    let want = brute(&x, q, &allow, 10);
    for plan in [Plan::TwoHop { budget: 0 }, Plan::Graph { budget: 0 }, Plan::TwoHop { budget: 5 }] {
        let got: Vec<i64> =
            idx.walk(q, 10, 64, Some(bits.words()), count, plan).into_sorted().iter().map(|h| h.1).collect();
        assert_eq!(got, want, "{plan:?}");
    }
}

#[test]
fn auto_scans_small_allow_lists_and_walks_large_ones() {
    let (idx, _) = build(3000, CodeKind::None);
    assert_eq!(idx.plan(100, 1, 64, FilterMode::Auto), Plan::Exact);
    assert_eq!(idx.plan(2000, 1, 8, FilterMode::Auto), Plan::Graph { budget: 2000 });
    assert_eq!(idx.plan(2000, 100, 8, FilterMode::Auto), Plan::Exact, "batches scan from cache");
    assert_eq!(idx.plan(1100, 1, 8, FilterMode::Auto), Plan::TwoHop { budget: 1100 });
    assert_eq!(idx.plan(600, 1, 8, FilterMode::Auto), Plan::Exact, "a two-hop walk of 8 costs more");
    assert_eq!(idx.plan(10, 1, 64, FilterMode::Acorn), Plan::TwoHop { budget: usize::MAX });
    assert_eq!(idx.plan(10, 1, 64, FilterMode::Graph), Plan::Graph { budget: usize::MAX });
    assert_eq!(idx.plan(3000, 1, 64, FilterMode::Exact), Plan::Exact);
}

#[test]
fn deleted_ids_in_an_allow_list_never_return() {
    for codes in [CodeKind::Bf16, CodeKind::Int8] {
        deleted_ids_never_return(codes);
    }
}

fn deleted_ids_never_return(codes: CodeKind) {
    let (mut idx, x) = build(2000, codes);
    let gone: Vec<i64> = (0..2000).step_by(3).collect();
    idx.remove(&gone).unwrap();
    let allow = every(2000, 2);
    let live: Vec<i64> = allow.iter().copied().filter(|i| i % 3 != 0).collect();
    for mode in [FilterMode::Acorn, FilterMode::Auto, FilterMode::Graph, FilterMode::Exact] {
        let r = idx.search_filtered(&x[..4 * D], 10, 64, 1, Allow::Shared(&allow), mode).unwrap();
        assert!(r.ids.iter().all(|i| live.contains(i)), "{mode:?}");
    }
    check(&idx, &x, &live, FilterMode::Acorn, 96, 0.9);
}
