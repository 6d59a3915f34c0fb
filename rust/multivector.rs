//! `MultiVectorIndex`: PLAID-style late-interaction retrieval over compressed token vectors.
//!
//! Storage (ColBERTv2 residual compression): token vectors are clustered by k-means (trained on
//! the first `add`, reused afterwards); each token keeps its centroid id (`u32`) and, per
//! dimension, an `nbits` bucket of its residual `x - c`. Each dimension has its own scalar
//! quantizer, fitted to the training residuals by Lloyd-Max (cutoffs halfway between the
//! reconstruction values, each value the mean of the residuals in its bucket), which roughly
//! halves the squared error of plain quantile buckets at 4 bits. Memory per token:
//! `4 + d * nbits / 8` bytes (+ at most 4 bytes of inverted-list entry); `nbits = 0` keeps the
//! f32 tokens (`4 d` bytes) and makes the final scores exact.
//!
//! Search, per query:
//! 1. centroid interaction: the query tokens' scores against every centroid; each query token
//!    probes its `nprobe` best centroids and every document listed under one of them gets, for
//!    that token, the best probed centroid score it holds (a document-level inverted list);
//! 2. the `candidates` best documents by that approximate MaxSim are decompressed;
//! 3. the fused MaxSim kernel scores them exactly (on the decompressed tokens) and the top `k`
//!    are returned, best first, ties to the lower id, padded with id -1 and score -inf;
//! 4. optionally (`refine > 0`, index built with a [`Refine`] copy): the best `refine * k` of
//!    step 3 are rescored with an exact float16 / float32 copy of their tokens, which stays on
//!    disk after a mmapped load; `rerank` uses that copy too.

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::half;
use crate::ids::IdMap;
use crate::index::Index;
use crate::kmeans::{self, Init};
use crate::maxsim::{self, Docs, PackedQuery, Tokens};
use crate::metric::Metric;
use crate::parallel;
use crate::rng::Rng;
use crate::storage::{Buf, Dtype, Header, IndexFile, Kind, Writer};
use crate::topk::{self, Results, TopK};
use crate::vectors;

/// Residual bit widths supported (a bucket never straddles a byte).
pub const NBITS: [usize; 5] = [0, 1, 2, 4, 8];
/// k-means iterations when training centroids.
const KMEANS_ITERS: usize = 10;
/// Training tokens per centroid (and a cap on the training sample).
const TRAIN_PER_CENTROID: usize = 64;
const TRAIN_MAX: usize = 262_144;
/// Lloyd-Max iterations of the per-dimension residual quantizers.
const LLOYD_ITERS: usize = 300;

/// `out = centroid + residual` of one token, `PER` dimensions per residual byte; returns the
/// squared norm of `out`.
#[inline]
fn decode_token<const PER: usize>(lut: &[f32], cen: &[f32], bytes: &[u8], out: &mut [f32]) -> f32 {
    let groups = bytes.len();
    assert!(cen.len() >= groups * PER && out.len() >= groups * PER && lut.len() >= groups * 256 * PER);
    let mut acc = [0f32; PER];
    for (g, &v) in bytes.iter().enumerate() {
        let e = &lut[(g * 256 + v as usize) * PER..][..PER];
        let c = &cen[g * PER..][..PER];
        let o = &mut out[g * PER..][..PER];
        for u in 0..PER {
            o[u] = c[u] + e[u];
            acc[u] += o[u] * o[u];
        }
    }
    acc.iter().sum()
}

