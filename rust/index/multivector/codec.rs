//! The residual codec of a [`MultiVectorIndex`]: centroid training, the per-dimension Lloyd-Max
//! quantizers, encoding tokens into centroid ids + residual buckets and decoding them back.

use rayon::prelude::*;

use super::*;

/// `out = centroid + residual` of one token, `PER` dimensions per residual byte; returns the
/// squared norm of `out`.
#[inline]
pub(super) fn decode_token<const PER: usize>(lut: &[f32], cen: &[f32], bytes: &[u8], out: &mut [f32]) -> f32 {
    let groups = bytes.len();
    assert!(cen.len() >= groups * PER && out.len() >= groups * PER && lut.len() >= groups * 256 * PER);
    let mut acc = [0f32; PER];
    for (g, &v) in bytes.iter().enumerate() {
        let e = &lut[(g * 256 + v as usize) * PER..][..PER];
        let c = &cen[g * PER..][..PER];
        let o = &mut out[g * PER..][..PER];
        for u in 0..PER {
            o[u] = c[u] + e[u];
            acc[u] += o[u] * o[u];
        }
    }
    acc.iter().sum()
}

/// Scalar quantizer of one dimension's residuals (`sorted` ascending, not empty) into `b`
/// buckets: `b - 1` cutoffs and `b` reconstruction values minimising the squared error on the
/// sample (Lloyd-Max). Starts from equal-count (quantile) buckets and alternates the two
/// optimality conditions: each value is the mean of the residuals in its bucket, each cutoff the
/// midpoint of the values beside it. A value `v` falls in bucket `#{cutoffs < v}`.
pub(super) fn lloyd_max(sorted: &[f32], b: usize) -> (Vec<f32>, Vec<f32>) {
    let m = sorted.len();
    debug_assert!(m > 0 && b >= 2);
    // prefix[i] = sum of the first i values (f64: exact enough for a mean of 2^18 values).
    let mut prefix = Vec::with_capacity(m + 1);
    prefix.push(0f64);
    for &v in sorted {
        prefix.push(prefix.last().unwrap() + v as f64);
    }
    let q = |f: f64| sorted[((f * m as f64) as usize).min(m - 1)];
    let mut cuts: Vec<f32> = (1..b).map(|c| q(c as f64 / b as f64)).collect();
    let mut levels: Vec<f32> = (0..b).map(|c| q((c as f64 + 0.5) / b as f64)).collect();
    // Bucket boundaries in `sorted`: bucket c holds sorted[bounds[c]..bounds[c + 1]].
    let mut bounds = vec![0usize; b + 1];
    for it in 0..LLOYD_ITERS {
        bounds[b] = m;
        for (c, &cut) in cuts.iter().enumerate() {
            bounds[c + 1] = sorted.partition_point(|&v| v <= cut);
        }
        let mut moved = 0f32;
        for c in 0..b {
            let (lo, hi) = (bounds[c], bounds[c + 1]);
            // An empty bucket keeps its value (it only happens with heavily repeated residuals).
            if hi > lo {
                let mean = ((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32;
                moved = moved.max((mean - levels[c]).abs());
                levels[c] = mean;
            }
        }
        if it + 1 == LLOYD_ITERS || moved == 0.0 {
            break;
        }
        let mut floor = f32::NEG_INFINITY;
        for c in 0..b - 1 {
            cuts[c] = (0.5 * (levels[c] + levels[c + 1])).max(floor);
            floor = cuts[c];
        }
    }
    (cuts, levels)
}

impl MultiVectorIndex {
    pub(super) fn rbytes(&self) -> usize {
        self.dim * self.nbits / 8
    }

    /// Train centroids and residual buckets on (a sample of) `tokens`.
    pub(super) fn train(&mut self, tokens: &[f32], threads: usize) -> Result<()> {
        let d = self.dim;
        let n = tokens.len() / d;
        let k = if self.want_centroids > 0 {
            self.want_centroids
        } else {
            let target = (4.0 * (n as f64).sqrt()).max(1.0);
            1usize << (target.log2().floor() as u32).min(16)
        }
        .min(n)
        .max(1);
        let mut rng = Rng::new(self.seed);
        let m = n.min((TRAIN_PER_CENTROID * k).clamp(4096, TRAIN_MAX));
        let sample: Vec<f32> = if m < n {
            let mut idx = rng.sample(n, m);
            idx.sort_unstable();
            idx.iter().flat_map(|&i| tokens[i * d..(i + 1) * d].iter().copied()).collect()
        } else {
            tokens.to_vec()
        };
        let km =
            kmeans::kmeans(&sample, d, k, KMEANS_ITERS, self.seed, Init::KMeansPlusPlus, false, threads)?;
        // Degenerate data (fewer distinct tokens than centroids) leaves centroids that no token
        // is nearest to; their lists would stay empty while probes still pick them, so drop them.
        let mut used = vec![false; k];
        for &a in &km.assignments {
            used[a as usize] = true;
        }
        let mut new_id = vec![0u32; k];
        self.centroids = Vec::with_capacity(k * d);
        for c in (0..k).filter(|&c| used[c]) {
            new_id[c] = (self.centroids.len() / d) as u32;
            self.centroids.extend_from_slice(&km.centroids[c * d..(c + 1) * d]);
        }
        let assignments: Vec<u32> = km.assignments.iter().map(|&a| new_id[a as usize]).collect();
        self.normalize = sample.chunks_exact(d).all(|x| {
            let n2: f32 = x.iter().map(|v| v * v).sum();
            (n2 - 1.0).abs() < 1e-3
        });
        if self.nbits > 0 {
            let b = 1usize << self.nbits;
            let mut col = vec![0f32; m];
            self.cutoffs = vec![0f32; d * (b - 1)];
            self.weights = vec![0f32; d * b];
            for t in 0..d {
                for (i, v) in col.iter_mut().enumerate() {
                    *v = sample[i * d + t] - self.centroids[assignments[i] as usize * d + t];
                }
                col.sort_unstable_by(f32::total_cmp);
                let (cuts, levels) = lloyd_max(&col, b);
                self.cutoffs[t * (b - 1)..(t + 1) * (b - 1)].copy_from_slice(&cuts);
                self.weights[t * b..(t + 1) * b].copy_from_slice(&levels);
            }
            self.build_lut();
        }
        Ok(())
    }

    pub(super) fn build_lut(&mut self) {
        let (d, nb) = (self.dim, self.nbits);
        if nb == 0 || self.weights.is_empty() {
            self.lut.clear();
            return;
        }
        let (b, per) = (1usize << nb, 8 / nb);
        let mask = b - 1;
        self.lut = vec![0f32; d * 256];
        for g in 0..d / per {
            for v in 0..256usize {
                for u in 0..per {
                    let t = g * per + u;
                    self.lut[(g * 256 + v) * per + u] = self.weights[t * b + ((v >> (u * nb)) & mask)];
                }
            }
        }
    }

    /// Nearest centroid (L2) of each token.
    pub(super) fn assign(&self, tokens: &[f32], threads: usize) -> Result<Vec<u32>> {
        let n = tokens.len() / self.dim;
        if n == 0 {
            return Ok(Vec::new());
        }
        let r = topk::topk(tokens, &self.centroids, self.dim, Metric::L2, 1, threads)?;
        Ok(r.ids.iter().map(|&i| i as u32).collect())
    }

    /// Residual bucket codes of `tokens` given their centroids.
    pub(super) fn encode(&self, tokens: &[f32], codes: &[u32], threads: usize) -> Vec<u8> {
        let (d, nb, rb) = (self.dim, self.nbits, self.rbytes());
        let b = 1usize << nb;
        let mut out = vec![0u8; codes.len() * rb];
        let per_dim = 8 / nb;
        parallel::install(threads, || {
            out.par_chunks_mut(rb * 256).enumerate().for_each(|(c, chunk)| {
                for (r, bytes) in chunk.chunks_mut(rb).enumerate() {
                    let j = c * 256 + r;
                    let x = &tokens[j * d..(j + 1) * d];
                    let cen = &self.centroids[codes[j] as usize * d..(codes[j] as usize + 1) * d];
                    for t in 0..d {
                        let v = x[t] - cen[t];
                        let cuts = &self.cutoffs[t * (b - 1)..(t + 1) * (b - 1)];
                        let bucket = cuts.iter().filter(|&&c| v > c).count() as u8;
                        bytes[t / per_dim] |= bucket << ((t % per_dim) * nb);
                    }
                }
            })
        });
        out
    }

    /// Decompressed tokens of slot `s`, appended to `out`.
    pub(super) fn decode_into(&self, s: usize, out: &mut Vec<f32>) {
        let d = self.dim;
        let (a, z) = (self.offsets[s] as usize, self.offsets[s + 1] as usize);
        if self.nbits == 0 {
            out.extend_from_slice(&self.tokens.as_slice()[a * d..z * d]);
            return;
        }
        let codes = self.codes.as_slice();
        let res = self.residuals.as_slice();
        let rb = self.rbytes();
        let start = out.len();
        out.resize(start + (z - a) * d, 0.0);
        for (j, o) in (a..z).zip(out[start..].chunks_exact_mut(d)) {
            let cen = &self.centroids[codes[j] as usize * d..(codes[j] as usize + 1) * d];
            let bytes = &res[j * rb..(j + 1) * rb];
            let n2 = match self.nbits {
                1 => decode_token::<8>(&self.lut, cen, bytes, o),
                2 => decode_token::<4>(&self.lut, cen, bytes, o),
                4 => decode_token::<2>(&self.lut, cen, bytes, o),
                _ => decode_token::<1>(&self.lut, cen, bytes, o),
            };
            if self.normalize && n2 > 0.0 {
                let s = 1.0 / n2.sqrt();
                o.iter_mut().for_each(|x| *x *= s);
            }
        }
    }

    pub(super) fn rebuild_lists(&mut self) {
        let mut lists = vec![Vec::new(); self.n_centroids()];
        let codes = self.codes.as_slice();
        let mut seen: Vec<u32> = Vec::new();
        for s in 0..self.ids.len() {
            seen.clear();
            seen.extend(&codes[self.offsets[s] as usize..self.offsets[s + 1] as usize]);
            seen.sort_unstable();
            seen.dedup();
            for &c in &seen {
                lists[c as usize].push(s as u32);
            }
        }
        self.lists = lists;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                let (u1, u2) = (1.0 - rng.f64(), rng.f64());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        v.sort_unstable_by(f32::total_cmp);
        v
    }

    fn mse(sorted: &[f32], cuts: &[f32], levels: &[f32]) -> f64 {
        let e: f64 = sorted
            .iter()
            .map(|&v| (v - levels[cuts.iter().filter(|&&c| v > c).count()]) as f64)
            .map(|e| e * e)
            .sum();
        e / sorted.len() as f64
    }

    #[test]
    fn lloyd_max_matches_the_gaussian_optimum() {
        let x = sorted_gaussian(200_000, 7);
        // Max (1960): 4 levels for N(0, 1) at +-0.4528, +-1.510, cutoffs 0, +-0.9816, MSE 0.1175.
        let (cuts, levels) = lloyd_max(&x, 4);
        for (got, want) in levels.iter().zip([-1.510, -0.4528, 0.4528, 1.510]) {
            assert!((got - want).abs() < 0.02, "levels {levels:?}");
        }
        for (got, want) in cuts.iter().zip([-0.9816, 0.0, 0.9816]) {
            assert!((got - want).abs() < 0.02, "cutoffs {cuts:?}");
        }
        let e = mse(&x, &cuts, &levels);
        assert!((e - 0.1175).abs() < 0.003, "mse {e}");
        // Quantile buckets at their mid-quantiles lose about a quarter more.
        let q = |f: f64| x[(f * x.len() as f64) as usize];
        let qc = [q(0.25), q(0.5), q(0.75)];
        let ql = [q(0.125), q(0.375), q(0.625), q(0.875)];
        assert!(mse(&x, &qc, &ql) > 1.2 * e);
        // 16 levels: MSE 0.009497 (Max 1960).
        let (c16, l16) = lloyd_max(&x, 16);
        let e16 = mse(&x, &c16, &l16);
        assert!((e16 - 0.0095).abs() < 0.0003, "mse {e16}");
        assert!(c16.windows(2).all(|w| w[0] <= w[1]) && l16.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn lloyd_max_with_repeated_values_keeps_ordered_cutoffs() {
        for x in [vec![0.5f32; 100], vec![-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], vec![3.0]] {
            let (cuts, levels) = lloyd_max(&x, 16);
            assert!(cuts.iter().chain(&levels).all(|v| v.is_finite()));
            assert!(cuts.windows(2).all(|w| w[0] <= w[1]), "{cuts:?}");
            // Every sample value decodes to itself (there are fewer distinct values than levels).
            assert!(mse(&x, &cuts, &levels) < 1e-12);
        }
    }
}
