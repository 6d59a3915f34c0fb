//! `IvfIndex`: an inverted-file index. k-means centroids partition the vectors into lists;
//! a search scores the `nprobe` lists nearest to each query. Lists hold float32 vectors or
//! 8-bit scalar-quantized codes (per-dimension min/step, like FAISS SQ8), both in block layout.
//!
//! Batched searches group queries by list, so each probed list is streamed once for all the
//! queries that probe it through the register-blocked tile kernels.

use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ids::IdMap;
use crate::index::Index;
use crate::kmeans::{self, Init};
use crate::layout::PANEL;
use crate::metric::Metric;
use crate::pack;
use crate::parallel;
use crate::rng::Rng;
use crate::simd::{self, U8_ROWS};
use crate::storage::{Buf, Dtype, Header, IndexFile, Kind, Writer};
use crate::topk::{self, Blocks, Results, Scan, Source, TopK};
use crate::vectors;

/// How list entries are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// float32 vectors: exact scores within the probed lists.
    F32,
    /// One byte per dimension; float32 originals kept for `refine`.
    Int8,
}

impl Storage {
    /// Parse `"f32"` / `"int8"`.
    pub fn parse(s: &str) -> Result<Storage> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "flat" => Ok(Storage::F32),
            "int8" | "sq8" | "i8" | "u8" => Ok(Storage::Int8),
            other => Err(Error::InvalidArgument(format!(
                "unknown storage {other:?}: expected \"f32\" or \"int8\""
            ))),
        }
    }

    /// Canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::Int8 => "int8",
        }
    }
}

/// Candidates whose float32 rows `refine` prefetches ahead of the one it scores.
const REFINE_AHEAD: usize = 4;

/// Training subsamples to this many points per list (as FAISS does).
const MAX_POINTS_PER_LIST: usize = 256;

#[derive(Default)]
struct List {
    labels: Vec<i64>,
    slots: Vec<u32>,
    /// Block layout: f32 vectors (F32), or u8 codes (Int8) in the quad layout of width
    /// `quad_dim(dim)` that the `tile_u8` kernels read.
    data: Vec<f32>,
    codes: Vec<u8>,
    /// `||decoded||^2` per entry (Int8).
    norms: Vec<f32>,
}

impl List {
    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// Queries as the u8 scan uses them: `dot(q, decoded) ~= bias + scale * (w . codes)` with `w`
/// the per-query int8 weights `round(q * step / scale)` (stride `dp`, zero padded).
struct QueryCodes {
    dp: usize,
    w: Vec<i8>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    qn: Vec<f32>,
}

/// Search settings of an [`IvfIndex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfParams {
    /// Lists scanned per query (capped at `nlist`).
    pub nprobe: usize,
    /// With int8 storage, rescore the best `refine * k` with the float32 vectors (0: off).
    pub refine: usize,
}

/// Inverted-file index (see the module docs).
pub struct IvfIndex {
    dim: usize,
    metric: Metric,
    nlist: usize,
    storage: Storage,
    centroids: Vec<f32>,
    packed_centroids: Vec<f32>,
    vmin: Vec<f32>,
    step: Vec<f32>,
    lists: Vec<List>,
    /// Per global slot: (list, position), and the float32 row (Int8 only).
    loc: Vec<(u32, u32)>,
    raw: Buf<f32>,
    idmap: IdMap<u32>,
}

