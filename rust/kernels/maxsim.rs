//! MaxSim, the late-interaction score of ColBERT:
//! `maxsim(Q, D) = sum_i max_j <q_i, d_j>` over query tokens `q_i` and document tokens `d_j`.
//!
//! The kernels are fused: query tokens are packed dimension-major in panels of [`PANEL`] tokens
//! (`panel[t * PANEL + i] = q_i[t]`), and one broadcast of a document value `d_j[t]` times a
//! panel register accumulates `PANEL` query tokens at once. A micro-tile holds `P` query panels
//! x `J` document tokens in registers; after the `d` steps each column is folded into a running
//! row-maximum, so the `(m, n)` score matrix is never written. Documents are read in place,
//! row-major, with no padding to a common length; a tail shorter than `J` is scored by a tile
//! that overlaps tokens already seen (the maximum is idempotent), so no remainder kernels are
//! needed. Documents are spread over threads.
//!
//! Document tokens may be f32, f16 (IEEE half; widened with F16C / AVX-512 when present) or int8
//! with a per-token or per-dimension scale. Converted types are widened block by block into a
//! small f32 buffer that stays in L1; a per-dimension scale is folded into the packed query and a
//! per-token scale multiplies that token's scores before the maximum.
//!
//! Conventions: an empty document scores 0; a non-finite score (NaN or infinity in a document,
//! or an overflow) is an error naming the document.

use rayon::prelude::*;

use crate::kernels::layout::PANEL;
use crate::kernels::simd::{self, Level};
use crate::util::error::{Error, Result};
use crate::util::parallel;

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// Folds `n` row-major document tokens into the running maxima of `panels` query panels.
///
/// `qp` holds the panels dimension-major (`qp[(p * d + t) * PANEL + i]`), `mx` their running
/// maxima (`mx[p * PANEL + i]`). With `scale`, token `j`'s scores are multiplied by `scale[j]`
/// first. Returns `false` when any score was not finite. `panels` is at most
/// [`MaxSimKernels::max_panels`]; `n` may be 0.
pub type BlockFn = fn(
    qp: &[f32],
    panels: usize,
    d: usize,
    doc: &[f32],
    n: usize,
    scale: Option<&[f32]>,
    mx: &mut [f32],
) -> bool;

/// Widens IEEE half bit patterns to f32 (`dst.len() == src.len()`).
pub type F16Fn = fn(src: &[u16], dst: &mut [f32]);

/// Widens int8 values to f32 (`dst.len() == src.len()`).
pub type I8Fn = fn(src: &[i8], dst: &mut [f32]);

/// The MaxSim kernels of one SIMD level.
pub struct MaxSimKernels {
    /// Level these kernels run at.
    pub level: Level,
    /// Most query panels one [`BlockFn`] call takes.
    pub max_panels: usize,
    /// The fused block kernel.
    pub block: BlockFn,
    /// f16 -> f32 conversion.
    pub f16: F16Fn,
    /// int8 -> f32 conversion.
    pub i8: I8Fn,
}

/// The MaxSim kernels of the current [`simd::level`].
pub fn kernels() -> &'static MaxSimKernels {
    kernels_for(simd::level())
}

/// The MaxSim kernels of a level; the scalar ones when this CPU lacks it.
pub fn kernels_for(level: Level) -> &'static MaxSimKernels {
    if !simd::available().contains(&level) {
        return &scalar::KERNELS;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => &avx512::KERNELS,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => &avx2::KERNELS,
        #[cfg(target_arch = "aarch64")]
        Level::Neon => &neon::KERNELS,
        _ => &scalar::KERNELS,
    }
}

