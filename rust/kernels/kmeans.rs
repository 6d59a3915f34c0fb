//! k-means (Lloyd) with k-means++ initialisation on a sample, multithreaded.
//!
//! The assignment step is an exact top-1 search through the fused tile kernels: for L2 each
//! point `x` is extended with a 1 and each centroid `c` with `-||c||^2 / 2`, so the inner
//! product ranks centroids exactly as the squared distance does. The spherical variant (used
//! for cosine and inner-product indexes) assigns by inner product and keeps centroids unit-length.

use rayon::prelude::*;

use crate::kernels::metric::Metric;
use crate::kernels::pack;
use crate::kernels::simd;
use crate::kernels::topk::{self, Blocks, Source};
use crate::util::error::{Error, Result};
use crate::util::parallel;
use crate::util::rng::Rng;
use crate::util::vectors;

/// How to start.
pub enum Init<'a> {
    /// k-means++ (D^2 sampling) on a random sample of the points.
    KMeansPlusPlus,
    /// `k` distinct random points.
    Random,
    /// Given centroids, `k x d` row-major.
    Centroids(&'a [f32]),
}

/// What [`kmeans`] returns.
pub struct KMeans {
    /// `k x d` row-major centroids.
    pub centroids: Vec<f32>,
    /// Nearest centroid of every input point.
    pub assignments: Vec<u32>,
    /// Sum of squared distances to the assigned centroids (L2), or of `1 - cos` (spherical).
    pub inertia: f64,
}

/// k-means of `data` (`n x d`): `iters` Lloyd iterations from `init`, deterministic per `seed`.
/// With `spherical`, centroids are normalised and points assigned by inner product.
#[allow(clippy::too_many_arguments)]
pub fn kmeans(
    data: &[f32],
    d: usize,
    k: usize,
    iters: usize,
    seed: u64,
    init: Init,
    spherical: bool,
    threads: usize,
) -> Result<KMeans> {
    lloyd(data, d, k, iters, seed, init, spherical, threads, true)
}

/// Like [`kmeans`] but stops after the last centroid update, without the final assignment
/// pass (`assignments` are those of the last iteration, `inertia` is not computed). This is
/// what a coarse quantizer needs.
#[allow(clippy::too_many_arguments)]
pub fn centroids(
    data: &[f32],
    d: usize,
    k: usize,
    iters: usize,
    seed: u64,
    init: Init,
    spherical: bool,
    threads: usize,
) -> Result<KMeans> {
    lloyd(data, d, k, iters, seed, init, spherical, threads, false)
}

#[allow(clippy::too_many_arguments)]
fn lloyd(
    data: &[f32],
    d: usize,
    k: usize,
    iters: usize,
    seed: u64,
    init: Init,
    spherical: bool,
    threads: usize,
    final_assignment: bool,
) -> Result<KMeans> {
    let n = vectors::rows(data, d, "training vectors")?;
    vectors::check_finite(data, d, "training vectors")?;
    if k == 0 {
        return Err(Error::InvalidArgument("k must be at least 1".into()));
    }
    if n < k {
        return Err(Error::InvalidArgument(format!("k-means needs at least k = {k} points, got {n}")));
    }
    let mut rng = Rng::new(seed);
    let mut c = match init {
        Init::Centroids(c) => {
            if c.len() != k * d {
                return Err(Error::InvalidArgument(format!(
                    "initial centroids must be {k} x {d}, got {} values",
                    c.len()
                )));
            }
            vectors::check_finite(c, d, "initial centroids")?;
            c.to_vec()
        }
        Init::Random => rng.sample(n, k).iter().flat_map(|&i| data[i * d..(i + 1) * d].to_vec()).collect(),
        Init::KMeansPlusPlus => plus_plus(data, d, k, &mut rng, threads),
    };
    if spherical {
        c = vectors::normalized(&c, d);
    }
    // Points extended with a constant 1 (L2) so one inner product ranks by distance.
    let ext = if spherical { d } else { d + 1 };
    let points: Vec<f32> = if spherical {
        data.to_vec()
    } else {
        data.chunks_exact(d).flat_map(|x| x.iter().copied().chain(std::iter::once(1.0))).collect()
    };
    let mut assign = vec![0u32; n];
    let mut inertia = 0.0;
    for it in 0..=iters {
        if it == iters && !final_assignment && iters > 0 {
            break;
        }
        let (a, inn) = assign_points(&points, data, d, ext, &c, k, spherical, threads)?;
        assign = a;
        inertia = inn;
        if it == iters {
            break;
        }
        c = update(data, d, k, &assign, &c, &mut rng, threads);
        if spherical {
            c = vectors::normalized(&c, d);
        }
    }
    Ok(KMeans { centroids: c, assignments: assign, inertia })
}

