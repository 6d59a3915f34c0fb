//! AVX-512 F kernels. Only reachable through [`super::kernels`] after a runtime CPU check.

use std::arch::x86_64::*;

use super::avx2::{pair_u8_i16, tile_u8};
use super::{Kernels, Level, TileFn};
use crate::kernels::layout::{PANEL, QUAD};

#[target_feature(enable = "avx512f")]
unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                let x = _mm512_loadu_ps(pa.add(i + 16 * u));
                let y = _mm512_loadu_ps(pb.add(i + 16 * u));
                *s = _mm512_fmadd_ps(x, y, *s);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc[0]);
            i += 16;
        }
        if i < n {
            let m: __mmask16 = (1u16 << (n - i)) - 1;
            let x = _mm512_maskz_loadu_ps(m, pa.add(i));
            let y = _mm512_maskz_loadu_ps(m, pb.add(i));
            acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(s)
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                let t =
                    _mm512_sub_ps(_mm512_loadu_ps(pa.add(i + 16 * u)), _mm512_loadu_ps(pb.add(i + 16 * u)));
                *s = _mm512_fmadd_ps(t, t, *s);
            }
            i += 64;
        }
        while i + 16 <= n {
            let t = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            acc[0] = _mm512_fmadd_ps(t, t, acc[0]);
            i += 16;
        }
        if i < n {
            let m: __mmask16 = (1u16 << (n - i)) - 1;
            let t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, pa.add(i)), _mm512_maskz_loadu_ps(m, pb.add(i)));
            acc[1] = _mm512_fmadd_ps(t, t, acc[1]);
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(s)
    }
}

/// Inner product (AVX-512).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: this table is only handed out when the CPU reports avx512f.
    unsafe { dot_impl(a, b) }
}

/// Squared Euclidean distance (AVX-512).
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as for `dot`.
    unsafe { l2sq_impl(a, b) }
}

/// Squared L2 norm (AVX-512).
pub fn norm_sq(a: &[f32]) -> f32 {
    dot(a, a)
}

/// `R` queries x 2 panels (32 vectors): 2R zmm accumulators, one broadcast per query and step.
#[target_feature(enable = "avx512f")]
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
        let p1 = p.add(PANEL * d);
        let mut a0 = [_mm512_setzero_ps(); R];
        let mut a1 = [_mm512_setzero_ps(); R];
        for t in 0..d {
            let b0 = _mm512_loadu_ps(p.add(t * PANEL));
            let b1 = _mm512_loadu_ps(p1.add(t * PANEL));
            for r in 0..R {
                let a = _mm512_set1_ps(*q.add(r * d + t));
                if L2 {
                    let t0 = _mm512_sub_ps(a, b0);
                    let t1 = _mm512_sub_ps(a, b1);
                    a0[r] = _mm512_fmadd_ps(t0, t0, a0[r]);
                    a1[r] = _mm512_fmadd_ps(t1, t1, a1[r]);
                } else {
                    a0[r] = _mm512_fmadd_ps(a, b0, a0[r]);
                    a1[r] = _mm512_fmadd_ps(a, b1, a1[r]);
                }
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(out.add(r * ldo), a0[r]);
            _mm512_storeu_ps(out.add(r * ldo + PANEL), a1[r]);
        }
    }
}

