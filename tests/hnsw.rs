//! cargo tests of the HNSW index: recall against exact search, removal and slot reuse, filters,
//! determinism, persistence and damaged files.

mod common;

use common::{clustered, recall};
use rankfunnel::index::hnsw::{Allow, CodeKind, FilterMode};
use rankfunnel::{Error, FlatIndex, HnswIndex, IdIndex, Index, Metric};

fn build(n: usize, d: usize, metric: Metric, threads: usize) -> (HnswIndex, FlatIndex, Vec<f32>) {
    let x = clustered(n, d, 3);
    let mut h = HnswIndex::new(d, metric, 12, 100, 7, true).unwrap();
    h.add(&x, None, threads).unwrap();
    let mut f = FlatIndex::new(d, metric, false).unwrap();
    f.add(&x, None, 1).unwrap();
    (h, f, x)
}

#[test]
fn recall_against_exact_for_every_metric() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        // One build thread: deterministic, so the bounds below are not flaky.
        let (h, f, _) = build(3000, 24, metric, 1);
        let q = clustered(100, 24, 99);
        let want = f.search(&q, 10, &(), None, 1).unwrap();
        let got = h.search_filtered(&q, 10, 128, 2, Allow::All, FilterMode::Auto).unwrap();
        let r = recall(&got.ids, &want.ids, 10);
        eprintln!("{metric:?}: recall {r}");
        // Inner product on vectors of unequal norms is not a metric; graphs serve it less well.
        let floor = if metric == Metric::Dot { 0.7 } else { 0.95 };
        assert!(r >= floor, "{metric:?}: recall {r}");
    }
}

#[test]
fn single_thread_build_is_deterministic() {
    let (a, _, _) = build(800, 8, Metric::L2, 1);
    let (b, _, _) = build(800, 8, Metric::L2, 1);
    let dir = tempfile::tempdir().unwrap();
    a.save(&dir.path().join("a")).unwrap();
    b.save(&dir.path().join("b")).unwrap();
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), std::fs::read(dir.path().join("b")).unwrap());
}

#[test]
fn removed_ids_never_return_and_slots_are_reused() {
    let (mut h, _, x) = build(1000, 16, Metric::Cosine, 2);
    let gone: Vec<i64> = (0..1000).step_by(3).collect();
    assert!(matches!(h.remove(&[5, 100_000]), Err(Error::UnknownId(100_000))));
    assert_eq!(h.len(), 1000);
    assert_eq!(h.remove(&gone).unwrap(), gone.len());
    let r = h.search_filtered(&x, 10, 64, 2, Allow::All, FilterMode::Auto).unwrap();
    assert!(r.ids.iter().all(|id| *id >= 0 && id % 3 != 0));
    let slots = h.slots();
    let more = clustered(300, 16, 11);
    let new_ids = h.add(&more, None, 2).unwrap();
    assert_eq!(h.slots(), slots, "deleted slots are reused");
    // Every live vector finds itself.
    for (row, id) in more.chunks_exact(16).zip(&new_ids) {
        let r = h.search_filtered(row, 1, 64, 1, Allow::All, FilterMode::Auto).unwrap();
        assert_eq!(r.ids[0], *id);
    }
    let r = h.search_filtered(&x, 10, 64, 2, Allow::All, FilterMode::Auto).unwrap();
    assert!(r.ids.iter().all(|id| !(*id < 1000 && id % 3 == 0)));
}

#[test]
fn filters_return_only_allowed_ids() {
    let (h, f, _) = build(2000, 16, Metric::L2, 1);
    let q = clustered(20, 16, 5);
    let allow: Vec<i64> = (0..2000).step_by(97).collect();
    for mode in [FilterMode::Auto, FilterMode::Graph, FilterMode::Acorn, FilterMode::Exact] {
        let r = h.search_filtered(&q, 10, 32, 2, Allow::Shared(&allow), mode).unwrap();
        assert!(r.ids.iter().all(|id| allow.contains(id)), "{mode:?}");
        let mut bits = vec![0u64; 2000usize.div_ceil(64)];
        for &a in &allow {
            bits[a as usize / 64] |= 1 << (a % 64);
        }
        let want = f.search(&q, 10, &(), Some(&allow), 1).unwrap();
        assert!(recall(&r.ids, &want.ids, 10) >= 0.9, "{mode:?}");
    }
    let lists: Vec<Vec<i64>> = (0..20).map(|i| vec![i, i + 1, i + 2]).collect();
    let refs: Vec<&[i64]> = lists.iter().map(|l| &l[..]).collect();
    let r = h.search_filtered(&q, 5, 32, 2, Allow::PerQuery(&refs), FilterMode::Graph).unwrap();
    for (i, row) in r.ids.chunks(5).enumerate() {
        let mut got: Vec<i64> = row[..3].to_vec();
        got.sort();
        assert_eq!(got, lists[i]);
        assert_eq!(&row[3..], &[-1, -1]);
    }
}