/// Nearest centroid of each point and the total inertia.
#[allow(clippy::too_many_arguments)]
fn assign_points(
    points: &[f32],
    data: &[f32],
    d: usize,
    ext: usize,
    c: &[f32],
    k: usize,
    spherical: bool,
    threads: usize,
) -> Result<(Vec<u32>, f64)> {
    let rows: Vec<f32> = if spherical {
        c.to_vec()
    } else {
        c.chunks_exact(d)
            .flat_map(|x| {
                let half = -0.5 * x.iter().map(|v| v * v).sum::<f32>();
                x.iter().copied().chain(std::iter::once(half))
            })
            .collect()
    };
    let mut packed = vec![0f32; pack::packed_len(k, ext)];
    pack::pack_rows(&rows, ext, None, &mut packed);
    let blocks = Blocks { data: &packed, n: k, d: ext, ids: None, base: 0, allow: None };
    let r = topk::search(points, Source::Packed(blocks), Metric::Dot, 1, threads)?;
    let assign: Vec<u32> = r.ids.iter().map(|&i| i as u32).collect();
    let inertia: f64 = data
        .chunks_exact(d)
        .zip(&r.scores)
        .map(|(x, &s)| {
            if spherical {
                (1.0 - s as f64).max(0.0)
            } else {
                (simd::norm_sq(x) as f64 - 2.0 * s as f64).max(0.0)
            }
        })
        .sum();
    Ok((assign, inertia))
}

/// New centroids as the means of their points; an empty cluster splits a large one.
fn update(
    data: &[f32],
    d: usize,
    k: usize,
    assign: &[u32],
    old: &[f32],
    rng: &mut Rng,
    threads: usize,
) -> Vec<f32> {
    let n = assign.len();
    let parts = threads.max(1);
    let per = n.div_ceil(parts);
    let sums: Vec<(Vec<f64>, Vec<usize>)> = parallel::install(threads, || {
        (0..parts)
            .into_par_iter()
            .map(|p| {
                let mut s = vec![0f64; k * d];
                let mut cnt = vec![0usize; k];
                for i in (p * per)..((p + 1) * per).min(n) {
                    let a = assign[i] as usize;
                    cnt[a] += 1;
                    for (acc, &x) in s[a * d..(a + 1) * d].iter_mut().zip(&data[i * d..(i + 1) * d]) {
                        *acc += x as f64;
                    }
                }
                (s, cnt)
            })
            .collect()
    });
    let mut sum = vec![0f64; k * d];
    let mut count = vec![0usize; k];
    for (s, c) in sums {
        sum.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        count.iter_mut().zip(c).for_each(|(a, b)| *a += b);
    }
    let mut c = old.to_vec();
    for j in 0..k {
        if count[j] > 0 {
            for t in 0..d {
                c[j * d + t] = (sum[j * d + t] / count[j] as f64) as f32;
            }
        }
    }
    // Empty clusters: split a cluster chosen with probability ~ (size - 1), as FAISS does.
    for j in 0..k {
        if count[j] > 0 {
            continue;
        }
        let total: usize = count.iter().map(|&s| s.saturating_sub(1)).sum();
        if total == 0 {
            break;
        }
        let mut r = rng.below(total);
        let mut big = 0;
        for (i, &s) in count.iter().enumerate() {
            let w = s.saturating_sub(1);
            if r < w {
                big = i;
                break;
            }
            r -= w;
        }
        for t in 0..d {
            let v = c[big * d + t];
            let eps = if t % 2 == 0 { 1.0 / 1024.0 } else { -1.0 / 1024.0 };
            c[j * d + t] = v * (1.0 + eps);
            c[big * d + t] = v * (1.0 - eps);
        }
        count[j] = count[big] / 2;
        count[big] -= count[j];
    }
    c
}

/// k-means++ seeding on a random sample of at most `max(2 k, 4096)` points.
fn plus_plus(data: &[f32], d: usize, k: usize, rng: &mut Rng, threads: usize) -> Vec<f32> {
    let n = data.len() / d;
    let m = n.min((2 * k).max(4096));
    let sample: Vec<usize> = rng.sample(n, m);
    let pts: Vec<f32> = sample.iter().flat_map(|&i| data[i * d..(i + 1) * d].to_vec()).collect();
    let mut c = Vec::with_capacity(k * d);
    let first = rng.below(m);
    c.extend_from_slice(&pts[first * d..(first + 1) * d]);
    let mut dist = vec![f64::INFINITY; m];
    for j in 1..k {
        let last = c[(j - 1) * d..j * d].to_vec();
        parallel::install(threads, || {
            dist.par_chunks_mut(1024).enumerate().for_each(|(b, chunk)| {
                for (i, v) in chunk.iter_mut().enumerate() {
                    let p = (b * 1024 + i) * d;
                    *v = v.min(simd::l2sq(&pts[p..p + d], &last) as f64);
                }
            })
        });
        let total: f64 = dist.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.f64() * total;
            let mut pick = m - 1;
            for (i, &v) in dist.iter().enumerate() {
                if r < v {
                    pick = i;
                    break;
                }
                r -= v;
            }
            pick
        } else {
            rng.below(m)
        };
        c.extend_from_slice(&pts[pick * d..(pick + 1) * d]);
    }
    c
}
