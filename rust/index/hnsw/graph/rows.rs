//! Rows the walk reads: candidates, distances over `f32` or bfloat16 rows, and prefetching a few
//! rows ahead of use.

use std::cmp::Ordering;

/// A node and its distance to the query (lower is better); ordered by distance, then slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cand {
    pub d: f32,
    pub s: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.s.cmp(&o.s))
    }
}

impl PartialOrd for Cand {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Distances from a query to stored nodes, as the graph walk needs them.
pub(crate) trait Dist: Sync {
    /// A query as these distances take it: the `f32` vector, or a form prepared for a
    /// quantized copy.
    type Query: ?Sized;
    /// Distance from a query to a stored vector (lower is better).
    fn dist(&self, q: &Self::Query, s: u32) -> f32;
    /// Ask the CPU to start loading the first `lines` cache lines of a stored vector.
    fn prefetch(&self, s: u32, lines: usize);
    /// Bytes of one stored vector.
    fn row_bytes(&self) -> usize;
}

#[inline]
pub(crate) fn prefetch_bytes(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch never faults; the caller keeps `p + off` within one row.
            #[allow(unused_unsafe)]
            unsafe {
                std::arch::x86_64::_mm_prefetch(
                    p.wrapping_add(off) as *const i8,
                    std::arch::x86_64::_MM_HINT_T0,
                )
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// Stored row-major vectors (`f32`, or the bfloat16 copy as `u16`) and the distance of the
/// index metric (lower is better: squared L2, or the negated inner product for cosine and dot).
pub(crate) struct Rows<'a, T> {
    pub data: &'a [T],
    pub d: usize,
    pub l2: bool,
    f: fn(&[f32], &[T]) -> f32,
}

/// The `f32` vectors.
pub(crate) type Space<'a> = Rows<'a, f32>;

/// The bfloat16 copy of the vectors: the walk reads half the bytes; callers rescore in `f32`.
pub(crate) type HalfSpace<'a> = Rows<'a, u16>;

impl<'a> Space<'a> {
    /// A view of row-major `data` with the kernels of the current SIMD level.
    pub fn new(data: &'a [f32], d: usize, l2: bool) -> Space<'a> {
        let k = crate::kernels::simd::kernels();
        Rows { data, d, l2, f: if l2 { k.l2sq } else { k.dot } }
    }

    /// Distance between two stored vectors.
    #[inline]
    pub fn between(&self, a: u32, b: u32) -> f32 {
        self.dist(self.row(a), b)
    }
}

impl<'a> HalfSpace<'a> {
    /// A view of row-major bfloat16 `data` with the kernel of the current SIMD level.
    pub fn new(data: &'a [u16], d: usize, l2: bool) -> HalfSpace<'a> {
        Rows { data, d, l2, f: crate::kernels::simd::kernels().pair_bf16[l2 as usize] }
    }
}

impl<'a, T> Rows<'a, T> {
    #[inline]
    pub fn row(&self, s: u32) -> &'a [T] {
        let at = s as usize * self.d;
        &self.data[at..at + self.d]
    }
}

impl<T: Sync> Dist for Rows<'_, T> {
    type Query = [f32];

    #[inline]
    fn dist(&self, q: &[f32], s: u32) -> f32 {
        let v = (self.f)(q, self.row(s));
        if self.l2 {
            v
        } else {
            -v
        }
    }

    #[inline]
    fn row_bytes(&self) -> usize {
        self.d * std::mem::size_of::<T>()
    }

    #[inline]
    fn prefetch(&self, s: u32, lines: usize) {
        let at = s as usize * self.d;
        if at < self.data.len() {
            let bytes = self.d * std::mem::size_of::<T>();
            prefetch_bytes(self.data[at..].as_ptr() as *const u8, bytes.min(lines.saturating_mul(64)));
        }
    }
}

/// Rows whose loads a walk starts ahead of use: a few at a time, not all at once. Prefetching
/// every neighbour's row up front issues more misses than the core can track, and the
/// prefetches themselves then stall. About 24 cache lines in flight did best, measured on
/// 384-d MiniLM vectors (int8 walks: 22-25% more queries per second than every row up front)
/// and on generated 32- to 768-d data with int8 and float32 walks: 16 rows of one line ahead,
/// 4 rows of six lines, 2 rows of twelve or more.
pub(crate) struct Prefetched<'a, S: Dist, T: RowRef = u32> {
    space: &'a S,
    items: &'a [T],
    ahead: usize,
    at: usize,
}

/// An item that names a stored row: a slot, or a candidate.
pub(crate) trait RowRef: Copy {
    /// The slot of the row.
    fn slot(self) -> u32;
}

impl RowRef for u32 {
    #[inline]
    fn slot(self) -> u32 {
        self
    }
}

impl RowRef for Cand {
    #[inline]
    fn slot(self) -> u32 {
        self.s
    }
}

impl<'a, S: Dist, T: RowRef> Prefetched<'a, S, T> {
    /// Cache lines to keep loading at once.
    const LINES: usize = 24;

    /// Start loading the rows of the first `items`.
    #[inline]
    pub fn new(space: &'a S, items: &'a [T]) -> Self {
        let ahead = (Self::LINES / space.row_bytes().div_ceil(64).max(1)).clamp(2, 16);
        for &t in items.iter().take(ahead) {
            space.prefetch(t.slot(), usize::MAX);
        }
        Prefetched { space, items, ahead, at: 0 }
    }
}

impl<S: Dist, T: RowRef> Iterator for Prefetched<'_, S, T> {
    type Item = T;

    /// The next item, starting the load of the row `ahead` places on.
    #[inline]
    fn next(&mut self) -> Option<T> {
        let t = *self.items.get(self.at)?;
        if let Some(&later) = self.items.get(self.at + self.ahead) {
            self.space.prefetch(later.slot(), usize::MAX);
        }
        self.at += 1;
        Some(t)
    }
}
