//! Per-dimension 8-bit scalar quantization (FAISS SQ8): dimension `t` of a vector is stored as
//! the code `round((x[t] - min[t]) / step[t])`, clamped to `0..=255`, and decodes to
//! `min[t] + step[t] * code`. The ranges are fit on a sample (its per-dimension minimum and
//! maximum); values outside them clamp. Shared by the int8 lists of `IVFIndex` and the int8
//! walk copy of `HNSWIndex`.

/// Per-dimension `(min, step)` of the ranges of `rows` (`n x d`, row-major, `n >= 1`): the codes
/// `0..=255` span `[min, max]`; a constant dimension gets step 1.
pub fn fit(rows: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let mut lo = vec![f32::INFINITY; d];
    let mut hi = vec![f32::NEG_INFINITY; d];
    for row in rows.chunks_exact(d) {
        for t in 0..d {
            lo[t] = lo[t].min(row[t]);
            hi[t] = hi[t].max(row[t]);
        }
    }
    let step = lo.iter().zip(&hi).map(|(l, h)| if h > l { (h - l) / 255.0 } else { 1.0 }).collect();
    (lo, step)
}

/// Encode `row` into `codes` (the first `row.len()` of them); returns the squared norm of the
/// decoded vector.
pub fn encode(vmin: &[f32], step: &[f32], row: &[f32], codes: &mut [u8]) -> f32 {
    let mut norm = 0f32;
    for (t, (&x, c)) in row.iter().zip(codes.iter_mut()).enumerate() {
        let q = ((x - vmin[t]) / step[t]).round().clamp(0.0, 255.0);
        *c = q as u8;
        let dec = vmin[t] + q * step[t];
        norm += dec * dec;
    }
    norm
}

/// True when some value of `rows` (`n x d`) lies outside the ranges by more than half a step
/// (it would clamp).
pub fn out_of_range(vmin: &[f32], step: &[f32], rows: &[f32], d: usize) -> bool {
    rows.chunks_exact(d).any(|row| {
        row.iter().enumerate().any(|(t, &x)| {
            let q = (x - vmin[t]) / step[t];
            !(-0.5..=255.5).contains(&q)
        })
    })
}
