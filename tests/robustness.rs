//! cargo tests of the issue #13 core fixes: result size limit and padding for a large `k`,
//! a bounded HNSW beam, f64 norms for cosine, score overflow errors, mapped files changed
//! under an index, and multi-vector centroids on degenerate data.

mod common;

use common::Rng;
use rankfunnel::index::hnsw::HnswParams;
use rankfunnel::index::multivector::{MultiVectorIndex, SearchParams, TokenDocs};
use rankfunnel::{
    kernels::topk, util::vectors, Error, FlatIndex, HnswIndex, IdIndex, Index, IvfIndex, Metric,
};

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn a_result_too_large_to_allocate_is_an_error() {
    let mut rng = Rng(1);
    let d = 4;
    let x = rng.vec(10 * d);
    let mut flat = FlatIndex::new(d, Metric::L2, false).unwrap();
    flat.add(&x, None, 1).unwrap();
    let e = flat.search(&x, 1 << 40, &(), None, 1).unwrap_err();
    assert!(message(e).contains("asks for a result of"));
    assert!(topk::check_result_size(2, 1 << 30).is_ok());
    assert!(topk::check_result_size(3, 1 << 30).is_err());
    assert!(topk::check_result_size(usize::MAX, 2).is_err(), "no overflow in nq * k");
}

#[test]
fn a_large_k_or_ef_is_padded_and_bounded() {
    let mut rng = Rng(2);
    let d = 6;
    let x = rng.vec(25 * d);
    let mut h = HnswIndex::new(d, Metric::L2, 4, 16, 0, false).unwrap();
    h.add(&x, None, 1).unwrap();
    let r = h.search(&x[..d], 1000, &HnswParams::ef(1 << 40), None, 1).unwrap();
    assert_eq!(r.ids.len(), 1000);
    assert_eq!(r.ids[0], 0);
    let mut found: Vec<i64> = r.ids[..25].to_vec();
    found.sort_unstable();
    assert_eq!(found, (0..25).collect::<Vec<_>>());
    assert!(r.ids[25..].iter().all(|&i| i == -1));
    assert!(r.scores[25..].iter().all(|s| *s == f32::INFINITY));
}

#[test]
fn normalized_rows_are_unit_length_at_any_finite_scale() {
    for scale in [1e19f32, 1e-25, 1e-38] {
        let row: Vec<f32> = [3.0f32, 4.0, 0.0, 12.0].iter().map(|v| v * scale).collect();
        let n = vectors::normalized(&row, 4);
        let want = [3.0 / 13.0, 4.0 / 13.0, 0.0, 12.0 / 13.0];
        for (a, b) in n.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "scale {scale}: {n:?}");
        }
    }
    assert_eq!(vectors::normalized(&[0.0, 0.0], 2), vec![0.0, 0.0]);
    assert!((vectors::inv_norm(&[3e19, 4e19]) - 2e-20).abs() < 1e-26);
}

#[test]
fn cosine_of_huge_and_tiny_vectors_in_every_vector_index() {
    let d = 8;
    for scale in [1e19f32, 1e-25] {
        let mut rng = Rng(3);
        let unit = rng.vec(30 * d);
        let x: Vec<f32> = unit.iter().map(|v| v * scale).collect();
        let mut flat = FlatIndex::new(d, Metric::Cosine, false).unwrap();
        flat.add(&x, None, 1).unwrap();
        let mut h = HnswIndex::new(d, Metric::Cosine, 4, 32, 0, false).unwrap();
        h.add(&x, None, 1).unwrap();
        let mut ivf = IvfIndex::new(d, 2, Metric::Cosine, rankfunnel::index::ivf::Storage::F32).unwrap();
        ivf.train(&x, 5, 0, 1).unwrap();
        ivf.add(&x, None, 1).unwrap();
        let q = &x[..3 * d];
        let results = [
            flat.search(q, 1, &(), None, 1).unwrap(),
            h.search(q, 1, &HnswParams::ef(64), None, 1).unwrap(),
            ivf.search(
                q,
                1,
                &rankfunnel::index::ivf::IvfParams { nprobe: 2, refine: 0, coarse_ef: 0 },
                None,
                1,
            )
            .unwrap(),
            topk::topk(q, &x, d, Metric::Cosine, 1, 1).unwrap(),
        ];
        for r in results {
            assert_eq!(r.ids, vec![0, 1, 2], "scale {scale}");
            assert!(r.scores.iter().all(|s| (s - 1.0).abs() < 1e-5), "scale {scale}: {:?}", r.scores);
        }
    }
}

