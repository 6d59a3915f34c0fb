//! Saving and loading an [`IvfIndex`] (format 1 files, whose int8 codes were dimension-major,
//! are converted to the quad layout on load; files before format 3 have no coarse setting nor
//! centroid graph: they load with [`Coarse::Auto`] and the graph is rebuilt when it wants one).

use super::*;
use crate::index::hnsw::GraphSections;

/// Positions of the settings in an IVFIndex file's `meta` section (`i64` each).
mod meta {
    /// Number of lists.
    pub const NLIST: usize = 0;
    /// 1 once trained.
    pub const TRAINED: usize = 1;
    /// The next automatic id.
    pub const NEXT_ID: usize = 2;
    /// The coarse quantizer setting ([`super::Coarse::code`]; format 3 on).
    pub const COARSE: usize = 3;
    /// Number of entries.
    pub const LEN: usize = 4;
    /// Number of entries before format 3.
    pub const LEN_V2: usize = 3;
}

/// Tags of the centroid graph's sections (format 3 on, present when the index has a graph).
mod tag {
    pub const PARAMS: &str = "cq.param";
    pub const LEVELS: &str = "cq.level";
    pub const LINKS0: &str = "cq.link0";
    pub const UPPER: &str = "cq.upper";
}

impl IvfIndex {
    /// Save atomically to `path`.
    pub(super) fn write_file(&self, path: &Path) -> Result<()> {
        let dtype = if self.storage == Storage::Int8 { Dtype::U8 } else { Dtype::F32 };
        let header =
            Header { kind: Kind::Ivf, dim: self.dim, metric: self.metric, dtype, count: self.len() as u64 };
        let mut meta = [0i64; meta::LEN];
        meta[meta::NLIST] = self.nlist as i64;
        meta[meta::TRAINED] = self.is_trained() as i64;
        meta[meta::NEXT_ID] = self.idmap.next_id();
        meta[meta::COARSE] = self.coarse.code();
        let graph = self.graph_sections();
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
        if let Some(g) = &graph {
            w.add(tag::PARAMS, &g.params);
            w.add(tag::LEVELS, &g.levels);
            w.add(tag::LINKS0, &g.links0);
            w.add(tag::UPPER, &g.upper);
        }
        w.write_atomic(path)
    }

    /// Load from an opened file; with mmap the float32 `refine` vectors stay in the mapping.
    pub(super) fn read_file(f: &IndexFile) -> Result<IvfIndex> {
        let h = *f.header();
        if h.kind != Kind::Ivf {
            return Err(f.corrupt(&format!("holds a {}, not an IVFIndex", h.kind.name())));
        }
        let storage = match h.dtype {
            Dtype::F32 => Storage::F32,
            Dtype::U8 => Storage::Int8,
            _ => return Err(f.corrupt("bad dtype for an IVFIndex")),
        };
        let settings: Vec<i64> = f.vec("meta")?;
        let coarse = match settings.len() {
            meta::LEN_V2 => Some(Coarse::Auto),
            meta::LEN => Coarse::from_code(settings[meta::COARSE]),
            _ => None,
        };
        let Some(coarse) = coarse.filter(|_| settings[meta::NLIST] > 0 && h.dim > 0) else {
            return Err(f.corrupt("bad IVF parameters"));
        };
        let (d, nlist) = (h.dim, settings[meta::NLIST] as usize);
        let mut idx = IvfIndex::new(d, nlist, h.metric, storage)?;
        idx.coarse = coarse;
        idx.idmap = IdMap::with_capacity(0, settings[meta::NEXT_ID]);
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
        if settings[meta::TRAINED] == 0 {
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
        if f.has(tag::PARAMS) {
            let g = GraphSections {
                params: f.vec(tag::PARAMS)?,
                levels: f.vec(tag::LEVELS)?,
                links0: f.vec(tag::LINKS0)?,
                upper: f.vec(tag::UPPER)?,
            };
            idx.set_graph(g).map_err(|m| f.corrupt(&format!("centroid graph: {m}")))?;
        }
        // Files without a graph (older formats, or saved with another setting) get one built here.
        idx.sync_graph(parallel::resolve(None))?;
        Ok(idx)
    }
}
