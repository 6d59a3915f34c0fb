//! Exact top-k: a bounded selection heap and the blocked, multithreaded scan that fuses the
//! tile kernels with selection, so the `(nq, n)` score matrix is never materialised.

use rayon::prelude::*;

use crate::kernels::layout::BLOCK;
use crate::kernels::metric::Metric;
use crate::kernels::pack;
use crate::kernels::simd::{self, Kernels};
use crate::util::error::{Error, Result};
use crate::util::{bitset, parallel};

/// A `(key, id)` candidate; keys are "higher is better" (L2 distances are negated).
pub type Hit = (f32, i64);

#[inline]
fn better(a: Hit, b: Hit) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// The best `k` candidates seen so far; ties go to the lower id.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: Vec<Hit>, // min-heap on `better`: the root is the worst kept candidate
}

impl TopK {
    /// An empty selection of capacity `k`.
    pub fn new(k: usize) -> TopK {
        TopK { k, heap: Vec::with_capacity(k.min(4096)) }
    }

    /// Candidates with a key below this cannot enter.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap[0].0
        }
    }

    /// Number of kept candidates.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Offer a candidate.
    #[inline]
    pub fn push(&mut self, key: f32, id: i64) {
        let h = &mut self.heap;
        if h.len() < self.k {
            h.push((key, id));
            let mut i = h.len() - 1;
            while i > 0 {
                let parent = (i - 1) / 2;
                if better(h[parent], h[i]) {
                    h.swap(parent, i);
                    i = parent;
                } else {
                    break;
                }
            }
        } else if self.k > 0 && better((key, id), h[0]) {
            h[0] = (key, id);
            let n = h.len();
            let mut i = 0;
            loop {
                let (l, r) = (2 * i + 1, 2 * i + 2);
                let mut worst = i;
                if l < n && better(h[worst], h[l]) {
                    worst = l;
                }
                if r < n && better(h[worst], h[r]) {
                    worst = r;
                }
                if worst == i {
                    break;
                }
                h.swap(i, worst);
                i = worst;
            }
        }
    }

    /// Offer every candidate of another selection.
    pub fn merge(&mut self, other: TopK) {
        for (key, id) in other.heap {
            self.push(key, id);
        }
    }

    /// Offer every candidate of another selection, which is left as it is.
    pub fn merge_from(&mut self, other: &TopK) {
        for &(key, id) in &other.heap {
            self.push(key, id);
        }
    }

    /// The kept candidates in no particular order.
    pub fn into_unsorted(self) -> Vec<Hit> {
        self.heap
    }

    /// The kept candidates, best first.
    pub fn into_sorted(mut self) -> Vec<Hit> {
        self.heap.sort_unstable_by(|a, b| {
            if better(*a, *b) {
                std::cmp::Ordering::Less
            } else if better(*b, *a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        self.heap
    }
}

/// Search results: `nq x k` row-major scores and ids, best first, padded with id -1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    /// Metric values (similarity, or squared distance for L2).
    pub scores: Vec<f32>,
    /// Labels of the hits, -1 for padding.
    pub ids: Vec<i64>,
}

/// The most entries (`nq * k`) one search result may have: 2^31, 24 GiB of scores and ids.
pub const MAX_RESULT_ENTRIES: usize = 1 << 31;

/// Error unless an `nq x k` result is small enough to allocate (see [`MAX_RESULT_ENTRIES`]).
///
/// Searches clamp their own working memory to what is stored, so only the `(nq, k)` result
/// (padded with id -1 when `k` exceeds the stored count) grows with `k`.
pub fn check_result_size(nq: usize, k: usize) -> Result<()> {
    let entries = nq.checked_mul(k).filter(|&e| e <= MAX_RESULT_ENTRIES);
    if entries.is_none() {
        let bytes = (nq as u128) * (k as u128) * 12;
        return Err(Error::InvalidArgument(format!(
            "k={k} asks for a result of {nq} x {k} entries ({bytes} bytes), more than the limit of \
             {MAX_RESULT_ENTRIES} entries; ask for fewer results"
        )));
    }
    Ok(())
}

/// The error of a search whose scores are not finite: index inputs are checked to be finite
/// first, so there an infinite score means the vectors are too large for the metric (dot, l2);
/// `topk` finds a non-finite corpus value through its scores.
pub fn score_overflow() -> Error {
    Error::InvalidArgument(
        "vectors contain NaN or infinity, or their scores overflow float32 (the vectors are too \
         large for this metric: scale them down, or use cosine)"
            .into(),
    )
}

/// A vector of `len` copies of `v`, or an error when the memory cannot be reserved.
pub fn try_filled<T: Clone>(len: usize, v: T, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        Error::InvalidArgument(format!(
            "{what} needs {} bytes, more than can be allocated",
            len as u128 * std::mem::size_of::<T>() as u128
        ))
    })?;
    out.resize(len, v);
    Ok(out)
}

