//! cargo tests of the BM25 index: scores against a brute-force BM25, adds and removals (with
//! compaction) staying exact, filters, empty queries, persistence and damaged files.

use std::collections::HashMap;

use rankfunnel::index::bm25::{Analyzer, Params, Stopwords};
use rankfunnel::{BM25Index, Error, IdIndex};

mod common;
use common::Rng;

const WORDS: [&str; 12] =
    ["alpha", "beta", "gamma", "delta", "the", "of", "straße", "naïve", "日本語", "x", "epsilon", "zeta"];

fn texts(n: usize, seed: u64) -> Vec<String> {
    let mut r = Rng(seed | 1);
    (0..n)
        .map(|_| {
            let len = r.below(10);
            (0..len).map(|_| WORDS[r.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn plain() -> BM25Index {
    BM25Index::new(Params::new(1.5, 0.75).unwrap(), Analyzer::new(None, Stopwords::English).unwrap())
}

/// Brute-force BM25 (lucene idf, f64) of the documents `docs` (id -> text) for `query`.
fn reference(idx: &BM25Index, docs: &HashMap<i64, String>, query: &str) -> HashMap<i64, f64> {
    let terms: HashMap<i64, Vec<String>> = docs.iter().map(|(&id, t)| (id, idx.analyze(t))).collect();
    let n = docs.len() as f64;
    let avgdl = terms.values().map(|t| t.len()).sum::<usize>() as f64 / n;
    let (k1, b) = (idx.params().k1 as f64, idx.params().b as f64);
    let mut out = HashMap::new();
    for q in idx.analyze(query) {
        let df = terms.values().filter(|t| t.contains(&q)).count() as f64;
        if df == 0.0 {
            continue;
        }
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        for (&id, t) in &terms {
            let tf = t.iter().filter(|w| **w == q).count() as f64;
            if tf > 0.0 {
                *out.entry(id).or_insert(0.0) +=
                    idf * tf / (tf + k1 * (1.0 - b + b * t.len() as f64 / avgdl));
            }
        }
    }
    out
}

fn check(idx: &BM25Index, docs: &HashMap<i64, String>, query: &str) {
    let want = reference(idx, docs, query);
    let k = docs.len() + 3;
    let r = idx.search(&[query], k, 2, None).unwrap();
    let got: Vec<(i64, f32)> =
        r.ids.iter().zip(&r.scores).filter(|(&i, _)| i >= 0).map(|(&i, &s)| (i, s)).collect();
    assert_eq!(got.len(), want.len(), "query {query:?}");
    for w in got.windows(2) {
        assert!(w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0), "order {w:?}");
    }
    for (id, s) in got {
        let e = want[&id];
        assert!((s as f64 - e).abs() <= 1e-5 * e.max(1.0), "id {id}: {s} vs {e}");
    }
    assert!(r.ids[want.len()..].iter().all(|&i| i == -1));
    assert!(r.scores[want.len()..].iter().all(|&s| s == f32::NEG_INFINITY));
}

#[test]
fn scores_match_brute_force_through_adds_and_removals() {
    let mut idx = plain();
    let all = texts(400, 7);
    let mut docs: HashMap<i64, String> = HashMap::new();
    let ids = idx.add(&all[..200], None, 2).unwrap();
    docs.extend(ids.iter().map(|&i| (i, all[i as usize].clone())));
    let queries = ["alpha beta", "gamma gamma delta", "straße naïve", "日本語 zeta the", "epsilon"];
    for q in queries {
        check(&idx, &docs, q);
    }
    let mut r = Rng(11);
    for round in 0..5 {
        let live: Vec<i64> = idx.ids();
        let gone: Vec<i64> = (0..30).map(|_| live[r.below(live.len())]).collect();
        idx.remove(&gone).unwrap();
        for g in &gone {
            docs.remove(g);
        }
        let start = 200 + round * 40;
        let new_ids: Vec<i64> = (start as i64 + 1000..start as i64 + 1040).collect();
        idx.add(&all[start..start + 40], Some(&new_ids), 1).unwrap();
        docs.extend(new_ids.iter().zip(&all[start..start + 40]).map(|(&i, t)| (i, t.clone())));
        assert_eq!(idx.len(), docs.len());
        for q in queries {
            check(&idx, &docs, q);
        }
    }
}

#[test]
fn adds_and_removals_are_checked_first() {
    let mut idx = plain();
    idx.add(&["one two", "two three"], None, 1).unwrap();
    assert!(matches!(idx.add(&["x y"], Some(&[1]), 1), Err(Error::InvalidArgument(_))));
    assert!(matches!(idx.add(&["x y", "z w"], Some(&[5, 5]), 1), Err(Error::InvalidArgument(_))));
    assert!(matches!(idx.remove(&[0, 42]), Err(Error::UnknownId(42))));
    assert_eq!(idx.len(), 2);
    assert!(idx.contains(0));
    assert_eq!(idx.remove(&[0, 0]).unwrap(), 1);
    assert_eq!(idx.ids(), vec![1]);
}

#[test]
fn empty_queries_filters_and_k() {
    let mut idx = plain();
    idx.add(&["red fish", "blue fish", "red bird"], None, 1).unwrap();
    for q in ["", "the of", "!!", "unknown"] {
        let r = idx.search(&[q], 2, 1, None).unwrap();
        assert_eq!(r.ids, vec![-1, -1]);
    }
    let r = idx.search(&["red fish"], 3, 1, Some(&[1, 2, 99])).unwrap();
    assert_eq!(&r.ids[..2], &[1, 2]);
    assert_eq!(r.ids[2], -1);
    assert!(idx.search(&["red"], 0, 1, None).is_err());
}

#[test]
fn save_load_roundtrip_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lex.rfi");
    let analyzer = Analyzer::new(Some("english"), Stopwords::Custom(vec!["Beta".into()])).unwrap();
    let mut idx = BM25Index::new(Params::new(1.2, 0.5).unwrap(), analyzer);
    let all = texts(100, 3);
    idx.add(&all, None, 2).unwrap();
    idx.remove(&[3, 4, 5]).unwrap();
    idx.save(&path).unwrap();
    let back = BM25Index::load(&path, false).unwrap();
    assert_eq!(back.ids(), idx.ids());
    assert_eq!(back.params(), idx.params());
    assert_eq!(back.analyzer().stopwords(), &Stopwords::Custom(vec!["beta".into()]));
    for q in ["alpha gamma", "beta delta", "naïve"] {
        assert_eq!(back.search(&[q], 10, 1, None).unwrap(), idx.search(&[q], 10, 1, None).unwrap());
    }
    let bytes = std::fs::read(&path).unwrap();
    for pos in [bytes.len() - 1, bytes.len() / 2, 40] {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x5a;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(BM25Index::load(&path, false), Err(Error::CorruptFile(_))), "byte {pos}");
    }
    let flat = rankfunnel::FlatIndex::new(2, rankfunnel::Metric::Dot, false).unwrap();
    flat.save(&path).unwrap();
    assert!(matches!(BM25Index::load(&path, false), Err(Error::CorruptFile(_))));
}
