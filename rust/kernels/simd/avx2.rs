//! AVX2 + FMA kernels. Only reachable through [`super::kernels`] after a runtime CPU check.

use std::arch::x86_64::*;

use super::{Kernels, Level, TileFn};
use crate::kernels::layout::{PANEL, QUAD};

#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                *s = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * u)),
                    _mm256_loadu_ps(pb.add(i + 8 * u)),
                    *s,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut total = hsum(s);
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                let t = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 8 * u)), _mm256_loadu_ps(pb.add(i + 8 * u)));
                *s = _mm256_fmadd_ps(t, t, *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            let t = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc[0] = _mm256_fmadd_ps(t, t, acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut total = hsum(s);
        while i < n {
            let t = *pa.add(i) - *pb.add(i);
            total += t * t;
            i += 1;
        }
        total
    }
}

/// Inner product (AVX2).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: this table is only handed out when the CPU reports avx2 and fma.
    unsafe { dot_impl(a, b) }
}

/// Squared Euclidean distance (AVX2).
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as for `dot`.
    unsafe { l2sq_impl(a, b) }
}

/// Squared L2 norm (AVX2).
pub fn norm_sq(a: &[f32]) -> f32 {
    dot(a, a)
}

/// `R` queries x 1 panel (16 vectors = 2 ymm): 2R accumulators.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_impl<const R: usize, const L2: bool>(
    q: *const f32,
    d: usize,
    p: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut a0 = [_mm256_setzero_ps(); R];
        let mut a1 = [_mm256_setzero_ps(); R];
        for t in 0..d {
            let b0 = _mm256_loadu_ps(p.add(t * PANEL));
            let b1 = _mm256_loadu_ps(p.add(t * PANEL + 8));
            for r in 0..R {
                let a = _mm256_set1_ps(*q.add(r * d + t));
                if L2 {
                    let t0 = _mm256_sub_ps(a, b0);
                    let t1 = _mm256_sub_ps(a, b1);
                    a0[r] = _mm256_fmadd_ps(t0, t0, a0[r]);
                    a1[r] = _mm256_fmadd_ps(t1, t1, a1[r]);
                } else {
                    a0[r] = _mm256_fmadd_ps(a, b0, a0[r]);
                    a1[r] = _mm256_fmadd_ps(a, b1, a1[r]);
                }
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(out.add(r * ldo), a0[r]);
            _mm256_storeu_ps(out.add(r * ldo + 8), a1[r]);
        }
    }
}

fn tile<const R: usize, const L2: bool>(q: &[f32], d: usize, panels: &[f32], out: &mut [f32], ldo: usize) {
    assert!(q.len() >= R * d && panels.len() >= PANEL * d && out.len() >= (R - 1) * ldo + PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx2 and fma.
    unsafe { tile_impl::<R, L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr(), ldo) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_bf16(p: *const u16) -> __m256 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// One query x 1 bfloat16 panel, widened to f32 in registers.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_bf16_impl<const L2: bool>(q: *const f32, d: usize, p: *const u16, out: *mut f32) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for t in 0..d {
            let b0 = load_bf16(p.add(t * PANEL));
            let b1 = load_bf16(p.add(t * PANEL + 8));
            let a = _mm256_set1_ps(*q.add(t));
            if L2 {
                let t0 = _mm256_sub_ps(a, b0);
                let t1 = _mm256_sub_ps(a, b1);
                a0 = _mm256_fmadd_ps(t0, t0, a0);
                a1 = _mm256_fmadd_ps(t1, t1, a1);
            } else {
                a0 = _mm256_fmadd_ps(a, b0, a0);
                a1 = _mm256_fmadd_ps(a, b1, a1);
            }
        }
        _mm256_storeu_ps(out, a0);
        _mm256_storeu_ps(out.add(8), a1);
    }
}

fn tile_bf16<const L2: bool>(q: &[f32], d: usize, panels: &[u16], out: &mut [f32], _ldo: usize) {
    assert!(q.len() >= d && panels.len() >= PANEL * d && out.len() >= PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx2 and fma.
    unsafe { tile_bf16_impl::<L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr()) }
}