impl Results {
    /// Write selections (one per query) as `nq x k` rows in metric units; an error when the
    /// result is too large (see [`check_result_size`]) or a kept score is not finite
    /// ([`score_overflow`]: the inputs were checked, so it overflowed).
    pub fn from_selections(sel: Vec<TopK>, k: usize, metric: Metric) -> Result<Results> {
        let nq = sel.len();
        check_result_size(nq, k)?;
        if sel.iter().any(|s| s.heap.iter().any(|h| !h.0.is_finite())) {
            return Err(score_overflow());
        }
        let mut scores = try_filled(nq * k, metric.worst_score(), "the result")?;
        let mut ids = try_filled(nq * k, -1i64, "the result")?;
        for (qi, s) in sel.into_iter().enumerate() {
            for (j, (key, id)) in s.into_sorted().into_iter().enumerate() {
                scores[qi * k + j] = if metric == Metric::L2 { -key } else { key };
                ids[qi * k + j] = id;
            }
        }
        Ok(Results { scores, ids })
    }
}

/// A corpus in block layout as the scan sees it.
#[derive(Clone, Copy)]
pub struct Blocks<'a> {
    /// `packed_len(n, d)` floats in block layout.
    pub data: &'a [f32],
    /// Number of real vectors (the rest of the last block is padding).
    pub n: usize,
    /// Dimension.
    pub d: usize,
    /// Label of each slot; `None` means `base + slot`.
    pub ids: Option<&'a [i64]>,
    /// Added to slot numbers when `ids` is `None`.
    pub base: usize,
    /// Allow-list bitmap over slots; `None` allows every slot.
    pub allow: Option<&'a [u64]>,
}

/// Where a scan gets its blocks from: a stored index, or row-major vectors packed on the fly.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Already in block layout.
    Packed(Blocks<'a>),
    /// Row-major `n x d`; `normalize` scales rows to unit length as they are packed (cosine).
    Rows { rows: &'a [f32], n: usize, d: usize, normalize: bool },
}

impl Source<'_> {
    fn n(&self) -> usize {
        match self {
            Source::Packed(b) => b.n,
            Source::Rows { n, .. } => *n,
        }
    }
}

/// `topk` on row-major vectors streams rows directly for at most this many queries.
const ROWS_MAX_QUERIES: usize = 2;

/// Vectors per cache chunk: enough blocks to fill about 384 KiB (an L2 share) at dimension `d`.
fn chunk_vectors(d: usize) -> usize {
    let v = (384 * 1024) / (4 * d.max(1));
    (v / BLOCK).clamp(1, 128) * BLOCK
}

/// Scores query rows against blocks and feeds the selections (the inner loop of every scan).
pub struct Scan<'a> {
    k: &'a Kernels,
    queries: &'a [f32],
    d: usize,
    l2: bool,
}

