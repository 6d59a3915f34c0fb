//! Searching an [`IvfIndex`]: queries grouped by probed list so each list is streamed once for all
//! the queries probing it (float32 tile kernels, or the u8 kernels on int8 codes), then the
//! optional float32 rescoring of the best candidates.

use rayon::prelude::*;

use super::*;
use crate::util::bitset::Bitset;

/// Queries as the u8 scan uses them: `dot(q, decoded) ~= bias + scale * (w . codes)` with `w`
/// the per-query int8 weights `round(q * step / scale)` (stride `dp`, zero padded).
pub(super) struct QueryCodes {
    dp: usize,
    w: Vec<i8>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    qn: Vec<f32>,
}

impl IvfIndex {
    /// The int8 form of each query for the u8 scan (see [`QueryCodes`]).
    pub(super) fn quantize_queries(&self, q: &[f32]) -> QueryCodes {
        let d = self.dim;
        let dp = pack::quad_dim(d);
        let nq = q.len() / d;
        let mut qc = QueryCodes {
            dp,
            w: vec![0i8; nq * dp],
            scale: vec![0f32; nq],
            bias: vec![0f32; nq],
            qn: vec![0f32; nq],
        };
        let mut w = vec![0f32; d];
        for (i, qv) in q.chunks_exact(d).enumerate() {
            for t in 0..d {
                w[t] = qv[t] * self.step[t];
            }
            let m = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let s = if m > 0.0 { m / 127.0 } else { 1.0 };
            // Rounding the weights moves every score of this query by sum_t err_t * u_t; the
            // part err_t * 127.5 (mid-range code) is the same for all vectors and is added back.
            let mut fix = 0f64;
            for (code, &wt) in qc.w[i * dp..i * dp + d].iter_mut().zip(&w) {
                let r = (wt / s).round().clamp(-127.0, 127.0);
                *code = r as i8;
                fix += (wt - r * s) as f64 * 127.5;
            }
            qc.scale[i] = s;
            qc.bias[i] = simd::dot(qv, &self.vmin) + fix as f32;
            qc.qn[i] = simd::norm_sq(qv);
        }
        qc
    }

