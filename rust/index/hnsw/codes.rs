//! The compact copy of the vectors that HNSW graph walks read ("walk codes"): none (walks read
//! the `f32` vectors), bfloat16 (2 bytes per dimension) or int8 (1 byte per dimension,
//! per-dimension scalar quantization, see [`crate::kernels::sq8`]). Walks over a copy keep candidates by
//! approximate distances; the search and the neighbour selection rescore them in `f32`, so
//! reported scores and the chosen links use exact distances.

use super::graph::{prefetch_bytes, Dist, HalfSpace};
use crate::format::storage::{Buf, Mapping};
use crate::invalid;
use crate::kernels::simd::{PairU8I16Fn, PairU8L2Fn};
use crate::kernels::sq8;
use crate::util::error::Result;

/// Which copy of the vectors the graph walks of an `HnswIndex` read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeKind {
    /// No copy: walks read the `f32` vectors.
    None,
    /// A bfloat16 copy (+50% of the `f32` bytes).
    Bf16,
    /// Int8 codes with per-dimension ranges (+25% of the `f32` bytes).
    Int8,
}

impl CodeKind {
    /// Parse `"none" | "bf16" | "int8"`.
    pub fn parse(name: &str) -> Result<CodeKind> {
        match name {
            "none" => Ok(CodeKind::None),
            "bf16" => Ok(CodeKind::Bf16),
            "int8" => Ok(CodeKind::Int8),
            other => Err(invalid!("unknown codes {other:?}: expected \"bf16\", \"int8\" or \"none\"")),
        }
    }

    /// The name [`CodeKind::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            CodeKind::None => "none",
            CodeKind::Bf16 => "bf16",
            CodeKind::Int8 => "int8",
        }
    }

    /// The parameter word saved for this kind (0 and 1 are the `prefilter` flag of older files).
    pub(super) fn word(self) -> i64 {
        match self {
            CodeKind::None => 0,
            CodeKind::Bf16 => 1,
            CodeKind::Int8 => 2,
        }
    }

    /// The kind of a saved parameter word.
    pub(super) fn from_word(w: i64) -> Option<CodeKind> {
        match w {
            0 => Some(CodeKind::None),
            1 => Some(CodeKind::Bf16),
            2 => Some(CodeKind::Int8),
            _ => None,
        }
    }
}

/// Int8 codes of the vectors (row-major, `dim` bytes per slot) and their quantizer.
pub(crate) struct Int8Codes {
    /// One code per dimension and slot.
    pub codes: Buf<u8>,
    /// Per-dimension minimum of the ranges (empty until fit).
    pub vmin: Vec<f32>,
    /// Per-dimension step of the ranges (empty until fit).
    pub step: Vec<f32>,
    /// Slots the ranges were last fit on (0: not fit yet).
    pub fit_rows: usize,
}

/// The walk copy held by an index.
pub(crate) enum WalkCodes {
    /// No copy.
    None,
    /// bfloat16 bit patterns, row-major.
    Bf16(Buf<u16>),
    /// Int8 codes.
    Int8(Int8Codes),
}

impl WalkCodes {
    /// An empty copy of `kind`.
    pub fn new(kind: CodeKind) -> WalkCodes {
        match kind {
            CodeKind::None => WalkCodes::None,
            CodeKind::Bf16 => WalkCodes::Bf16(Buf::default()),
            CodeKind::Int8 => WalkCodes::Int8(Int8Codes {
                codes: Buf::default(),
                vmin: Vec::new(),
                step: Vec::new(),
                fit_rows: 0,
            }),
        }
    }

    /// Which copy this is.
    pub fn kind(&self) -> CodeKind {
        match self {
            WalkCodes::None => CodeKind::None,
            WalkCodes::Bf16(_) => CodeKind::Bf16,
            WalkCodes::Int8(_) => CodeKind::Int8,
        }
    }

