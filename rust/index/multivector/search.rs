//! Searching a [`MultiVectorIndex`]: centroid interaction over the inverted lists, exact MaxSim
//! of the candidates on the decoded tokens, and the optional rescoring with the exact copy.

use rayon::prelude::*;

use super::*;

/// Which tokens `score_slots` scores.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The tokens decompressed from centroid + residual codes.
    Decoded,
    /// The exact copy (or the f32 tokens when `nbits = 0`).
    Exact,
}

impl MultiVectorIndex {
    pub(super) fn check_query(&self, q: &[f32], qi: usize) -> Result<()> {
        let m = vectors::rows(q, self.dim, &format!("query {qi}"))?;
        if m == 0 {
            return Err(Error::InvalidArgument(format!("query {qi} has no tokens")));
        }
        vectors::check_finite(q, self.dim, &format!("query {qi} tokens"))
    }

    /// Exact MaxSim of one packed query over `slots`, on the decompressed tokens (`Decoded`) or
    /// on the refine copy (`Exact`, when there is one), pushed into a top-k selection.
    pub(super) fn score_slots(
        &self,
        q: &PackedQuery,
        slots: &[usize],
        k: usize,
        threads: usize,
        src: Source,
    ) -> Result<TopK> {
        let d = self.dim;
        let src = if self.refine == Refine::None { Source::Decoded } else { src };
        // Gather (decode or copy) and score a few documents at a time, so their tokens stay in
        // cache and no large buffer is allocated per query; chunks run in parallel.
        let score_chunk = |chunk: &[usize], bufs: &mut (Vec<f32>, Vec<u16>, Vec<i64>)| -> Result<Vec<f32>> {
            let (flat, half, offs) = bufs;
            flat.clear();
            half.clear();
            offs.clear();
            offs.push(0);
            let mut rows = 0usize;
            for &s in chunk {
                let (a, z) = (self.offsets[s] as usize, self.offsets[s + 1] as usize);
                match (src, self.refine) {
                    (Source::Exact, Refine::F16) => {
                        half.extend_from_slice(&self.exact16.as_slice()[a * d..z * d])
                    }
                    (Source::Exact, Refine::F32) => {
                        flat.extend_from_slice(&self.exact32.as_slice()[a * d..z * d])
                    }
                    _ => self.decode_into(s, flat),
                }
                rows += z - a;
                offs.push(rows as i64);
            }
            let tokens = if half.is_empty() { Tokens::F32(flat) } else { Tokens::F16(half) };
            let docs = Docs::Packed { tokens, offsets: offs };
            maxsim::maxsim_packed(std::slice::from_ref(q), d, &docs, 1)
        };
        const CHUNK: usize = 16;
        let scores: Vec<f32> = if threads <= 1 || slots.len() <= CHUNK {
            let mut bufs = (Vec::new(), Vec::new(), Vec::new());
            let mut out = Vec::with_capacity(slots.len());
            for chunk in slots.chunks(CHUNK) {
                out.extend(score_chunk(chunk, &mut bufs)?);
            }
            out
        } else {
            let parts = parallel::install(threads, || {
                slots
                    .par_chunks(CHUNK)
                    .map_init(|| (Vec::new(), Vec::new(), Vec::new()), |bufs, chunk| score_chunk(chunk, bufs))
                    .collect::<Result<Vec<_>>>()
            })?;
            parts.concat()
        };
        let mut sel = TopK::new(k);
        for (&s, &v) in slots.iter().zip(&scores) {
            sel.push(v, self.ids[s]);
        }
        Ok(sel)
    }

    /// Approximate MaxSim from centroid scores over the inverted lists: the best `candidates`
    /// slots (ties to the lower id).
    pub(super) fn candidates(
        &self,
        q: &PackedQuery,
        m: usize,
        top: usize,
        p: &SearchParams,
        allowed: Option<&[bool]>,
    ) -> Vec<usize> {
        let d = self.dim;
        let nc = self.n_centroids();
        // Scores of every query token against every centroid: the kernel with one-token documents.
        let k = maxsim::kernels();
        let mut cs = vec![0f32; nc * m]; // cs[c * m + i]
        let np = m.div_ceil(crate::kernels::layout::PANEL);
        let mut mx = vec![0f32; np * crate::kernels::layout::PANEL];
        for c in 0..nc {
            mx.fill(f32::NEG_INFINITY);
            q.score_token(k, d, &self.centroids[c * d..(c + 1) * d], &mut mx);
            cs[c * m..(c + 1) * m].copy_from_slice(&mx[..m]);
        }
        let nprobe = p.nprobe.clamp(1, nc);
        let n = self.ids.len();
        let mut approx = vec![0f32; n];
        let mut last = vec![0u32; n]; // 1 + the last query token that touched the slot
        let mut touched: Vec<u32> = Vec::new();
        let mut order: Vec<u32> = (0..nc as u32).collect();
        for i in 0..m {
            let key = |c: &u32| -cs[*c as usize * m + i];
            if nprobe < nc {
                order.select_nth_unstable_by(nprobe - 1, |a, b| key(a).total_cmp(&key(b)));
            }
            let probes = &mut order[..nprobe];
            probes.sort_unstable_by(|a, b| key(a).total_cmp(&key(b)));
            for &c in probes.iter() {
                let s_ic = cs[c as usize * m + i];
                for &s in &self.lists[c as usize] {
                    let su = s as usize;
                    let l = last[su];
                    if l == i as u32 + 1 {
                        continue;
                    }
                    if l == 0 {
                        if allowed.is_some_and(|a| !a[su]) || self.ids[su] == super::DEAD {
                            last[su] = u32::MAX;
                            continue;
                        }
                        touched.push(s);
                    } else if l == u32::MAX {
                        continue;
                    }
                    last[su] = i as u32 + 1;
                    approx[su] += s_ic;
                }
            }
        }
        let mut sel = TopK::new(p.candidates.max(top));
        for &s in &touched {
            sel.push(approx[s as usize], self.ids[s as usize]);
        }
        sel.into_sorted().into_iter().map(|(_, id)| self.idmap.get(id).expect("a held id")).collect()
    }