fn tile<const R: usize, const L2: bool>(q: &[f32], d: usize, panels: &[f32], out: &mut [f32], ldo: usize) {
    assert!(q.len() >= R * d && panels.len() >= 2 * PANEL * d && out.len() >= (R - 1) * ldo + 2 * PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx512f.
    unsafe { tile_impl::<R, L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr(), ldo) }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_bf16(p: *const u16) -> __m512 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

/// One query x 2 bfloat16 panels, widened to f32 in registers; even and odd steps go to
/// separate accumulators so the FMA latency does not bound a memory-bound scan.
#[target_feature(enable = "avx512f")]
unsafe fn tile_bf16_impl<const L2: bool>(q: *const f32, d: usize, p: *const u16, out: *mut f32) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let p1 = p.add(PANEL * d);
        let mut acc = [_mm512_setzero_ps(); 4];
        macro_rules! step {
            ($t:expr, $x:literal, $y:literal) => {{
                let b0 = load_bf16(p.add($t * PANEL));
                let b1 = load_bf16(p1.add($t * PANEL));
                let a = _mm512_set1_ps(*q.add($t));
                if L2 {
                    let t0 = _mm512_sub_ps(a, b0);
                    let t1 = _mm512_sub_ps(a, b1);
                    acc[$x] = _mm512_fmadd_ps(t0, t0, acc[$x]);
                    acc[$y] = _mm512_fmadd_ps(t1, t1, acc[$y]);
                } else {
                    acc[$x] = _mm512_fmadd_ps(a, b0, acc[$x]);
                    acc[$y] = _mm512_fmadd_ps(a, b1, acc[$y]);
                }
            }};
        }
        let mut t = 0;
        while t + 2 <= d {
            step!(t, 0, 1);
            step!(t + 1, 2, 3);
            t += 2;
        }
        if t < d {
            step!(t, 0, 1);
        }
        _mm512_storeu_ps(out, _mm512_add_ps(acc[0], acc[2]));
        _mm512_storeu_ps(out.add(PANEL), _mm512_add_ps(acc[1], acc[3]));
    }
}

fn tile_bf16<const L2: bool>(q: &[f32], d: usize, panels: &[u16], out: &mut [f32], _ldo: usize) {
    assert!(q.len() >= d && panels.len() >= 2 * PANEL * d && out.len() >= 2 * PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx512f.
    unsafe { tile_bf16_impl::<L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr()) }
}

/// `R` int8 weight rows x 1 panel of u8 codes (quad layout) with AVX512-VNNI `vpdpbusd`: one
/// 64-byte load is 16 vectors x 4 dimensions; even and odd quads go to separate accumulators
/// so the instruction latency does not bound short tiles. Exact.
#[target_feature(enable = "avx512f,avx512vnni")]
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
        let mut a0 = [_mm512_setzero_si512(); R];
        let mut a1 = [_mm512_setzero_si512(); R];
        let quads = dp / QUAD;
        let wq =
            |r: usize, g: usize| _mm512_set1_epi32((w.add(r * dp + g * QUAD) as *const i32).read_unaligned());
        let mut g = 0;
        while g + 2 <= quads {
            let c0 = _mm512_loadu_si512(p.add(g * QUAD * PANEL) as *const _);
            let c1 = _mm512_loadu_si512(p.add((g + 1) * QUAD * PANEL) as *const _);
            for r in 0..R {
                a0[r] = _mm512_dpbusd_epi32(a0[r], c0, wq(r, g));
                a1[r] = _mm512_dpbusd_epi32(a1[r], c1, wq(r, g + 1));
            }
            g += 2;
        }
        if g < quads {
            let c0 = _mm512_loadu_si512(p.add(g * QUAD * PANEL) as *const _);
            for r in 0..R {
                a0[r] = _mm512_dpbusd_epi32(a0[r], c0, wq(r, g));
            }
        }
        for r in 0..R {
            _mm512_storeu_si512(out.add(r * ldo) as *mut _, _mm512_add_epi32(a0[r], a1[r]));
        }
    }
}

fn tile_u8_vnni<const R: usize>(w: &[i8], dp: usize, codes: &[u8], out: &mut [i32], ldo: usize) {
    assert!(dp.is_multiple_of(QUAD));
    assert!(w.len() >= R * dp && codes.len() >= PANEL * dp && out.len() >= (R - 1) * ldo + PANEL);
    // SAFETY: bounds checked above; only used when `vnni_available(Avx512)` saw avx512vnni.
    unsafe { tile_u8_vnni_impl::<R>(w.as_ptr(), dp, codes.as_ptr(), out.as_mut_ptr(), ldo) }
}