    /// Write the copies of `rows` (`order.len() x d`, already stored in `all`) into their slots of
    /// `order`; `all` holds every slot's `f32` vector (`total x d`).
    ///
    /// Int8 ranges are fit on the first vectors stored. A later batch with values outside them
    /// refits the ranges on every stored vector (and re-encodes them all) once the index holds
    /// at least twice the vectors of the last fit, so the ranges always come from at least half
    /// of the vectors and re-encoding costs at most one extra encode per vector, amortized;
    /// otherwise its values clamp (the walk's distances to those vectors are then rougher, and
    /// rescoring in `f32` keeps results exact).
    pub fn store(&mut self, order: &[u32], rows: &[f32], all: &[f32], d: usize) {
        let total = all.len() / d;
        match self {
            WalkCodes::None => {}
            WalkCodes::Bf16(half) => {
                let half = half.to_mut();
                crate::util::pages::reserve(half, total * d);
                half.resize(total * d, 0);
                for (&s, row) in order.iter().zip(rows.chunks_exact(d)) {
                    let s = s as usize;
                    for (h, &x) in half[s * d..(s + 1) * d].iter_mut().zip(row) {
                        *h = crate::kernels::half::to_bf16(x);
                    }
                }
            }
            WalkCodes::Int8(c) => {
                let refit = c.fit_rows == 0
                    || (total >= 2 * c.fit_rows && sq8::out_of_range(&c.vmin, &c.step, rows, d));
                let codes = c.codes.to_mut();
                crate::util::pages::reserve(codes, total * d);
                codes.resize(total * d, 0);
                if refit {
                    (c.vmin, c.step) = sq8::fit(all, d);
                    c.fit_rows = total;
                    for (row, out) in all.chunks_exact(d).zip(codes.chunks_exact_mut(d)) {
                        sq8::encode(&c.vmin, &c.step, row, out);
                    }
                } else {
                    for (&s, row) in order.iter().zip(rows.chunks_exact(d)) {
                        let s = s as usize;
                        sq8::encode(&c.vmin, &c.step, row, &mut codes[s * d..(s + 1) * d]);
                    }
                }
            }
        }
    }

    /// Bytes of heap memory held (a mapped file's pages are not counted).
    pub fn heap_bytes(&self) -> usize {
        match self {
            WalkCodes::None => 0,
            WalkCodes::Bf16(h) => h.heap_bytes(),
            WalkCodes::Int8(c) => c.codes.heap_bytes() + (c.vmin.capacity() + c.step.capacity()) * 4,
        }
    }

    /// A copy with room for `len` code elements in all, or `None` when this one has room (and
    /// is not mapped). Built aside while searches read this one; see [`super::HnswIndex::room_for`].
    pub fn with_room(&self, len: usize) -> Option<WalkCodes> {
        match self {
            WalkCodes::None => None,
            WalkCodes::Bf16(h) => h.with_room(len).map(WalkCodes::Bf16),
            WalkCodes::Int8(c) => c.codes.with_room(len).map(|codes| {
                WalkCodes::Int8(Int8Codes {
                    codes,
                    vmin: c.vmin.clone(),
                    step: c.step.clone(),
                    fit_rows: c.fit_rows,
                })
            }),
        }
    }

    /// Number of code elements held.
    pub fn len(&self) -> usize {
        match self {
            WalkCodes::None => 0,
            WalkCodes::Bf16(h) => h.as_slice().len(),
            WalkCodes::Int8(c) => c.codes.as_slice().len(),
        }
    }

    /// The file mapping the copy is read from, if any.
    pub fn mapping(&self) -> Option<&Mapping> {
        match self {
            WalkCodes::None => None,
            WalkCodes::Bf16(h) => h.mapping(),
            WalkCodes::Int8(c) => c.codes.mapping(),
        }
    }

