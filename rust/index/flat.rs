//! `FlatIndex`: exact search over vectors kept in block layout (see [`crate::kernels::pack`]).

use std::path::Path;

use crate::format::storage::{Buf, Dtype, Header, IndexFile, Kind, Mapping, Writer};
use crate::index::ids::IdMap;
use crate::index::{IdIndex, Index};
use crate::kernels::half;
use crate::kernels::metric::Metric;
use crate::kernels::pack;
use crate::kernels::topk::{self, Blocks, Prefilter, Results, Source};
use crate::util::error::{Error, Result};

/// Searches of at most this many queries use the bfloat16 prefilter (they are memory-bound).
const PREFILTER_MAX_QUERIES: usize = 2;
/// ... on indexes of at least this many vectors.
const PREFILTER_MIN_VECTORS: usize = 1024;
/// Floats one `remove` call moves on a small index (each removal rewrites a row in block layout,
/// one cache line per dimension): well under a millisecond. A large index takes more per call
/// (see `FlatIndex::remove_batch`).
pub(crate) const REMOVE_FLOATS: usize = 1 << 14;
use crate::util::bitset::Bitset;
use crate::util::vectors;

/// Positions of the settings in a FlatIndex file's `meta` section (`i64` each).
mod meta {
    /// The next automatic id.
    pub const NEXT_ID: usize = 0;
    /// 1 when the bfloat16 prefilter copy is kept.
    pub const PREFILTER: usize = 1;
    /// Number of entries.
    pub const LEN: usize = 2;
}

/// The buffers of a [`FlatIndex`] with room for more rows (see [`FlatIndex::room_for`]).
struct Room {
    data: Vec<f32>,
    half: Vec<u16>,
    resid: Vec<f32>,
    norms: Vec<f32>,
    ids: Vec<i64>,
    idmap: IdMap,
}

/// Exact (brute-force) index: every search scores every stored vector.
///
/// Cosine indexes store unit-length vectors. Ids are non-negative `i64` labels.
pub struct FlatIndex {
    dim: usize,
    metric: Metric,
    data: Buf<f32>,
    /// bfloat16 copy of `data` and per-slot error bounds (empty when the prefilter is off).
    half: Buf<u16>,
    resid: Buf<f32>,
    norms: Buf<f32>,
    prefilter: bool,
    ids: Vec<i64>,
    idmap: IdMap,
}

impl FlatIndex {
    /// An empty index of dimension `dim`.
    ///
    /// With `prefilter`, the index also keeps a bfloat16 copy of its vectors (+50% memory) so that
    /// single-query searches, which are memory-bound, read half the bytes; results stay exact.
    pub fn new(dim: usize, metric: Metric, prefilter: bool) -> Result<FlatIndex> {
        if dim == 0 || dim > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("dim must be between 1 and 2^32-1, got {dim}")));
        }
        Ok(FlatIndex {
            dim,
            metric,
            data: Buf::default(),
            half: Buf::default(),
            resid: Buf::default(),
            norms: Buf::default(),
            prefilter,
            ids: Vec::new(),
            idmap: IdMap::new(),
        })
    }

    /// Buffers with room for `extra` more rows, copied from the current ones, or `None` when
    /// they have room already.
    fn room_for(&self, extra: usize) -> Option<Room> {
        let d = self.dim;
        let n = self.ids.len() + extra;
        let want = pack::packed_len(n, d);
        let grow = want - self.data.as_slice().len();
        if self.data.room() >= grow
            && (!self.prefilter
                || self.half.room() >= grow && self.resid.room() >= extra && self.norms.room() >= extra)
            && self.ids.capacity() - self.ids.len() >= extra
            && self.idmap.has_room(extra)
        {
            return None;
        }
        let rows = if self.prefilter { n } else { 0 };
        Some(Room {
            data: vectors::with_room(self.data.as_slice(), want),
            half: vectors::with_room(self.half.as_slice(), if self.prefilter { want } else { 0 }),
            resid: vectors::with_room(self.resid.as_slice(), rows),
            norms: vectors::with_room(self.norms.as_slice(), rows),
            ids: vectors::with_room(&self.ids, n),
            idmap: self.idmap.with_room(extra),
        })
    }

    /// This index with `vectors` added under `ids` (which [`Index::assign_ids`] gave), built in
    /// a grown copy, or `None` when the buffers have room for them (an add in place then costs
    /// no reallocation). Changes nothing: the copy is made and filled while searches share the
    /// index, and replaces it at once.
    pub fn with_added(&self, vectors: &[f32], ids: &[i64]) -> Result<Option<FlatIndex>> {
        let Some(g) = self.room_for(ids.len()) else { return Ok(None) };
        let mut copy = FlatIndex {
            dim: self.dim,
            metric: self.metric,
            data: Buf::Owned(g.data),
            half: Buf::Owned(g.half),
            resid: Buf::Owned(g.resid),
            norms: Buf::Owned(g.norms),
            prefilter: self.prefilter,
            ids: g.ids,
            idmap: g.idmap,
        };
        copy.add(vectors, Some(ids), 1)?;
        Ok(Some(copy))
    }

    /// True when the index keeps the bfloat16 prefilter copy.
    pub fn prefilter(&self) -> bool {
        self.prefilter
    }

    fn write_half(&mut self, slot: usize, row: &[f32]) {
        let half: Vec<u16> = row.iter().map(|&x| half::to_bf16(x)).collect();
        let resid: f64 =
            row.iter().zip(&half).map(|(&x, &h)| (x as f64 - half::from_bf16(h) as f64).powi(2)).sum();
        let norm: f64 = row.iter().map(|&x| (x as f64).powi(2)).sum();
        pack::write_vector(self.half.to_mut(), self.dim, slot, &half);
        self.resid.to_mut()[slot] = (resid.sqrt() * (1.0 + 1e-6)) as f32;
        self.norms.to_mut()[slot] = (norm.sqrt() * (1.0 + 1e-6)) as f32;
    }
}

