//! aarch64 NEON MaxSim kernels (selected through the runtime check like every level).
//!
//! Micro-tile: one query panel (16 query tokens = 4 q-registers per dimension) x 6 document
//! tokens, 24 accumulators; per dimension 4 panel loads and 6 broadcasts feed 24 FMAs.
//! f16 is widened in software (the `float16x4_t` intrinsics are not stable Rust).

use std::arch::aarch64::*;

use super::MaxSimKernels;
use crate::kernels::half::f16_to_f32;
use crate::kernels::layout::PANEL;
use crate::kernels::simd::Level;

const J: usize = 6;

#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const J: usize>(
    qp: *const f32,
    d: usize,
    doc: *const f32,
    scale: *const f32,
    mx: *mut f32,
    chk: &mut float32x4_t,
) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; J];
        for t in 0..d {
            let q = [
                vld1q_f32(qp.add(t * PANEL)),
                vld1q_f32(qp.add(t * PANEL + 4)),
                vld1q_f32(qp.add(t * PANEL + 8)),
                vld1q_f32(qp.add(t * PANEL + 12)),
            ];
            for (j, a) in acc.iter_mut().enumerate() {
                let b = vdupq_n_f32(*doc.add(j * d + t));
                for u in 0..4 {
                    a[u] = vfmaq_f32(a[u], q[u], b);
                }
            }
        }
        let zero = vdupq_n_f32(0.0);
        let mut m = [vld1q_f32(mx), vld1q_f32(mx.add(4)), vld1q_f32(mx.add(8)), vld1q_f32(mx.add(12))];
        for (j, a) in acc.iter().enumerate() {
            for u in 0..4 {
                let v = if scale.is_null() { a[u] } else { vmulq_n_f32(a[u], *scale.add(j)) };
                // Stays zero unless a score is NaN or infinite (x * 0 is NaN then).
                *chk = vfmaq_f32(*chk, v, zero);
                m[u] = vmaxq_f32(m[u], v);
            }
        }
        for (u, v) in m.iter().enumerate() {
            vst1q_f32(mx.add(4 * u), *v);
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn run(qp: *const f32, d: usize, doc: *const f32, n: usize, scale: *const f32, mx: *mut f32) -> bool {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let mut chk = vdupq_n_f32(0.0);
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
        // chk == chk fails in every NaN lane.
        vminvq_u32(vceqq_f32(chk, chk)) == u32::MAX
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
    assert!(panels == 1, "the NEON kernel takes one query panel per call");
    assert!(qp.len() >= d * PANEL && doc.len() >= n * d && mx.len() >= PANEL);
    assert!(scale.is_none_or(|s| s.len() >= n));
    let sp = scale.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: bounds checked above; the table is only used when the CPU reports neon.
    unsafe { run(qp.as_ptr(), d, doc.as_ptr(), n, sp, mx.as_mut_ptr()) }
}

/// f16 -> f32 in software.
pub fn f16(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (o, &h) in dst.iter_mut().zip(src) {
        *o = f16_to_f32(h);
    }
}

#[target_feature(enable = "neon")]
unsafe fn i8_impl(src: &[i8], dst: &mut [f32]) {
    // SAFETY: the caller guarantees this function's contract: the CPU features named in
    // its `target_feature` are present and every pointer is valid for the lengths read or written.
    unsafe {
        let n = src.len();
        let mut i = 0;
        while i + 8 <= n {
            let w = vmovl_s8(vld1_s8(src.as_ptr().add(i)));
            let lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
            let hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)));
            vst1q_f32(dst.as_mut_ptr().add(i), lo);
            vst1q_f32(dst.as_mut_ptr().add(i + 4), hi);
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
    // SAFETY: lengths checked; neon checked at run time before this table is used.
    unsafe { i8_impl(src, dst) }
}

/// The NEON MaxSim table.
pub static KERNELS: MaxSimKernels = MaxSimKernels { level: Level::Neon, max_panels: 1, block, f16, i8 };
