//! cargo tests of k-means: separated clusters are recovered, results are deterministic per seed
//! and thread count, the reported inertia is the real one, and bad input is an error.

mod common;

use common::{clustered, Rng};
use rankfunnel::kernels::kmeans::{self, Init};

/// `per` points around each of `k` far-apart centres (centre `c` at `10 * c` on axis `c % d`).
fn separated(k: usize, per: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    let mut out = Vec::with_capacity(k * per * d);
    for c in 0..k {
        for _ in 0..per {
            for t in 0..d {
                let centre = if t == c % d { 10.0 * (c / d + 1) as f32 } else { 0.0 };
                out.push(centre + 0.1 * r.f32());
            }
        }
    }
    out
}

fn inertia(x: &[f32], d: usize, centroids: &[f32], assign: &[u32]) -> f64 {
    x.chunks_exact(d)
        .zip(assign)
        .map(|(row, &a)| {
            let c = &centroids[a as usize * d..(a as usize + 1) * d];
            row.iter().zip(c).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>()
        })
        .sum()
}

#[test]
fn separated_clusters_are_recovered() {
    let (k, per, d) = (6, 50, 8);
    let x = separated(k, per, d, 3);
    for plus in [true, false] {
        let init = if plus { Init::KMeansPlusPlus } else { Init::Random };
        let r = kmeans::kmeans(&x, d, k, 20, 7, init, false, 2).unwrap();
        assert_eq!(r.centroids.len(), k * d);
        assert_eq!(r.assignments.len(), k * per);
        let mut labels: Vec<u32> = (0..k).map(|c| r.assignments[c * per]).collect();
        for (c, &label) in labels.iter().enumerate() {
            assert!(r.assignments[c * per..(c + 1) * per].iter().all(|&a| a == label), "cluster {c}");
        }
        labels.sort_unstable();
        labels.dedup();
        if plus {
            // k-means++ seeds one centroid per far-apart cluster.
            assert_eq!(labels.len(), k, "each cluster gets its own centroid");
            assert!(r.inertia < (k * per * d) as f64 * 0.01, "inertia {}", r.inertia);
        }
    }
}

#[test]
fn inertia_is_the_sum_of_squared_distances() {
    let d = 12;
    let x = clustered(500, d, 4);
    let r = kmeans::kmeans(&x, d, 10, 8, 1, Init::KMeansPlusPlus, false, 1).unwrap();
    let want = inertia(&x, d, &r.centroids, &r.assignments);
    assert!((r.inertia - want).abs() <= 1e-3 * want.max(1.0), "{} vs {want}", r.inertia);
    // Each point is assigned to its nearest centroid.
    for (row, &a) in x.chunks_exact(d).zip(&r.assignments) {
        let dist = |c: usize| -> f32 {
            row.iter().zip(&r.centroids[c * d..(c + 1) * d]).map(|(p, q)| (p - q) * (p - q)).sum()
        };
        let best = (0..10).map(dist).fold(f32::INFINITY, f32::min);
        assert!(dist(a as usize) <= best * (1.0 + 1e-4) + 1e-5);
    }
}

#[test]
fn results_depend_only_on_the_seed() {
    let d = 10;
    let x = clustered(800, d, 5);
    let a = kmeans::kmeans(&x, d, 16, 6, 42, Init::KMeansPlusPlus, false, 1).unwrap();
    let b = kmeans::kmeans(&x, d, 16, 6, 42, Init::KMeansPlusPlus, false, 4).unwrap();
    assert_eq!(a.centroids, b.centroids, "thread count changes nothing");
    assert_eq!(a.assignments, b.assignments);
    let c = kmeans::kmeans(&x, d, 16, 6, 43, Init::KMeansPlusPlus, false, 1).unwrap();
    assert_ne!(a.centroids, c.centroids, "another seed, other centroids");
}

#[test]
fn spherical_centroids_have_unit_length() {
    let d = 8;
    let x = clustered(400, d, 6);
    let r = kmeans::kmeans(&x, d, 5, 6, 2, Init::KMeansPlusPlus, true, 2).unwrap();
    for c in r.centroids.chunks_exact(d) {
        let n: f32 = c.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "norm {n}");
    }
}

#[test]
fn given_centroids_seed_the_iterations() {
    let (k, per, d) = (3, 40, 4);
    let x = separated(k, per, d, 8);
    let init: Vec<f32> = (0..k).flat_map(|c| x[c * per * d..(c * per + 1) * d].to_vec()).collect();
    let r = kmeans::kmeans(&x, d, k, 5, 0, Init::Centroids(&init), false, 1).unwrap();
    for c in 0..k {
        assert!(r.assignments[c * per..(c + 1) * per].iter().all(|&a| a == c as u32));
    }
    // The coarse-quantizer variant stops after the last update with the same centroids.
    let q = kmeans::centroids(&x, d, k, 5, 0, Init::Centroids(&init), false, 1).unwrap();
    assert_eq!(q.centroids, r.centroids);
}

#[test]
fn bad_input_is_an_error() {
    let d = 4;
    let x = clustered(20, d, 9);
    assert!(kmeans::kmeans(&x, d, 0, 5, 0, Init::Random, false, 1).is_err(), "k = 0");
    assert!(kmeans::kmeans(&x, d, 21, 5, 0, Init::Random, false, 1).is_err(), "k > n");
    assert!(kmeans::kmeans(&x[..d + 1], d, 1, 5, 0, Init::Random, false, 1).is_err(), "ragged");
    let mut nan = x.clone();
    nan[5] = f32::NAN;
    assert!(kmeans::kmeans(&nan, d, 2, 5, 0, Init::Random, false, 1).is_err(), "NaN");
    let short = vec![0f32; d];
    assert!(kmeans::kmeans(&x, d, 2, 5, 0, Init::Centroids(&short), false, 1).is_err(), "init shape");
}
