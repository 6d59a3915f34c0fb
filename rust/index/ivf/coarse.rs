//! The coarse quantizer of an [`IvfIndex`]: how a search picks the `nprobe` lists of each query.
//!
//! Scanning every centroid costs `nlist * dim` per query, the largest cost of a search at low
//! `nprobe` once `nlist` is large. With a graph, a small HNSW over the centroids finds the
//! nearest ones approximately while visiting only a few hundred of them. Batches of queries may
//! still scan every centroid with the blocked tile kernels when the cost model says that is
//! cheaper, and adds always route exactly.

use super::*;
use crate::index::hnsw::{Allow, FilterMode, GraphSections, HnswIndex};

/// `Auto` uses a graph from this many lists on.
pub const GRAPH_MIN_NLIST: usize = 1024;
/// Links per centroid on the upper levels of the graph (twice as many on level 0).
const GRAPH_M: usize = 16;
/// Beam width used when inserting centroids into the graph.
const GRAPH_EF_CONSTRUCTION: usize = 128;
/// Default beam width of the walk: at least this, and at least 1.5 `nprobe`.
const GRAPH_EF_MIN: usize = 32;
/// About how many centroids a walk scores per unit of beam width (measured on MiniLM centroids).
const VISITS_PER_EF: usize = 40;
/// How much cheaper per score the blocked exact scan of a batch is than a graph walk (tile
/// kernels keep six queries in registers; the walk scores one random row at a time; measured).
const BATCH_SPEEDUP: usize = 7;

/// How an [`IvfIndex`] picks the lists to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coarse {
    /// A graph when `nlist >= GRAPH_MIN_NLIST`, else an exact scan.
    Auto,
    /// Always score every centroid.
    Exact,
    /// Always walk an HNSW graph over the centroids.
    Hnsw,
}

impl Coarse {
    /// Parse `"auto" | "exact" | "hnsw"`.
    pub fn parse(s: &str) -> Result<Coarse> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Coarse::Auto),
            "exact" | "flat" => Ok(Coarse::Exact),
            "hnsw" | "graph" => Ok(Coarse::Hnsw),
            other => Err(Error::InvalidArgument(format!(
                "unknown coarse quantizer {other:?}: expected \"auto\", \"exact\" or \"hnsw\""
            ))),
        }
    }

    /// Canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Coarse::Auto => "auto",
            Coarse::Exact => "exact",
            Coarse::Hnsw => "hnsw",
        }
    }

    /// Code stored in saved files.
    pub(super) fn code(self) -> i64 {
        match self {
            Coarse::Auto => 0,
            Coarse::Exact => 1,
            Coarse::Hnsw => 2,
        }
    }

    /// Inverse of [`Coarse::code`].
    pub(super) fn from_code(c: i64) -> Option<Coarse> {
        match c {
            0 => Some(Coarse::Auto),
            1 => Some(Coarse::Exact),
            2 => Some(Coarse::Hnsw),
            _ => None,
        }
    }

    /// Whether an index with `nlist` lists keeps a graph.
    pub(super) fn wants_graph(self, nlist: usize) -> bool {
        match self {
            Coarse::Auto => nlist >= GRAPH_MIN_NLIST,
            Coarse::Exact => false,
            Coarse::Hnsw => true,
        }
    }
}

impl IvfIndex {
    /// The coarse quantizer setting.
    pub fn coarse(&self) -> Coarse {
        self.coarse
    }

    /// True when searches can walk a graph over the centroids (trained, and the setting asks
    /// for one).
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Change the coarse quantizer; builds or drops the centroid graph of a trained index.
    pub fn set_coarse(&mut self, coarse: Coarse, threads: usize) -> Result<()> {
        self.coarse = coarse;
        self.sync_graph(threads)
    }

    /// Build the centroid graph if the setting wants one and it is missing; drop it otherwise.
    pub(super) fn sync_graph(&mut self, threads: usize) -> Result<()> {
        if !self.is_trained() || !self.coarse.wants_graph(self.nlist) {
            self.graph = None;
            return Ok(());
        }
        if self.graph.is_none() {
            let mut g =
                HnswIndex::new(self.dim, self.coarse_metric(), GRAPH_M, GRAPH_EF_CONSTRUCTION, 0, false)?;
            g.add(&self.centroids, None, threads)?;
            self.graph = Some(g);
        }
        Ok(())
    }

    /// The graph's sections for saving (none without a graph).
    pub(super) fn graph_sections(&self) -> Option<GraphSections> {
        self.graph.as_ref().map(HnswIndex::graph_sections)
    }

    /// Restore a saved graph over the centroids.
    pub(super) fn set_graph(&mut self, g: GraphSections) -> std::result::Result<(), &'static str> {
        let graph =
            HnswIndex::from_graph_sections(self.dim, self.coarse_metric(), self.centroids.clone(), g)?;
        if graph.len() != self.nlist {
            return Err("the coarse graph does not cover every centroid");
        }
        self.graph = Some(graph);
        Ok(())
    }

    /// The beam width a walk for `nprobe` lists uses (`ef = 0`: the default).
    fn walk_ef(nprobe: usize, ef: usize) -> usize {
        if ef == 0 {
            (nprobe + nprobe / 2).max(GRAPH_EF_MIN)
        } else {
            ef.max(nprobe)
        }
    }

    /// Whether `nq` queries pick their lists through the graph: a walk scores about
    /// `VISITS_PER_EF * ef` centroids one at a time; an exact scan scores all `nlist`, a batch
    /// through the tile kernels `BATCH_SPEEDUP` times cheaper per score.
    pub(super) fn walks(&self, nq: usize, nprobe: usize, ef: usize) -> bool {
        let Some(g) = &self.graph else { return false };
        if self.coarse == Coarse::Hnsw {
            return true;
        }
        let speedup = if nq >= simd::kernels().max_rows { BATCH_SPEEDUP } else { 1 };
        let walk = VISITS_PER_EF * Self::walk_ef(nprobe, ef);
        walk.min(g.len()) * speedup < self.nlist
    }

    /// The `nprobe` nearest lists of each row of `x` (already prepared): through the graph
    /// when [`IvfIndex::walks`] says so (beam width from `ef`, 0 for the default), else exactly.
    pub(super) fn probe(&self, x: &[f32], nprobe: usize, ef: usize, threads: usize) -> Result<Vec<i64>> {
        let nq = x.len() / self.dim;
        if let (Some(g), true) = (&self.graph, self.walks(nq, nprobe, ef)) {
            let ef = Self::walk_ef(nprobe, ef);
            return Ok(g.search_filtered(x, nprobe, ef, threads, Allow::All, FilterMode::Auto)?.ids);
        }
        self.probe_exact(x, nprobe, threads)
    }

    /// The `nprobe` nearest lists of each row of `x`, scoring every centroid.
    pub(super) fn probe_exact(&self, x: &[f32], nprobe: usize, threads: usize) -> Result<Vec<i64>> {
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
}