/// Scale of int8 document tokens.
#[derive(Clone, Copy, Debug)]
pub enum Scale<'a> {
    /// One scale per token (`value = code * scale[token]`).
    Token(&'a [f32]),
    /// One scale per dimension (`value = code * scale[t]`).
    Dim(&'a [f32]),
}

/// Document tokens of a packed collection, all documents back to back (`N x d`, row-major).
#[derive(Clone, Copy, Debug)]
pub enum Tokens<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half bit patterns.
    F16(&'a [u16]),
    /// int8 codes with their scale.
    I8 {
        /// Codes.
        codes: &'a [i8],
        /// Scale per token or per dimension.
        scale: Scale<'a>,
    },
}

impl Tokens<'_> {
    fn len(&self) -> usize {
        match self {
            Tokens::F32(x) => x.len(),
            Tokens::F16(x) => x.len(),
            Tokens::I8 { codes, .. } => codes.len(),
        }
    }
}

/// The documents MaxSim scores.
#[derive(Clone, Copy, Debug)]
pub enum Docs<'a> {
    /// One row-major `n_i x d` f32 slice per document.
    List(&'a [&'a [f32]]),
    /// Packed tokens; document `i` is rows `offsets[i]..offsets[i + 1]`.
    Packed {
        /// The tokens.
        tokens: Tokens<'a>,
        /// `n_docs + 1` non-decreasing row offsets, from 0 to the number of rows.
        offsets: &'a [i64],
    },
}

