//! Pair kernels between an `f32` query and a bfloat16 row, used by the graph walk over the
//! half-size copy of the vectors (half the memory traffic; results are rescored in `f32`).
//!
//! Dispatched on [`crate::simd::level`] like the other kernels: AVX-512, AVX2+FMA, else scalar.

use crate::simd::{self, Level};

/// `(dot, l2sq)` kernels of one level.
pub(crate) type Kernel = fn(&[f32], &[u16]) -> f32;

/// The inner-product or squared-L2 kernel of the current SIMD level.
pub(crate) fn kernel(l2: bool) -> Kernel {
    match simd::level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            if l2 {
                avx512_l2
            } else {
                avx512_dot
            }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            if l2 {
                avx2_l2
            } else {
                avx2_dot
            }
        }
        _ => {
            if l2 {
                scalar_l2
            } else {
                scalar_dot
            }
        }
    }
}

#[inline]
fn widen(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Portable reference.
pub(crate) fn scalar_dot(q: &[f32], x: &[u16]) -> f32 {
    q.iter().zip(x).map(|(&a, &b)| a * widen(b)).sum()
}

/// Portable reference.
pub(crate) fn scalar_l2(q: &[f32], x: &[u16]) -> f32 {
    q.iter()
        .zip(x)
        .map(|(&a, &b)| {
            let t = a - widen(b);
            t * t
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot512<const L2: bool>(q: &[f32], x: &[u16]) -> f32 {
        let n = q.len().min(x.len());
        let (pq, px) = (q.as_ptr(), x.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            let h0 = _mm256_loadu_si256(px.add(i) as *const __m256i);
            let h1 = _mm256_loadu_si256(px.add(i + 16) as *const __m256i);
            let x0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h0)));
            let x1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h1)));
            let q0 = _mm512_loadu_ps(pq.add(i));
            let q1 = _mm512_loadu_ps(pq.add(i + 16));
            if L2 {
                let t0 = _mm512_sub_ps(q0, x0);
                let t1 = _mm512_sub_ps(q1, x1);
                acc0 = _mm512_fmadd_ps(t0, t0, acc0);
                acc1 = _mm512_fmadd_ps(t1, t1, acc1);
            } else {
                acc0 = _mm512_fmadd_ps(q0, x0, acc0);
                acc1 = _mm512_fmadd_ps(q1, x1, acc1);
            }
            i += 32;
        }
        let mut total = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        while i < n {
            let b = f32::from_bits((*px.add(i) as u32) << 16);
            let a = *pq.add(i);
            total += if L2 { (a - b) * (a - b) } else { a * b };
            i += 1;
        }
        total
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot256<const L2: bool>(q: &[f32], x: &[u16]) -> f32 {
        let n = q.len().min(x.len());
        let (pq, px) = (q.as_ptr(), x.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let h0 = _mm_loadu_si128(px.add(i) as *const __m128i);
            let h1 = _mm_loadu_si128(px.add(i + 8) as *const __m128i);
            let x0 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h0)));
            let x1 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h1)));
            let q0 = _mm256_loadu_ps(pq.add(i));
            let q1 = _mm256_loadu_ps(pq.add(i + 8));
            if L2 {
                let t0 = _mm256_sub_ps(q0, x0);
                let t1 = _mm256_sub_ps(q1, x1);
                acc0 = _mm256_fmadd_ps(t0, t0, acc0);
                acc1 = _mm256_fmadd_ps(t1, t1, acc1);
            } else {
                acc0 = _mm256_fmadd_ps(q0, x0, acc0);
                acc1 = _mm256_fmadd_ps(q1, x1, acc1);
            }
            i += 16;
        }
        let s = _mm256_add_ps(acc0, acc1);
        let lo = _mm256_castps256_ps128(s);
        let hi = _mm256_extractf128_ps::<1>(s);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s));
        let mut total = _mm_cvtss_f32(s);
        while i < n {
            let b = f32::from_bits((*px.add(i) as u32) << 16);
            let a = *pq.add(i);
            total += if L2 { (a - b) * (a - b) } else { a * b };
            i += 1;
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512_dot(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: only handed out by `kernel` when the CPU reports AVX-512 F.
    unsafe { x86::dot512::<false>(q, x) }
}

#[cfg(target_arch = "x86_64")]
fn avx512_l2(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: as above.
    unsafe { x86::dot512::<true>(q, x) }
}

#[cfg(target_arch = "x86_64")]
fn avx2_dot(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: only handed out by `kernel` when the CPU reports AVX2 and FMA.
    unsafe { x86::dot256::<false>(q, x) }
}

#[cfg(target_arch = "x86_64")]
fn avx2_l2(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: as above.
    unsafe { x86::dot256::<true>(q, x) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_matches_the_reference() {
        let q: Vec<f32> = (0..389).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let x: Vec<u16> =
            (0..389).map(|i| crate::pack::to_bf16(((i * 53 % 97) as f32 - 48.0) / 30.0)).collect();
        for d in [1, 7, 16, 31, 32, 33, 100, 389] {
            let (q, x) = (&q[..d], &x[..d]);
            let want = [scalar_dot(q, x), scalar_l2(q, x)];
            for &level in simd::available() {
                crate::simd::force_level(level).unwrap();
                for (l2, w) in [(false, want[0]), (true, want[1])] {
                    let got = kernel(l2)(q, x);
                    assert!((got - w).abs() <= 1e-4 * w.abs().max(1.0), "{level:?} d={d} l2={l2}");
                }
            }
            crate::simd::force_level(simd::detected()).unwrap();
        }
    }
}
