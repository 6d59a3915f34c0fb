//! The block layout of stored vectors: blocks of [`BLOCK`] vectors, each made of panels of
//! [`PANEL`] vectors stored dimension-major, so the tile kernels stream them with unit stride.

use crate::kernels::layout::{BLOCK, PANEL, QUAD};

/// Number of `f32` a buffer needs to hold `n` vectors of dimension `d` in block layout.
#[inline]
pub fn packed_len(n: usize, d: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK * d
}

/// Offset of component `t` of vector `slot`.
#[inline]
pub fn offset(slot: usize, d: usize, t: usize) -> usize {
    (slot / PANEL) * PANEL * d + t * PANEL + slot % PANEL
}

/// Write `v` as vector `slot` of a block-layout buffer.
pub fn write_vector<T: Copy>(buf: &mut [T], d: usize, slot: usize, v: &[T]) {
    let base = (slot / PANEL) * PANEL * d + slot % PANEL;
    for (t, &x) in v.iter().enumerate() {
        buf[base + t * PANEL] = x;
    }
}

/// Read vector `slot` of a block-layout buffer into `out`.
pub fn read_vector<T: Copy>(buf: &[T], d: usize, slot: usize, out: &mut [T]) {
    let base = (slot / PANEL) * PANEL * d + slot % PANEL;
    for (t, o) in out.iter_mut().enumerate() {
        *o = buf[base + t * PANEL];
    }
}

/// Width of a vector in the quad layout of u8 codes: `d` rounded up to a multiple of [`QUAD`]
/// (the padding dimensions hold code 0).
#[inline]
pub fn quad_dim(d: usize) -> usize {
    d.div_ceil(QUAD) * QUAD
}

/// Offset of component `t` of vector `slot` in the quad layout of width `dp` (see
/// [`crate::kernels::simd::TileU8Fn`]): panels of [`PANEL`] vectors, [`QUAD`] dimensions per lane.
#[inline]
pub fn quad_offset(slot: usize, dp: usize, t: usize) -> usize {
    (slot / PANEL) * PANEL * dp + (t / QUAD) * QUAD * PANEL + (slot % PANEL) * QUAD + t % QUAD
}

/// Write `v` (at most `dp` codes) as vector `slot` of a quad-layout buffer of width `dp`.
pub fn write_quad(buf: &mut [u8], dp: usize, slot: usize, v: &[u8]) {
    for (t, &x) in v.iter().enumerate() {
        buf[quad_offset(slot, dp, t)] = x;
    }
}

/// Read the first `out.len()` codes of vector `slot` of a quad-layout buffer of width `dp`.
pub fn read_quad(buf: &[u8], dp: usize, slot: usize, out: &mut [u8]) {
    for (t, o) in out.iter_mut().enumerate() {
        *o = buf[quad_offset(slot, dp, t)];
    }
}

/// Pack `rows` (`n x d`, row-major) into `dst` (block layout, `packed_len(n, d)` long) starting
/// at vector 0, multiplying row `i` by `scale[i]` when given. Padding lanes are zeroed.
pub fn pack_rows(rows: &[f32], d: usize, scale: Option<&[f32]>, dst: &mut [f32]) {
    let n = rows.len().checked_div(d).unwrap_or(0);
    let panels = n.div_ceil(BLOCK) * (BLOCK / PANEL);
    for p in 0..panels {
        let out = &mut dst[p * PANEL * d..(p + 1) * PANEL * d];
        let first = p * PANEL;
        let count = n.saturating_sub(first).min(PANEL);
        if count < PANEL {
            out.fill(0.0);
        }
        for j in 0..count {
            let row = &rows[(first + j) * d..(first + j + 1) * d];
            let s = scale.map_or(1.0, |s| s[first + j]);
            for (t, &x) in row.iter().enumerate() {
                out[t * PANEL + j] = x * s;
            }
        }
    }
}

/// Unpack the first `n` vectors of a block-layout buffer into row-major order.
pub fn unpack_rows(buf: &[f32], d: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * d];
    for (slot, row) in out.chunks_exact_mut(d.max(1)).enumerate().take(n) {
        read_vector(buf, d, slot, row);
    }
    out
}