#[test]
fn save_load_roundtrip_and_mmap() {
    let (mut h, _, x) = build(500, 8, Metric::Dot, 2);
    h.remove(&[1, 2, 3]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.rfi");
    h.save(&p).unwrap();
    let before = std::fs::read(&p).unwrap();
    for mmap in [false, true] {
        let mut g = HnswIndex::load(&p, mmap).unwrap();
        assert_eq!(g.is_mapped(), mmap);
        assert_eq!(g.len(), h.len());
        let a = h.search_filtered(&x, 5, 32, 1, Allow::All, FilterMode::Auto).unwrap();
        let b = g.search_filtered(&x, 5, 32, 1, Allow::All, FilterMode::Auto).unwrap();
        assert_eq!(a, b);
        g.add(&x[..16], None, 2).unwrap();
        assert!(!g.is_mapped());
        assert_eq!(g.len(), h.len() + 2);
    }
    assert_eq!(std::fs::read(&p).unwrap(), before, "file untouched");
}

#[test]
fn damaged_files_are_rejected() {
    let (h, _, _) = build(300, 8, Metric::L2, 1);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.rfi");
    h.save(&p).unwrap();
    let good = std::fs::read(&p).unwrap();
    let q = dir.path().join("bad.rfi");
    for cut in [10, 64, 200, good.len() / 2, good.len() - 1] {
        std::fs::write(&q, &good[..cut]).unwrap();
        assert!(matches!(HnswIndex::load(&q, false), Err(Error::CorruptFile(_))), "cut at {cut}");
    }
    for at in [70, 300, good.len() / 3, good.len() - 5] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&q, &bad).unwrap();
        assert!(HnswIndex::load(&q, true).is_err(), "flip at {at}");
    }
    // A FlatIndex file is not an HNSW file.
    let mut f = FlatIndex::new(8, Metric::L2, false).unwrap();
    f.add(&[0.0; 8], None, 1).unwrap();
    f.save(&q).unwrap();
    assert!(matches!(HnswIndex::load(&q, false), Err(Error::CorruptFile(_))));
}

#[test]
fn structurally_bad_files_are_rejected() {
    // Valid checksums but a link pointing past the end: rewrite through the Writer.
    use rankfunnel::format::storage::{Dtype, Header, Kind, Writer};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.rfi");
    let m = 2usize;
    let header = Header { kind: Kind::Hnsw, dim: 2, metric: Metric::L2, dtype: Dtype::F32, count: 2 };
    let params: [i64; 8] = [1, m as i64, 10, 0, 0, 0, 2, 0];
    let half: [u16; 0] = [];
    let vectors = [0f32, 1.0, 1.0, 0.0];
    let ids = [0i64, 1];
    let levels = [0u8, 0];
    let upper: [u32; 0] = [];
    let deleted = [0u64];
    for links0 in
        [vec![1u32, 1, 0, 0, 0, 1, 0, 0, 0, 0], vec![1u32, 7, 0, 0, 0, 0, 0, 0, 0, 0], vec![9u32; 10]]
    {
        let mut w = Writer::new(header);
        w.add("params", &params);
        w.add("vectors", &vectors);
        w.add("half", &half);
        w.add("ids", &ids);
        w.add("levels", &levels);
        w.add("links0", &links0);
        w.add("upper", &upper);
        w.add("deleted", &deleted);
        w.write_atomic(&p).unwrap();
        let ok = links0[1] < 2 && links0[0] <= 4;
        let r = HnswIndex::load(&p, false);
        assert_eq!(r.is_ok(), ok, "{links0:?}");
        if !ok {
            assert!(matches!(r, Err(Error::CorruptFile(_))));
        }
    }
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    let (mut h, _, _) = build(50, 4, Metric::Cosine, 1);
    assert!(h.add(&[1.0, 2.0, 3.0], None, 1).is_err());
    assert!(h.add(&[1.0, f32::NAN, 3.0, 4.0], None, 1).is_err());
    assert!(h.add(&[1.0; 8], Some(&[3, 3]), 1).is_err());
    assert!(h.add(&[1.0; 4], Some(&[0]), 1).is_err());
    assert!(h.search_filtered(&[1.0; 4], 0, 10, 1, Allow::All, FilterMode::Auto).is_err());
    assert_eq!(h.len(), 50);
    assert!(HnswIndex::new(4, Metric::L2, 1, 10, 0, true).is_err());
    // ef < k is raised to k; k > n pads.
    let r = h.search_filtered(&[1.0; 4], 60, 1, 1, Allow::All, FilterMode::Auto).unwrap();
    assert_eq!(r.ids.iter().filter(|i| **i >= 0).count(), 50);
    assert!(r.ids[50..].iter().all(|i| *i == -1));
    assert!(r.scores[50..].iter().all(|s| *s == f32::NEG_INFINITY));
}