impl<'a> Scan<'a> {
    /// A scan of row-major `queries` (`nq x d`) with the current SIMD level.
    pub fn new(queries: &'a [f32], d: usize, l2: bool) -> Scan<'a> {
        Scan { k: simd::kernels(), queries, d, l2 }
    }

    /// Score query rows `q0..q1` against vectors `[first, first + n)` of `b` and offer each
    /// score to `sel[q - q0]`; returns false if a score is not finite.
    pub fn run(&self, q0: usize, q1: usize, b: &Blocks, first: usize, n: usize, sel: &mut [TopK]) -> bool {
        let (d, k) = (self.d, self.k);
        let mut out = vec![0f32; k.max_rows * BLOCK];
        let mut finite = true;
        let nblocks = n.div_ceil(BLOCK);
        let mut qs = q0;
        while qs < q1 {
            let rows = (q1 - qs).min(k.max_rows);
            let q = &self.queries[qs * d..(qs + rows) * d];
            for blk in 0..nblocks {
                let slot0 = first + blk * BLOCK;
                let block = &b.data[slot0 * d..(slot0 + BLOCK) * d];
                simd::score_block(k, self.l2, rows, q, d, block, &mut out);
                let valid = (n - blk * BLOCK).min(BLOCK);
                for r in 0..rows {
                    let s = &mut sel[qs - q0 + r];
                    let row = &out[r * BLOCK..r * BLOCK + valid];
                    let mut thr = s.threshold();
                    if !any_candidate(row, thr, self.l2) {
                        continue;
                    }
                    for (j, &score) in row.iter().enumerate() {
                        let key = if self.l2 { -score } else { score };
                        if key >= thr {
                            let slot = slot0 + j;
                            if let Some(allow) = b.allow {
                                if !bitset::test(allow, slot) {
                                    continue;
                                }
                            }
                            if !score.is_finite() {
                                finite = false;
                                continue;
                            }
                            let id = b.ids.map_or((b.base + slot) as i64, |ids| ids[slot]);
                            s.push(key, id);
                            thr = s.threshold();
                        } else if !score.is_finite() {
                            finite = false;
                        }
                    }
                }
            }
            qs += rows;
        }
        finite
    }
}

/// True when some score of `row` makes the selection look at it: its key (`-score` for L2)
/// reaches `thr`, or it is not finite. Branch-free, so the compiler vectorizes it; most rows of a
/// scan fail it once the selections fill, and skip the per-score loop.
#[inline]
fn any_candidate(row: &[f32], thr: f32, l2: bool) -> bool {
    let sign = if l2 { -1.0 } else { 1.0 };
    let mut hit = false;
    for &s in row {
        hit |= (s * sign >= thr) | !s.is_finite();
    }
    hit
}

/// Exact top-`k` of every query (`nq x d`, row-major, already normalised for cosine) against
/// `source`, using up to `threads` threads. Queries are scored with `metric`'s kernel
/// (inner product for cosine and dot, squared L2 for l2).
pub fn search(queries: &[f32], source: Source, metric: Metric, k: usize, threads: usize) -> Result<Results> {
    let d = match source {
        Source::Packed(b) => b.d,
        Source::Rows { d, .. } => d,
    };
    if d == 0 {
        return Err(Error::InvalidArgument("dimension must be at least 1".into()));
    }
    let nq = queries.len() / d;
    let n = source.n();
    let kk = k.min(n);
    if nq == 0 {
        return Ok(Results::default());
    }
    let kern = simd::kernels();
    let scan = Scan { k: kern, queries, d, l2: metric == Metric::L2 };

    // Tasks: corpus ranges (whole chunks) x query ranges, enough to keep every thread busy.
    let chunk = chunk_vectors(d);
    let nchunks = n.div_ceil(chunk).max(1);
    let want = threads.max(1) * 4;
    let ranges = nchunks.min(want);
    let qranges = if ranges >= want { 1 } else { (want / ranges).min(nq.div_ceil(kern.max_rows)).max(1) };
    let chunks_per_range = nchunks.div_ceil(ranges);
    let q_per_range = nq.div_ceil(qranges);
    let tasks: Vec<(usize, usize)> =
        (0..qranges).flat_map(|qr| (0..ranges).map(move |cr| (qr, cr))).collect();

    let run_task = |&(qr, cr): &(usize, usize)| -> (usize, Vec<TopK>, bool) {
        let (q0, q1) = (qr * q_per_range, ((qr + 1) * q_per_range).min(nq));
        let mut sel: Vec<TopK> = (q0..q1).map(|_| TopK::new(kk)).collect();
        let mut finite = true;
        let mut packed: Vec<f32> = Vec::new();
        let mut scale: Vec<f32> = Vec::new();
        let c0 = cr * chunks_per_range;
        let c1 = ((cr + 1) * chunks_per_range).min(nchunks);
        for c in c0..c1 {
            let first = c * chunk;
            if first >= n || q0 >= q1 {
                break;
            }
            let len = chunk.min(n - first);
            let ok = match source {
                Source::Packed(b) => scan.run(q0, q1, &b, first, len, &mut sel),
                Source::Rows { rows, normalize, .. } => {
                    packed.resize(pack::packed_len(len, d), 0.0);
                    let chunk_rows = &rows[first * d..(first + len) * d];
                    if normalize {
                        scale.clear();
                        scale.extend(chunk_rows.chunks_exact(d).map(crate::util::vectors::inv_norm));
                    }
                    pack::pack_rows(chunk_rows, d, normalize.then_some(&scale[..]), &mut packed);
                    let b = Blocks { data: &packed, n: len, d, ids: None, base: first, allow: None };
                    scan.run(q0, q1, &b, 0, len, &mut sel)
                }
            };
            finite &= ok;
        }
        (qr, sel, finite)
    };

    let parts: Vec<(usize, Vec<TopK>, bool)> = if tasks.len() == 1 || threads <= 1 {
        tasks.iter().map(run_task).collect()
    } else {
        parallel::install(threads, || tasks.par_iter().map(run_task).collect())
    };

    let mut merged: Vec<Option<TopK>> = (0..nq).map(|_| None).collect();
    for (qr, sel, finite) in parts {
        if !finite {
            return Err(score_overflow());
        }
        for (i, s) in sel.into_iter().enumerate() {
            let slot = &mut merged[qr * q_per_range + i];
            match slot {
                Some(m) => m.merge(s),
                None => *slot = Some(s),
            }
        }
    }
    let sel = merged.into_iter().map(|s| s.unwrap_or_else(|| TopK::new(kk))).collect();
    Results::from_selections(sel, k, metric)
}

/// Exact top-`k` of `queries` (`nq x d`) against row-major `corpus` (`n x d`), best first.
///
/// Validates inputs (finite queries; a non-finite corpus value is caught through its scores),
/// normalises for cosine, and packs the corpus chunk by chunk as it scans.
pub fn topk(
    queries: &[f32],
    corpus: &[f32],
    d: usize,
    metric: Metric,
    k: usize,
    threads: usize,
) -> Result<Results> {
    use crate::util::vectors;
    if k == 0 {
        return Err(Error::InvalidArgument("k must be at least 1".into()));
    }
    vectors::rows(queries, d, "queries")?;
    let n = vectors::rows(corpus, d, "corpus")?;
    vectors::check_finite(queries, d, "queries")?;
    let q;
    let queries = if metric == Metric::Cosine {
        q = vectors::normalized(queries, d);
        &q[..]
    } else {
        queries
    };
    if queries.len() / d <= ROWS_MAX_QUERIES {
        return search_rows(queries, corpus, d, metric, k, threads);
    }
    let source = Source::Rows { rows: corpus, n, d, normalize: metric == Metric::Cosine };
    search(queries, source, metric, k, threads)
}

/// The bfloat16 copy of a block-layout corpus with per-slot error bounds, used to scan with
/// half the memory traffic while keeping results exact (see [`search_prefiltered`]).
#[derive(Clone, Copy)]
pub struct Prefilter<'a> {
    /// bfloat16 bit patterns in block layout, like [`Blocks::data`].
    pub half: &'a [u16],
    /// `||x - bf16(x)||` per slot.
    pub resid: &'a [f32],
    /// `||x||` per slot.
    pub norms: &'a [f32],
}

