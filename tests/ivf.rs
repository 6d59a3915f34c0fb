//! cargo tests of IvfIndex: recall against exact search (float32 and int8 lists), get, remove,
//! save / load round trips and the error cases.

mod common;

use common::{clustered, recall, Rng};
use rankfunnel::index::ivf::{IvfParams, Storage};
use rankfunnel::{Error, FlatIndex, IdIndex, Index, IvfIndex, Metric};

const D: usize = 16;
const N: usize = 2000;

fn trained(metric: Metric, storage: Storage, x: &[f32]) -> IvfIndex {
    let mut idx = IvfIndex::new(D, 16, metric, storage).unwrap();
    idx.train(x, 10, 3, 2).unwrap();
    idx.add(x, None, 2).unwrap();
    idx
}

fn exact(metric: Metric, x: &[f32], q: &[f32], k: usize) -> Vec<i64> {
    let mut f = FlatIndex::new(D, metric, false).unwrap();
    f.add(x, None, 1).unwrap();
    f.search(q, k, &(), None, 1).unwrap().ids
}

#[test]
fn recall_against_exact_search_for_every_metric_and_storage() {
    let x = clustered(N, D, 11);
    let q = Rng(5).vec(20 * D);
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let want = exact(metric, &x, &q, 10);
        let f = trained(metric, Storage::F32, &x);
        // Probing every list is an exact search.
        let all = f.search(&q, 10, &IvfParams { nprobe: 16, refine: 0, coarse_ef: 0 }, None, 2).unwrap();
        assert!(recall(&all.ids, &want, 10) >= 0.999, "{metric:?} f32 all lists");
        let some = f.search(&q, 10, &IvfParams { nprobe: 4, refine: 0, coarse_ef: 0 }, None, 2).unwrap();
        assert!(recall(&some.ids, &want, 10) >= 0.6, "{metric:?} f32 nprobe 4");
        let i8 = trained(metric, Storage::Int8, &x);
        let raw = i8.search(&q, 10, &IvfParams { nprobe: 16, refine: 0, coarse_ef: 0 }, None, 2).unwrap();
        assert!(recall(&raw.ids, &want, 10) >= 0.8, "{metric:?} int8");
        let refined = i8.search(&q, 10, &IvfParams { nprobe: 16, refine: 4, coarse_ef: 0 }, None, 2).unwrap();
        assert!(recall(&refined.ids, &want, 10) >= 0.99, "{metric:?} int8 refined");
    }
}

#[test]
fn threads_do_not_change_results() {
    let x = clustered(N, D, 12);
    let q = Rng(6).vec(9 * D);
    let idx = trained(Metric::L2, Storage::Int8, &x);
    let p = IvfParams { nprobe: 5, refine: 2, coarse_ef: 0 };
    assert_eq!(idx.search(&q, 7, &p, None, 1).unwrap(), idx.search(&q, 7, &p, None, 4).unwrap());
}

#[test]
fn get_returns_the_stored_vectors() {
    let x = clustered(300, D, 13);
    let ids: Vec<i64> = (0..300).map(|i| 10 * i).collect();
    for storage in [Storage::F32, Storage::Int8] {
        let mut idx = IvfIndex::new(D, 8, Metric::L2, storage).unwrap();
        idx.train(&x, 5, 1, 1).unwrap();
        idx.add(&x, Some(&ids), 1).unwrap();
        assert_eq!(idx.len(), 300);
        assert!(idx.contains(2990) && !idx.contains(5));
        let mut held = idx.ids();
        held.sort_unstable();
        assert_eq!(held, ids);
        let got = idx.get(&[0, 1230, 2990]).unwrap();
        for (row, i) in got.chunks_exact(D).zip([0, 123, 299]) {
            let want = &x[i * D..(i + 1) * D];
            for (a, b) in row.iter().zip(want) {
                // Int8 codes decode to within half a quantization step (ranges here span < 3).
                let tol = if storage == Storage::F32 { 0.0 } else { 3.0 / 255.0 };
                assert!((a - b).abs() <= tol, "{storage:?} id {} got {a} want {b}", 10 * i);
            }
        }
        assert!(matches!(idx.get(&[0, 7]), Err(Error::UnknownId(7))));
    }
}

#[test]
fn removed_ids_never_return_and_a_failed_remove_changes_nothing() {
    let x = clustered(N, D, 14);
    for storage in [Storage::F32, Storage::Int8] {
        let mut idx = trained(Metric::Dot, storage, &x);
        assert!(matches!(idx.remove(&[3, 5, 99_999]), Err(Error::UnknownId(99_999))));
        assert_eq!(idx.len(), N, "a failed remove removes nothing");
        let gone: Vec<i64> = (0..N as i64).step_by(3).collect();
        assert_eq!(idx.remove(&gone).unwrap(), gone.len());
        assert_eq!(idx.len(), N - gone.len());
        let r = idx
            .search(&x[..50 * D], 10, &IvfParams { nprobe: 16, refine: 2, coarse_ef: 0 }, None, 2)
            .unwrap();
        assert!(r.ids.iter().all(|id| *id >= 0 && id % 3 != 0), "{storage:?}");
        // Every remaining vector is still found by an exact (all lists) search of itself.
        let mut f = IvfIndex::new(D, 16, Metric::L2, storage).unwrap();
        f.train(&x, 10, 3, 2).unwrap();
        f.add(&x, None, 2).unwrap();
        f.remove(&gone).unwrap();
        for i in (1..200).filter(|i| i % 3 != 0) {
            let r = f
                .search(
                    &x[i * D..(i + 1) * D],
                    1,
                    &IvfParams { nprobe: 16, refine: 4, coarse_ef: 0 },
                    None,
                    1,
                )
                .unwrap();
            assert_eq!(r.ids[0], i as i64, "{storage:?}");
        }
        // Default ids continue after the largest id ever given.
        assert_eq!(idx.add(&x[..D], None, 1).unwrap(), vec![N as i64]);
    }
}

