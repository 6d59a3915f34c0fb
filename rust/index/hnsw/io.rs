//! Saving and loading an [`HnswIndex`]: one section per array, every structural invariant
//! checked on load so a damaged or crafted file gives `CorruptFile`, never a panic.

use std::path::Path;

use super::codes::{CodeKind, Int8Codes, WalkCodes};
use super::graph::LinkWords;
use super::tombstones::{Book, Tombstones};
use super::{HnswIndex, Shape, MAX_LEVEL, MAX_M};
use crate::format::storage::{Buf, Dtype, Header, IndexFile, Kind, Writer};
use crate::index::ids::IdMap;
#[cfg(doc)]
use crate::index::{IdIndex, Index};
use crate::kernels::metric::Metric;
use crate::util::bitset;
use crate::util::error::Result;
use crate::util::rng::Rng;

/// Layout version of the HNSW sections (inside format version 1).
const LAYOUT: i64 = 1;

/// The sections of a saved graph.
struct Parts {
    params: Vec<i64>,
    vectors: Buf<f32>,
    half: Buf<u16>,
    /// The int8 codes and their ranges (`codes`, `sqmin`, `sqstep`), for an int8 walk copy.
    int8: Option<(Buf<u8>, Vec<f32>, Vec<f32>)>,
    ids: Vec<i64>,
    levels: Vec<u8>,
    links0: Buf<u32>,
    upper: Buf<u32>,
    deleted: Vec<u64>,
}

/// The graph of an [`HnswIndex`] without its vectors and ids (see
/// [`HnswIndex::graph_sections`]).
pub(crate) struct GraphSections {
    /// The parameter words (layout, m, ef_construction, seed, entry, max level, next id, walk
    /// codes; then, for int8 codes, the slots their ranges were fit on).
    pub params: Vec<i64>,
    /// Level of each node.
    pub levels: Vec<u8>,
    /// Level-0 link words.
    pub links0: Vec<u32>,
    /// Upper-level link words.
    pub upper: Vec<u32>,
}

impl HnswIndex {
    /// Save atomically to `path` ([`Index::save`]).
    pub(super) fn write_file(&self, path: &Path) -> Result<()> {
        let header = Header {
            kind: Kind::Hnsw,
            dim: self.dim,
            metric: self.metric,
            dtype: Dtype::F32,
            count: self.ids.len() as u64,
        };
        let params = self.params();
        // Plain copies of the link words (an add, never concurrent with a save, writes them
        // through atomics).
        let (links0, upper) = (self.links0.snapshot(), self.upper.snapshot());
        let mut w = Writer::new(header);
        w.add("params", &params);
        w.add("vectors", self.vectors.as_slice());
        let half: &[u16] = match &self.codes {
            WalkCodes::Bf16(h) => h.as_slice(),
            _ => &[],
        };
        w.add("half", half);
        if let WalkCodes::Int8(c) = &self.codes {
            w.add("codes", c.codes.as_slice());
            w.add("sqmin", &c.vmin);
            w.add("sqstep", &c.step);
        }
        w.add("ids", &self.ids);
        w.add("levels", &self.levels);
        w.add("links0", &links0);
        w.add("upper", &upper);
        let deleted = self.deleted.to_words();
        w.add("deleted", &deleted);
        w.write_atomic(path)
    }