fn build_codes(x: &[f32], d: usize, metric: Metric, codes: CodeKind) -> HnswIndex {
    let mut h = HnswIndex::with_codes(d, metric, 12, 100, 7, codes).unwrap();
    h.add(x, None, 1).unwrap();
    h
}

#[test]
fn int8_walks_find_the_neighbours_with_exact_scores_for_every_metric() {
    let (n, d) = (3000, 24);
    let x = clustered(n, d, 3);
    let q = clustered(100, d, 99);
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let h = build_codes(&x, d, metric, CodeKind::Int8);
        assert_eq!(h.codes(), CodeKind::Int8);
        let mut f = FlatIndex::new(d, metric, false).unwrap();
        f.add(&x, None, 1).unwrap();
        let want = f.search(&q, 10, &(), None, 1).unwrap();
        let got = h.search_filtered(&q, 10, 128, 2, Allow::All, FilterMode::Auto).unwrap();
        let r = recall(&got.ids, &want.ids, 10);
        let floor = if metric == Metric::Dot { 0.7 } else { 0.95 };
        assert!(r >= floor, "{metric:?}: recall {r}");
        // Scores are the exact float32 scores of the ids returned.
        let all = f.search(&q, n, &(), None, 1).unwrap();
        for qi in 0..100 {
            let exact: std::collections::HashMap<i64, f32> = all.ids[qi * n..(qi + 1) * n]
                .iter()
                .copied()
                .zip(all.scores[qi * n..(qi + 1) * n].iter().copied())
                .collect();
            for j in qi * 10..(qi + 1) * 10 {
                let e = exact[&got.ids[j]];
                assert!((got.scores[j] - e).abs() <= 1e-5 * e.abs().max(1.0), "{metric:?}");
            }
        }
    }
}

#[test]
fn walk_copies_cost_what_they_should() {
    let (n, d) = (2000, 64);
    let x = clustered(n, d, 5);
    let bytes = |c| build_codes(&x, d, Metric::L2, c).memory_bytes();
    let (none, bf16, int8) = (bytes(CodeKind::None), bytes(CodeKind::Bf16), bytes(CodeKind::Int8));
    assert_eq!(bf16 - none, n * d * 2);
    assert_eq!(int8 - none, n * d + 2 * d * 4);
}

#[test]
fn int8_ranges_refit_as_the_index_grows_and_clamp_in_between() {
    // A first add of a few vectors from a narrow region, then many from everywhere: the ranges
    // are refit once the index has doubled, so recall holds.
    let d = 16;
    let x = clustered(4000, d, 21);
    let narrow: Vec<f32> = x[..8 * d].iter().map(|v| v * 0.01).collect();
    let mut h = HnswIndex::with_codes(d, Metric::L2, 12, 100, 7, CodeKind::Int8).unwrap();
    h.add(&narrow, None, 1).unwrap();
    for chunk in x.chunks(500 * d) {
        h.add(chunk, None, 1).unwrap();
    }
    // A few far outliers after that clamp (the index has not doubled), and are still found.
    let far: Vec<f32> = x[..4 * d].iter().map(|v| v * 50.0).collect();
    let far_ids = h.add(&far, None, 1).unwrap();
    let mut f = FlatIndex::new(d, Metric::L2, false).unwrap();
    f.add(&narrow, None, 1).unwrap();
    f.add(&x, None, 1).unwrap();
    f.add(&far, None, 1).unwrap();
    let q = clustered(100, d, 77);
    let want = f.search(&q, 10, &(), None, 1).unwrap();
    let got = h.search_filtered(&q, 10, 128, 1, Allow::All, FilterMode::Auto).unwrap();
    let r = recall(&got.ids, &want.ids, 10);
    assert!(r >= 0.95, "recall {r}");
    for (row, id) in far.chunks_exact(d).zip(&far_ids) {
        let r = h.search_filtered(row, 1, 64, 1, Allow::All, FilterMode::Auto).unwrap();
        assert_eq!(r.ids[0], *id);
    }
}

