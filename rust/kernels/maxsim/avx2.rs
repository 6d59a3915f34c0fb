//! AVX2 + FMA MaxSim kernels. Only reachable through [`super::kernels`] after a runtime CPU check.
//!
//! Micro-tile: one query panel (16 query tokens = 2 ymm per dimension) x 6 document tokens,
//! 12 ymm accumulators; per dimension 2 panel loads and 6 broadcasts feed 12 FMAs.

use std::arch::x86_64::*;

use super::MaxSimKernels;
use crate::kernels::half::f16_to_f32;
use crate::kernels::layout::PANEL;
use crate::kernels::simd::Level;

const J: usize = 6;

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const J: usize>(
    qp: *const f32,
    d: usize,
    doc: *const f32,
    scale: *const f32,
    mx: *mut f32,
    chk: &mut __m256,
) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; J];
        // Fetch the next tile's rows (J * d floats) while this one computes (see avx512.rs).
        let next = doc.wrapping_add(J * d);
        for t in 0..d {
            if J > 1 {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(t * 8) as *const i8);
            }
            let q0 = _mm256_loadu_ps(qp.add(t * PANEL));
            let q1 = _mm256_loadu_ps(qp.add(t * PANEL + 8));
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm256_set1_ps(*doc.add(j * d + t));
                a[0] = _mm256_fmadd_ps(q0, b, a[0]);
                a[1] = _mm256_fmadd_ps(q1, b, a[1]);
            }
        }
        let zero = _mm256_setzero_ps();
        let mut m0 = _mm256_loadu_ps(mx);
        let mut m1 = _mm256_loadu_ps(mx.add(8));
        for (j, a) in acc.iter().enumerate() {
            let (mut a0, mut a1) = (a[0], a[1]);
            if !scale.is_null() {
                let s = _mm256_set1_ps(*scale.add(j));
                a0 = _mm256_mul_ps(a0, s);
                a1 = _mm256_mul_ps(a1, s);
            }
            // Stays zero unless a score is NaN or infinite (x * 0 is NaN then).
            *chk = _mm256_fmadd_ps(a0, zero, *chk);
            *chk = _mm256_fmadd_ps(a1, zero, *chk);
            m0 = _mm256_max_ps(m0, a0);
            m1 = _mm256_max_ps(m1, a1);
        }
        _mm256_storeu_ps(mx, m0);
        _mm256_storeu_ps(mx.add(8), m1);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn run(qp: *const f32, d: usize, doc: *const f32, n: usize, scale: *const f32, mx: *mut f32) -> bool {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut chk = _mm256_setzero_ps();
        let sp = |j: usize| if scale.is_null() { scale } else { scale.add(j) };
        if n >= J {
            let mut j = 0;
            while j + J <= n {
                tile::<J>(qp, d, doc.add(j * d), sp(j), mx, &mut chk);
                j += J;
            }
            if j < n {
                // The tail overlaps tokens already folded in: the maximum is idempotent.
                let j = n - J;
                tile::<J>(qp, d, doc.add(j * d), sp(j), mx, &mut chk);
            }
        } else {
            for j in 0..n {
                tile::<1>(qp, d, doc.add(j * d), sp(j), mx, &mut chk);
            }
        }
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(chk, chk)) == 0
    }
}

/// Fused block kernel (see [`super::BlockFn`]); one query panel per call.
pub fn block(
    qp: &[f32],
    panels: usize,
    d: usize,
    doc: &[f32],
    n: usize,
    scale: Option<&[f32]>,
    mx: &mut [f32],
) -> bool {
    assert!(panels == 1, "the AVX2 kernel takes one query panel per call");
    assert!(qp.len() >= d * PANEL && doc.len() >= n * d && mx.len() >= PANEL);
    assert!(scale.is_none_or(|s| s.len() >= n));
    let sp = scale.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx2 and fma.
    unsafe { run(qp.as_ptr(), d, doc.as_ptr(), n, sp, mx.as_mut_ptr()) }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_impl(src: &[u16], dst: &mut [f32]) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = src.len();
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for j in i..n {
            dst[j] = f16_to_f32(src[j]);
        }
    }
}

/// f16 -> f32 with F16C when the CPU has it (checked at run time), else in software.
pub fn f16(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    if is_x86_feature_detected!("f16c") {
        // SAFETY: lengths checked; avx2 is implied by this table, f16c was just checked.
        unsafe { f16_impl(src, dst) }
    } else {
        super::scalar::f16(src, dst)
    }
}

#[target_feature(enable = "avx2")]
unsafe fn i8_impl(src: &[i8], dst: &mut [f32]) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = src.len();
        let mut i = 0;
        while i + 8 <= n {
            let c = _mm_loadl_epi64(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)));
            i += 8;
        }
        for j in i..n {
            dst[j] = src[j] as f32;
        }
    }
}

/// int8 -> f32.
pub fn i8(src: &[i8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    // SAFETY: lengths checked; avx2 checked at run time before this table is used.
    unsafe { i8_impl(src, dst) }
}

/// The AVX2 MaxSim table.
pub static KERNELS: MaxSimKernels = MaxSimKernels { level: Level::Avx2, max_panels: 1, block, f16, i8 };