impl IvfIndex {
    /// An untrained index with `nlist` lists.
    pub fn new(dim: usize, nlist: usize, metric: Metric, storage: Storage) -> Result<IvfIndex> {
        if dim == 0 || dim > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("dim must be at least 1, got {dim}")));
        }
        if nlist == 0 {
            return Err(Error::InvalidArgument("nlist must be at least 1".into()));
        }
        Ok(IvfIndex {
            dim,
            metric,
            nlist,
            storage,
            centroids: Vec::new(),
            packed_centroids: Vec::new(),
            vmin: Vec::new(),
            step: Vec::new(),
            lists: Vec::new(),
            loc: Vec::new(),
            raw: Buf::default(),
            idmap: IdMap::new(),
        })
    }

    /// Number of lists.
    pub fn nlist(&self) -> usize {
        self.nlist
    }
    /// Storage of list entries.
    pub fn storage(&self) -> Storage {
        self.storage
    }
    /// True once `train` has run.
    pub fn is_trained(&self) -> bool {
        !self.centroids.is_empty()
    }
    /// The `nlist x dim` centroids (empty before training).
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }
    /// Number of vectors in each list.
    pub fn list_sizes(&self) -> Vec<usize> {
        self.lists.iter().map(List::len).collect()
    }

    /// Heap bytes of the float32 vectors kept for `refine` (0 when mmapped or f32 storage).
    pub fn refine_bytes(&self) -> usize {
        self.raw.heap_bytes()
    }

    fn spherical(&self) -> bool {
        self.metric != Metric::L2
    }

    fn prepare<'a>(&self, v: &'a [f32], owned: &'a mut Vec<f32>) -> &'a [f32] {
        if self.metric == Metric::Cosine {
            *owned = vectors::normalized(v, self.dim);
            owned
        } else {
            v
        }
    }

    /// Learn the centroids (k-means, `iters` iterations, `seed`) and the int8 ranges from `sample`.
    pub fn train(&mut self, sample: &[f32], iters: usize, seed: u64, threads: usize) -> Result<()> {
        let d = self.dim;
        let n = vectors::rows(sample, d, "training vectors")?;
        vectors::check_finite(sample, d, "training vectors")?;
        if !self.is_empty() {
            return Err(Error::InvalidArgument(
                "the index already holds vectors: train before adding".into(),
            ));
        }
        if n < self.nlist {
            return Err(Error::InvalidArgument(format!(
                "nlist = {} needs at least that many training vectors, got {n}",
                self.nlist
            )));
        }
        let mut owned = Vec::new();
        let x = self.prepare(sample, &mut owned);
        let cap = self.nlist * MAX_POINTS_PER_LIST;
        let sub: Vec<f32>;
        let train = if n > cap {
            let mut rng = Rng::new(seed ^ 0x5EED);
            let mut pick = rng.sample(n, cap);
            pick.sort_unstable();
            sub = pick.iter().flat_map(|&i| x[i * d..(i + 1) * d].to_vec()).collect();
            &sub[..]
        } else {
            x
        };
        let km = kmeans::kmeans(
            train,
            d,
            self.nlist,
            iters,
            seed,
            Init::KMeansPlusPlus,
            self.spherical(),
            threads,
        )?;
        if self.storage == Storage::Int8 {
            let mut lo = vec![f32::INFINITY; d];
            let mut hi = vec![f32::NEG_INFINITY; d];
            for row in x.chunks_exact(d) {
                for t in 0..d {
                    lo[t] = lo[t].min(row[t]);
                    hi[t] = hi[t].max(row[t]);
                }
            }
            self.step = lo.iter().zip(&hi).map(|(l, h)| if h > l { (h - l) / 255.0 } else { 1.0 }).collect();
            self.vmin = lo;
        }
        self.set_centroids(km.centroids);
        Ok(())
    }

    fn set_centroids(&mut self, c: Vec<f32>) {
        self.packed_centroids = vec![0f32; pack::packed_len(self.nlist, self.dim)];
        pack::pack_rows(&c, self.dim, None, &mut self.packed_centroids);
        self.centroids = c;
        self.lists = (0..self.nlist).map(|_| List::default()).collect();
    }

    fn coarse_metric(&self) -> Metric {
        if self.spherical() {
            Metric::Dot
        } else {
            Metric::L2
        }
    }

    /// The `nprobe` nearest lists of each row of `x` (already prepared).
    fn probe(&self, x: &[f32], nprobe: usize, threads: usize) -> Result<Vec<i64>> {
        let b = Blocks {
            data: &self.packed_centroids,
            n: self.nlist,
            d: self.dim,
            ids: None,
            base: 0,
            allow: None,
        };
        Ok(topk::search(x, Source::Packed(b), self.coarse_metric(), nprobe, threads)?.ids)
    }

    fn encode(&self, row: &[f32], codes: &mut [u8]) -> f32 {
        let mut norm = 0f32;
        for t in 0..self.dim {
            let q = ((row[t] - self.vmin[t]) / self.step[t]).round().clamp(0.0, 255.0);
            codes[t] = q as u8;
            let dec = self.vmin[t] + q * self.step[t];
            norm += dec * dec;
        }
        norm
    }

    /// The int8 form of each query for the u8 scan (see [`QueryCodes`]).
    fn quantize_queries(&self, q: &[f32]) -> QueryCodes {
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

    /// Score the queries `qs` against list `l`, offering results to `sel`.
    #[allow(clippy::too_many_arguments)]
    fn scan_list(
        &self,
        l: usize,
        qs: &[u32],
        q: &[f32],
        qc: Option<&QueryCodes>,
        allowed: Option<&[bool]>,
        slot_ids: bool,
        sel: &mut [TopK],
    ) {
        let d = self.dim;
        let list = &self.lists[l];
        let n = list.len();
        let l2 = self.metric == Metric::L2;
        let bitmap: Option<Vec<u64>> = allowed.map(|ok| {
            let mut bits = vec![0u64; n.div_ceil(64)];
            for (p, &s) in list.slots.iter().enumerate() {
                if ok[s as usize] {
                    bits[p / 64] |= 1 << (p % 64);
                }
            }
            bits
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
                    allow: bitmap.as_deref(),
                };
                let mut local: Vec<TopK> =
                    qs.iter().map(|&qi| std::mem::replace(&mut sel[qi as usize], TopK::new(0))).collect();
                Scan::new(&rows, d, l2).run(0, qs.len(), &b, 0, n, &mut local);
                for (&qi, s) in qs.iter().zip(local) {
                    sel[qi as usize] = s;
                }
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
                                    if bits[pos / 64] >> (pos % 64) & 1 == 0 {
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
            }
        }
    }

    /// Rescore each query's candidates (global slots) with the float32 vectors and keep the
    /// best `k`, labelled; queries run in parallel and the next candidate's row is prefetched.
    fn refine(&self, q: &[f32], sel: Vec<TopK>, k: usize, threads: usize) -> Vec<TopK> {
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
}

impl Index for IvfIndex {
    type Data<'a> = &'a [f32];
    type Queries<'a> = &'a [f32];
    type Params<'a> = IvfParams;

    const KIND: Kind = Kind::Ivf;

    /// Vector dimension.
    fn dim(&self) -> usize {
        self.dim
    }

    /// Metric.
    fn metric(&self) -> Metric {
        self.metric
    }

    /// Number of stored vectors.
    fn len(&self) -> usize {
        self.loc.len()
    }

    /// True when `id` is stored.
    fn contains(&self, id: i64) -> bool {
        self.idmap.contains(id)
    }

    fn ids(&self) -> Vec<i64> {
        self.loc.iter().map(|&(l, p)| self.lists[l as usize].labels[p as usize]).collect()
    }

    /// The stored vectors of `ids`: the float32 rows, or the int8 codes decoded
    /// (`min + step * code` per dimension).
    fn get(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let d = self.dim;
        let dp = pack::quad_dim(d);
        let mut out = vec![0f32; ids.len() * d];
        let mut codes = vec![0u8; d];
        for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
            let (l, p) = self.loc[self.idmap.slot(id)? as usize];
            let list = &self.lists[l as usize];
            match self.storage {
                Storage::F32 => pack::read_vector(&list.data, d, p as usize, row),
                Storage::Int8 => {
                    pack::read_quad(&list.codes, dp, p as usize, &mut codes);
                    for (t, (o, &c)) in row.iter_mut().zip(&codes).enumerate() {
                        *o = self.vmin[t] + c as f32 * self.step[t];
                    }
                }
            }
        }
        Ok(out)
    }

    fn add(&mut self, v: &[f32], ids: Option<&[i64]>, threads: usize) -> Result<Vec<i64>> {
        if !self.is_trained() {
            return Err(Error::InvalidArgument(
                "the IVFIndex is not trained: call train(sample) before add".into(),
            ));
        }
        let d = self.dim;
        let n = vectors::rows(v, d, "vectors")?;
        vectors::check_finite(v, d, "vectors")?;
        let new_ids = self.idmap.assign(n, ids, "vectors")?;
        if self.len() + n > u32::MAX as usize {
            return Err(Error::InvalidArgument("an IVFIndex holds at most 2^32-1 vectors".into()));
        }
        let mut owned = Vec::new();
        let x = self.prepare(v, &mut owned);
        let assign = self.probe(x, 1, threads)?;
        // Reserve exactly what this batch needs, so memory tracks the data rather than Vec growth.
        let mut counts = vec![0usize; self.nlist];
        for &l in &assign {
            counts[l as usize] += 1;
        }
        let l2 = self.metric == Metric::L2;
        for (list, &c) in self.lists.iter_mut().zip(&counts) {
            if c == 0 {
                continue;
            }
            let w = if self.storage == Storage::Int8 { pack::quad_dim(d) } else { d };
            let grow = pack::packed_len(list.len() + c, w) - pack::packed_len(list.len(), w);
            match self.storage {
                Storage::F32 => list.data.reserve_exact(grow),
                Storage::Int8 => list.codes.reserve_exact(grow),
            }
            list.labels.reserve_exact(c);
            list.slots.reserve_exact(c);
            if l2 && self.storage == Storage::Int8 {
                list.norms.reserve_exact(c);
            }
        }
        self.loc.reserve_exact(n);
        if self.storage == Storage::Int8 {
            self.raw.to_mut().reserve_exact(n * d);
        }
        let mut codes = vec![0u8; d];
        let dp = pack::quad_dim(d);
        for (i, row) in x.chunks_exact(d).enumerate() {
            let l = assign[i] as usize;
            let slot = self.loc.len() as u32;
            let norm = if self.storage == Storage::Int8 { self.encode(row, &mut codes) } else { 0.0 };
            let list = &mut self.lists[l];
            let pos = list.len();
            match self.storage {
                Storage::F32 => {
                    list.data.resize(pack::packed_len(pos + 1, d), 0.0);
                    pack::write_vector(&mut list.data, d, pos, row);
                }
                Storage::Int8 => {
                    list.codes.resize(pack::packed_len(pos + 1, dp), 0);
                    pack::write_quad(&mut list.codes, dp, pos, &codes);
                    if l2 {
                        list.norms.push(norm);
                    }
                    self.raw.to_mut().extend_from_slice(row);
                }
            }
            list.labels.push(new_ids[i]);
            list.slots.push(slot);
            self.loc.push((l as u32, pos as u32));
            self.idmap.insert(new_ids[i], slot);
        }
        self.idmap.advance(&new_ids);
        Ok(new_ids)
    }

    /// Remove ids; an unknown id is an error and then nothing is removed.
    fn remove(&mut self, ids: &[i64]) -> Result<usize> {
        self.idmap.check_known(ids)?;
        let d = self.dim;
        let dp = pack::quad_dim(d);
        let mut removed = 0;
        let mut tmp_f = vec![0f32; d];
        let mut tmp_u = vec![0u8; d];
        for id in ids {
            let Some(slot) = self.idmap.remove(*id) else { continue };
            let slot = slot as usize;
            // 1. Take the entry out of its list (swap with the list's last entry).
            let (l, pos) = self.loc[slot];
            let (l, pos) = (l as usize, pos as usize);
            let list = &mut self.lists[l];
            let last = list.len() - 1;
            if pos != last {
                match self.storage {
                    Storage::F32 => {
                        pack::read_vector(&list.data, d, last, &mut tmp_f);
                        pack::write_vector(&mut list.data, d, pos, &tmp_f);
                    }
                    Storage::Int8 => {
                        pack::read_quad(&list.codes, dp, last, &mut tmp_u);
                        pack::write_quad(&mut list.codes, dp, pos, &tmp_u);
                        if !list.norms.is_empty() {
                            list.norms[pos] = list.norms[last];
                        }
                    }
                }
                list.labels[pos] = list.labels[last];
                list.slots[pos] = list.slots[last];
                self.loc[list.slots[pos] as usize] = (l as u32, pos as u32);
            }
            list.labels.pop();
            list.slots.pop();
            match self.storage {
                Storage::F32 => {
                    pack::write_vector(&mut list.data, d, last, &vec![0f32; d]);
                    list.data.truncate(pack::packed_len(last, d));
                }
                Storage::Int8 => {
                    pack::write_quad(&mut list.codes, dp, last, &vec![0u8; d]);
                    list.codes.truncate(pack::packed_len(last, dp));
                    if !list.norms.is_empty() {
                        list.norms.pop();
                    }
                }
            }
            // 2. Free the global slot (swap with the last slot).
            let lastslot = self.loc.len() - 1;
            if slot != lastslot {
                let (ml, mp) = self.loc[lastslot];
                let moved = self.lists[ml as usize].labels[mp as usize];
                self.idmap.insert(moved, slot as u32);
                self.loc[slot] = (ml, mp);
                self.lists[ml as usize].slots[mp as usize] = slot as u32;
                if self.storage == Storage::Int8 {
                    let raw = self.raw.to_mut();
                    raw.copy_within(lastslot * d..(lastslot + 1) * d, slot * d);
                }
            }
            self.loc.pop();
            if self.storage == Storage::Int8 {
                self.raw.to_mut().truncate(lastslot * d);
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Top-`k` of each query over its `nprobe` nearest lists. With int8 storage and
    /// `refine > 0`, the best `refine * k` per query are rescored with the float32 vectors.
    /// `allow` restricts results to those ids.
    fn search(
        &self,
        queries: &[f32],
        k: usize,
        params: &IvfParams,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        let IvfParams { nprobe, refine } = *params;
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
        let probes = self.probe(q, nprobe, threads)?;
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
        let scan_task = |t: usize| -> Vec<TopK> {
            let mut sel: Vec<TopK> = (0..nq).map(|_| TopK::new(keep)).collect();
            for &l in work.iter().skip(t).step_by(tasks) {
                self.scan_list(l, &by_list[l], q, qc.as_ref(), allowed.as_deref(), slot_ids, &mut sel);
            }
            sel
        };
        let parts: Vec<Vec<TopK>> = if tasks == 1 || threads <= 1 {
            (0..tasks).map(scan_task).collect()
        } else {
            parallel::install(threads, || (0..tasks).into_par_iter().map(scan_task).collect())
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
        Ok(Results::from_selections(sel, k, self.metric))
    }

    /// Save atomically to `path`.
    fn save(&self, path: &Path) -> Result<()> {
        let dtype = if self.storage == Storage::Int8 { Dtype::U8 } else { Dtype::F32 };
        let header =
            Header { kind: Kind::Ivf, dim: self.dim, metric: self.metric, dtype, count: self.len() as u64 };
        let meta = [self.nlist as i64, self.is_trained() as i64, self.idmap.next_id()];
        // Lists are written back to back; slots are renumbered in that order, so `raw` is too.
        let mut offsets = Vec::with_capacity(self.nlist + 1);
        let mut labels = Vec::with_capacity(self.len());
        let mut data = Vec::new();
        let mut codes = Vec::new();
        let mut norms = Vec::new();
        let mut raw = Vec::new();
        offsets.push(0u64);
        for list in &self.lists {
            labels.extend_from_slice(&list.labels);
            data.extend_from_slice(&list.data);
            codes.extend_from_slice(&list.codes);
            norms.extend_from_slice(&list.norms);
            if self.storage == Storage::Int8 {
                let r = self.raw.as_slice();
                for &s in &list.slots {
                    raw.extend_from_slice(&r[s as usize * self.dim..(s as usize + 1) * self.dim]);
                }
            }
            offsets.push(labels.len() as u64);
        }
        let mut w = Writer::new(header);
        w.add("meta", &meta);
        w.add("centroid", &self.centroids);
        w.add("sqmin", &self.vmin);
        w.add("sqstep", &self.step);
        w.add("offsets", &offsets);
        w.add("ids", &labels);
        w.add("vectors", &data);
        w.add("codes", &codes);
        w.add("norms", &norms);
        w.add("raw", &raw);
        w.write_atomic(path)
    }

    /// Load from an opened file; with mmap the float32 `refine` vectors stay in the mapping.
    fn from_file(f: &IndexFile) -> Result<IvfIndex> {
        let h = *f.header();
        if h.kind != Kind::Ivf {
            return Err(f.corrupt(&format!("holds a {}, not an IVFIndex", h.kind.name())));
        }
        let storage = match h.dtype {
            Dtype::F32 => Storage::F32,
            Dtype::U8 => Storage::Int8,
            _ => return Err(f.corrupt("bad dtype for an IVFIndex")),
        };
        let meta: Vec<i64> = f.vec("meta")?;
        if meta.len() != 3 || meta[0] <= 0 || h.dim == 0 {
            return Err(f.corrupt("bad IVF parameters"));
        }
        let (d, nlist) = (h.dim, meta[0] as usize);
        let mut idx = IvfIndex::new(d, nlist, h.metric, storage)?;
        idx.idmap = IdMap::with_capacity(0, meta[2]);
        let centroids: Vec<f32> = f.vec("centroid")?;
        let offsets: Vec<u64> = f.vec("offsets")?;
        let labels: Vec<i64> = f.vec("ids")?;
        let data: Vec<f32> = f.vec("vectors")?;
        let codes: Vec<u8> = f.vec("codes")?;
        let norms: Vec<f32> = f.vec("norms")?;
        idx.vmin = f.vec("sqmin")?;
        idx.step = f.vec("sqstep")?;
        let raw: Buf<f32> = f.buf("raw")?;
        let n = labels.len();
        let bad = || f.corrupt("section sizes do not match the header");
        if meta[1] == 0 {
            return if n == 0 && centroids.is_empty() { Ok(idx) } else { Err(bad()) };
        }
        let int8 = storage == Storage::Int8;
        if n as u64 != h.count
            || centroids.len() != nlist * d
            || offsets.len() != nlist + 1
            || offsets[0] != 0
            || offsets[nlist] as usize != n
            || offsets.windows(2).any(|w| w[0] > w[1])
            || (int8
                && (idx.vmin.len() != d
                    || idx.step.len() != d
                    || norms.len() != if h.metric == Metric::L2 { n } else { 0 }
                    || raw.as_slice().len() != n * d))
        {
            return Err(bad());
        }
        idx.set_centroids(centroids);
        let (mut dpos, mut cpos) = (0usize, 0usize);
        let dp = pack::quad_dim(d);
        // Format 1 stored the codes dimension-major like the f32 vectors; convert them.
        let old_codes = f.version() < 2;
        let mut tmp = vec![0u8; d];
        for l in 0..nlist {
            let (a, b) = (offsets[l] as usize, offsets[l + 1] as usize);
            let list = &mut idx.lists[l];
            if int8 {
                let len = pack::packed_len(b - a, if old_codes { d } else { dp });
                let src = codes.get(cpos..cpos + len).ok_or_else(bad)?;
                list.codes = if old_codes {
                    let mut quad = vec![0u8; pack::packed_len(b - a, dp)];
                    for p in 0..b - a {
                        pack::read_vector(src, d, p, &mut tmp);
                        pack::write_quad(&mut quad, dp, p, &tmp);
                    }
                    quad
                } else {
                    src.to_vec()
                };
                if h.metric == Metric::L2 {
                    list.norms = norms[a..b].to_vec();
                }
                cpos += len;
            } else {
                let len = pack::packed_len(b - a, d);
                list.data = data.get(dpos..dpos + len).ok_or_else(bad)?.to_vec();
                dpos += len;
            }
            list.labels = labels[a..b].to_vec();
            list.slots = (a as u32..b as u32).collect();
            for (p, s) in (a..b).enumerate() {
                idx.loc.push((l as u32, p as u32));
                if !idx.idmap.insert_loaded(labels[s], s as u32) {
                    return Err(f.corrupt("invalid or duplicate id"));
                }
            }
        }
        if dpos != data.len() || cpos != codes.len() {
            return Err(bad());
        }
        idx.raw = raw;
        Ok(idx)
    }

    /// Heap bytes of the index proper (centroids, lists, ids); the float32 copy kept for
    /// `refine` by int8 storage is reported by [`IvfIndex::refine_bytes`].
    fn memory_bytes(&self) -> usize {
        let lists: usize = self
            .lists
            .iter()
            .map(|l| {
                l.labels.capacity() * 8
                    + l.slots.capacity() * 4
                    + l.data.capacity() * 4
                    + l.codes.capacity()
                    + l.norms.capacity() * 4
            })
            .sum();
        lists
            + (self.centroids.capacity()
                + self.packed_centroids.capacity()
                + self.vmin.capacity()
                + self.step.capacity())
                * 4
            + self.loc.capacity() * 8
            + self.idmap.capacity() * (std::mem::size_of::<(i64, u32)>() + 1)
    }

    fn is_mapped(&self) -> bool {
        self.raw.is_mapped()
    }
}
