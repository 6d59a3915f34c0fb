//! `IvfIndex`: an inverted-file index. k-means centroids partition the vectors into lists;
//! a search scores the `nprobe` lists nearest to each query. Lists hold float32 vectors or
//! 8-bit scalar-quantized codes (per-dimension min/step, like FAISS SQ8), both in block layout.
//!
//! Batched searches group queries by list, so each probed list is streamed once for all the
//! queries that probe it through the register-blocked tile kernels.

mod coarse;
mod io;
#[cfg(test)]
mod room_tests;
mod scan;

pub use coarse::{Coarse, GRAPH_MIN_NLIST};

use std::path::Path;

use crate::format::storage::{Buf, Dtype, Header, IndexFile, Kind, Mapping, Writer};
use crate::index::hnsw::HnswIndex;
use crate::index::ids::IdMap;
use crate::index::{IdIndex, Index};
use crate::kernels::kmeans::{self, Init};
use crate::kernels::layout::PANEL;
use crate::kernels::metric::Metric;
use crate::kernels::pack;
use crate::kernels::simd::{self, U8_ROWS};
use crate::kernels::topk::{self, Blocks, Results, Scan, Source, TopK};
use crate::util::error::{Error, Result};
use crate::util::parallel;
use crate::util::rng::Rng;
use crate::util::vectors;

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

/// Room for an add: grown copies of an index's lists and id arrays (see [`IvfIndex::room_for`]).
#[derive(Default)]
pub(crate) struct Room {
    lists: Vec<(usize, List)>,
    loc: Option<Vec<(u32, u32)>>,
    raw: Option<Buf<f32>>,
    /// The id map with room for the batch (rehashing it in place takes milliseconds).
    idmap: Option<IdMap<u32>>,
}

#[derive(Default)]
pub(super) struct List {
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

/// Search settings of an [`IvfIndex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfParams {
    /// Lists scanned per query (capped at `nlist`).
    pub nprobe: usize,
    /// With int8 storage, rescore the best `refine * k` with the float32 vectors (0: off).
    pub refine: usize,
    /// Beam width of the walk over the centroid graph (0: `max(nprobe + nprobe / 2, 32)`).
    pub coarse_ef: usize,
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
    /// How searches pick their lists, and the centroid graph when that setting wants one.
    coarse: Coarse,
    graph: Option<HnswIndex>,
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
            coarse: Coarse::Auto,
            graph: None,
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

    pub(super) fn prepare<'a>(&self, v: &'a [f32], owned: &'a mut Vec<f32>) -> &'a [f32] {
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
        let km = kmeans::centroids(
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
            (self.vmin, self.step) = crate::kernels::sq8::fit(x, d);
        }
        self.set_centroids(km.centroids);
        self.sync_graph(threads)
    }

    pub(super) fn set_centroids(&mut self, c: Vec<f32>) {
        self.packed_centroids = vec![0f32; pack::packed_len(self.nlist, self.dim)];
        pack::pack_rows(&c, self.dim, None, &mut self.packed_centroids);
        self.centroids = c;
        self.lists = (0..self.nlist).map(|_| List::default()).collect();
        self.graph = None;
    }

    pub(super) fn coarse_metric(&self) -> Metric {
        if self.spherical() {
            Metric::Dot
        } else {
            Metric::L2
        }
    }

    /// First step of an add: check `v` (the index trained, every value finite, room left) and
    /// find each row's list. Changes nothing, so it can run while searches share the index.
    pub(crate) fn route(&self, v: &[f32], threads: usize) -> Result<Vec<i64>> {
        if !self.is_trained() {
            return Err(Error::InvalidArgument(
                "the IVFIndex is not trained: call train(sample) before add".into(),
            ));
        }
        let d = self.dim;
        let n = vectors::rows(v, d, "vectors")?;
        vectors::check_finite(v, d, "vectors")?;
        if self.len() + n > u32::MAX as usize {
            return Err(Error::InvalidArgument("an IVFIndex holds at most 2^32-1 vectors".into()));
        }
        let mut owned = Vec::new();
        let x = self.prepare(v, &mut owned);
        self.probe_exact(x, 1, threads)
    }