impl IdIndex for FlatIndex {
    const KIND: Kind = Kind::Flat;

    /// Vector dimension.
    fn dim(&self) -> usize {
        self.dim
    }

    /// Number of stored vectors.
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

    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        self.idmap.assign(n, ids, "vectors")
    }

    /// At least [`REMOVE_FLOATS`] floats per call, and at least `len / 256` ids: a call then
    /// costs about one search over the index (a removal rewrites a row in block layout, one
    /// cache line per dimension at random; measured at 100k x 128-d: 390 ids in about 3.5 ms,
    /// a search 4.5 ms). The writer lets waiting searches go first before each call, so calls
    /// sized for a small index would leave a remove mostly waiting while searches run (20,000
    /// ids: 0.79 s at 128 per call, 0.31 s at 390), and a search still waits out at most one
    /// call (p99 1.5x its idle p99).
    fn remove_batch(&self) -> usize {
        (REMOVE_FLOATS / self.dim).max(self.ids.len() / 256).clamp(16, 4096)
    }

    /// Remove ids; an unknown id is an error and then nothing is removed. Returns the count.
    fn remove(&mut self, ids: &[i64]) -> Result<usize> {
        self.idmap.check_known(ids)?;
        let d = self.dim;
        let mut removed = 0;
        let mut row = vec![0f32; d];
        let zero = vec![0f32; d];
        for &id in ids {
            let Some(slot) = self.idmap.remove(id) else { continue };
            let last = self.ids.len() - 1;
            let data = self.data.to_mut();
            if slot != last {
                pack::read_vector(data, d, last, &mut row);
                pack::write_vector(data, d, slot, &row);
                let moved = self.ids[last];
                self.ids[slot] = moved;
                self.idmap.insert(moved, slot);
            }
            pack::write_vector(data, d, last, &zero);
            self.ids.pop();
            data.truncate(pack::packed_len(self.ids.len(), d));
            if self.prefilter {
                if slot != last {
                    self.write_half(slot, &row);
                }
                pack::write_vector(self.half.to_mut(), d, last, &vec![0u16; d]);
                self.half.to_mut().truncate(pack::packed_len(last, d));
                self.resid.to_mut().truncate(last);
                self.norms.to_mut().truncate(last);
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Save atomically to `path`.
    fn save(&self, path: &Path) -> Result<()> {
        let header = Header {
            kind: Kind::Flat,
            dim: self.dim,
            metric: self.metric,
            dtype: Dtype::F32,
            count: self.len() as u64,
        };
        let mut meta = [0i64; meta::LEN];
        meta[meta::NEXT_ID] = self.idmap.next_id();
        meta[meta::PREFILTER] = self.prefilter as i64;
        let mut w = Writer::new(header);
        w.add("vectors", self.data.as_slice());
        w.add("ids", &self.ids);
        w.add("meta", &meta);
        w.add("half", self.half.as_slice());
        w.add("resid", self.resid.as_slice());
        w.add("norms", self.norms.as_slice());
        w.write_atomic(path)
    }

    /// Load from an opened file (see [`IndexFile::open`]); vectors stay mapped when it was mmapped.
    fn from_file(f: &IndexFile) -> Result<FlatIndex> {
        let h = *f.header();
        if h.kind != Kind::Flat {
            return Err(f.corrupt(&format!("holds a {}, not a FlatIndex", h.kind.name())));
        }
        if h.dtype != Dtype::F32 || h.dim == 0 {
            return Err(f.corrupt("bad dtype or dimension for a FlatIndex"));
        }
        let ids: Vec<i64> = f.vec("ids")?;
        let data: Buf<f32> = f.buf("vectors")?;
        let settings: Vec<i64> = f.vec("meta")?;
        let half: Buf<u16> = f.buf("half")?;
        let resid: Buf<f32> = f.buf("resid")?;
        let norms: Buf<f32> = f.buf("norms")?;
        let n = ids.len();
        let prefilter = settings.get(meta::PREFILTER) == Some(&1);
        let aux_n = if prefilter { n } else { 0 };
        if n as u64 != h.count
            || data.as_slice().len() != pack::packed_len(n, h.dim)
            || settings.len() != meta::LEN
            || half.as_slice().len() != pack::packed_len(aux_n, h.dim)
            || resid.as_slice().len() != aux_n
            || norms.as_slice().len() != aux_n
        {
            return Err(f.corrupt("section sizes do not match the header"));
        }
        let mut idmap = IdMap::with_capacity(ids.len(), settings[meta::NEXT_ID]);
        for (s, &id) in ids.iter().enumerate() {
            if !idmap.insert_loaded(id, s) {
                return Err(f.corrupt("invalid or duplicate id"));
            }
        }
        Ok(FlatIndex { dim: h.dim, metric: h.metric, data, half, resid, norms, prefilter, ids, idmap })
    }

    /// Heap bytes used (vectors, ids, id map); a mapped file's pages are not counted.
    fn memory_bytes(&self) -> usize {
        self.data.heap_bytes()
            + self.half.heap_bytes()
            + self.resid.heap_bytes()
            + self.norms.heap_bytes()
            + self.ids.capacity() * 8
            + self.idmap.capacity() * 24
    }

    fn mapped_file(&self) -> Option<&Mapping> {
        self.data.mapping()
    }
}

impl Index for FlatIndex {
    type Data<'a> = &'a [f32];
    type Queries<'a> = &'a [f32];
    type Params<'a> = ();

    /// Metric.
    fn metric(&self) -> Metric {
        self.metric
    }

    /// The stored vectors of `ids` (unit length for cosine), row-major.
    fn get(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let d = self.dim;
        let mut out = vec![0f32; ids.len() * d];
        for (row, id) in out.chunks_exact_mut(d).zip(ids) {
            let slot = self.idmap.slot(*id)?;
            pack::read_vector(self.data.as_slice(), d, slot, row);
        }
        Ok(out)
    }

    /// Add `vectors` (`n x dim`, row-major); returns the ids given to them.
    ///
    /// Everything is checked before anything changes, so a failed add leaves the index as it was.
    fn add(&mut self, vectors: &[f32], ids: Option<&[i64]>, _threads: usize) -> Result<Vec<i64>> {
        let d = self.dim;
        let n = vectors::rows(vectors, d, "vectors")?;
        vectors::check_finite(vectors, d, "vectors")?;
        let new_ids = self.idmap.assign(n, ids, "vectors")?;
        let normalized;
        let rows = if self.metric == Metric::Cosine {
            normalized = vectors::normalized(vectors, d);
            &normalized[..]
        } else {
            vectors
        };
        let start = self.ids.len();
        let data = self.data.to_mut();
        data.resize(pack::packed_len(start + n, d), 0.0);
        for (i, row) in rows.chunks_exact(d).enumerate() {
            pack::write_vector(data, d, start + i, row);
        }
        if self.prefilter {
            self.half.to_mut().resize(pack::packed_len(start + n, d), 0);
            self.resid.to_mut().resize(start + n, 0.0);
            self.norms.to_mut().resize(start + n, 0.0);
            for (i, row) in rows.chunks_exact(d).enumerate() {
                self.write_half(start + i, row);
            }
        }
        for (i, &id) in new_ids.iter().enumerate() {
            self.idmap.insert(id, start + i);
        }
        self.ids.extend_from_slice(&new_ids);
        self.idmap.advance(&new_ids);
        Ok(new_ids)
    }

    /// Exact top-`k` for `queries` (`nq x dim`); `allow` restricts results to those ids.
    fn search(
        &self,
        queries: &[f32],
        k: usize,
        _params: &(),
        allow: Option<&[i64]>,
        threads: usize,
    ) -> Result<Results> {
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        let d = self.dim;
        vectors::rows(queries, d, "queries")?;
        vectors::check_finite(queries, d, "queries")?;
        let bitmap =
            allow.map(|ids| Bitset::from_slots(self.len(), ids.iter().filter_map(|id| self.idmap.get(*id))));
        let q;
        let queries = if self.metric == Metric::Cosine {
            q = vectors::normalized(queries, d);
            &q[..]
        } else {
            queries
        };
        let blocks = Blocks {
            data: self.data.as_slice(),
            n: self.len(),
            d,
            ids: Some(&self.ids),
            base: 0,
            allow: bitmap.as_ref().map(Bitset::words),
        };
        let nq = queries.len() / d;
        if self.prefilter && nq <= PREFILTER_MAX_QUERIES && self.len() >= PREFILTER_MIN_VECTORS {
            let pre = Prefilter {
                half: self.half.as_slice(),
                resid: self.resid.as_slice(),
                norms: self.norms.as_slice(),
            };
            return topk::search_prefiltered(queries, blocks, pre, self.metric, k, threads);
        }
        topk::search(queries, Source::Packed(blocks), self.metric, k, threads)
    }
}
