//! cargo tests of the file format: truncated, flipped and newer-version files are rejected.

mod common;

use common::Rng;
use rankfunnel::format::storage::IndexFile;
use rankfunnel::{Error, FlatIndex, IdIndex, Index, Metric};

#[test]
fn damaged_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut idx = FlatIndex::new(8, Metric::Dot, true).unwrap();
    idx.add(&Rng(9).vec(50 * 8), None, 1).unwrap();
    let path = dir.path().join("i.rf");
    idx.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.rf");
    for cut in [0, 10, 63, 100, good.len() - 1] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        assert!(matches!(IndexFile::open(&bad, false), Err(Error::CorruptFile(_))), "cut {cut}");
    }
    for pos in [0, 9, 20, 70, 200, good.len() - 5] {
        let mut b = good.clone();
        b[pos] ^= 0x40;
        std::fs::write(&bad, &b).unwrap();
        assert!(FlatIndex::load(&bad, true).is_err(), "flip at {pos}");
    }
    let mut newer = good.clone();
    newer[8] = 99;
    std::fs::write(&bad, &newer).unwrap();
    assert!(matches!(IndexFile::open(&bad, false), Err(Error::UnsupportedVersion { found: 99, .. })));
}