    /// Score the queries `qs` against list `l`, offering results to `sel`; false when a float32
    /// score overflowed (the search then fails, see [`crate::kernels::topk::score_overflow`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn scan_list(
        &self,
        l: usize,
        qs: &[u32],
        q: &[f32],
        qc: Option<&QueryCodes>,
        allowed: Option<&[bool]>,
        slot_ids: bool,
        sel: &mut [TopK],
    ) -> bool {
        let d = self.dim;
        let list = &self.lists[l];
        let n = list.len();
        let l2 = self.metric == Metric::L2;
        let bitmap: Option<Bitset> = allowed.map(|ok| {
            Bitset::from_slots(
                n,
                list.slots.iter().enumerate().filter(|(_, &s)| ok[s as usize]).map(|(p, _)| p),
            )
        });
        match self.storage {
            Storage::F32 => {
                let rows: Vec<f32> =
                    qs.iter().flat_map(|&qi| q[qi as usize * d..(qi as usize + 1) * d].to_vec()).collect();
                let b = Blocks {
                    data: &list.data,
                    n,
                    d,
                    ids: Some(&list.labels),
                    base: 0,
                    allow: bitmap.as_ref().map(Bitset::words),
                };
                let mut local: Vec<TopK> =
                    qs.iter().map(|&qi| std::mem::replace(&mut sel[qi as usize], TopK::new(0))).collect();
                let finite = Scan::new(&rows, d, l2).run(0, qs.len(), &b, 0, n, &mut local);
                for (&qi, s) in qs.iter().zip(local) {
                    sel[qi as usize] = s;
                }
                finite
            }
            Storage::Int8 => {
                let qc = qc.expect("int8 scans get quantized queries");
                let kern = simd::u8_kernels(simd::kernels());
                let dp = qc.dp;
                let mut w = vec![0i8; U8_ROWS * dp];
                let mut out = [0i32; U8_ROWS * PANEL];
                for tile in qs.chunks(U8_ROWS) {
                    let r = tile.len();
                    // Score = bias + scale * (w . u): w the int8 query weights, u the codes.
                    for (i, &qi) in tile.iter().enumerate() {
                        let qi = qi as usize;
                        w[i * dp..(i + 1) * dp].copy_from_slice(&qc.w[qi * dp..(qi + 1) * dp]);
                    }
                    for p in 0..n.div_ceil(PANEL) {
                        (kern[r - 1])(
                            &w,
                            dp,
                            &list.codes[p * PANEL * dp..(p + 1) * PANEL * dp],
                            &mut out,
                            PANEL,
                        );
                        let valid = (n - p * PANEL).min(PANEL);
                        for (i, &qi) in tile.iter().enumerate() {
                            let qi = qi as usize;
                            let (bias, scale, qn) = (qc.bias[qi], qc.scale[qi], qc.qn[qi]);
                            let s = &mut sel[qi];
                            for j in 0..valid {
                                let pos = p * PANEL + j;
                                if let Some(bits) = &bitmap {
                                    if !bits.contains(pos) {
                                        continue;
                                    }
                                }
                                let dot = bias + scale * out[i * PANEL + j] as f32;
                                let key = if l2 { -(qn - 2.0 * dot + list.norms[pos]) } else { dot };
                                if key >= s.threshold() {
                                    let id = if slot_ids { list.slots[pos] as i64 } else { list.labels[pos] };
                                    s.push(key, id);
                                }
                            }
                        }
                    }
                }
                // Non-finite int8 scores are kept and caught with the results.
                true
            }
        }
    }

    /// Rescore each query's candidates (global slots) with the float32 vectors and keep the
    /// best `k`, labelled; queries run in parallel and the next candidate's row is prefetched.
    pub(super) fn refine(&self, q: &[f32], sel: Vec<TopK>, k: usize, threads: usize) -> Vec<TopK> {
        let d = self.dim;
        let raw = self.raw.as_slice();
        let l2 = self.metric == Metric::L2;
        let one = |(qi, s): (usize, TopK)| -> TopK {
            let qv = &q[qi * d..(qi + 1) * d];
            let cand = s.into_unsorted();
            let mut out = TopK::new(k);
            let ahead = |i: usize| {
                if let Some(&(_, next)) = cand.get(i) {
                    simd::prefetch_row(&raw[next as usize * d..(next as usize + 1) * d]);
                }
            };
            for i in 0..REFINE_AHEAD {
                ahead(i);
            }
            for (i, &(_, slot)) in cand.iter().enumerate() {
                ahead(i + REFINE_AHEAD);
                let slot = slot as usize;
                let x = &raw[slot * d..(slot + 1) * d];
                let key = if l2 { -simd::l2sq(qv, x) } else { simd::dot(qv, x) };
                let (l, pos) = self.loc[slot];
                out.push(key, self.lists[l as usize].labels[pos as usize]);
            }
            out
        };
        if threads <= 1 || sel.len() < 64 {
            sel.into_iter().enumerate().map(one).collect()
        } else {
            parallel::install(threads, || sel.into_par_iter().enumerate().with_min_len(16).map(one).collect())
        }
    }

    /// Top-`k` of each query over its `nprobe` nearest lists. With int8 storage and
    /// `refine > 0`, the best `refine * k` per query are rescored with the float32 vectors.
    /// `allow` restricts results to those ids.
    pub(super) fn search_lists(
        &self,
        queries: &[f32],
        k: usize,
        params: &IvfParams,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        let IvfParams { nprobe, refine, coarse_ef } = *params;
        if !self.is_trained() {
            return Err(Error::InvalidArgument(
                "the IVFIndex is not trained: call train(sample) first".into(),
            ));
        }
        if k == 0 || nprobe == 0 {
            return Err(Error::InvalidArgument("k and nprobe must be at least 1".into()));
        }
        let d = self.dim;
        let nq = vectors::rows(queries, d, "queries")?;
        vectors::check_finite(queries, d, "queries")?;
        let mut owned = Vec::new();
        let q = self.prepare(queries, &mut owned);
        let nprobe = nprobe.min(self.nlist);
        let probes = self.probe(q, nprobe, coarse_ef, threads)?;
        let allowed: Option<Vec<bool>> = allow.map(|ids| {
            let mut ok = vec![false; self.len()];
            for id in ids {
                if let Some(s) = self.idmap.get(*id) {
                    ok[s as usize] = true;
                }
            }
            ok
        });
        // Group queries by probed list.
        let mut by_list: Vec<Vec<u32>> = vec![Vec::new(); self.nlist];
        for (qi, row) in probes.chunks_exact(nprobe).enumerate() {
            for &l in row {
                if l >= 0 {
                    by_list[l as usize].push(qi as u32);
                }
            }
        }
        let keep = if self.storage == Storage::Int8 && refine > 0 { k.saturating_mul(refine) } else { k };
        let work: Vec<usize> =
            (0..self.nlist).filter(|&l| !by_list[l].is_empty() && self.lists[l].len() > 0).collect();
        let tasks = (threads.max(1) * 2).min(work.len()).max(1);
        // Candidates headed for `refine` carry global slots, so refine needs no id lookup.
        let slot_ids = keep != k;
        let qc = (self.storage == Storage::Int8).then(|| self.quantize_queries(q));
        let scan_task = |t: usize| -> Result<Vec<TopK>> {
            let mut sel: Vec<TopK> = (0..nq).map(|_| TopK::new(keep)).collect();
            for &l in work.iter().skip(t).step_by(tasks) {
                if !self.scan_list(l, &by_list[l], q, qc.as_ref(), allowed.as_deref(), slot_ids, &mut sel) {
                    return Err(crate::kernels::topk::score_overflow());
                }
            }
            Ok(sel)
        };
        let parts: Vec<Vec<TopK>> = if tasks == 1 || threads <= 1 {
            (0..tasks).map(scan_task).collect::<Result<_>>()?
        } else {
            parallel::install(threads, || (0..tasks).into_par_iter().map(scan_task).collect::<Result<_>>())?
        };
        // Merge the tasks' selections, queries in parallel.
        let mut parts = parts.into_iter();
        let mut sel = parts.next().unwrap_or_else(|| (0..nq).map(|_| TopK::new(keep)).collect());
        let rest: Vec<Vec<TopK>> = parts.collect();
        if !rest.is_empty() {
            let merge = |(qi, s): (usize, &mut TopK)| {
                for part in &rest {
                    s.merge_from(&part[qi]);
                }
            };
            if threads <= 1 {
                sel.iter_mut().enumerate().for_each(merge);
            } else {
                parallel::install(threads, || {
                    sel.par_iter_mut().enumerate().with_min_len(64).for_each(merge)
                });
            }
        }
        if keep != k {
            sel = self.refine(q, sel, k, threads);
        }
        Results::from_selections(sel, k, self.metric)
    }
}