    /// Load from an opened file ([`Index::from_file`]); with mmap, vectors and links stay in the
    /// mapped file until an add copies them.
    pub(super) fn read_file(f: &IndexFile) -> Result<HnswIndex> {
        let h = *f.header();
        if h.kind != Kind::Hnsw {
            return Err(f.corrupt(&format!("holds a {}, not an HNSWIndex", h.kind.name())));
        }
        if h.dtype != Dtype::F32 || h.dim == 0 {
            return Err(f.corrupt("bad dtype or dimension for an HNSWIndex"));
        }
        let p: Vec<i64> = f.vec("params")?;
        let int8 = if p.get(7) == Some(&CodeKind::Int8.word()) {
            Some((f.buf("codes")?, f.vec("sqmin")?, f.vec("sqstep")?))
        } else {
            None
        };
        let parts = Parts {
            params: p,
            vectors: f.buf("vectors")?,
            half: f.buf("half")?,
            int8,
            ids: f.vec("ids")?,
            levels: f.vec("levels")?,
            links0: f.buf("links0")?,
            upper: f.buf("upper")?,
            deleted: f.vec("deleted")?,
        };
        if parts.ids.len() as u64 != h.count {
            return Err(f.corrupt("section sizes do not match the header"));
        }
        HnswIndex::assemble(h.dim, h.metric, parts).map_err(|m| f.corrupt(m))
    }

    /// Build an index from its sections, checking every structural invariant (an error names
    /// the broken one).
    fn assemble(d: usize, metric: Metric, parts: Parts) -> std::result::Result<HnswIndex, &'static str> {
        let Parts { params: p, vectors, half, int8, ids, levels, links0, upper, deleted } = parts;
        // Eight words, the last the walk copy (0 none, 1 bfloat16: every file before int8 codes),
        // or nine for int8 codes, the ninth the slots their ranges were fit on.
        let kind = match (p.len(), p.get(7).copied().and_then(CodeKind::from_word)) {
            (8, Some(k)) if k != CodeKind::Int8 => k,
            (9, Some(CodeKind::Int8)) => CodeKind::Int8,
            _ => return Err("bad HNSW parameter section"),
        };
        if p[0] != LAYOUT {
            return Err("bad HNSW parameter section");
        }
        let (m, efc, seed, entry, max_level, next_id) = (p[1], p[2], p[3] as u64, p[4], p[5], p[6]);
        if !(2..=MAX_M as i64).contains(&m) || efc < 1 || !(0..=MAX_LEVEL as i64).contains(&max_level) {
            return Err("HNSW parameters out of range");
        }
        let m = m as usize;
        let shape = Shape { m, m0: 2 * m };
        let n = ids.len();
        if n >= u32::MAX as usize
            || vectors.as_slice().len() != n * d
            || half.as_slice().len() != if kind == CodeKind::Bf16 { n * d } else { 0 }
            || levels.len() != n
            || links0.as_slice().len() != n * (shape.m0 + 1)
            || deleted.len() != bitset::words_for(n)
        {
            return Err("section sizes do not match the header");
        }
        if !n.is_multiple_of(64) && deleted.last().is_some_and(|&w| w >> (n % 64) != 0) {
            return Err("deleted bitmap marks slots past the end");
        }
        if !vectors.as_slice().iter().all(|x| x.is_finite()) {
            return Err("vectors contain NaN or infinity");
        }
        let codes = match (kind, int8) {
            (CodeKind::None, _) => WalkCodes::None,
            (CodeKind::Bf16, _) => WalkCodes::Bf16(half),
            (CodeKind::Int8, Some((codes, vmin, step))) => {
                let fit_rows = p[8];
                let ranges = if fit_rows == 0 { 0 } else { d };
                if codes.as_slice().len() != n * d
                    || vmin.len() != ranges
                    || step.len() != ranges
                    || !(0..=n as i64).contains(&fit_rows)
                    || (n > 0 && fit_rows == 0)
                {
                    return Err("int8 code sections do not match the header");
                }
                if !vmin.iter().all(|x| x.is_finite()) || !step.iter().all(|x| x.is_finite() && *x > 0.0) {
                    return Err("bad int8 code ranges");
                }
                WalkCodes::Int8(Int8Codes { codes, vmin, step, fit_rows: fit_rows as usize })
            }
            (CodeKind::Int8, None) => return Err("int8 code sections are missing"),
        };
        let mut up_off = Vec::with_capacity(n);
        let mut up_len = 0usize;
        for &l in &levels {
            if l as usize > MAX_LEVEL {
                return Err("node level out of range");
            }
            up_off.push(up_len as u32);
            up_len += l as usize * (m + 1);
            if up_len > u32::MAX as usize {
                return Err("upper links too large");
            }
        }
        if upper.as_slice().len() != up_len {
            return Err("upper-level links do not match the node levels");
        }
        let check = |list: &[u32], cap: usize| -> bool {
            let c = list[0] as usize;
            c <= cap && list[1..1 + c].iter().all(|&t| (t as usize) < n)
        };
        if !links0.as_slice().chunks_exact(shape.m0 + 1).all(|l| check(l, shape.m0))
            || !upper.as_slice().chunks_exact(m + 1).all(|l| check(l, m))
        {
            return Err("a link list is too long or points past the last node");
        }
        let top = levels.iter().copied().max().unwrap_or(0) as i64;
        let entry = match (n, entry) {
            (0, -1) if max_level == 0 => None,
            (n, e)
                if e >= 0
                    && (e as usize) < n
                    && levels[e as usize] as i64 == max_level
                    && max_level == top =>
            {
                Some(e as u32)
            }
            _ => return Err("bad entry point"),
        };
        let mut idmap = IdMap::with_capacity(n, next_id);
        let mut free = Vec::new();
        for s in (0..n as u32).rev() {
            if bitset::test(&deleted, s as usize) {
                free.push(s);
            }
        }
        for (s, &id) in ids.iter().enumerate() {
            if bitset::test(&deleted, s) {
                continue;
            }
            if id >= next_id || !idmap.insert_loaded(id, s as u32) {
                return Err("invalid or duplicate id");
            }
        }
        Ok(HnswIndex {
            dim: d,
            metric,
            shape,
            ef_construction: efc as usize,
            seed,
            rng: Rng::new(seed ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            vectors,
            codes,
            links0: LinkWords::from_buf(links0),
            upper: LinkWords::from_buf(upper),
            up_off,
            levels,
            ids,
            deleted: Tombstones::from_words(deleted),
            book: parking_lot::RwLock::new(Book { idmap, free }),
            entry,
            max_level: max_level as usize,
            indeg: Vec::new(),
            since_full: std::sync::atomic::AtomicUsize::new(super::NEVER_COUNTED),
        })
    }