/// Exact top-`k` of a few queries through a bfloat16 prefilter: pass 1 streams the half-size
/// copy and bounds every true score within `[s~ - m, s~ + m]` (Cauchy-Schwarz on the rounding
/// residual, plus float32 rounding slack); every slot whose upper bound reaches the k-th best
/// lower bound is rescored in float32 with the same kernel as [`search`]. Memory-bound scans
/// thus read half the bytes while returning exactly what [`search`] returns.
pub fn search_prefiltered(
    queries: &[f32],
    b: Blocks,
    pre: Prefilter,
    metric: Metric,
    k: usize,
    threads: usize,
) -> Result<Results> {
    let d = b.d;
    let n = b.n;
    let kk = k.min(n);
    let kern = simd::kernels();
    let l2 = metric == Metric::L2;
    // Unit roundoff bound for two float32 dot products of length d (Higham: gamma_d ~ d u).
    let gamma = 2.0 * (d as f32 + 2.0) * f32::EPSILON;
    let chunk = chunk_vectors(d);
    let nchunks = n.div_ceil(chunk).max(1);
    let ranges = nchunks.min(threads.max(1) * 4);
    let per = nchunks.div_ceil(ranges);
    let mut sels = Vec::with_capacity(queries.len() / d);
    for q in queries.chunks_exact(d) {
        let qn = simd::norm_sq(q).sqrt();
        let scan = |cr: usize| -> (TopK, Vec<(f32, usize)>) {
            let mut low = TopK::new(kk);
            let mut cand: Vec<(f32, usize)> = Vec::new();
            let mut out = [0f32; BLOCK];
            let (c0, c1) = (cr * per, ((cr + 1) * per).min(nchunks));
            for blk in (c0 * chunk / BLOCK)..(c1 * chunk).min(n).div_ceil(BLOCK) {
                let slot0 = blk * BLOCK;
                simd::score_block_bf16(kern, l2, q, d, &pre.half[slot0 * d..(slot0 + BLOCK) * d], &mut out);
                for (j, &s) in out.iter().enumerate().take((n - slot0).min(BLOCK)) {
                    let slot = slot0 + j;
                    if let Some(allow) = b.allow {
                        if !bitset::test(allow, slot) {
                            continue;
                        }
                    }
                    let (lo, hi) = if l2 {
                        let dist = s.max(0.0).sqrt();
                        let e = pre.resid[slot] + gamma * (qn + pre.norms[slot]) + 1e-30;
                        let far = dist + e;
                        let near = (dist - e).max(0.0);
                        (-(far * far), -(near * near))
                    } else {
                        let m = qn * (pre.resid[slot] + gamma * pre.norms[slot]) + 1e-30;
                        (s - m, s + m)
                    };
                    low.push(lo, slot as i64);
                    if hi >= low.threshold() {
                        cand.push((hi, slot));
                    }
                }
            }
            (low, cand)
        };
        let parts: Vec<(TopK, Vec<(f32, usize)>)> = if ranges == 1 || threads <= 1 {
            (0..ranges).map(scan).collect()
        } else {
            parallel::install(threads, || (0..ranges).into_par_iter().map(scan).collect())
        };
        let mut low = TopK::new(kk);
        let mut cands = Vec::new();
        for (l, c) in parts {
            low.merge(l);
            cands.extend(c);
        }
        let thr = low.threshold();
        let mut slots: Vec<usize> = cands.into_iter().filter(|&(hi, _)| hi >= thr).map(|(_, s)| s).collect();
        slots.sort_unstable();
        // Rescore candidates block by block with the float32 kernel used by `search`.
        let mut sel = TopK::new(kk);
        let mut out = vec![0f32; BLOCK];
        let mut i = 0;
        while i < slots.len() {
            let blk = slots[i] / BLOCK;
            let slot0 = blk * BLOCK;
            simd::score_block(kern, l2, 1, q, d, &b.data[slot0 * d..(slot0 + BLOCK) * d], &mut out);
            while i < slots.len() && slots[i] / BLOCK == blk {
                let slot = slots[i];
                let s = out[slot - slot0];
                let id = b.ids.map_or((b.base + slot) as i64, |ids| ids[slot]);
                sel.push(if l2 { -s } else { s }, id);
                i += 1;
            }
        }
        sels.push(sel);
    }
    Results::from_selections(sels, k, metric)
}