/// `R` int8 weight rows x 1 panel of u8 codes (quad layout) with `vpmaddwd`: codes widened to
/// i16 (4 vectors x 4 dimensions per register), weights widened and broadcast per quad; each
/// i32 lane sums two dimensions, so lane pairs are added at the end. Exact.
#[target_feature(enable = "avx2")]
unsafe fn tile_u8_impl<const R: usize>(w: *const i8, dp: usize, p: *const u8, out: *mut i32, ldo: usize) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        // Two passes of 8 vectors keep 2R accumulators and 2 code registers in the 16 ymm.
        for half in 0..2 {
            let mut a0 = [_mm256_setzero_si256(); R];
            let mut a1 = [_mm256_setzero_si256(); R];
            for g in 0..dp / QUAD {
                let base = p.add(g * QUAD * PANEL + half * 2 * QUAD * 4);
                let c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(base as *const __m128i));
                let c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(base.add(16) as *const __m128i));
                for r in 0..R {
                    let w4 = (w.add(r * dp + g * QUAD) as *const i32).read_unaligned();
                    let b = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(w4)));
                    a0[r] = _mm256_add_epi32(a0[r], _mm256_madd_epi16(c0, b));
                    a1[r] = _mm256_add_epi32(a1[r], _mm256_madd_epi16(c1, b));
                }
            }
            for r in 0..R {
                // [v0 v0 v1 v1 | v2 v2 v3 v3] and the same for v4..v7: add lane pairs, restore order.
                let h = _mm256_hadd_epi32(a0[r], a1[r]); // [v0 v1 v4 v5 | v2 v3 v6 v7]
                let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(h);
                _mm256_storeu_si256(out.add(r * ldo + half * 8) as *mut __m256i, s);
            }
        }
    }
}

/// The same with AVX-VNNI `vpdpbusd` (u8 x i8, four dimensions per lane).
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn tile_u8_vnni_impl<const R: usize>(
    w: *const i8,
    dp: usize,
    p: *const u8,
    out: *mut i32,
    ldo: usize,
) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut a0 = [_mm256_setzero_si256(); R];
        let mut a1 = [_mm256_setzero_si256(); R];
        for g in 0..dp / QUAD {
            let base = p.add(g * QUAD * PANEL);
            let c0 = _mm256_loadu_si256(base as *const __m256i);
            let c1 = _mm256_loadu_si256(base.add(32) as *const __m256i);
            for r in 0..R {
                let b = _mm256_set1_epi32((w.add(r * dp + g * QUAD) as *const i32).read_unaligned());
                a0[r] = _mm256_dpbusd_avx_epi32(a0[r], c0, b);
                a1[r] = _mm256_dpbusd_avx_epi32(a1[r], c1, b);
            }
        }
        for r in 0..R {
            _mm256_storeu_si256(out.add(r * ldo) as *mut __m256i, a0[r]);
            _mm256_storeu_si256(out.add(r * ldo + 8) as *mut __m256i, a1[r]);
        }
    }
}

fn check_u8<const R: usize>(w: &[i8], dp: usize, codes: &[u8], out: &[i32], ldo: usize) {
    assert!(dp.is_multiple_of(QUAD));
    assert!(w.len() >= R * dp && codes.len() >= PANEL * dp && out.len() >= (R - 1) * ldo + PANEL);
}

/// u8 tile kernel (AVX2); also the avx512 level's fallback when the CPU lacks AVX512-VNNI.
pub fn tile_u8<const R: usize>(w: &[i8], dp: usize, codes: &[u8], out: &mut [i32], ldo: usize) {
    check_u8::<R>(w, dp, codes, out, ldo);
    // SAFETY: bounds checked above; only reachable when the CPU reports avx2.
    unsafe { tile_u8_impl::<R>(w.as_ptr(), dp, codes.as_ptr(), out.as_mut_ptr(), ldo) }
}

fn tile_u8_vnni<const R: usize>(w: &[i8], dp: usize, codes: &[u8], out: &mut [i32], ldo: usize) {
    check_u8::<R>(w, dp, codes, out, ldo);
    // SAFETY: bounds checked above; only used when `vnni_available(Avx2)` saw avxvnni.
    unsafe { tile_u8_vnni_impl::<R>(w.as_ptr(), dp, codes.as_ptr(), out.as_mut_ptr(), ldo) }
}

static TILE_DOT: [TileFn; 6] = [
    tile::<1, false>,
    tile::<2, false>,
    tile::<3, false>,
    tile::<4, false>,
    tile::<5, false>,
    tile::<6, false>,
];
static TILE_L2: [TileFn; 6] =
    [tile::<1, true>, tile::<2, true>, tile::<3, true>, tile::<4, true>, tile::<5, true>, tile::<6, true>];

/// Pair kernel body: widen bfloat16 by a 16-bit shift, two accumulators.
#[target_feature(enable = "avx2,fma")]
unsafe fn pair_bf16_impl<const L2: bool>(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
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
        let mut total = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            let b = f32::from_bits((*px.add(i) as u32) << 16);
            let a = *pq.add(i);
            total += if L2 { (a - b) * (a - b) } else { a * b };
            i += 1;
        }
        total
    }
}