#[test]
fn allow_lists_restrict_results() {
    let x = clustered(N, D, 15);
    let idx = trained(Metric::Cosine, Storage::F32, &x);
    let allow: Vec<i64> = (0..N as i64).filter(|i| i % 10 == 3).collect();
    let q = Rng(8).vec(4 * D);
    let r = idx.search(&q, 5, &IvfParams { nprobe: 16, refine: 0, coarse_ef: 0 }, Some(&allow), 1).unwrap();
    assert!(r.ids.iter().all(|id| allow.contains(id)));
    let want = {
        let mut f = FlatIndex::new(D, Metric::Cosine, false).unwrap();
        f.add(&x, None, 1).unwrap();
        f.search(&q, 5, &(), Some(&allow), 1).unwrap().ids
    };
    assert!(recall(&r.ids, &want, 5) >= 0.999);
}

#[test]
fn save_load_roundtrip_with_and_without_mmap() {
    let dir = tempfile::tempdir().unwrap();
    let x = clustered(N, D, 16);
    let q = Rng(9).vec(6 * D);
    for storage in [Storage::F32, Storage::Int8] {
        let mut idx = trained(Metric::L2, storage, &x);
        idx.remove(&[1, 2, 3]).unwrap();
        let path = dir.path().join(format!("{}.rf", storage.name()));
        idx.save(&path).unwrap();
        let p = IvfParams { nprobe: 6, refine: 3, coarse_ef: 0 };
        for mmap in [false, true] {
            let back = IvfIndex::load(&path, mmap).unwrap();
            assert_eq!(back.len(), idx.len());
            assert_eq!(back.storage(), storage);
            assert_eq!(back.nlist(), 16);
            assert_eq!(back.list_sizes(), idx.list_sizes());
            assert_eq!(back.centroids(), idx.centroids());
            if storage == Storage::Int8 {
                // The float32 refine copy stays in the mapping.
                assert_eq!(back.is_mapped(), mmap);
            }
            assert_eq!(back.search(&q, 8, &p, None, 2).unwrap(), idx.search(&q, 8, &p, None, 2).unwrap());
            let mut a = back.ids();
            let mut b = idx.ids();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
        }
        // An untrained index round-trips too.
        let empty = IvfIndex::new(D, 4, Metric::Dot, storage).unwrap();
        empty.save(&path).unwrap();
        let back = IvfIndex::load(&path, false).unwrap();
        assert!(!back.is_trained() && back.is_empty());
        // A file of another kind is rejected.
        let mut f = FlatIndex::new(D, Metric::Dot, false).unwrap();
        f.add(&x[..D], None, 1).unwrap();
        f.save(&path).unwrap();
        assert!(matches!(IvfIndex::load(&path, false), Err(Error::CorruptFile(_))));
    }
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    let x = clustered(200, D, 17);
    assert!(IvfIndex::new(0, 4, Metric::L2, Storage::F32).is_err());
    assert!(IvfIndex::new(D, 0, Metric::L2, Storage::F32).is_err());
    assert!(Storage::parse("int4").is_err());
    let mut idx = IvfIndex::new(D, 8, Metric::L2, Storage::Int8).unwrap();
    let p = IvfParams { nprobe: 2, refine: 0, coarse_ef: 0 };
    assert!(matches!(idx.add(&x, None, 1), Err(Error::InvalidArgument(_))), "add before train");
    assert!(idx.search(&x[..D], 1, &p, None, 1).is_err(), "search before train");
    assert!(idx.train(&x[..4 * D], 5, 1, 1).is_err(), "fewer training vectors than lists");
    assert!(idx.train(&x[..D + 1], 5, 1, 1).is_err(), "ragged training data");
    idx.train(&x, 5, 1, 1).unwrap();
    idx.add(&x[..10 * D], None, 1).unwrap();
    assert!(idx.train(&x, 5, 1, 1).is_err(), "train after add");
    assert!(idx.add(&x[..D + 3], None, 1).is_err(), "ragged vectors");
    let mut nan = x[..D].to_vec();
    nan[3] = f32::NAN;
    assert!(idx.add(&nan, None, 1).is_err(), "NaN");
    assert!(idx.add(&x[..2 * D], Some(&[50, 50]), 1).is_err(), "repeated id");
    assert!(idx.add(&x[..D], Some(&[4]), 1).is_err(), "id already held");
    assert!(idx.add(&x[..D], Some(&[-1]), 1).is_err(), "negative id");
    assert!(idx.add(&x[..2 * D], Some(&[70]), 1).is_err(), "id count");
    assert_eq!(idx.len(), 10, "failed adds change nothing");
    assert!(idx.search(&x[..D], 0, &p, None, 1).is_err(), "k = 0");
    assert!(
        idx.search(&x[..D], 1, &IvfParams { nprobe: 0, refine: 0, coarse_ef: 0 }, None, 1).is_err(),
        "nprobe = 0"
    );
    assert!(idx.search(&x[..D + 1], 1, &p, None, 1).is_err(), "ragged queries");
    // More results than vectors: padded with id -1.
    let r = idx.search(&x[..D], 15, &IvfParams { nprobe: 8, refine: 0, coarse_ef: 0 }, None, 1).unwrap();
    assert_eq!(r.ids.iter().filter(|&&id| id >= 0).count(), 10);
    assert!(r.ids[10..].iter().all(|&id| id == -1));
}
