//! A small seeded generator (SplitMix64) so results are reproducible from a seed.

/// SplitMix64: fast, seedable, good enough for sampling and initialisation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `m` distinct indices of `0..n` (`m <= n`), in random order.
    pub fn sample(&mut self, n: usize, m: usize) -> Vec<usize> {
        if m * 4 >= n {
            let mut all: Vec<usize> = (0..n).collect();
            for i in 0..m {
                let j = i + self.below(n - i);
                all.swap(i, j);
            }
            all.truncate(m);
            all
        } else {
            let mut seen = std::collections::HashSet::with_capacity(m);
            let mut out = Vec::with_capacity(m);
            while out.len() < m {
                let j = self.below(n);
                if seen.insert(j) {
                    out.push(j);
                }
            }
            out
        }
    }
}
