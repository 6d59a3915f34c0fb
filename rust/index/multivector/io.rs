//! Saving and loading a [`MultiVectorIndex`].

use super::*;

/// Positions of the settings in a MultiVectorIndex file's `meta` section (`i64` each).
mod meta {
    /// The next automatic id.
    pub const NEXT_ID: usize = 0;
    /// Residual bits per dimension.
    pub const NBITS: usize = 1;
    /// Centroids asked for (0: chosen on the first add).
    pub const CENTROIDS: usize = 2;
    /// Seed of the k-means training.
    pub const SEED: usize = 3;
    /// 1 when tokens are L2-normalised on the way in.
    pub const NORMALIZE: usize = 4;
    /// Number of entries.
    pub const LEN: usize = 5;
}

impl MultiVectorIndex {
    /// Save atomically to `path`.
    pub(super) fn write_file(&self, path: &Path) -> Result<()> {
        let header = Header {
            kind: Kind::MultiVector,
            dim: self.dim,
            metric: Metric::Dot,
            dtype: if self.nbits == 0 { Dtype::F32 } else { Dtype::U8 },
            count: self.len() as u64,
        };
        let mut meta = [0i64; meta::LEN];
        meta[meta::NEXT_ID] = self.idmap.next_id();
        meta[meta::NBITS] = self.nbits as i64;
        meta[meta::CENTROIDS] = self.want_centroids as i64;
        meta[meta::SEED] = self.seed as i64;
        meta[meta::NORMALIZE] = self.normalize as i64;
        // Removed documents are not written: with some held, the live ones are copied first.
        let live = (self.dead > 0).then(|| self.live());
        let (ids, offsets, codes, resid, tokens, exact16, exact32) = match &live {
            Some(l) => (
                &l.ids[..],
                &l.offsets[..],
                &l.codes[..],
                &l.residuals[..],
                &l.tokens[..],
                &l.exact16[..],
                &l.exact32[..],
            ),
            None => (
                &self.ids[..],
                &self.offsets[..],
                self.codes.as_slice(),
                self.residuals.as_slice(),
                self.tokens.as_slice(),
                self.exact16.as_slice(),
                self.exact32.as_slice(),
            ),
        };
        let mut w = Writer::new(header);
        w.add("meta", &meta);
        w.add("ids", ids);
        w.add("offsets", offsets);
        w.add("centroid", &self.centroids);
        w.add("cutoffs", &self.cutoffs);
        w.add("weights", &self.weights);
        w.add("codes", codes);
        w.add("resid", resid);
        w.add("tokens", tokens);
        // Sections an older reader ignores: it then loads the index without its refine copy.
        let refine = [self.refine.code()];
        w.add("refine", &refine);
        w.add("exact16", exact16);
        w.add("exact32", exact32);
        w.write_atomic(path)
    }

    /// Load from an opened file; token data stays mapped when it was mmapped.
    pub(super) fn read_file(f: &IndexFile) -> Result<MultiVectorIndex> {
        let h = *f.header();
        if h.kind != Kind::MultiVector {
            return Err(f.corrupt(&format!("holds a {}, not a MultiVectorIndex", h.kind.name())));
        }
        let settings: Vec<i64> = f.vec("meta")?;
        if settings.len() != meta::LEN || h.dim == 0 || !(0..=1).contains(&settings[meta::NORMALIZE]) {
            return Err(f.corrupt("bad metadata"));
        }
        if (settings[meta::NBITS] == 0) != (h.dtype == Dtype::F32) {
            return Err(f.corrupt("the header dtype does not match nbits"));
        }
        let nbits = settings[meta::NBITS] as usize;
        let mut idx = MultiVectorIndex::new(
            h.dim,
            nbits,
            settings[meta::CENTROIDS].max(0) as usize,
            settings[meta::SEED] as u64,
        )
        .map_err(|e| f.corrupt(&e.to_string()))?;
        let d = h.dim;
        idx.normalize = settings[meta::NORMALIZE] == 1;
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
        idx.idmap = IdMap::with_capacity(idx.ids.len(), settings[meta::NEXT_ID]);
        for (s, &id) in idx.ids.iter().enumerate() {
            if !idx.idmap.insert_loaded(id, s) {
                return Err(f.corrupt("invalid or duplicate id"));
            }
        }
        idx.build_lut();
        idx.rebuild_lists();
        Ok(idx)
    }
}
