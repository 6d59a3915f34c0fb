//! Adds in a stream of small batches: the in-degrees carried from one add to the next match a
//! recount, full passes come at the promised rate, and every vector stays findable.

use std::sync::atomic::Ordering::Relaxed;

use super::{HnswIndex, HnswParams, FULL_PASS_EVERY, NEVER_COUNTED};
use crate::index::{IdIndex, Index};
use crate::kernels::metric::Metric;
use crate::util::rng::Rng;

fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n * d).map(|_| r.f64() as f32 - 0.5).collect()
}

/// Level-0 in-degree of every slot, counted from the link lists.
fn recount(idx: &HnswIndex) -> Vec<u32> {
    let w0 = idx.shape.m0 + 1;
    let mut indeg = vec![0u32; idx.ids.len()];
    for list in idx.links0.atomics().chunks_exact(w0) {
        let c = (list[0].load(Relaxed) as usize).min(w0 - 1);
        for t in &list[1..1 + c] {
            indeg[t.load(Relaxed) as usize] += 1;
        }
    }
    indeg
}

#[test]
fn single_adds_carry_exact_in_degrees_and_make_full_passes_at_the_promised_rate() {
    let _alone = super::staged_tests::ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let (d, base, extra) = (8, 640, 200);
    let v = data(base + extra, d, 3);
    let mut idx = HnswIndex::new(d, Metric::L2, 6, 32, 0, false).unwrap();
    assert_eq!(idx.since_full.load(Relaxed), NEVER_COUNTED);
    idx.add(&v[..base * d], None, 1).unwrap();
    assert_eq!(idx.since_full.load(Relaxed), 0, "the first add makes a full pass");
    let mut passes = 0;
    for i in base..base + extra {
        let before = idx.since_full.load(Relaxed);
        idx.add(&v[i * d..(i + 1) * d], None, 1).unwrap();
        let after = idx.since_full.load(Relaxed);
        if before + 1 >= (i + 1) / FULL_PASS_EVERY {
            assert_eq!(after, 0, "a full pass is due after {} nodes", before + 1);
            passes += 1;
        } else {
            assert_eq!(after, before + 1);
        }
        // One thread: the carried counts are exact, not approximate.
        let carried: Vec<u32> = idx.indeg.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(carried, recount(&idx), "after adding node {i}");
    }
    assert!((4..=10).contains(&passes), "{passes} full passes for {extra} single adds into {base}");
    // Every vector is its own nearest neighbour at ef = n (no island survives a full pass, and
    // the adds in between keep every node's last incoming link).
    let n = base + extra;
    for i in (0..n).step_by(7) {
        let r = idx.search(&v[i * d..(i + 1) * d], 1, &HnswParams::ef(n), None, 1).unwrap();
        assert_eq!(r.ids[0], i as i64, "vector {i} is not found");
    }
}

#[test]
fn a_loaded_index_recounts_before_its_first_add() {
    let (d, n) = (8, 300);
    let v = data(n + 1, d, 5);
    let mut idx = HnswIndex::new(d, Metric::L2, 6, 32, 0, false).unwrap();
    idx.add(&v[..n * d], None, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("rankfunnel-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.hnsw");
    idx.save(&path).unwrap();
    let file = crate::format::storage::IndexFile::open(&path, false).unwrap();
    let mut loaded = HnswIndex::from_file(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(loaded.indeg.is_empty() && loaded.since_full.load(Relaxed) == NEVER_COUNTED);
    loaded.add(&v[n * d..], None, 1).unwrap();
    assert_eq!(loaded.since_full.load(Relaxed), 0);
    let carried: Vec<u32> = loaded.indeg.iter().map(|c| c.load(Relaxed)).collect();
    assert_eq!(carried, recount(&loaded));
}

#[test]
fn buffers_grow_aside_then_swap_in() {
    let (d, n) = (8, 200);
    let v = data(n + 10, d, 9);
    for codes in [super::CodeKind::None, super::CodeKind::Bf16, super::CodeKind::Int8] {
        let mut idx = HnswIndex::with_codes(d, Metric::L2, 6, 32, 0, codes).unwrap();
        idx.add(&v[..n * d], None, 1).unwrap();
        let dir =
            std::env::temp_dir().join(format!("rankfunnel-room-{}-{}", std::process::id(), codes.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.hnsw");
        idx.save(&path).unwrap();
        let file = crate::format::storage::IndexFile::open(&path, true).unwrap();
        let mut mapped = HnswIndex::from_file(&file).unwrap();
        assert!(mapped.vectors.is_mapped());
        // A mapped index: every buffer is copied aside, then swapped in; the room keeps the maps.
        let mut room = mapped.room_for(1);
        assert!(room.vectors.is_some() && room.links0.is_some());
        assert_eq!(room.codes.is_some(), codes != super::CodeKind::None);
        mapped.install(&mut room);
        assert!(!mapped.vectors.is_mapped() && room.vectors.as_ref().is_some_and(|b| b.is_mapped()));
        drop(room);
        let staged = mapped.stage(&v[n * d..(n + 1) * d], None).unwrap();
        let top = mapped.link(&staged, 1);
        mapped.publish(staged, top);
        // Room to spare now (grown by half): the next room is empty and installs nothing.
        let mut room = mapped.room_for(1);
        assert!(room.vectors.is_none() && room.codes.is_none() && room.links0.is_none());
        mapped.install(&mut room);
        mapped.add(&v[(n + 1) * d..], None, 1).unwrap();
        for i in (0..n + 10).step_by(3) {
            let r = mapped.search(&v[i * d..(i + 1) * d], 1, &HnswParams::ef(n + 10), None, 1).unwrap();
            assert_eq!(r.ids[0], i as i64, "{}: vector {i}", codes.name());
        }
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
