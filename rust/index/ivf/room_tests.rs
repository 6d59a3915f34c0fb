//! An add whose room is built aside ([`IvfIndex::room_for`], then [`IvfIndex::install`], as the
//! binding does while searches run) stores exactly what a plain add stores.

use super::{IvfIndex, IvfParams, Storage};
use crate::index::{IdIndex, Index};
use crate::kernels::metric::Metric;
use crate::util::rng::Rng;

#[test]
fn room_built_aside_add_equals_a_plain_add() {
    let d = 12;
    let mut r = Rng::new(4);
    let x: Vec<f32> = (0..1500 * d).map(|_| r.f64() as f32 - 0.5).collect();
    let q: Vec<f32> = (0..20 * d).map(|_| r.f64() as f32 - 0.5).collect();
    for storage in [Storage::F32, Storage::Int8] {
        for metric in [Metric::L2, Metric::Cosine] {
            let mut a = IvfIndex::new(d, 8, metric, storage).unwrap();
            a.train(&x, 5, 1, 1).unwrap();
            a.add(&x[..500 * d], None, 1).unwrap();
            let mut b = IvfIndex::new(d, 8, metric, storage).unwrap();
            b.train(&x, 5, 1, 1).unwrap();
            b.add(&x[..500 * d], None, 1).unwrap();
            a.add(&x[500 * d..], None, 1).unwrap();

            let batch = &x[500 * d..];
            let lists = b.route(batch, 1).unwrap();
            let room = b.room_for(&lists);
            assert!(!room.lists.is_empty() && room.idmap.is_some(), "the batch needs room");
            let old = b.install(room);
            // What was swapped out is the index before the add: as many lists, smaller.
            assert!(old.lists.iter().all(|(l, list)| list.len() == b.lists[*l].len()));
            for (i, chunk) in lists.chunks(300).enumerate() {
                let rows = &batch[i * 300 * d..(i * 300 + chunk.len()) * d];
                let ids: Vec<i64> = (0..chunk.len() as i64).map(|j| 500 + (i * 300) as i64 + j).collect();
                b.add_routed(rows, Some(&ids), chunk).unwrap();
            }
            assert_eq!(a.len(), b.len());
            let p = IvfParams { nprobe: 8, refine: 0, coarse_ef: 0 };
            let (ra, rb) = (a.search(&q, 10, &p, None, 1).unwrap(), b.search(&q, 10, &p, None, 1).unwrap());
            assert_eq!(ra.ids, rb.ids, "{storage:?} {metric:?}");
            assert_eq!(ra.scores, rb.scores);
            let all: Vec<i64> = (0..1500).collect();
            assert_eq!(a.get(&all).unwrap(), b.get(&all).unwrap());
            // Room already there: nothing is copied.
            let more = b.route(&x[..10 * d], 1).unwrap();
            let g = b.room_for(&more[..0]);
            assert!(g.lists.is_empty() && g.loc.is_none() && g.raw.is_none() && g.idmap.is_none());
        }
    }
}
