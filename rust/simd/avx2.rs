//! AVX2 + FMA kernels. Only reachable through [`super::kernels`] after a runtime CPU check.

use std::arch::x86_64::*;

use super::{Kernels, Level, TileFn, PANEL};

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
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (u, s) in acc.iter_mut().enumerate() {
            *s = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * u)), _mm256_loadu_ps(pb.add(i + 8 * u)), *s);
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

#[target_feature(enable = "avx2,fma")]
unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
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

fn tile<const R: usize, const L2: bool>(q: &[f32], d: usize, panels: &[f32], out: &mut [f32], ldo: usize) {
    assert!(q.len() >= R * d && panels.len() >= PANEL * d && out.len() >= (R - 1) * ldo + PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx2 and fma.
    unsafe { tile_impl::<R, L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr(), ldo) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_bf16(p: *const u16) -> __m256 {
    let h = _mm_loadu_si128(p as *const __m128i);
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
}

/// One query x 1 bfloat16 panel, widened to f32 in registers.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_bf16_impl<const L2: bool>(q: *const f32, d: usize, p: *const u16, out: *mut f32) {
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

fn tile_bf16<const L2: bool>(q: &[f32], d: usize, panels: &[u16], out: &mut [f32], _ldo: usize) {
    assert!(q.len() >= d && panels.len() >= PANEL * d && out.len() >= PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx2 and fma.
    unsafe { tile_bf16_impl::<L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr()) }
}

/// `R` weight rows x 1 panel of u8 codes (two 8-wide halves).
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_u8_impl<const R: usize>(w: *const f32, d: usize, p: *const u8, out: *mut f32, ldo: usize) {
    let mut a0 = [_mm256_setzero_ps(); R];
    let mut a1 = [_mm256_setzero_ps(); R];
    for t in 0..d {
        let c = _mm_loadu_si128(p.add(t * PANEL) as *const __m128i);
        let x0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c));
        let x1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(c, c)));
        for r in 0..R {
            let a = _mm256_set1_ps(*w.add(r * d + t));
            a0[r] = _mm256_fmadd_ps(a, x0, a0[r]);
            a1[r] = _mm256_fmadd_ps(a, x1, a1[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(out.add(r * ldo), a0[r]);
        _mm256_storeu_ps(out.add(r * ldo + 8), a1[r]);
    }
}

fn tile_u8<const R: usize>(w: &[f32], d: usize, codes: &[u8], out: &mut [f32], ldo: usize) {
    assert!(w.len() >= R * d && codes.len() >= PANEL * d && out.len() >= (R - 1) * ldo + PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports avx2 and fma.
    unsafe { tile_u8_impl::<R>(w.as_ptr(), d, codes.as_ptr(), out.as_mut_ptr(), ldo) }
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
    tile_u8: [tile_u8::<1>, tile_u8::<2>, tile_u8::<3>, tile_u8::<4>],
};
