//! Portable reference kernels. Every SIMD level is tested against these.

use super::{Kernels, Level, TileFn};
use crate::kernels::layout::{PANEL, QUAD};

/// Inner product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Squared Euclidean distance.
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let t = x - y;
            t * t
        })
        .sum()
}

/// Squared L2 norm.
pub fn norm_sq(a: &[f32]) -> f32 {
    a.iter().map(|x| x * x).sum()
}

fn tile<const R: usize, const L2: bool>(q: &[f32], d: usize, panels: &[f32], out: &mut [f32], ldo: usize) {
    assert!(q.len() >= R * d && panels.len() >= PANEL * d && out.len() >= (R - 1) * ldo + PANEL);
    for r in 0..R {
        let row = &q[r * d..(r + 1) * d];
        let mut acc = [0f32; PANEL];
        for (t, &a) in row.iter().enumerate() {
            let b = &panels[t * PANEL..(t + 1) * PANEL];
            for j in 0..PANEL {
                if L2 {
                    let diff = a - b[j];
                    acc[j] += diff * diff;
                } else {
                    acc[j] += a * b[j];
                }
            }
        }
        out[r * ldo..r * ldo + PANEL].copy_from_slice(&acc);
    }
}

fn tile_bf16<const L2: bool>(q: &[f32], d: usize, panels: &[u16], out: &mut [f32], ldo: usize) {
    let _ = ldo;
    assert!(q.len() >= d && panels.len() >= PANEL * d && out.len() >= PANEL);
    let mut acc = [0f32; PANEL];
    for (t, &a) in q[..d].iter().enumerate() {
        let b = &panels[t * PANEL..(t + 1) * PANEL];
        for j in 0..PANEL {
            let x = crate::kernels::half::from_bf16(b[j]);
            if L2 {
                let diff = a - x;
                acc[j] += diff * diff;
            } else {
                acc[j] += a * x;
            }
        }
    }
    out[..PANEL].copy_from_slice(&acc);
}

/// One query against one bfloat16 row: inner product, or squared L2 with `L2` (reference).
pub fn pair_bf16<const L2: bool>(q: &[f32], x: &[u16]) -> f32 {
    q.iter()
        .zip(x)
        .map(|(&a, &h)| {
            let b = f32::from_bits((h as u32) << 16);
            if L2 {
                (a - b) * (a - b)
            } else {
                a * b
            }
        })
        .sum()
}

/// Squared L2 of one prepared query and one row of u8 codes: `sum (step * x - q)^2`
/// (reference; see [`super::PairU8L2Fn`]).
pub fn pair_u8_l2(q: &[f32], step: &[f32], x: &[u8]) -> f32 {
    let n = q.len().min(x.len());
    q[..n]
        .iter()
        .zip(&step[..n])
        .zip(&x[..n])
        .map(|((&a, &s), &c)| {
            let t = s * c as f32 - a;
            t * t
        })
        .sum()
}

/// 16-bit fixed-point weights times u8 codes, exact in i32 (reference; see
/// [`super::PairU8I16Fn`]).
pub fn pair_u8_i16(w: &[i16], x: &[u8]) -> i32 {
    w.iter().zip(x).map(|(&a, &c)| a as i32 * c as i32).sum()
}

/// u8 codes (quad layout) times int8 weights, exact in i32 (reference).
pub fn tile_u8<const R: usize>(w: &[i8], dp: usize, codes: &[u8], out: &mut [i32], ldo: usize) {
    assert!(dp.is_multiple_of(QUAD));
    assert!(w.len() >= R * dp && codes.len() >= PANEL * dp && out.len() >= (R - 1) * ldo + PANEL);
    for r in 0..R {
        let mut acc = [0i32; PANEL];
        for (t, &a) in w[r * dp..(r + 1) * dp].iter().enumerate() {
            let base = (t / QUAD) * QUAD * PANEL + t % QUAD;
            for j in 0..PANEL {
                acc[j] += a as i32 * codes[base + j * QUAD] as i32;
            }
        }
        out[r * ldo..r * ldo + PANEL].copy_from_slice(&acc);
    }
}

static TILE_DOT: [TileFn; 4] = [tile::<1, false>, tile::<2, false>, tile::<3, false>, tile::<4, false>];
static TILE_L2: [TileFn; 4] = [tile::<1, true>, tile::<2, true>, tile::<3, true>, tile::<4, true>];

/// The scalar kernel table.
pub static KERNELS: Kernels = Kernels {
    level: Level::Scalar,
    dot,
    l2sq,
    norm_sq,
    max_rows: 4,
    panels: 1,
    tile_dot: &TILE_DOT,
    tile_l2: &TILE_L2,
    tile_bf16: [tile_bf16::<false>, tile_bf16::<true>],
    pair_bf16: [pair_bf16::<false>, pair_bf16::<true>],
    pair_u8_l2,
    pair_u8_i16,
    tile_u8: [tile_u8::<1>, tile_u8::<2>, tile_u8::<3>, tile_u8::<4>],
    tile_u8_vnni: None,
};