/// Scalar quantizer of one dimension's residuals (`sorted` ascending, not empty) into `b`
/// buckets: `b - 1` cutoffs and `b` reconstruction values minimising the squared error on the
/// sample (Lloyd-Max). Starts from equal-count (quantile) buckets and alternates the two
/// optimality conditions: each value is the mean of the residuals in its bucket, each cutoff the
/// midpoint of the values beside it. A value `v` falls in bucket `#{cutoffs < v}`.
fn lloyd_max(sorted: &[f32], b: usize) -> (Vec<f32>, Vec<f32>) {
    let m = sorted.len();
    debug_assert!(m > 0 && b >= 2);
    // prefix[i] = sum of the first i values (f64: exact enough for a mean of 2^18 values).
    let mut prefix = Vec::with_capacity(m + 1);
    prefix.push(0f64);
    for &v in sorted {
        prefix.push(prefix.last().unwrap() + v as f64);
    }
    let q = |f: f64| sorted[((f * m as f64) as usize).min(m - 1)];
    let mut cuts: Vec<f32> = (1..b).map(|c| q(c as f64 / b as f64)).collect();
    let mut levels: Vec<f32> = (0..b).map(|c| q((c as f64 + 0.5) / b as f64)).collect();
    // Bucket boundaries in `sorted`: bucket c holds sorted[bounds[c]..bounds[c + 1]].
    let mut bounds = vec![0usize; b + 1];
    for it in 0..LLOYD_ITERS {
        bounds[b] = m;
        for (c, &cut) in cuts.iter().enumerate() {
            bounds[c + 1] = sorted.partition_point(|&v| v <= cut);
        }
        let mut moved = 0f32;
        for c in 0..b {
            let (lo, hi) = (bounds[c], bounds[c + 1]);
            // An empty bucket keeps its value (it only happens with heavily repeated residuals).
            if hi > lo {
                let mean = ((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32;
                moved = moved.max((mean - levels[c]).abs());
                levels[c] = mean;
            }
        }
        if it + 1 == LLOYD_ITERS || moved == 0.0 {
            break;
        }
        let mut floor = f32::NEG_INFINITY;
        for c in 0..b - 1 {
            cuts[c] = (0.5 * (levels[c] + levels[c + 1])).max(floor);
            floor = cuts[c];
        }
    }
    (cuts, levels)
}

/// The optional exact copy of the tokens kept beside the compressed ones (for `refine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refine {
    /// No copy: scores come from the decompressed tokens.
    None,
    /// IEEE half copy (`2 d` bytes per token; relative error <= 2^-11 per value).
    F16,
    /// float32 copy (`4 d` bytes per token).
    F32,
}

impl Refine {
    /// Parse `"none"` / `"f16"` / `"f32"`.
    pub fn parse(s: &str) -> Result<Refine> {
        match s {
            "none" | "" => Ok(Refine::None),
            "f16" | "float16" => Ok(Refine::F16),
            "f32" | "float32" => Ok(Refine::F32),
            other => Err(Error::InvalidArgument(format!(
                "unknown refine dtype {other:?}: expected None, \"f16\" or \"f32\""
            ))),
        }
    }

    /// The name `parse` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Refine::None => "none",
            Refine::F16 => "f16",
            Refine::F32 => "f32",
        }
    }

    fn code(self) -> i64 {
        match self {
            Refine::None => 0,
            Refine::F16 => 1,
            Refine::F32 => 2,
        }
    }
}

/// Which tokens `score_slots` scores.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Decoded,
    Exact,
}

/// Late-interaction index over documents of token vectors (see the module docs).
pub struct MultiVectorIndex {
    dim: usize,
    nbits: usize,
    /// Requested number of centroids (0 = chosen from the first batch).
    want_centroids: usize,
    seed: u64,
    centroids: Vec<f32>,
    /// Per dimension: `2^nbits - 1` bucket cutoffs and `2^nbits` reconstruction values.
    cutoffs: Vec<f32>,
    weights: Vec<f32>,
    /// Decoding table: for residual byte `g` of a token and its value `v`, the `8 / nbits`
    /// reconstruction values it stands for (`lut[(g * 256 + v) * per..][..per]`); `d * 256` floats.
    lut: Vec<f32>,
    /// Re-normalise decoded tokens to unit length (set when the training tokens were unit-length).
    normalize: bool,
    codes: Buf<u32>,
    residuals: Buf<u8>,
    /// f32 tokens when `nbits == 0`.
    tokens: Buf<f32>,
    /// The exact copy for `refine` (one of the two, by `refine`).
    refine: Refine,
    exact16: Buf<u16>,
    exact32: Buf<f32>,
    /// Token offsets per slot (`len + 1` entries).
    offsets: Vec<u64>,
    ids: Vec<i64>,
    idmap: IdMap,
    /// Per centroid, the slots of the documents holding a token of it (ascending).
    lists: Vec<Vec<u32>>,
}