/// One query against one bfloat16 row (inner product, or squared L2 with `L2`).
pub fn pair_bf16<const L2: bool>(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: the table is only used when the CPU reports avx2 and fma; lengths are clamped inside.
    unsafe { pair_bf16_impl::<L2>(q, x) }
}

/// Squared-L2 pair kernel body on u8 codes: eight codes widened to f32 per step, two
/// accumulators.
#[target_feature(enable = "avx2,fma")]
unsafe fn pair_u8_l2_impl(q: *const f32, step: *const f32, x: *const u8, n: usize) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for `n` elements.
    unsafe {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(x.add(i) as *const __m128i)));
            let c1 =
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(x.add(i + 8) as *const __m128i)));
            let t0 = _mm256_fmsub_ps(_mm256_loadu_ps(step.add(i)), c0, _mm256_loadu_ps(q.add(i)));
            let t1 = _mm256_fmsub_ps(_mm256_loadu_ps(step.add(i + 8)), c1, _mm256_loadu_ps(q.add(i + 8)));
            acc0 = _mm256_fmadd_ps(t0, t0, acc0);
            acc1 = _mm256_fmadd_ps(t1, t1, acc1);
            i += 16;
        }
        let mut total = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            let t = *step.add(i) * *x.add(i) as f32 - *q.add(i);
            total += t * t;
            i += 1;
        }
        total
    }
}

/// Squared L2 of one prepared query and one row of u8 codes (see [`super::PairU8L2Fn`]).
pub fn pair_u8_l2(q: &[f32], step: &[f32], x: &[u8]) -> f32 {
    let n = q.len().min(x.len());
    assert!(step.len() >= n);
    // SAFETY: the table is only used when the CPU reports avx2 and fma; lengths checked above.
    unsafe { pair_u8_l2_impl(q.as_ptr(), step.as_ptr(), x.as_ptr(), n) }
}

/// Fixed-point pair kernel body: sixteen codes widened to i16 per `vpmaddwd`, which sums
/// adjacent products into i32 lanes; two accumulators.
#[target_feature(enable = "avx2")]
unsafe fn pair_u8_i16_impl(w: *const i16, x: *const u8, n: usize) -> i32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for `n` elements.
    unsafe {
        let mut a0 = _mm256_setzero_si256();
        let mut a1 = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            let c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(x.add(i) as *const __m128i));
            let c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(x.add(i + 16) as *const __m128i));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(c0, _mm256_loadu_si256(w.add(i) as *const __m256i)));
            a1 = _mm256_add_epi32(
                a1,
                _mm256_madd_epi16(c1, _mm256_loadu_si256(w.add(i + 16) as *const __m256i)),
            );
            i += 32;
        }
        if i + 16 <= n {
            let c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(x.add(i) as *const __m128i));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(c0, _mm256_loadu_si256(w.add(i) as *const __m256i)));
            i += 16;
        }
        let s = _mm256_add_epi32(a0, a1);
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let mut total = _mm_cvtsi128_si32(s);
        while i < n {
            total += *w.add(i) as i32 * *x.add(i) as i32;
            i += 1;
        }
        total
    }
}

/// 16-bit fixed-point weights times one row of u8 codes (see [`super::PairU8I16Fn`]); also the
/// avx512 level's (its 512-bit form needs AVX512-BW).
pub fn pair_u8_i16(w: &[i16], x: &[u8]) -> i32 {
    let n = w.len().min(x.len());
    // SAFETY: the table is only used when the CPU reports avx2; lengths clamped above.
    unsafe { pair_u8_i16_impl(w.as_ptr(), x.as_ptr(), n) }
}

/// The AVX2 kernel table.
pub static KERNELS: Kernels = Kernels {
    level: Level::Avx2,
    dot,
    l2sq,
    norm_sq,
    max_rows: 6,
    panels: 1,
    tile_dot: &TILE_DOT,
    tile_l2: &TILE_L2,
    tile_bf16: [tile_bf16::<false>, tile_bf16::<true>],
    pair_bf16: [pair_bf16::<false>, pair_bf16::<true>],
    pair_u8_l2,
    pair_u8_i16,
    tile_u8: [tile_u8::<1>, tile_u8::<2>, tile_u8::<3>, tile_u8::<4>],
    tile_u8_vnni: Some([tile_u8_vnni::<1>, tile_u8_vnni::<2>, tile_u8_vnni::<3>, tile_u8_vnni::<4>]),
};
