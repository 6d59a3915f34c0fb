//! The concurrency promise of `rankfunnel::concurrent::Locked`, through the public API of the
//! rlib: while one thread adds, removes or saves, other threads search, and every result they
//! get is checked against a brute-force reference (each hit is an id that is stored, with the
//! score of its true vector, so no torn vector), an add is seen as a prefix of its batch, no id
//! is returned once its remove has returned, and a file saved during an add holds the index as
//! it was before or after that add. Every index kind goes through the same driver.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use common::Rng;
use rankfunnel::concurrent::Locked;
use rankfunnel::index::hnsw::{CodeKind, FilterMode, HnswParams};
use rankfunnel::index::ivf::{IvfParams, Storage};
use rankfunnel::index::multivector::{SearchParams, TokenDocs};
use rankfunnel::kernels::topk::Results;
use rankfunnel::{BM25Index, FlatIndex, HnswIndex, IdIndex, IvfIndex, Metric, MultiVectorIndex};

const READERS: usize = 2;

/// What the driver needs of one index kind: its adds of numbered items, its searches, and
/// whether a hit (id, score) of query `q` agrees with the reference.
struct Kind<'a, T> {
    index: &'a Locked<T>,
    /// Add items `range` (their ids are the item numbers).
    add: &'a (dyn Fn(&Locked<T>, std::ops::Range<usize>) + Sync),
    /// Search query number `q`.
    search: &'a (dyn Fn(&Locked<T>, usize) -> Results + Sync),
    /// True when `score` is the reference score of item `id` for query `q`.
    agrees: &'a (dyn Fn(usize, i64, f32) -> bool + Sync),
    queries: usize,
}

/// Every hit of `r`: distinct, known (in `known`), not in `gone`, with the reference score.
fn check<T>(kind: &Kind<'_, T>, q: usize, r: &Results, known: &HashSet<i64>, gone: &HashSet<i64>) {
    let mut seen = HashSet::new();
    for (&id, &s) in r.ids.iter().zip(&r.scores) {
        if id < 0 {
            continue;
        }
        assert!(seen.insert(id), "id {id} returned twice");
        assert!(known.contains(&id), "id {id} was never added");
        assert!(!gone.contains(&id), "id {id} returned after its remove returned");
        assert!((kind.agrees)(q, id, s), "query {q}: id {id} scored {s}, not its reference score");
    }
}

/// Runs `writer` while `READERS` threads search in a loop; each reader checks its results
/// (with `gone` once `done` is set before the search started) and each snapshot of the ids
/// with `snapshot`. Returns how many searches ran.
fn during<T: IdIndex + Send + Sync>(
    kind: &Kind<'_, T>,
    known: &HashSet<i64>,
    gone: &HashSet<i64>,
    writer: impl FnOnce() + Send,
    snapshot: &(dyn Fn(&HashSet<i64>) + Sync),
) -> usize {
    let done = AtomicBool::new(false);
    let none = HashSet::new();
    let searches = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..READERS {
            let (done, searches, none) = (&done, &searches, &none);
            s.spawn(move || {
                let mut q = t;
                loop {
                    let finished = done.load(SeqCst);
                    let r = (kind.search)(kind.index, q % kind.queries);
                    check(kind, q % kind.queries, &r, known, if finished { gone } else { none });
                    snapshot(&kind.index.read().ids().into_iter().collect());
                    searches.fetch_add(1, SeqCst);
                    q += READERS;
                    if finished {
                        break;
                    }
                }
            });
        }
        writer();
        done.store(true, SeqCst);
    });
    searches.into_inner()
}