#[test]
fn overflowing_scores_are_an_error_in_every_vector_index() {
    let d = 8;
    let mut rng = Rng(4);
    let x: Vec<f32> = rng.vec(20 * d).iter().map(|v| v * 1e19).collect();
    for metric in [Metric::Dot, Metric::L2] {
        let mut flat = FlatIndex::new(d, metric, false).unwrap();
        flat.add(&x, None, 1).unwrap();
        let mut h = HnswIndex::new(d, metric, 4, 16, 0, false).unwrap();
        h.add(&x, None, 1).unwrap();
        // IVF trains on smaller vectors (training an l2 index on `x` itself already fails).
        let mut ivf = IvfIndex::new(d, 2, metric, rankfunnel::index::ivf::Storage::F32).unwrap();
        let small: Vec<f32> = x.iter().map(|v| v * 1e-19).collect();
        ivf.train(&small, 5, 0, 1).unwrap();
        let ivf_err = ivf.add(&x, None, 1).and_then(|_| {
            ivf.search(
                &x,
                3,
                &rankfunnel::index::ivf::IvfParams { nprobe: 2, refine: 0, coarse_ef: 0 },
                None,
                1,
            )
        });
        let errors = [
            flat.search(&x, 3, &(), None, 1).unwrap_err(),
            h.search(&x, 3, &HnswParams::ef(16), None, 1).unwrap_err(),
            ivf_err.unwrap_err(),
            topk::topk(&x, &x, d, metric, 3, 1).unwrap_err(),
        ];
        for e in errors {
            assert!(message(e).contains("overflow float32"), "{metric:?}");
        }
    }
}

#[test]
fn a_mapped_file_truncated_or_modified_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.rfi");
    let d = 4;
    let x = Rng(5).vec(40 * d);
    let mut flat = FlatIndex::new(d, Metric::L2, false).unwrap();
    flat.add(&x, None, 1).unwrap();
    flat.save(&path).unwrap();
    let m = FlatIndex::load(&path, true).unwrap();
    assert!(m.is_mapped());
    m.check_mapping().unwrap();
    // Replacing by rename (what save does) leaves the mapping valid.
    flat.save(&path).unwrap();
    m.check_mapping().unwrap();
    let other = FlatIndex::load(&path, true).unwrap();
    // Truncating the file the second mapping reads is caught before any page is touched.
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    assert!(message(other.check_mapping().unwrap_err()).contains("was truncated"));
    assert!(FlatIndex::load(&path, false).is_err());
}

#[test]
fn multivector_with_fewer_distinct_tokens_than_centroids_finds_its_documents() {
    let d = 8;
    let base = Rng(6).vec(2 * d);
    let mut tokens = Vec::new();
    let mut offsets = vec![0i64];
    for i in 0..20 {
        for _ in 0..30 {
            tokens.extend_from_slice(&base[(i % 2) * d..(i % 2 + 1) * d]);
        }
        offsets.push((tokens.len() / d) as i64);
    }
    for nbits in [0, 2] {
        let mut mv = MultiVectorIndex::new(d, nbits, 64, 0).unwrap();
        mv.add(TokenDocs { tokens: &tokens, offsets: &offsets }, None, 1).unwrap();
        assert!(mv.n_centroids() <= 2, "nbits={nbits}: {} centroids", mv.n_centroids());
        let p = SearchParams { candidates: 100, nprobe: 4, refine: 0 };
        let r = mv.search(&[&base[..d]], 20, &p, None, 1).unwrap();
        assert!(r.ids.iter().all(|&i| i >= 0), "nbits={nbits}: {:?}", r.ids);
        let mut top: Vec<i64> = r.ids[..10].to_vec();
        top.sort_unstable();
        assert_eq!(top, (0..20).step_by(2).collect::<Vec<_>>(), "nbits={nbits}");
    }
}
