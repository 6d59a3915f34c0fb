//! Checks and conversions shared by every entry point that takes vectors or ids.

use std::collections::HashSet;

use crate::kernels::simd;
use crate::util::error::{Error, Result};

/// A copy of `src` with capacity for at least `cap` elements: grown buffers are built aside,
/// then swapped in, so an add never reallocates under a lock.
///
/// A buffer that must grow grows by at least half its length ([`grown_capacity`]), so a stream of
/// small adds copies each element a bounded number of times, as `Vec::push` does; large buffers
/// go on huge pages ([`crate::util::pages`]). The pages up to `cap` are faulted in here, so filling them
/// costs no page faults later (under a lock).
pub fn with_room<T: Copy>(src: &[T], cap: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(grown_capacity(src.len(), cap));
    crate::util::pages::advise(&v);
    v.extend_from_slice(src);
    crate::util::pages::prefault(&mut v, cap);
    v
}

/// The capacity a buffer of `len` elements gets when it must hold `want`: `len` when it already
/// does, else at least 1.5 `len` (amortized growth: a run of small adds costs O(1) copies per
/// element, not a copy of the whole buffer per add).
pub fn grown_capacity(len: usize, want: usize) -> usize {
    if want <= len {
        len
    } else {
        want.max(len.saturating_add(len / 2))
    }
}

/// Number of `d`-dimensional rows in `data`, or an error naming `what`.
pub fn rows(data: &[f32], d: usize, what: &str) -> Result<usize> {
    if d == 0 {
        return Err(Error::InvalidArgument("dimension must be at least 1".into()));
    }
    if !data.len().is_multiple_of(d) {
        return Err(Error::InvalidArgument(format!(
            "{what}: {} values is not a whole number of {d}-dimensional vectors",
            data.len()
        )));
    }
    Ok(data.len() / d)
}

/// Error if any value is NaN or infinite, naming the first offending row.
pub fn check_finite(data: &[f32], d: usize, what: &str) -> Result<()> {
    if data.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    let pos = data.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(Error::InvalidArgument(format!(
        "{what} contain NaN or infinity (first at row {}, column {})",
        pos / d.max(1),
        pos % d.max(1)
    )))
}

/// Squared norms at least this large (and finite) are computed in float32 exactly as before;
/// below it, squares of the components may have lost precision to underflow.
const F32_NORM_SQ_MIN: f32 = 1e-30;

/// `1 / ||x||`: in float32 (SIMD) when `||x||^2` is a normal, finite float32, else from an `f64`
/// sum, so that finite vectors whose squared norm overflows (values near 1e19 and above) or
/// underflows (near 1e-15 and below) float32 get the right norm. 0 for a zero vector.
#[inline]
fn inv_norm_f64(x: &[f32]) -> f64 {
    let n2 = simd::norm_sq(x);
    if n2.is_finite() && n2 >= F32_NORM_SQ_MIN {
        return (1.0 / n2.sqrt()) as f64;
    }
    let n = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    if n > 0.0 && n.is_finite() {
        1.0 / n
    } else {
        0.0
    }
}

/// `1 / ||x||` of a vector, 0 for a zero vector (so cosine with it is 0, never NaN). Right for
/// any finite vector (see `inv_norm_f64`); saturates at `f32::MAX` (vectors below about 1e-38).
#[inline]
pub fn inv_norm(x: &[f32]) -> f32 {
    inv_norm_f64(x).min(f32::MAX as f64) as f32
}

/// A copy of `data` with each row scaled to unit length (zero rows stay zero); every finite
/// row, however large or small, comes out of unit length (scaled in `f64` when needed).
pub fn normalized(data: &[f32], d: usize) -> Vec<f32> {
    let mut out = data.to_vec();
    for row in out.chunks_exact_mut(d) {
        let s = inv_norm_f64(row);
        if s <= f32::MAX as f64 {
            let s = s as f32;
            row.iter_mut().for_each(|x| *x *= s);
        } else {
            row.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
        }
    }
    out
}

/// Error on a negative id or an id repeated inside `ids`.
pub fn check_new_ids(ids: &[i64]) -> Result<()> {
    let mut seen = HashSet::with_capacity(ids.len());
    for &id in ids {
        if id < 0 {
            return Err(Error::InvalidArgument(format!("ids must be non-negative, got {id}")));
        }
        if !seen.insert(id) {
            return Err(Error::InvalidArgument(format!("duplicate id {id} in the ids passed")));
        }
    }
    Ok(())
}

/// The ids an `add` of `n` rows (`what`: "vectors", "documents") gets: `next_id..` when `ids`
/// is `None`, else `ids` after checking their count, [`check_new_ids`], and that none is
/// `taken` already.
pub fn new_ids(
    n: usize,
    ids: Option<&[i64]>,
    next_id: i64,
    what: &str,
    taken: impl Fn(i64) -> bool,
) -> Result<Vec<i64>> {
    let Some(ids) = ids else {
        return Ok((0..n as i64).map(|i| next_id + i).collect());
    };
    if ids.len() != n {
        return Err(Error::InvalidArgument(format!("got {} ids for {n} {what}", ids.len())));
    }
    check_new_ids(ids)?;
    if let Some(&dup) = ids.iter().find(|&&id| taken(id)) {
        return Err(Error::InvalidArgument(format!("id {dup} is already in the index")));
    }
    Ok(ids.to_vec())
}

#[cfg(test)]
mod tests {
    use super::{grown_capacity, with_room};

    #[test]
    fn buffers_grow_by_half_their_length_at_least() {
        assert_eq!(grown_capacity(0, 0), 0);
        assert_eq!(grown_capacity(0, 10), 10, "a first fill is exact");
        assert_eq!(grown_capacity(100, 90), 100, "room already");
        assert_eq!(grown_capacity(100, 101), 150, "one more row: half again");
        assert_eq!(grown_capacity(100, 400), 400, "a big batch: what it needs");
        assert_eq!(grown_capacity(usize::MAX, usize::MAX), usize::MAX);
        // A stream of single adds copies each element a bounded number of times.
        let (mut cap, mut copied) = (0usize, 0usize);
        for len in 0..100_000usize {
            if len + 1 > cap {
                copied += len;
                cap = grown_capacity(len, len + 1);
            }
        }
        assert!(copied <= 3 * 100_000, "{copied} element copies for 100,000 single adds");
        let v = with_room(&[1u32, 2, 3], 4);
        assert_eq!((v.as_slice(), v.capacity() >= 4), (&[1u32, 2, 3][..], true));
    }
}