static TILE_DOT: [TileFn; 8] = [
    tile::<1, false>,
    tile::<2, false>,
    tile::<3, false>,
    tile::<4, false>,
    tile::<5, false>,
    tile::<6, false>,
    tile::<7, false>,
    tile::<8, false>,
];
static TILE_L2: [TileFn; 8] = [
    tile::<1, true>,
    tile::<2, true>,
    tile::<3, true>,
    tile::<4, true>,
    tile::<5, true>,
    tile::<6, true>,
    tile::<7, true>,
    tile::<8, true>,
];

/// Pair kernel body: widen bfloat16 by a 16-bit shift, two accumulators.
#[target_feature(enable = "avx512f")]
unsafe fn pair_bf16_impl<const L2: bool>(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
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
}

/// One query against one bfloat16 row (inner product, or squared L2 with `L2`).
pub fn pair_bf16<const L2: bool>(q: &[f32], x: &[u16]) -> f32 {
    // SAFETY: the table is only used when the CPU reports avx512f; lengths are clamped inside.
    unsafe { pair_bf16_impl::<L2>(q, x) }
}

/// Squared-L2 pair kernel body on u8 codes: sixteen codes widened to f32 per step, two
/// accumulators.
#[target_feature(enable = "avx512f")]
unsafe fn pair_u8_l2_impl(q: *const f32, step: *const f32, x: *const u8, n: usize) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for `n` elements.
    unsafe {
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            let c0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(x.add(i) as *const __m128i)));
            let c1 =
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(x.add(i + 16) as *const __m128i)));
            let t0 = _mm512_fmsub_ps(_mm512_loadu_ps(step.add(i)), c0, _mm512_loadu_ps(q.add(i)));
            let t1 = _mm512_fmsub_ps(_mm512_loadu_ps(step.add(i + 16)), c1, _mm512_loadu_ps(q.add(i + 16)));
            acc0 = _mm512_fmadd_ps(t0, t0, acc0);
            acc1 = _mm512_fmadd_ps(t1, t1, acc1);
            i += 32;
        }
        if i + 16 <= n {
            let c0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(x.add(i) as *const __m128i)));
            let t0 = _mm512_fmsub_ps(_mm512_loadu_ps(step.add(i)), c0, _mm512_loadu_ps(q.add(i)));
            acc0 = _mm512_fmadd_ps(t0, t0, acc0);
            i += 16;
        }
        let mut total = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
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
    // SAFETY: the table is only used when the CPU reports avx512f; lengths checked above.
    unsafe { pair_u8_l2_impl(q.as_ptr(), step.as_ptr(), x.as_ptr(), n) }
}

/// The AVX-512 kernel table.
pub static KERNELS: Kernels = Kernels {
    level: Level::Avx512,
    dot,
    l2sq,
    norm_sq,
    max_rows: 8,
    panels: 2,
    tile_dot: &TILE_DOT,
    tile_l2: &TILE_L2,
    tile_bf16: [tile_bf16::<false>, tile_bf16::<true>],
    pair_bf16: [pair_bf16::<false>, pair_bf16::<true>],
    pair_u8_l2,
    // AVX-512 F has no 16-bit multiply-add: the AVX2 kernel serves (every avx512 CPU has AVX2).
    pair_u8_i16,
    // Without AVX512-VNNI the AVX2 kernels (every avx512 CPU here has AVX2) do the u8 scan.
    tile_u8: [tile_u8::<1>, tile_u8::<2>, tile_u8::<3>, tile_u8::<4>],
    tile_u8_vnni: Some([tile_u8_vnni::<1>, tile_u8_vnni::<2>, tile_u8_vnni::<3>, tile_u8_vnni::<4>]),
};
