//! Portable reference MaxSim kernels; every SIMD level is tested against these.

use super::MaxSimKernels;
use crate::kernels::half::f16_to_f32;
use crate::kernels::layout::PANEL;
use crate::kernels::simd::Level;

/// Fused block kernel (see [`super::BlockFn`]): one dot product per (query token, doc token),
/// summed in dimension order.
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
    let mut ok = true;
    for j in 0..n {
        let row = &doc[j * d..(j + 1) * d];
        let s = scale.map_or(1.0, |s| s[j]);
        for p in 0..panels {
            let panel = &qp[p * d * PANEL..(p + 1) * d * PANEL];
            let mut acc = [0f32; PANEL];
            for (t, &x) in row.iter().enumerate() {
                let q = &panel[t * PANEL..(t + 1) * PANEL];
                for i in 0..PANEL {
                    acc[i] += q[i] * x;
                }
            }
            for i in 0..PANEL {
                let v = acc[i] * s;
                ok &= v.is_finite();
                let m = &mut mx[p * PANEL + i];
                if v > *m {
                    *m = v;
                }
            }
        }
    }
    ok
}

/// f16 -> f32 in software.
pub fn f16(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (o, &h) in dst.iter_mut().zip(src) {
        *o = f16_to_f32(h);
    }
}

/// int8 -> f32.
pub fn i8(src: &[i8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (o, &c) in dst.iter_mut().zip(src) {
        *o = c as f32;
    }
}

/// The scalar MaxSim table.
pub static KERNELS: MaxSimKernels = MaxSimKernels { level: Level::Scalar, max_panels: 4, block, f16, i8 };
