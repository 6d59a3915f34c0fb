//! Helpers shared by the cargo tests: one seeded generator and one clustered-data generator, so
//! every test file draws its data the same way without extra crates.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

/// Small deterministic generator (xorshift); the seed must be non-zero.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values from [`Rng::f32`].
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }

    /// An index in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.f32() + 1.0) * 0.5 * n as f32) as usize % n.max(1)
    }
}

/// `n` vectors of dimension `d` around 20 centres (row `i` belongs to centre `i * 7919 % 20`).
pub fn clustered(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed | 1);
    let centres: Vec<f32> = (0..20 * d).map(|_| r.f32()).collect();
    let mut out = Vec::with_capacity(n * d);
    for i in 0..n {
        let c = (i * 7919) % 20;
        for t in 0..d {
            out.push(centres[c * d + t] + 0.3 * r.f32());
        }
    }
    out
}

/// Fraction of the ids of `want` (rows of `k`) that `got` found.
pub fn recall(got: &[i64], want: &[i64], k: usize) -> f64 {
    let mut hit = 0;
    for (g, w) in got.chunks(k).zip(want.chunks(k)) {
        hit += g.iter().filter(|x| **x >= 0 && w.contains(x)).count();
    }
    hit as f64 / want.len() as f64
}