/// Exact top-`k` of a few queries straight from row-major vectors (no packing): each row is
/// streamed once through the pair kernels, which is what a memory-bound single query needs.
pub fn search_rows(
    queries: &[f32],
    rows: &[f32],
    d: usize,
    metric: Metric,
    k: usize,
    threads: usize,
) -> Result<Results> {
    let n = rows.len() / d;
    let nq = queries.len() / d;
    let kk = k.min(n);
    let kern = simd::kernels();
    let ranges = n.div_ceil(4096).clamp(1, threads.max(1) * 4);
    let per = n.div_ceil(ranges);
    let scan = |r: usize| -> (Vec<TopK>, bool) {
        let mut sel: Vec<TopK> = (0..nq).map(|_| TopK::new(kk)).collect();
        let mut finite = true;
        for j in (r * per)..((r + 1) * per).min(n) {
            let x = &rows[j * d..(j + 1) * d];
            let scale = if metric == Metric::Cosine { crate::util::vectors::inv_norm(x) } else { 1.0 };
            for (s, q) in sel.iter_mut().zip(queries.chunks_exact(d)) {
                let key = match metric {
                    Metric::L2 => -(kern.l2sq)(q, x),
                    _ => (kern.dot)(q, x) * scale,
                };
                finite &= key.is_finite();
                s.push(key, j as i64);
            }
        }
        (sel, finite)
    };
    let parts: Vec<(Vec<TopK>, bool)> = if ranges == 1 || threads <= 1 {
        (0..ranges).map(scan).collect()
    } else {
        parallel::install(threads, || (0..ranges).into_par_iter().map(scan).collect())
    };
    let mut merged: Vec<TopK> = (0..nq).map(|_| TopK::new(kk)).collect();
    for (sel, finite) in parts {
        if !finite {
            return Err(score_overflow());
        }
        for (m, s) in merged.iter_mut().zip(sel) {
            m.merge(s);
        }
    }
    Results::from_selections(merged, k, metric)
}