impl Docs<'_> {
    /// Number of documents.
    pub fn len(&self) -> usize {
        match self {
            Docs::List(l) => l.len(),
            Docs::Packed { offsets, .. } => offsets.len().saturating_sub(1),
        }
    }

    /// True when there are no documents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check shapes against dimension `d`.
    pub fn validate(&self, d: usize) -> Result<()> {
        match *self {
            Docs::List(list) => {
                for (i, doc) in list.iter().enumerate() {
                    if !doc.len().is_multiple_of(d) {
                        return Err(Error::InvalidArgument(format!(
                            "document {i}: {} values is not a whole number of {d}-dimensional tokens",
                            doc.len()
                        )));
                    }
                }
            }
            Docs::Packed { tokens, offsets } => {
                if offsets.is_empty() {
                    return Err(Error::InvalidArgument("offsets must hold n_docs + 1 values".into()));
                }
                if !tokens.len().is_multiple_of(d) {
                    return Err(Error::InvalidArgument(format!(
                        "packed tokens: {} values is not a whole number of {d}-dimensional tokens",
                        tokens.len()
                    )));
                }
                let rows = (tokens.len() / d) as i64;
                if offsets[0] != 0 || *offsets.last().unwrap() != rows {
                    return Err(Error::InvalidArgument(format!(
                        "offsets must start at 0 and end at the number of tokens ({rows}), got {} .. {}",
                        offsets[0],
                        offsets.last().unwrap()
                    )));
                }
                if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
                    return Err(Error::InvalidArgument(format!(
                        "offsets must be non-decreasing (offsets[{}] > offsets[{}])",
                        i,
                        i + 1
                    )));
                }
                if let Tokens::I8 { scale, .. } = tokens {
                    let (len, want, what) = match scale {
                        Scale::Token(s) => (s.len(), rows as usize, "one per token"),
                        Scale::Dim(s) => (s.len(), d, "one per dimension"),
                    };
                    if len != want {
                        return Err(Error::InvalidArgument(format!(
                            "int8 scales: got {len}, expected {want} ({what})"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A query packed for the kernels: `ceil(m / PANEL)` panels of `d x PANEL`, zero-padded.
#[derive(Clone, Debug)]
pub struct PackedQuery {
    buf: Vec<f32>,
    /// Start of the panels in `buf`, chosen so they are 64-byte aligned (no split loads).
    off: usize,
    m: usize,
}

impl PackedQuery {
    /// Pack `m x d` row-major query tokens, each dimension `t` multiplied by `dim_scale[t]`.
    pub fn new(q: &[f32], d: usize, dim_scale: Option<&[f32]>) -> PackedQuery {
        let m = q.len() / d;
        let len = m.div_ceil(PANEL) * d * PANEL;
        let mut buf = vec![0f32; len + PANEL];
        let off = (buf.as_ptr() as usize / 4).wrapping_neg() % PANEL;
        let panels = &mut buf[off..off + len];
        for (i, row) in q.chunks_exact(d).enumerate() {
            let (p, lane) = (i / PANEL, i % PANEL);
            for (t, &x) in row.iter().enumerate() {
                let s = dim_scale.map_or(1.0, |s| s[t]);
                panels[(p * d + t) * PANEL + lane] = x * s;
            }
        }
        PackedQuery { buf, off, m }
    }

    fn panels(&self) -> &[f32] {
        &self.buf[self.off..]
    }

    /// Number of query tokens.
    pub fn tokens(&self) -> usize {
        self.m
    }

    /// Fold one token `row` into the running maxima `mx` (`n_panels * PANEL`): with `mx` at
    /// -inf, this leaves the score of every query token against `row`. False if not finite.
    pub fn score_token(&self, k: &MaxSimKernels, d: usize, row: &[f32], mx: &mut [f32]) -> bool {
        let np = self.n_panels();
        let mut ok = true;
        let mut p0 = 0;
        while p0 < np {
            let g = k.max_panels.min(np - p0);
            let qp = &self.panels()[p0 * d * PANEL..(p0 + g) * d * PANEL];
            ok &= (k.block)(qp, g, d, row, 1, None, &mut mx[p0 * PANEL..(p0 + g) * PANEL]);
            p0 += g;
        }
        ok
    }

    fn n_panels(&self) -> usize {
        self.m.div_ceil(PANEL)
    }
}

/// Tokens per block when documents are converted to f32 first: 12 KiB at d = 128, so the block
/// and the query panels stay in L1; a multiple of the AVX-512 tile widths 12, 8 and 6.
const BLOCK_TOKENS: usize = 24;

/// Scores one document against every packed query: `out[q]` for query `q`.
#[allow(clippy::too_many_arguments)]
fn score_doc(
    k: &MaxSimKernels,
    queries: &[PackedQuery],
    d: usize,
    docs: &Docs,
    i: usize,
    mx: &mut Vec<f32>,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) -> Result<()> {
    let (start, n) = match *docs {
        Docs::List(l) => (0, l[i].len() / d),
        Docs::Packed { offsets, .. } => (offsets[i] as usize, (offsets[i + 1] - offsets[i]) as usize),
    };
    if n == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let total_panels: usize = queries.iter().map(|q| q.n_panels()).sum();
    mx.clear();
    mx.resize(total_panels * PANEL, f32::NEG_INFINITY);
    let mut ok = true;
    let block = match docs {
        Docs::List(_) | Docs::Packed { tokens: Tokens::F32(_), .. } => n,
        _ => BLOCK_TOKENS,
    };
    let mut j0 = 0;
    while j0 < n {
        let len = block.min(n - j0);
        let rows = (start + j0) * d..(start + j0 + len) * d;
        let mut tok_scale = None;
        let src: &[f32] = match *docs {
            Docs::List(l) => &l[i][rows],
            Docs::Packed { tokens, .. } => match tokens {
                Tokens::F32(x) => &x[rows],
                Tokens::F16(h) => {
                    if scratch.len() < len * d {
                        scratch.resize(len * d, 0.0);
                    }
                    (k.f16)(&h[rows], &mut scratch[..len * d]);
                    &scratch[..len * d]
                }
                Tokens::I8 { codes, scale } => {
                    if scratch.len() < len * d {
                        scratch.resize(len * d, 0.0);
                    }
                    (k.i8)(&codes[rows], &mut scratch[..len * d]);
                    if let Scale::Token(s) = scale {
                        tok_scale = Some(&s[start + j0..start + j0 + len]);
                    }
                    &scratch[..len * d]
                }
            },
        };
        let mut at = 0;
        for q in queries {
            let np = q.n_panels();
            let mut p0 = 0;
            while p0 < np {
                let g = k.max_panels.min(np - p0);
                let qp = &q.panels()[p0 * d * PANEL..(p0 + g) * d * PANEL];
                ok &= (k.block)(
                    qp,
                    g,
                    d,
                    src,
                    len,
                    tok_scale,
                    &mut mx[(at + p0) * PANEL..(at + p0 + g) * PANEL],
                );
                p0 += g;
            }
            at += np;
        }
        j0 += len;
    }
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "document {i} contains NaN or infinity (or its scores overflow float32)"
        )));
    }
    let mut at = 0;
    for (qi, q) in queries.iter().enumerate() {
        let s: f64 = mx[at * PANEL..at * PANEL + q.m].iter().map(|&x| x as f64).sum();
        out[qi] = s as f32;
        at += q.n_panels();
    }
    Ok(())
}

/// Check query token arrays (`m_q x d` each) and pack them.
pub fn pack_queries(queries: &[&[f32]], d: usize, dim_scale: Option<&[f32]>) -> Result<Vec<PackedQuery>> {
    if d == 0 {
        return Err(Error::InvalidArgument("token vectors must have at least 1 dimension".into()));
    }
    let mut out = Vec::with_capacity(queries.len());
    for (qi, q) in queries.iter().enumerate() {
        let what = format!("query {qi}");
        crate::util::vectors::rows(q, d, &what)?;
        if q.is_empty() {
            return Err(Error::InvalidArgument(format!("query {qi} has no tokens")));
        }
        crate::util::vectors::check_finite(q, d, &format!("query {qi} tokens"))?;
        out.push(PackedQuery::new(q, d, dim_scale));
    }
    Ok(out)
}

/// MaxSim of every query against every document: `nq x n_docs` scores, row-major.
///
/// Queries are `m_q x d` row-major f32 (every `m_q >= 1`). An empty document scores 0. Errors on
/// shape mismatches, NaN / infinity in a query, and non-finite scores (naming the document).
pub fn maxsim(queries: &[&[f32]], d: usize, docs: &Docs, threads: usize) -> Result<Vec<f32>> {
    docs.validate(d.max(1))?;
    let dim_scale = match docs {
        Docs::Packed { tokens: Tokens::I8 { scale: Scale::Dim(s), .. }, .. } => Some(*s),
        _ => None,
    };
    let packed = pack_queries(queries, d, dim_scale)?;
    maxsim_packed(&packed, d, docs, threads)
}

/// [`maxsim`] with queries already packed (see [`pack_queries`]); shapes must have been checked.
pub fn maxsim_packed(queries: &[PackedQuery], d: usize, docs: &Docs, threads: usize) -> Result<Vec<f32>> {
    let (nq, nd) = (queries.len(), docs.len());
    if nq == 0 || nd == 0 {
        return Ok(Vec::new());
    }
    let k = kernels();
    let mut by_doc = vec![0f32; nd * nq];
    // Chunks small enough to balance ragged documents over the threads.
    let chunk = nd.div_ceil(threads.max(1) * 16).clamp(1, 64);
    let run = || {
        by_doc.par_chunks_mut(chunk * nq).enumerate().try_for_each(|(c, out)| {
            let (mut mx, mut scratch) = (Vec::new(), Vec::new());
            for (r, o) in out.chunks_mut(nq).enumerate() {
                score_doc(k, queries, d, docs, c * chunk + r, &mut mx, &mut scratch, o)?;
            }
            Ok::<(), Error>(())
        })
    };
    if threads <= 1 {
        let (mut mx, mut scratch) = (Vec::new(), Vec::new());
        for (i, o) in by_doc.chunks_mut(nq).enumerate() {
            score_doc(k, queries, d, docs, i, &mut mx, &mut scratch, o)?;
        }
    } else {
        parallel::install(threads, run)?;
    }
    if nq == 1 {
        return Ok(by_doc);
    }
    let mut out = vec![0f32; nq * nd];
    for (i, row) in by_doc.chunks_exact(nq).enumerate() {
        for (qi, &s) in row.iter().enumerate() {
            out[qi * nd + i] = s;
        }
    }
    Ok(out)
}