/// The driver: starts from items `0..n0`, adds `n0..n1` while searches run, removes every
/// third item while searches run, then adds `n1..n2` while another thread saves, and checks
/// the saved file holds the index before or after that add.
fn promise<T: IdIndex + Send + Sync>(kind: Kind<'_, T>, n0: usize, n1: usize, n2: usize) {
    let ids = |r: std::ops::Range<usize>| -> HashSet<i64> { r.map(|i| i as i64).collect() };
    (kind.add)(kind.index, 0..n0);
    let known = ids(0..n2);
    let none = HashSet::new();

    // An add is seen as a prefix of its batch.
    let before = ids(0..n0);
    let prefix = |now: &HashSet<i64>| {
        assert!(now.is_superset(&before), "an add hid stored ids");
        let added = now.len() - before.len();
        assert!((n0..n0 + added).all(|i| now.contains(&(i as i64))), "not a prefix of the batch");
    };
    let n = during(&kind, &known, &none, || (kind.add)(kind.index, n0..n1), &prefix);
    eprintln!("{n} searches ran during the add");
    assert_eq!(kind.index.read().ids().into_iter().collect::<HashSet<_>>(), ids(0..n1));

    // A remove: each id present or gone while it runs, gone once it returns.
    let removed: Vec<i64> = (0..n1 as i64).filter(|i| i % 3 == 0).collect();
    let gone: HashSet<i64> = removed.iter().copied().collect();
    let all = ids(0..n1);
    let between = |now: &HashSet<i64>| {
        assert!(now.is_subset(&all), "a remove added ids");
        assert!(all.difference(now).all(|i| gone.contains(i)), "a remove lost ids it was not given");
    };
    during(
        &kind,
        &known,
        &gone,
        || assert_eq!(kind.index.remove(&removed).unwrap(), removed.len()),
        &between,
    );
    let kept: HashSet<i64> = all.difference(&gone).copied().collect();
    assert_eq!(kind.index.read().ids().into_iter().collect::<HashSet<_>>(), kept);

    // A save while another thread adds and searches run: the file holds one whole state.
    let dir = std::env::temp_dir().join(format!("rankfunnel-concurrent-{}-{}", std::process::id(), n2));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("index.rf");
    let after: HashSet<i64> = kept.union(&ids(n1..n2)).copied().collect();
    let whole = |now: &HashSet<i64>| assert!(now.is_superset(&kept) && now.is_subset(&after));
    during(
        &kind,
        &known,
        &gone,
        || {
            std::thread::scope(|s| {
                s.spawn(|| (kind.add)(kind.index, n1..n2));
                kind.index.save(&path).unwrap();
            })
        },
        &whole,
    );
    let saved: HashSet<i64> = T::load(&path, false).unwrap().ids().into_iter().collect();
    assert!(saved == kept || saved == after, "the saved file holds {} ids: a torn state", saved.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-3 * (1.0 + b.abs())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `n` rows of `d` values and `nq` queries.
fn rows(n: usize, nq: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    (r.vec(n * d), r.vec(nq * d))
}

#[test]
fn flat_searches_during_adds_removes_and_saves() {
    let (d, n2) = (32, 24_000);
    let (data, queries) = rows(n2, 16, d, 7);
    let index = Locked::new(FlatIndex::new(d, Metric::Dot, true).unwrap());
    let ids = |r: std::ops::Range<usize>| r.map(|i| i as i64).collect::<Vec<_>>();
    promise(
        Kind {
            index: &index,
            add: &|l, r| {
                l.add(&data[r.start * d..r.end * d], Some(&ids(r)), 1).unwrap();
            },
            search: &|l, q| l.search(&queries[q * d..(q + 1) * d], 10, &(), None, 1).unwrap(),
            agrees: &|q, id, s| close(s, dot(&queries[q * d..(q + 1) * d], &data[id as usize * d..][..d])),
            queries: 16,
        },
        2_000,
        20_000,
        n2,
    );
}

#[test]
fn hnsw_searches_during_adds_removes_and_saves() {
    let (d, n2) = (64, 8_000);
    let (data, queries) = rows(n2, 16, d, 11);
    let idx = HnswIndex::with_codes(d, Metric::Dot, 8, 40, 0, CodeKind::Int8).unwrap();
    let index = Locked::new(idx);
    let ids = |r: std::ops::Range<usize>| r.map(|i| i as i64).collect::<Vec<_>>();
    let params = HnswParams { ef: 32, mode: FilterMode::Auto, allow_lists: None };
    promise(
        Kind {
            index: &index,
            add: &|l, r| {
                l.add(&data[r.start * d..r.end * d], Some(&ids(r)), 1).unwrap();
            },
            search: &|l, q| l.search(&queries[q * d..(q + 1) * d], 10, &params, None, 1).unwrap(),
            agrees: &|q, id, s| close(s, dot(&queries[q * d..(q + 1) * d], &data[id as usize * d..][..d])),
            queries: 16,
        },
        1_000,
        7_000,
        n2,
    );
}

#[test]
fn ivf_searches_during_adds_removes_and_saves() {
    let (d, n2) = (32, 24_000);
    let (data, queries) = rows(n2, 16, d, 13);
    let mut idx = IvfIndex::new(d, 16, Metric::Dot, Storage::F32).unwrap();
    idx.train(&data[..4_000 * d], 10, 0, 1).unwrap();
    let index = Locked::new(idx);
    let ids = |r: std::ops::Range<usize>| r.map(|i| i as i64).collect::<Vec<_>>();
    let params = IvfParams { nprobe: 4, refine: 0, coarse_ef: 0 };
    promise(
        Kind {
            index: &index,
            add: &|l, r| {
                l.add(&data[r.start * d..r.end * d], Some(&ids(r)), 1).unwrap();
            },
            search: &|l, q| l.search(&queries[q * d..(q + 1) * d], 10, &params, None, 1).unwrap(),
            agrees: &|q, id, s| close(s, dot(&queries[q * d..(q + 1) * d], &data[id as usize * d..][..d])),
            queries: 16,
        },
        2_000,
        20_000,
        n2,
    );
}

#[test]
fn multivector_searches_during_adds_removes_and_saves() {
    let (d, n2) = (16, 6_000);
    let mut r = Rng(17);
    // Document i has 2 + i % 4 unit tokens, starting at token offsets[i].
    let mut offsets = vec![0usize];
    for i in 0..n2 {
        offsets.push(offsets[i] + 2 + i % 4);
    }
    let unit = |v: Vec<f32>| -> Vec<f32> {
        v.chunks(d)
            .flat_map(|t| {
                let n = dot(t, t).sqrt();
                t.iter().map(move |x| x / n).collect::<Vec<_>>()
            })
            .collect()
    };
    let tokens = unit(r.vec(offsets[n2] * d));
    let queries: Vec<Vec<f32>> = (0..8).map(|_| unit(r.vec(4 * d))).collect();
    let maxsim = |q: &[f32], id: usize| -> f32 {
        let doc = &tokens[offsets[id] * d..offsets[id + 1] * d];
        q.chunks(d).map(|t| doc.chunks(d).map(|u| dot(t, u)).fold(f32::MIN, f32::max)).sum()
    };
    let index = Locked::new(MultiVectorIndex::new(d, 0, 32, 0).unwrap());
    let params = SearchParams { candidates: 64, nprobe: 4, refine: 0 };
    promise(
        Kind {
            index: &index,
            add: &|l, rg| {
                let base = offsets[rg.start] as i64;
                let offs: Vec<i64> = offsets[rg.start..=rg.end].iter().map(|&o| o as i64 - base).collect();
                let docs =
                    TokenDocs { tokens: &tokens[offsets[rg.start] * d..offsets[rg.end] * d], offsets: &offs };
                let ids: Vec<i64> = rg.map(|i| i as i64).collect();
                l.add(docs, Some(&ids), 1).unwrap();
            },
            search: &|l, q| l.search(&[&queries[q][..]], 10, &params, None, 1).unwrap(),
            agrees: &|q, id, s| close(s, maxsim(&queries[q], id as usize)),
            queries: 8,
        },
        1_000,
        5_000,
        n2,
    );
}

#[test]
fn bm25_searches_during_adds_removes_and_saves() {
    let n2 = 30_000;
    let mut r = Rng(19);
    let texts: Vec<String> =
        (0..n2).map(|_| (0..8).map(|_| format!("w{}", r.below(500))).collect::<Vec<_>>().join(" ")).collect();
    let queries: Vec<String> = (0..16).map(|q| format!("w{} w{}", q * 7, q * 11 + 3)).collect();
    let analyzer =
        rankfunnel::index::bm25::Analyzer::new(None, rankfunnel::index::bm25::Stopwords::None).unwrap();
    let params = rankfunnel::index::bm25::Params::new(1.5, 0.75).unwrap();
    let index = Locked::new(BM25Index::new(params, analyzer));
    // A hit must hold a query term (scores depend on the collection's statistics, which the
    // add changes; their exactness is tests/bm25.rs's business).
    let holds =
        |q: usize, id: i64| queries[q].split(' ').any(|t| texts[id as usize].split(' ').any(|w| w == t));
    promise(
        Kind {
            index: &index,
            add: &|l, rg| {
                let ids: Vec<i64> = rg.clone().map(|i| i as i64).collect();
                l.add(&texts[rg], Some(&ids), 1).unwrap();
            },
            search: &|l, q| l.read().search(&queries[q..q + 1], 10, 1, None).unwrap(),
            agrees: &|q, id, s| s > 0.0 && holds(q, id),
            queries: 16,
        },
        2_000,
        25_000,
        n2,
    );
}

/// A search that starts while a long add runs waits out about one write section, not the
/// batch: the writer lets waiting searches go first before each section. (Sections are
/// counted by the lock, so this holds however fast the machine is; a reader the OS
/// deschedules can still see more, hence the quantile.)
#[test]
fn a_search_waits_about_one_section() {
    let d = 64;
    let n = 120_000;
    let (data, queries) = rows(n, 1, d, 23);
    let mut idx = IvfIndex::new(d, 8, Metric::Dot, Storage::F32).unwrap();
    idx.train(&data[..4000 * d], 5, 0, 1).unwrap();
    let index = Locked::new(idx);
    index.add(&data[..1000 * d], None, 1).unwrap();
    let params = IvfParams { nprobe: 1, refine: 0, coarse_ef: 0 };
    let done = AtomicBool::new(false);
    let mut waits = Vec::new();
    let start = index.sections();
    std::thread::scope(|s| {
        s.spawn(|| {
            index.add(&data[1000 * d..], None, 1).unwrap();
            done.store(true, SeqCst);
        });
        while !done.load(SeqCst) {
            let a = index.sections();
            let g = index.read();
            waits.push(index.sections() - a);
            drop(g);
            index.search(&queries, 1, &params, None, 1).unwrap();
        }
    });
    let total = index.sections() - start;
    assert!(total >= 100, "the add ran in {total} sections");
    assert!(waits.len() >= 20, "only {} searches ran during the add", waits.len());
    waits.sort_unstable();
    let p90 = waits[waits.len() * 9 / 10];
    assert!(p90 <= 2, "90% of searches waited out up to {p90} sections (of {total}): {waits:?}");
}
