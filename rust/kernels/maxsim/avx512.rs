//! AVX-512 F MaxSim kernels. Only reachable through [`super::kernels`] after a runtime CPU check.
//!
//! Micro-tile: `P` query panels (16 query tokens each, one zmm per dimension) x `J` document
//! tokens, `P * J` zmm accumulators; per dimension, `P` panel loads and `J` broadcasts feed
//! `P * J` FMAs. `(P, J)` = (1, 12), (2, 8), (3, 6), (4, 5).

use std::arch::x86_64::*;

use super::MaxSimKernels;
use crate::kernels::half::f16_to_f32;
use crate::kernels::layout::PANEL;
use crate::kernels::simd::Level;

#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const P: usize, const J: usize, const PREFETCH: bool>(
    qp: *const f32,
    d: usize,
    doc: *const f32,
    scale: *const f32,
    mx: *mut f32,
    chk: &mut __m512,
) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); J]; P];
        // The next tile's rows (J * d floats, contiguous) are fetched while this one computes: a
        // line every other step covers J * d * 4 bytes when J <= 8, and the hardware prefetcher
        // does not cross 4 KiB pages.
        let next = doc.wrapping_add(J * d);
        for t in 0..d {
            if PREFETCH {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(t * 8) as *const i8);
            }
            let mut q = [_mm512_setzero_ps(); P];
            for (p, v) in q.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(qp.add((p * d + t) * PANEL));
            }
            for j in 0..J {
                let b = _mm512_set1_ps(*doc.add(j * d + t));
                for p in 0..P {
                    acc[p][j] = _mm512_fmadd_ps(q[p], b, acc[p][j]);
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (p, row) in acc.iter().enumerate() {
            let mut m = _mm512_loadu_ps(mx.add(p * PANEL));
            for (j, &a) in row.iter().enumerate() {
                let a = if scale.is_null() { a } else { _mm512_mul_ps(a, _mm512_set1_ps(*scale.add(j))) };
                // Stays zero unless a score is NaN or infinite (x * 0 is NaN then).
                *chk = _mm512_fmadd_ps(a, zero, *chk);
                m = _mm512_max_ps(m, a);
            }
            _mm512_storeu_ps(mx.add(p * PANEL), m);
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn run<const P: usize, const J: usize>(
    qp: *const f32,
    d: usize,
    doc: *const f32,
    n: usize,
    scale: *const f32,
    mx: *mut f32,
) -> bool {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut chk = _mm512_setzero_ps();
        let sp = |j: usize| if scale.is_null() { scale } else { scale.add(j) };
        if n >= J {
            let mut j = 0;
            while j + J <= n {
                tile::<P, J, true>(qp, d, doc.add(j * d), sp(j), mx, &mut chk);
                j += J;
            }
            if j < n {
                // The tail overlaps tokens already folded in: the maximum is idempotent.
                let j = n - J;
                tile::<P, J, true>(qp, d, doc.add(j * d), sp(j), mx, &mut chk);
            }
        } else {
            for j in 0..n {
                tile::<P, 1, false>(qp, d, doc.add(j * d), sp(j), mx, &mut chk);
            }
        }
        _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(chk, chk) == 0
    }
}

/// Fused block kernel (see [`super::BlockFn`]).
pub fn block(
    qp: &[f32],
    panels: usize,
    d: usize,
    doc: &[f32],
    n: usize,
    scale: Option<&[f32]>,
    mx: &mut [f32],
) -> bool {
    assert!(qp.len() >= panels * d * PANEL && doc.len() >= n * d && mx.len() >= panels * PANEL);
    assert!(scale.is_none_or(|s| s.len() >= n));
    let sp = scale.map_or(std::ptr::null(), |s| s.as_ptr());
    let (q, x, m) = (qp.as_ptr(), doc.as_ptr(), mx.as_mut_ptr());
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx512f.
    unsafe {
        match panels {
            1 => run::<1, 12>(q, d, x, n, sp, m),
            2 => run::<2, 8>(q, d, x, n, sp, m),
            3 => run::<3, 6>(q, d, x, n, sp, m),
            4 => run::<4, 5>(q, d, x, n, sp, m),
            _ => panic!("at most 4 query panels per call, got {panels}"),
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn f16_impl(src: &[u16], dst: &mut [f32]) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            // Stream ahead across 4 KiB pages, where the hardware prefetcher stops.
            _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().wrapping_add(i + 1024) as *const i8);
            let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            i += 16;
        }
        for j in i..n {
            dst[j] = f16_to_f32(src[j]);
        }
    }
}

/// f16 -> f32 with `vcvtph2ps` (part of AVX-512 F).
pub fn f16(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    // SAFETY: lengths checked; avx512f checked at run time before this table is used.
    unsafe { f16_impl(src, dst) }
}

#[target_feature(enable = "avx512f")]
unsafe fn i8_impl(src: &[i8], dst: &mut [f32]) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().wrapping_add(i + 2048));
            let c = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)));
            i += 16;
        }
        for j in i..n {
            dst[j] = src[j] as f32;
        }
    }
}

/// int8 -> f32.
pub fn i8(src: &[i8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    // SAFETY: as for `f16`.
    unsafe { i8_impl(src, dst) }
}

/// The AVX-512 MaxSim table.
pub static KERNELS: MaxSimKernels = MaxSimKernels { level: Level::Avx512, max_panels: 4, block, f16, i8 };