    pub(super) fn allowed_mask(&self, allow: Option<&[i64]>) -> Option<Vec<bool>> {
        allow.map(|ids| {
            let mut m = vec![false; self.ids.len()];
            for id in ids {
                if let Some(s) = self.idmap.get(*id) {
                    m[s] = true;
                }
            }
            m
        })
    }

    /// MaxSim of each query over the given documents only (on the refine copy when there is one,
    /// else on the stored tokens); top `k`, best first.
    pub fn rerank(&self, queries: &[&[f32]], ids: &[i64], k: usize, threads: usize) -> Result<Results> {
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        for (qi, q) in queries.iter().enumerate() {
            self.check_query(q, qi)?;
        }
        let mut slots = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            let s = self.idmap.slot(id)?;
            if seen.insert(id) {
                slots.push(s);
            }
        }
        let sel = queries
            .iter()
            .map(|q| {
                self.score_slots(&PackedQuery::new(q, self.dim, None), &slots, k, threads, Source::Exact)
            })
            .collect::<Result<Vec<_>>>()?;
        Results::from_selections(sel, k, Metric::Dot)
    }

    /// Top-`k` documents of each query (`m_q x d` row-major each); `nq x k` results.
    pub(super) fn search_queries(
        &self,
        queries: &[&[f32]],
        k: usize,
        p: &SearchParams,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        if k == 0 || p.candidates == 0 {
            return Err(Error::InvalidArgument("k and candidates must be at least 1".into()));
        }
        if p.refine > 0 && self.nbits > 0 && self.refine == Refine::None {
            return Err(Error::InvalidArgument(
                "refine needs an exact copy of the tokens: create the index with refine_dtype=\"f16\" or \"f32\""
                    .into(),
            ));
        }
        for (qi, q) in queries.iter().enumerate() {
            self.check_query(q, qi)?;
        }
        let allowed = self.allowed_mask(allow);
        // An allow-list no longer than `candidates` is scored exactly in full (so a narrow
        // filter never misses documents that the probed centroids do not reach).
        let few: Option<Vec<usize>> = allowed.as_ref().and_then(|mask| {
            let n = mask.iter().filter(|&&a| a).count();
            (n <= p.candidates).then(|| (0..mask.len()).filter(|&s| mask[s]).collect())
        });
        let one = |q: &[f32], inner: usize| -> Result<TopK> {
            if self.is_empty() || self.n_centroids() == 0 {
                return Ok(TopK::new(k));
            }
            let pq = PackedQuery::new(q, self.dim, None);
            if let Some(slots) = &few {
                return self.score_slots(&pq, slots, k, inner, Source::Exact);
            }
            let slots = self.candidates(&pq, q.len() / self.dim, k, p, allowed.as_deref());
            if p.refine == 0 || self.refine == Refine::None {
                return self.score_slots(&pq, &slots, k, inner, Source::Decoded);
            }
            let depth = p.refine.saturating_mul(k).max(k);
            let best = self.score_slots(&pq, &slots, depth, inner, Source::Decoded)?;
            let best: Vec<usize> = best
                .into_sorted()
                .into_iter()
                .map(|(_, id)| self.idmap.get(id).expect("a held id"))
                .collect();
            self.score_slots(&pq, &best, k, inner, Source::Exact)
        };
        let sel: Vec<TopK> = if queries.len() == 1 {
            vec![one(queries[0], threads)?]
        } else {
            parallel::install(threads, || queries.par_iter().map(|q| one(q, 1)).collect::<Result<Vec<_>>>())?
        };
        Results::from_selections(sel, k, Metric::Dot)
    }
}