    /// The sections of a graph whose vectors are stored elsewhere (an IVF coarse quantizer over
    /// its centroids): parameters, levels and links. Only for an index whose ids are its slots,
    /// none deleted.
    pub(crate) fn graph_sections(&self) -> GraphSections {
        GraphSections {
            params: self.params(),
            levels: self.levels.clone(),
            links0: self.links0.snapshot(),
            upper: self.upper.snapshot(),
        }
    }

    /// The index [`HnswIndex::graph_sections`] describes, over `vectors` (`n x d`, ids `0..n`).
    pub(crate) fn from_graph_sections(
        d: usize,
        metric: Metric,
        vectors: Vec<f32>,
        g: GraphSections,
    ) -> std::result::Result<HnswIndex, &'static str> {
        let n = vectors.len() / d;
        HnswIndex::assemble(
            d,
            metric,
            Parts {
                params: g.params,
                vectors: Buf::Owned(vectors),
                half: Buf::default(),
                int8: None,
                ids: (0..n as i64).collect(),
                levels: g.levels,
                links0: Buf::Owned(g.links0),
                upper: Buf::Owned(g.upper),
                deleted: vec![0; bitset::words_for(n)],
            },
        )
    }

    fn params(&self) -> Vec<i64> {
        let mut p = vec![
            LAYOUT,
            self.shape.m as i64,
            self.ef_construction as i64,
            self.seed as i64,
            self.entry.map_or(-1, |e| e as i64),
            self.max_level as i64,
            self.book.read().idmap.next_id(),
            self.codes.kind().word(),
        ];
        if let WalkCodes::Int8(c) = &self.codes {
            p.push(c.fit_rows as i64);
        }
        p
    }
}
