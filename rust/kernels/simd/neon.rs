//! aarch64 NEON kernels (NEON is baseline on aarch64; still selected through the runtime check).

use std::arch::aarch64::*;

use super::{Kernels, Level, TileFn};
use crate::kernels::layout::PANEL;

#[target_feature(enable = "neon")]
unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                *s = vfmaq_f32(*s, vld1q_f32(pa.add(i + 4 * u)), vld1q_f32(pb.add(i + 4 * u)));
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            i += 4;
        }
        let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut total = vaddvq_f32(s);
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }
}

#[target_feature(enable = "neon")]
unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                let t = vsubq_f32(vld1q_f32(pa.add(i + 4 * u)), vld1q_f32(pb.add(i + 4 * u)));
                *s = vfmaq_f32(*s, t, t);
            }
            i += 16;
        }
        while i + 4 <= n {
            let t = vsubq_f32(vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            acc[0] = vfmaq_f32(acc[0], t, t);
            i += 4;
        }
        let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut total = vaddvq_f32(s);
        while i < n {
            let t = *pa.add(i) - *pb.add(i);
            total += t * t;
            i += 1;
        }
        total
    }
}

/// Inner product (NEON).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: this table is only handed out when the CPU reports neon.
    unsafe { dot_impl(a, b) }
}

/// Squared Euclidean distance (NEON).
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as for `dot`.
    unsafe { l2sq_impl(a, b) }
}

/// Squared L2 norm (NEON).
pub fn norm_sq(a: &[f32]) -> f32 {
    dot(a, a)
}

/// `R` queries x 1 panel (16 vectors = 4 q-registers): 4R accumulators.
#[target_feature(enable = "neon")]
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
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        for t in 0..d {
            let b = [
                vld1q_f32(p.add(t * PANEL)),
                vld1q_f32(p.add(t * PANEL + 4)),
                vld1q_f32(p.add(t * PANEL + 8)),
                vld1q_f32(p.add(t * PANEL + 12)),
            ];
            for r in 0..R {
                let a = vdupq_n_f32(*q.add(r * d + t));
                for u in 0..4 {
                    if L2 {
                        let x = vsubq_f32(a, b[u]);
                        acc[r][u] = vfmaq_f32(acc[r][u], x, x);
                    } else {
                        acc[r][u] = vfmaq_f32(acc[r][u], a, b[u]);
                    }
                }
            }
        }
        for r in 0..R {
            for u in 0..4 {
                vst1q_f32(out.add(r * ldo + 4 * u), acc[r][u]);
            }
        }
    }
}

fn tile<const R: usize, const L2: bool>(q: &[f32], d: usize, panels: &[f32], out: &mut [f32], ldo: usize) {
    assert!(q.len() >= R * d && panels.len() >= PANEL * d && out.len() >= (R - 1) * ldo + PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports neon.
    unsafe { tile_impl::<R, L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr(), ldo) }
}

/// One query x 1 bfloat16 panel, widened to f32 by a 16-bit shift.
#[target_feature(enable = "neon")]
unsafe fn tile_bf16_impl<const L2: bool>(q: *const f32, d: usize, p: *const u16, out: *mut f32) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for t in 0..d {
            let h0 = vld1q_u16(p.add(t * PANEL));
            let h1 = vld1q_u16(p.add(t * PANEL + 8));
            let b = [
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h0))),
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_high_u16(h0))),
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h1))),
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_high_u16(h1))),
            ];
            let a = vdupq_n_f32(*q.add(t));
            for u in 0..4 {
                if L2 {
                    let x = vsubq_f32(a, b[u]);
                    acc[u] = vfmaq_f32(acc[u], x, x);
                } else {
                    acc[u] = vfmaq_f32(acc[u], a, b[u]);
                }
            }
        }
        for u in 0..4 {
            vst1q_f32(out.add(4 * u), acc[u]);
        }
    }
}

fn tile_bf16<const L2: bool>(q: &[f32], d: usize, panels: &[u16], out: &mut [f32], _ldo: usize) {
    assert!(q.len() >= d && panels.len() >= PANEL * d && out.len() >= PANEL);
    // SAFETY: bounds checked above; the table is only used when the CPU reports neon.
    unsafe { tile_bf16_impl::<L2>(q.as_ptr(), d, panels.as_ptr(), out.as_mut_ptr()) }
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

/// The NEON kernel table.
pub static KERNELS: Kernels = Kernels {
    level: Level::Neon,
    dot,
    l2sq,
    norm_sq,
    max_rows: 6,
    panels: 1,
    tile_dot: &TILE_DOT,
    tile_l2: &TILE_L2,
    tile_bf16: [tile_bf16::<false>, tile_bf16::<true>],
    pair_bf16: [super::scalar::pair_bf16::<false>, super::scalar::pair_bf16::<true>],
    pair_u8_l2: super::scalar::pair_u8_l2,
    pair_u8_i16: super::scalar::pair_u8_i16,
    tile_u8: [
        super::scalar::tile_u8::<1>,
        super::scalar::tile_u8::<2>,
        super::scalar::tile_u8::<3>,
        super::scalar::tile_u8::<4>,
    ],
    tile_u8_vnni: None,
};