/// Documents to add: all their token vectors back to back, document `i` being rows
/// `offsets[i]..offsets[i + 1]` of `tokens`.
#[derive(Clone, Copy, Debug)]
pub struct TokenDocs<'a> {
    /// Token vectors, row-major.
    pub tokens: &'a [f32],
    /// `n + 1` row offsets.
    pub offsets: &'a [i64],
}

/// Search settings of a [`MultiVectorIndex`] besides `k` and the allow-list.
#[derive(Clone, Copy, Debug)]
pub struct SearchParams {
    /// Documents scored exactly.
    pub candidates: usize,
    /// Centroids probed per query token.
    pub nprobe: usize,
    /// Rescore the best `refine * k` with the exact copy (0: off; needs a [`Refine`] copy).
    pub refine: usize,
}

impl MultiVectorIndex {
    /// An empty index. `n_centroids = 0` picks `2^floor(log2(4 sqrt(tokens)))` on the first add.
    pub fn new(dim: usize, nbits: usize, n_centroids: usize, seed: u64) -> Result<MultiVectorIndex> {
        if dim == 0 || dim > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("dim must be between 1 and 2^32-1, got {dim}")));
        }
        if !NBITS.contains(&nbits) {
            return Err(Error::InvalidArgument(format!("nbits must be 0, 1, 2, 4 or 8, got {nbits}")));
        }
        if nbits > 0 && !(dim * nbits).is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!(
                "dim * nbits must be a multiple of 8 (whole bytes per token), got {dim} * {nbits}"
            )));
        }
        Ok(MultiVectorIndex {
            dim,
            nbits,
            want_centroids: n_centroids,
            seed,
            centroids: Vec::new(),
            cutoffs: Vec::new(),
            weights: Vec::new(),
            lut: Vec::new(),
            normalize: false,
            codes: Buf::default(),
            residuals: Buf::default(),
            tokens: Buf::default(),
            refine: Refine::None,
            exact16: Buf::default(),
            exact32: Buf::default(),
            offsets: vec![0],
            ids: Vec::new(),
            idmap: IdMap::new(),
            lists: Vec::new(),
        })
    }

    /// Keep an exact copy of every token for `refine` / `rerank` (only before the first add;
    /// not with `nbits = 0`, whose tokens are exact already).
    pub fn with_refine(mut self, refine: Refine) -> Result<MultiVectorIndex> {
        if refine != Refine::None && self.nbits == 0 {
            return Err(Error::InvalidArgument(
                "nbits=0 keeps exact float32 tokens already; a refine copy needs nbits > 0".into(),
            ));
        }
        if !self.is_empty() {
            return Err(Error::InvalidArgument("the refine copy must be chosen before the first add".into()));
        }
        self.refine = refine;
        Ok(self)
    }

    /// The exact copy kept for `refine`.
    pub fn refine(&self) -> Refine {
        self.refine
    }

    /// Residual bits per dimension (0 = f32 tokens).
    pub fn nbits(&self) -> usize {
        self.nbits
    }

    /// Number of centroids (0 before the first add).
    pub fn n_centroids(&self) -> usize {
        self.centroids.len() / self.dim
    }

    /// Total tokens stored.
    pub fn n_tokens(&self) -> usize {
        *self.offsets.last().unwrap() as usize
    }

    /// Bytes per token of the exact copy kept for `refine` (0 without one).
    pub fn refine_bytes_per_token(&self) -> usize {
        match self.refine {
            Refine::None => 0,
            Refine::F16 => 2 * self.dim,
            Refine::F32 => 4 * self.dim,
        }
    }

    /// Bytes per stored token of the compressed form (centroid id + residual), or 4 d for f32.
    pub fn bytes_per_token(&self) -> usize {
        if self.nbits == 0 {
            4 * self.dim
        } else {
            4 + self.dim * self.nbits / 8
        }
    }

    fn rbytes(&self) -> usize {
        self.dim * self.nbits / 8
    }

    /// Train centroids and residual buckets on (a sample of) `tokens`.
    fn train(&mut self, tokens: &[f32], threads: usize) -> Result<()> {
        let d = self.dim;
        let n = tokens.len() / d;
        let k = if self.want_centroids > 0 {
            self.want_centroids
        } else {
            let target = (4.0 * (n as f64).sqrt()).max(1.0);
            1usize << (target.log2().floor() as u32).min(16)
        }
        .min(n)
        .max(1);
        let mut rng = Rng::new(self.seed);
        let m = n.min((TRAIN_PER_CENTROID * k).clamp(4096, TRAIN_MAX));
        let sample: Vec<f32> = if m < n {
            let mut idx = rng.sample(n, m);
            idx.sort_unstable();
            idx.iter().flat_map(|&i| tokens[i * d..(i + 1) * d].iter().copied()).collect()
        } else {
            tokens.to_vec()
        };
        let km =
            kmeans::kmeans(&sample, d, k, KMEANS_ITERS, self.seed, Init::KMeansPlusPlus, false, threads)?;
        self.centroids = km.centroids;
        self.normalize = sample.chunks_exact(d).all(|x| {
            let n2: f32 = x.iter().map(|v| v * v).sum();
            (n2 - 1.0).abs() < 1e-3
        });
        if self.nbits > 0 {
            let b = 1usize << self.nbits;
            let mut col = vec![0f32; m];
            self.cutoffs = vec![0f32; d * (b - 1)];
            self.weights = vec![0f32; d * b];
            for t in 0..d {
                for (i, v) in col.iter_mut().enumerate() {
                    *v = sample[i * d + t] - self.centroids[km.assignments[i] as usize * d + t];
                }
                col.sort_unstable_by(f32::total_cmp);
                let (cuts, levels) = lloyd_max(&col, b);
                self.cutoffs[t * (b - 1)..(t + 1) * (b - 1)].copy_from_slice(&cuts);
                self.weights[t * b..(t + 1) * b].copy_from_slice(&levels);
            }
            self.build_lut();
        }
        Ok(())
    }

    fn build_lut(&mut self) {
        let (d, nb) = (self.dim, self.nbits);
        if nb == 0 || self.weights.is_empty() {
            self.lut.clear();
            return;
        }
        let (b, per) = (1usize << nb, 8 / nb);
        let mask = b - 1;
        self.lut = vec![0f32; d * 256];
        for g in 0..d / per {
            for v in 0..256usize {
                for u in 0..per {
                    let t = g * per + u;
                    self.lut[(g * 256 + v) * per + u] = self.weights[t * b + ((v >> (u * nb)) & mask)];
                }
            }
        }
    }

    /// Nearest centroid (L2) of each token.
    fn assign(&self, tokens: &[f32], threads: usize) -> Result<Vec<u32>> {
        let n = tokens.len() / self.dim;
        if n == 0 {
            return Ok(Vec::new());
        }
        let r = topk::topk(tokens, &self.centroids, self.dim, Metric::L2, 1, threads)?;
        Ok(r.ids.iter().map(|&i| i as u32).collect())
    }

    /// Residual bucket codes of `tokens` given their centroids.
    fn encode(&self, tokens: &[f32], codes: &[u32], threads: usize) -> Vec<u8> {
        let (d, nb, rb) = (self.dim, self.nbits, self.rbytes());
        let b = 1usize << nb;
        let mut out = vec![0u8; codes.len() * rb];
        let per_dim = 8 / nb;
        parallel::install(threads, || {
            out.par_chunks_mut(rb * 256).enumerate().for_each(|(c, chunk)| {
                for (r, bytes) in chunk.chunks_mut(rb).enumerate() {
                    let j = c * 256 + r;
                    let x = &tokens[j * d..(j + 1) * d];
                    let cen = &self.centroids[codes[j] as usize * d..(codes[j] as usize + 1) * d];
                    for t in 0..d {
                        let v = x[t] - cen[t];
                        let cuts = &self.cutoffs[t * (b - 1)..(t + 1) * (b - 1)];
                        let bucket = cuts.iter().filter(|&&c| v > c).count() as u8;
                        bytes[t / per_dim] |= bucket << ((t % per_dim) * nb);
                    }
                }
            })
        });
        out
    }

    /// Decompressed tokens of slot `s`, appended to `out`.
    fn decode_into(&self, s: usize, out: &mut Vec<f32>) {
        let d = self.dim;
        let (a, z) = (self.offsets[s] as usize, self.offsets[s + 1] as usize);
        if self.nbits == 0 {
            out.extend_from_slice(&self.tokens.as_slice()[a * d..z * d]);
            return;
        }
        let codes = self.codes.as_slice();
        let res = self.residuals.as_slice();
        let rb = self.rbytes();
        let start = out.len();
        out.resize(start + (z - a) * d, 0.0);
        for (j, o) in (a..z).zip(out[start..].chunks_exact_mut(d)) {
            let cen = &self.centroids[codes[j] as usize * d..(codes[j] as usize + 1) * d];
            let bytes = &res[j * rb..(j + 1) * rb];
            let n2 = match self.nbits {
                1 => decode_token::<8>(&self.lut, cen, bytes, o),
                2 => decode_token::<4>(&self.lut, cen, bytes, o),
                4 => decode_token::<2>(&self.lut, cen, bytes, o),
                _ => decode_token::<1>(&self.lut, cen, bytes, o),
            };
            if self.normalize && n2 > 0.0 {
                let s = 1.0 / n2.sqrt();
                o.iter_mut().for_each(|x| *x *= s);
            }
        }
    }

    fn rebuild_lists(&mut self) {
        let mut lists = vec![Vec::new(); self.n_centroids()];
        let codes = self.codes.as_slice();
        let mut seen: Vec<u32> = Vec::new();
        for s in 0..self.ids.len() {
            seen.clear();
            seen.extend(&codes[self.offsets[s] as usize..self.offsets[s + 1] as usize]);
            seen.sort_unstable();
            seen.dedup();
            for &c in &seen {
                lists[c as usize].push(s as u32);
            }
        }
        self.lists = lists;
    }

    fn check_query(&self, q: &[f32], qi: usize) -> Result<()> {
        let m = vectors::rows(q, self.dim, &format!("query {qi}"))?;
        if m == 0 {
            return Err(Error::InvalidArgument(format!("query {qi} has no tokens")));
        }
        vectors::check_finite(q, self.dim, &format!("query {qi} tokens"))
    }

    /// Exact MaxSim of one packed query over `slots`, on the decompressed tokens (`Decoded`) or
    /// on the refine copy (`Exact`, when there is one), pushed into a top-k selection.
    fn score_slots(
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
    fn candidates(
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
        let np = m.div_ceil(crate::layout::PANEL);
        let mut mx = vec![0f32; np * crate::layout::PANEL];
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
                        if allowed.is_some_and(|a| !a[su]) {
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

    fn allowed_mask(&self, allow: Option<&[i64]>) -> Option<Vec<bool>> {
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
        Ok(Results::from_selections(sel, k, Metric::Dot))
    }
}

impl Index for MultiVectorIndex {
    type Data<'a> = TokenDocs<'a>;
    type Queries<'a> = &'a [&'a [f32]];
    type Params<'a> = SearchParams;

    const KIND: Kind = Kind::MultiVector;

    /// Token dimension.
    fn dim(&self) -> usize {
        self.dim
    }

    /// [`Metric::Dot`]: MaxSim sums inner products.
    fn metric(&self) -> Metric {
        Metric::Dot
    }

    /// Number of documents.
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when `id` is stored.
    fn contains(&self, id: i64) -> bool {
        self.idmap.contains(id)
    }

    fn ids(&self) -> Vec<i64> {
        self.ids.clone()
    }

    /// Decompressed tokens of the documents `ids`, back to back (`n_i x d` each).
    fn get(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let slots = ids.iter().map(|&id| self.idmap.slot(id)).collect::<Result<Vec<usize>>>()?;
        let mut out = Vec::new();
        for s in slots {
            self.decode_into(s, &mut out);
        }
        Ok(out)
    }

    /// Add documents: `tokens` holds all their token vectors back to back, document `i` being
    /// rows `offsets[i]..offsets[i + 1]`. The first add trains the centroids. Returns the ids.
    ///
    /// Everything is checked before anything changes, so a failed add leaves the index as it was.
    fn add(&mut self, docs: TokenDocs<'_>, ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        let TokenDocs { tokens, offsets } = docs;
        let d = self.dim;
        let n_tok = vectors::rows(tokens, d, "document tokens")?;
        Docs::Packed { tokens: Tokens::F32(tokens), offsets }.validate(d)?;
        vectors::check_finite(tokens, d, "document tokens")?;
        let n = offsets.len() - 1;
        let new_ids = self.idmap.assign(n, ids, "documents")?;
        if self.ids.len() + n > u32::MAX as usize {
            return Err(Error::InvalidArgument("a MultiVectorIndex holds at most 2^32 - 1 documents".into()));
        }
        if self.refine == Refine::F16 && tokens.iter().any(|x| x.abs() > 65504.0) {
            return Err(Error::InvalidArgument(
                "document tokens exceed the float16 range (|x| > 65504) of the f16 refine copy".into(),
            ));
        }
        if n_tok > 0 && self.centroids.is_empty() {
            self.train(tokens, threads)?;
        }
        let base = self.n_tokens() as u64;
        match (self.nbits, self.refine) {
            (0, _) => self.tokens.to_mut().extend_from_slice(tokens),
            (_, Refine::F16) => self.exact16.to_mut().extend(tokens.iter().map(|&x| half::f32_to_f16(x))),
            (_, Refine::F32) => self.exact32.to_mut().extend_from_slice(tokens),
            (_, Refine::None) => {}
        }
        if n_tok > 0 {
            let codes = self.assign(tokens, threads)?;
            if self.nbits > 0 {
                let res = self.encode(tokens, &codes, threads);
                self.residuals.to_mut().extend_from_slice(&res);
            }
            let first = self.ids.len();
            if self.lists.len() < self.n_centroids() {
                self.lists.resize(self.n_centroids(), Vec::new());
            }
            let mut seen: Vec<u32> = Vec::new();
            for i in 0..n {
                seen.clear();
                seen.extend(&codes[offsets[i] as usize..offsets[i + 1] as usize]);
                seen.sort_unstable();
                seen.dedup();
                for &c in &seen {
                    self.lists[c as usize].push((first + i) as u32);
                }
            }
            self.codes.to_mut().extend_from_slice(&codes);
        }
        for (i, &id) in new_ids.iter().enumerate() {
            self.idmap.insert(id, self.ids.len());
            self.ids.push(id);
            self.offsets.push(base + offsets[i + 1] as u64);
        }
        self.idmap.advance(&new_ids);
        Ok(new_ids)
    }

    /// Remove documents by id; all must exist (else nothing changes). Returns how many.
    fn remove(&mut self, ids: &[i64]) -> Result<usize> {
        let mut gone = HashSet::with_capacity(ids.len());
        for &id in ids {
            if !self.idmap.contains(id) {
                return Err(Error::UnknownId(id));
            }
            gone.insert(id);
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let d = self.dim;
        let rb = self.rbytes();
        let (mut codes, mut res, mut toks) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ex16, mut ex32) = (Vec::new(), Vec::new());
        let (mut new_ids, mut offsets) = (Vec::new(), vec![0u64]);
        for (s, &id) in self.ids.iter().enumerate() {
            if gone.contains(&id) {
                continue;
            }
            let (a, z) = (self.offsets[s] as usize, self.offsets[s + 1] as usize);
            if self.nbits == 0 {
                toks.extend_from_slice(&self.tokens.as_slice()[a * d..z * d]);
            } else {
                res.extend_from_slice(&self.residuals.as_slice()[a * rb..z * rb]);
            }
            match self.refine {
                Refine::F16 => ex16.extend_from_slice(&self.exact16.as_slice()[a * d..z * d]),
                Refine::F32 => ex32.extend_from_slice(&self.exact32.as_slice()[a * d..z * d]),
                Refine::None => {}
            }
            codes.extend_from_slice(&self.codes.as_slice()[a..z]);
            new_ids.push(id);
            offsets.push(*offsets.last().unwrap() + (z - a) as u64);
        }
        self.codes = Buf::Owned(codes);
        self.residuals = Buf::Owned(res);
        self.tokens = Buf::Owned(toks);
        self.exact16 = Buf::Owned(ex16);
        self.exact32 = Buf::Owned(ex32);
        self.offsets = offsets;
        self.idmap.reset_to(&new_ids);
        self.ids = new_ids;
        self.rebuild_lists();
        Ok(gone.len())
    }

    /// Top-`k` documents of each query (`m_q x d` row-major each); `nq x k` results.
    fn search(
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
        Ok(Results::from_selections(sel, k, Metric::Dot))
    }

    /// Save atomically to `path`.
    fn save(&self, path: &Path) -> Result<()> {
        let header = Header {
            kind: Kind::MultiVector,
            dim: self.dim,
            metric: Metric::Dot,
            dtype: if self.nbits == 0 { Dtype::F32 } else { Dtype::U8 },
            count: self.len() as u64,
        };
        let meta = [
            self.idmap.next_id(),
            self.nbits as i64,
            self.want_centroids as i64,
            self.seed as i64,
            self.normalize as i64,
        ];
        let mut w = Writer::new(header);
        w.add("meta", &meta);
        w.add("ids", &self.ids);
        w.add("offsets", &self.offsets);
        w.add("centroid", &self.centroids);
        w.add("cutoffs", &self.cutoffs);
        w.add("weights", &self.weights);
        w.add("codes", self.codes.as_slice());
        w.add("resid", self.residuals.as_slice());
        w.add("tokens", self.tokens.as_slice());
        // Sections an older reader ignores: it then loads the index without its refine copy.
        let refine = [self.refine.code()];
        w.add("refine", &refine);
        w.add("exact16", self.exact16.as_slice());
        w.add("exact32", self.exact32.as_slice());
        w.write_atomic(path)
    }

    /// Load from an opened file; token data stays mapped when it was mmapped.
    fn from_file(f: &IndexFile) -> Result<MultiVectorIndex> {
        let h = *f.header();
        if h.kind != Kind::MultiVector {
            return Err(f.corrupt(&format!("holds a {}, not a MultiVectorIndex", h.kind.name())));
        }
        let meta: Vec<i64> = f.vec("meta")?;
        if meta.len() != 5 || h.dim == 0 || meta[4] > 1 || meta[4] < 0 {
            return Err(f.corrupt("bad metadata"));
        }
        if (meta[1] == 0) != (h.dtype == Dtype::F32) {
            return Err(f.corrupt("the header dtype does not match nbits"));
        }
        let nbits = meta[1] as usize;
        let mut idx = MultiVectorIndex::new(h.dim, nbits, meta[2].max(0) as usize, meta[3] as u64)
            .map_err(|e| f.corrupt(&e.to_string()))?;
        let d = h.dim;
        idx.normalize = meta[4] == 1;
        idx.ids = f.vec("ids")?;
        idx.offsets = f.vec("offsets")?;
        idx.centroids = f.vec("centroid")?;
        idx.cutoffs = f.vec("cutoffs")?;
        idx.weights = f.vec("weights")?;
        idx.codes = f.buf("codes")?;
        idx.residuals = f.buf("resid")?;
        idx.tokens = f.buf("tokens")?;
        if f.has("refine") {
            let code: Vec<i64> = f.vec("refine")?;
            idx.refine = match code.as_slice() {
                [0] => Refine::None,
                [1] if nbits > 0 => Refine::F16,
                [2] if nbits > 0 => Refine::F32,
                _ => return Err(f.corrupt("bad refine section")),
            };
            idx.exact16 = f.buf("exact16")?;
            idx.exact32 = f.buf("exact32")?;
        }
        let n = idx.ids.len();
        let nc = idx.centroids.len() / d;
        let b = 1usize << nbits;
        let ok_offsets =
            idx.offsets.len() == n + 1 && idx.offsets[0] == 0 && idx.offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ok_offsets || n as u64 != h.count || !idx.centroids.len().is_multiple_of(d) {
            return Err(f.corrupt("section sizes do not match the header"));
        }
        let nt = *idx.offsets.last().unwrap() as usize;
        // Buckets exist once the index is trained (has centroids).
        let (want_res, want_tok, want_cut, want_w) = match (nbits, nc) {
            (0, _) => (0, nt * d, 0, 0),
            (_, 0) => (0, 0, 0, 0),
            _ => (nt * idx.rbytes(), 0, d * (b - 1), d * b),
        };
        if idx.codes.as_slice().len() != nt
            || idx.residuals.as_slice().len() != want_res
            || idx.tokens.as_slice().len() != want_tok
            || idx.exact16.as_slice().len() != if idx.refine == Refine::F16 { nt * d } else { 0 }
            || idx.exact32.as_slice().len() != if idx.refine == Refine::F32 { nt * d } else { 0 }
            || idx.cutoffs.len() != want_cut
            || idx.weights.len() != want_w
            || (nt > 0 && nc == 0)
            || idx.codes.as_slice().iter().any(|&c| c as usize >= nc)
        {
            return Err(f.corrupt("section sizes or centroid ids do not match"));
        }
        idx.idmap = IdMap::with_capacity(idx.ids.len(), meta[0]);
        for (s, &id) in idx.ids.iter().enumerate() {
            if !idx.idmap.insert_loaded(id, s) {
                return Err(f.corrupt("invalid or duplicate id"));
            }
        }
        idx.build_lut();
        idx.rebuild_lists();
        Ok(idx)
    }

    /// Heap bytes used: tokens, centroids, inverted lists, offsets and ids (mapped pages excluded).
    fn memory_bytes(&self) -> usize {
        self.codes.heap_bytes()
            + self.residuals.heap_bytes()
            + self.tokens.heap_bytes()
            + self.exact16.heap_bytes()
            + self.exact32.heap_bytes()
            + 4 * (self.centroids.capacity() + self.cutoffs.capacity() + self.weights.capacity())
            + self.lists.iter().map(|l| l.capacity() * 4 + 24).sum::<usize>()
            + self.offsets.capacity() * 8
            + self.ids.capacity() * 8
            + self.idmap.capacity() * 24
    }

    /// True while the token data is read from an mmapped file.
    fn is_mapped(&self) -> bool {
        self.codes.is_mapped()
            || self.tokens.is_mapped()
            || self.exact16.is_mapped()
            || self.exact32.is_mapped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                let (u1, u2) = (1.0 - rng.f64(), rng.f64());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        v.sort_unstable_by(f32::total_cmp);
        v
    }

    fn mse(sorted: &[f32], cuts: &[f32], levels: &[f32]) -> f64 {
        let e: f64 = sorted
            .iter()
            .map(|&v| (v - levels[cuts.iter().filter(|&&c| v > c).count()]) as f64)
            .map(|e| e * e)
            .sum();
        e / sorted.len() as f64
    }

    #[test]
    fn lloyd_max_matches_the_gaussian_optimum() {
        let x = sorted_gaussian(200_000, 7);
        // Max (1960): 4 levels for N(0, 1) at +-0.4528, +-1.510, cutoffs 0, +-0.9816, MSE 0.1175.
        let (cuts, levels) = lloyd_max(&x, 4);
        for (got, want) in levels.iter().zip([-1.510, -0.4528, 0.4528, 1.510]) {
            assert!((got - want).abs() < 0.02, "levels {levels:?}");
        }
        for (got, want) in cuts.iter().zip([-0.9816, 0.0, 0.9816]) {
            assert!((got - want).abs() < 0.02, "cutoffs {cuts:?}");
        }
        let e = mse(&x, &cuts, &levels);
        assert!((e - 0.1175).abs() < 0.003, "mse {e}");
        // Quantile buckets at their mid-quantiles lose about a quarter more.
        let q = |f: f64| x[(f * x.len() as f64) as usize];
        let qc = [q(0.25), q(0.5), q(0.75)];
        let ql = [q(0.125), q(0.375), q(0.625), q(0.875)];
        assert!(mse(&x, &qc, &ql) > 1.2 * e);
        // 16 levels: MSE 0.009497 (Max 1960).
        let (c16, l16) = lloyd_max(&x, 16);
        let e16 = mse(&x, &c16, &l16);
        assert!((e16 - 0.0095).abs() < 0.0003, "mse {e16}");
        assert!(c16.windows(2).all(|w| w[0] <= w[1]) && l16.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn lloyd_max_with_repeated_values_keeps_ordered_cutoffs() {
        for x in [vec![0.5f32; 100], vec![-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], vec![3.0]] {
            let (cuts, levels) = lloyd_max(&x, 16);
            assert!(cuts.iter().chain(&levels).all(|v| v.is_finite()));
            assert!(cuts.windows(2).all(|w| w[0] <= w[1]), "{cuts:?}");
            // Every sample value decodes to itself (there are fewer distinct values than levels).
            assert!(mse(&x, &cuts, &levels) < 1e-12);
        }
    }
}
