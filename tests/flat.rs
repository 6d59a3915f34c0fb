//! cargo tests of FlatIndex: edits, exact search, save and load.

mod common;

use common::Rng;
use rankfunnel::{Error, FlatIndex, IdIndex, Index, Metric};

#[test]
fn flat_index_add_remove_search_save_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let d = 24;
    let mut idx = FlatIndex::new(d, Metric::L2, true).unwrap();
    let x = rng.vec(200 * d);
    let ids: Vec<i64> = (0..200).map(|i| 1000 + 3 * i).collect();
    idx.add(&x, Some(&ids), 1).unwrap();
    assert!(idx.add(&x[..d], Some(&[1000]), 1).is_err(), "duplicate id");
    assert!(matches!(idx.remove(&[1000, 7]), Err(Error::UnknownId(7))));
    assert_eq!(idx.len(), 200, "a failed remove removes nothing");
    assert_eq!(idx.remove(&[1000, 1003, 1597]).unwrap(), 3);
    // Every remaining vector finds itself first.
    for (i, &id) in ids.iter().enumerate().skip(2).take(100) {
        if id == 1597 {
            continue;
        }
        let r = idx.search(&x[i * d..(i + 1) * d], 1, &(), None, 1).unwrap();
        assert_eq!(r.ids[0], id);
    }
    let path = dir.path().join("flat.rf");
    idx.save(&path).unwrap();
    for mmap in [false, true] {
        let back = FlatIndex::load(&path, mmap).unwrap();
        assert_eq!(back.len(), idx.len());
        assert_eq!(back.is_mapped(), mmap);
        let q = rng.vec(3 * d);
        assert_eq!(back.search(&q, 5, &(), None, 2).unwrap(), idx.search(&q, 5, &(), None, 2).unwrap());
    }
    // Default ids continue after the largest id ever given.
    assert_eq!(idx.add(&x[..d], None, 1).unwrap(), vec![1000 + 3 * 199 + 1]);
}