    /// Room for an add routed to `lists`, built aside through a shared reference: grown copies
    /// of the lists (and id arrays and map) too small to take it, which [`IvfIndex::install`]
    /// swaps in. Each gets exactly the room the batch needs, so memory tracks the data rather
    /// than Vec growth, and adding the batch in parts copies nothing more. A caller that serves
    /// searches while it adds builds these outside its write lock, so the copying (the whole
    /// index, when most lists grow) never holds searches up. Run one edit at a time: the copies
    /// are of the index as it is now.
    pub(crate) fn room_for(&self, lists: &[i64]) -> Room {
        let d = self.dim;
        let n = lists.len();
        let mut counts = vec![0usize; self.nlist];
        for &l in lists {
            counts[l as usize] += 1;
        }
        let norms = self.metric == Metric::L2 && self.storage == Storage::Int8;
        let w = if self.storage == Storage::Int8 { pack::quad_dim(d) } else { d };
        let mut out = Room { lists: Vec::new(), loc: None, raw: None, idmap: None };
        if !self.idmap.has_room(n) {
            out.idmap = Some(self.idmap.with_room(n));
        }
        for (l, (list, &c)) in self.lists.iter().zip(&counts).enumerate() {
            let len = pack::packed_len(list.len() + c, w);
            let fits = match self.storage {
                Storage::F32 => list.data.capacity() >= len,
                Storage::Int8 => list.codes.capacity() >= len,
            };
            if c == 0 || (fits && list.labels.capacity() >= list.len() + c) {
                continue;
            }
            let (f32_len, u8_len) = if self.storage == Storage::F32 { (len, 0) } else { (0, len) };
            let rows = list.len() + c;
            out.lists.push((
                l,
                List {
                    labels: vectors::with_room(&list.labels, rows),
                    slots: vectors::with_room(&list.slots, rows),
                    data: vectors::with_room(&list.data, f32_len),
                    codes: vectors::with_room(&list.codes, u8_len),
                    norms: vectors::with_room(&list.norms, if norms { rows } else { 0 }),
                },
            ));
        }
        if self.loc.capacity() < self.loc.len() + n {
            out.loc = Some(vectors::with_room(&self.loc, self.loc.len() + n));
        }
        if self.storage == Storage::Int8 && self.raw.room() < n * d {
            let raw = self.raw.as_slice();
            out.raw = Some(Buf::Owned(vectors::with_room(raw, raw.len() + n * d)));
        }
        out
    }

    /// Swap in the copies [`IvfIndex::room_for`] built (a few pointer swaps); returns what they
    /// replace, for the caller to drop once it has released its lock.
    pub(crate) fn install(&mut self, mut room: Room) -> Room {
        for (l, list) in &mut room.lists {
            std::mem::swap(&mut self.lists[*l], list);
        }
        if let Some(loc) = &mut room.loc {
            std::mem::swap(&mut self.loc, loc);
        }
        if let Some(raw) = &mut room.raw {
            std::mem::swap(&mut self.raw, raw);
        }
        if let Some(idmap) = &mut room.idmap {
            std::mem::swap(&mut self.idmap, idmap);
        }
        room
    }

    /// Last step of an add: store the rows of `v` in the lists [`IvfIndex::route`] chose for them
    /// (`lists`, one per row) under `ids` (or the next free ids); returns the ids given. Checks
    /// the ids before changing anything.
    pub(crate) fn add_routed(&mut self, v: &[f32], ids: Option<&[i64]>, lists: &[i64]) -> Result<Vec<i64>> {
        let d = self.dim;
        let new_ids = self.idmap.assign(lists.len(), ids, "vectors")?;
        if v.len() != lists.len() * d {
            return Err(Error::InvalidArgument("one list per row expected".into()));
        }
        let mut owned = Vec::new();
        let x = self.prepare(v, &mut owned);
        let assign = lists;
        let l2 = self.metric == Metric::L2;
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

    fn encode(&self, row: &[f32], codes: &mut [u8]) -> f32 {
        crate::kernels::sq8::encode(&self.vmin, &self.step, &row[..self.dim], codes)
    }
}

impl IdIndex for IvfIndex {
    const KIND: Kind = Kind::Ivf;

    /// Vector dimension.
    fn dim(&self) -> usize {
        self.dim
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

    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        self.idmap.assign(n, ids, "vectors")
    }

    /// A removal moves two rows (within its list, and the last slot's), about 4 µs at 128
    /// dimensions: a quarter of FlatIndex's batch keeps each section near 0.1 ms.
    fn remove_batch(&self) -> usize {
        (crate::index::flat::REMOVE_FLOATS / 4 / self.dim).clamp(4, 1024)
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

    fn save(&self, path: &Path) -> Result<()> {
        self.write_file(path)
    }

    fn from_file(f: &IndexFile) -> Result<IvfIndex> {
        IvfIndex::read_file(f)
    }

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
            + self.graph.as_ref().map_or(0, |g| g.memory_bytes())
    }

    fn mapped_file(&self) -> Option<&Mapping> {
        self.raw.mapping()
    }
}

impl Index for IvfIndex {
    type Data<'a> = &'a [f32];
    type Queries<'a> = &'a [f32];
    type Params<'a> = IvfParams;

    /// Metric.
    fn metric(&self) -> Metric {
        self.metric
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
        let lists = self.route(v, threads)?;
        self.idmap.assign(lists.len(), ids, "vectors")?;
        let room = self.room_for(&lists);
        self.install(room);
        self.add_routed(v, ids, &lists)
    }

    /// Heap bytes of the index proper (centroids, lists, ids); the float32 copy kept for
    /// `refine` by int8 storage is reported by [`IvfIndex::refine_bytes`].
    fn search(
        &self,
        queries: &[f32],
        k: usize,
        params: &IvfParams,
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        self.search_lists(queries, k, params, allow, threads)
    }
}