    /// The distances a walk reads from this copy (`None` when walks read the `f32` vectors).
    pub fn walker(&self, d: usize, l2: bool) -> Walker<'_> {
        match self {
            WalkCodes::None => Walker::F32,
            WalkCodes::Bf16(h) => Walker::Bf16(HalfSpace::new(h.as_slice(), d, l2)),
            WalkCodes::Int8(c) => Walker::Int8(Int8Space::new(c, d, l2)),
        }
    }
}

/// The distances of one walk copy, for the walk code to dispatch on.
pub(crate) enum Walker<'a> {
    /// Walks read the `f32` vectors.
    F32,
    /// Walks read the bfloat16 copy.
    Bf16(HalfSpace<'a>),
    /// Walks read the int8 codes.
    Int8(Int8Space<'a>),
}

/// A query folded into the int8 quantizer. For the inner product `dot(q, decoded) = bias +
/// sum_t (q[t] * step[t]) * code[t]` with `bias = dot(q, min)`, the weights `q * step` held as
/// 16-bit fixed point (`w16 * scale`, the largest as large as i32 sums allow: an error of at
/// most `scale / 2` per weight, under 1/40,000 of the largest for 384 dimensions), so the
/// kernel multiplies integers (`vpmaddwd`) instead of widening every code to `f32`: measured
/// 10-20% faster walks on 384-d MiniLM vectors at equal recall. For squared L2
/// `sum_t (step[t] * code[t] - w[t])^2` with `w = q - min` (`f32`).
pub(crate) struct Prepared {
    w: Vec<f32>,
    w16: Vec<i16>,
    scale: f32,
    bias: f32,
}

/// The int8 codes as the walk reads them: the distance of a query (see [`Prepared`]) and a
/// decoded row, with the kernels of the current SIMD level.
pub(crate) struct Int8Space<'a> {
    codes: &'a [u8],
    vmin: &'a [f32],
    step: &'a [f32],
    d: usize,
    l2: bool,
    l2_kernel: PairU8L2Fn,
    dot_kernel: PairU8I16Fn,
}

impl<'a> Int8Space<'a> {
    fn new(c: &'a Int8Codes, d: usize, l2: bool) -> Int8Space<'a> {
        let k = crate::kernels::simd::kernels();
        Int8Space {
            codes: c.codes.as_slice(),
            vmin: &c.vmin,
            step: &c.step,
            d,
            l2,
            l2_kernel: k.pair_u8_l2,
            dot_kernel: k.pair_u8_i16,
        }
    }

    /// Fold query `q` into the quantizer (once per walk).
    pub fn prepare(&self, q: &[f32]) -> Prepared {
        if self.l2 {
            let w = q.iter().zip(self.vmin).map(|(a, m)| a - m).collect();
            return Prepared { w, w16: Vec::new(), scale: 0.0, bias: 0.0 };
        }
        let w: Vec<f32> = q.iter().zip(self.step).map(|(a, s)| a * s).collect();
        let top = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale =
            if top > 0.0 { top / crate::kernels::simd::fixed_point_bound(self.d) as f32 } else { 1.0 };
        let w16 = w.iter().map(|x| (x / scale).round() as i16).collect();
        Prepared { w: Vec::new(), w16, scale, bias: crate::kernels::simd::dot(q, self.vmin) }
    }
}

impl Dist for Int8Space<'_> {
    type Query = Prepared;

    #[inline]
    fn dist(&self, q: &Prepared, s: u32) -> f32 {
        let at = s as usize * self.d;
        let row = &self.codes[at..at + self.d];
        if self.l2 {
            (self.l2_kernel)(&q.w, self.step, row)
        } else {
            -(q.bias + q.scale * (self.dot_kernel)(&q.w16, row) as f32)
        }
    }

    #[inline]
    fn row_bytes(&self) -> usize {
        self.d
    }

    #[inline]
    fn prefetch(&self, s: u32, lines: usize) {
        let at = s as usize * self.d;
        if at < self.codes.len() {
            prefetch_bytes(self.codes[at..].as_ptr(), self.d.min(lines.saturating_mul(64)));
        }
    }
}