#[test]
fn int8_save_load_roundtrip_mmap_and_add_after_load() {
    let d = 8;
    let x = clustered(600, d, 31);
    let mut h = build_codes(&x, d, Metric::Cosine, CodeKind::Int8);
    h.remove(&[1, 2, 3]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.rfi");
    h.save(&p).unwrap();
    let before = std::fs::read(&p).unwrap();
    for mmap in [false, true] {
        let mut g = HnswIndex::load(&p, mmap).unwrap();
        assert_eq!((g.is_mapped(), g.codes()), (mmap, CodeKind::Int8));
        let a = h.search_filtered(&x, 5, 32, 1, Allow::All, FilterMode::Auto).unwrap();
        let b = g.search_filtered(&x, 5, 32, 1, Allow::All, FilterMode::Auto).unwrap();
        assert_eq!(a, b);
        let more = clustered(20, d, 32);
        let ids = g.add(&more, None, 2).unwrap();
        assert!(!g.is_mapped());
        for (row, id) in more.chunks_exact(d).zip(&ids) {
            let r = g.search_filtered(row, 1, 64, 1, Allow::All, FilterMode::Auto).unwrap();
            assert_eq!(r.ids[0], *id);
        }
    }
    assert_eq!(std::fs::read(&p).unwrap(), before, "file untouched");
    // Saving again writes the same bytes.
    let q = dir.path().join("again.rfi");
    HnswIndex::load(&p, false).unwrap().save(&q).unwrap();
    assert_eq!(std::fs::read(&q).unwrap(), before);
}

#[test]
fn bad_int8_sections_are_rejected() {
    use rankfunnel::format::storage::{Dtype, Header, Kind, Writer};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.rfi");
    let header = Header { kind: Kind::Hnsw, dim: 2, metric: Metric::L2, dtype: Dtype::F32, count: 2 };
    let half: [u16; 0] = [];
    let vectors = [0f32, 1.0, 1.0, 0.0];
    let ids = [0i64, 1];
    let levels = [0u8, 0];
    let links0 = [1u32, 1, 0, 0, 0, 1, 0, 0, 0, 0];
    let upper: [u32; 0] = [];
    let deleted = [0u64];
    let good_codes = [0u8, 255, 255, 0];
    // (params, codes, steps, loads).
    type Case = (Vec<i64>, Vec<u8>, Vec<f32>, bool);
    let cases: [Case; 6] = [
        (vec![1, 2, 10, 0, 0, 0, 2, 2, 2], good_codes.to_vec(), vec![1.0, 1.0], true),
        (vec![1, 2, 10, 0, 0, 0, 2, 2], good_codes.to_vec(), vec![1.0, 1.0], false),
        (vec![1, 2, 10, 0, 0, 0, 2, 1, 2], good_codes.to_vec(), vec![1.0, 1.0], false),
        (vec![1, 2, 10, 0, 0, 0, 2, 2, 2], good_codes[..3].to_vec(), vec![1.0, 1.0], false),
        (vec![1, 2, 10, 0, 0, 0, 2, 2, 3], good_codes.to_vec(), vec![1.0, 1.0], false),
        (vec![1, 2, 10, 0, 0, 0, 2, 2, 2], good_codes.to_vec(), vec![1.0, 0.0], false),
    ];
    for (params, codes, step, ok) in cases {
        let vmin = [0f32, 0.0];
        let mut w = Writer::new(header);
        w.add("params", &params);
        w.add("vectors", &vectors);
        w.add("half", &half);
        w.add("codes", &codes);
        w.add("sqmin", &vmin);
        w.add("sqstep", &step);
        w.add("ids", &ids);
        w.add("levels", &levels);
        w.add("links0", &links0);
        w.add("upper", &upper);
        w.add("deleted", &deleted);
        w.write_atomic(&p).unwrap();
        let r = HnswIndex::load(&p, false);
        assert_eq!(r.is_ok(), ok, "{params:?} {codes:?} {step:?}");
        if !ok {
            assert!(matches!(r, Err(Error::CorruptFile(_))));
        }
    }
}
