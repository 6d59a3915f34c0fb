//! Saving and loading a [`BM25Index`] through the shared file format ([`crate::format::storage`]).
//!
//! Sections (the live contents, densely renumbered):
//! - `meta`   i64: next id, documents, terms, stopword mode (0 none, 1 english, 2 custom),
//!   stemmer language (index into [`super::LANGUAGES`], -1 none)
//! - `params` f32: k1, b
//! - `ids` i64 and `lens` u32: per document
//! - `terms` u8 (UTF-8, concatenated) and `termoff` u64 (terms + 1 offsets)
//! - `postoff` u64 (terms + 1 offsets) and `post` u32 (slot, tf pairs, slots ascending per term)
//! - `stops` u8: custom stopwords joined by `\n` (empty otherwise)

use std::path::Path;

use super::{forward, Analyzer, BM25Index, Params, Posting, Stopwords, LANGUAGES};
use crate::format::storage::{Dtype, Header, IndexFile, Kind, Writer};
use crate::kernels::metric::Metric;
use crate::util::error::Result;

fn offsets(lens: impl Iterator<Item = usize>) -> Vec<u64> {
    let mut off = vec![0u64];
    for l in lens {
        off.push(off.last().unwrap() + l as u64);
    }
    off
}

impl BM25Index {
    /// Write the live contents atomically to `path` (see [`crate::index::IdIndex::save`]).
    pub(super) fn write_file(&self, path: &Path) -> Result<()> {
        let c = self.compacted();
        let (mode, stops) = match self.analyzer.stopwords() {
            Stopwords::None => (0, String::new()),
            Stopwords::English => (1, String::new()),
            Stopwords::Custom(list) => (2, list.join("\n")),
        };
        let lang = self
            .analyzer
            .language()
            .map_or(-1, |l| LANGUAGES.iter().position(|(n, _)| *n == l).unwrap() as i64);
        let meta = [self.next_id, c.ids.len() as i64, c.terms.len() as i64, mode, lang];
        let params = [self.params.k1, self.params.b];
        let terms: Vec<u8> = c.terms.iter().flat_map(|t| t.bytes()).collect();
        let termoff = offsets(c.terms.iter().map(|t| t.len()));
        let postoff = offsets(c.postings.iter().map(|p| p.len()));
        let post: Vec<u32> = c.postings.iter().flatten().flat_map(|p| [p.slot, p.tf]).collect();
        let header = Header {
            kind: Kind::Bm25,
            dim: 0,
            metric: Metric::Dot,
            dtype: Dtype::U8,
            count: c.ids.len() as u64,
        };
        let mut w = Writer::new(header);
        w.add("meta", &meta);
        w.add("params", &params);
        w.add("ids", &c.ids);
        w.add("lens", &c.lens);
        w.add("terms", &terms);
        w.add("termoff", &termoff);
        w.add("postoff", &postoff);
        w.add("post", &post);
        w.add("stops", stops.as_bytes());
        w.write_atomic(path)
    }

    /// Read an opened file, checking every count, offset, slot and id (see [`crate::index::IdIndex::from_file`]).
    pub(super) fn read_file(f: &IndexFile) -> Result<BM25Index> {
        let h = *f.header();
        if h.kind != Kind::Bm25 {
            return Err(f.corrupt(&format!("holds a {}, not a BM25Index", h.kind.name())));
        }
        let bad = |m: &str| f.corrupt(m);
        let meta: Vec<i64> = f.vec("meta")?;
        let params: Vec<f32> = f.vec("params")?;
        let ids: Vec<i64> = f.vec("ids")?;
        let lens: Vec<u32> = f.vec("lens")?;
        let terms: Vec<u8> = f.vec("terms")?;
        let termoff: Vec<u64> = f.vec("termoff")?;
        let postoff: Vec<u64> = f.vec("postoff")?;
        let post: Vec<u32> = f.vec("post")?;
        let stops = String::from_utf8(f.vec("stops")?).map_err(|_| bad("stopwords are not UTF-8"))?;
        if meta.len() != 5 || params.len() != 2 {
            return Err(bad("bad meta or params section"));
        }
        let (n, nterms) = (ids.len(), termoff.len().wrapping_sub(1));
        if meta[1] != n as i64
            || h.count != n as u64
            || lens.len() != n
            || meta[2] != nterms as i64
            || postoff.len() != termoff.len()
            || termoff.last() != Some(&(terms.len() as u64))
            || postoff.last().map(|&x| x * 2) != Some(post.len() as u64)
        {
            return Err(bad("section sizes do not match the header"));
        }
        let params = Params::new(params[0] as f64, params[1] as f64).map_err(|e| bad(&e.to_string()))?;
        let stopwords = match meta[3] {
            0 => Stopwords::None,
            1 => Stopwords::English,
            2 => Stopwords::Custom(stops.split('\n').filter(|w| !w.is_empty()).map(str::to_string).collect()),
            _ => return Err(bad("unknown stopword mode")),
        };
        let language = match meta[4] {
            -1 => None,
            i if (0..LANGUAGES.len() as i64).contains(&i) => Some(LANGUAGES[i as usize].0),
            _ => return Err(bad("unknown stemmer language")),
        };
        let analyzer = Analyzer::new(language, stopwords)?;
        let mut idx = BM25Index::new(params, analyzer);
        idx.next_id = meta[0];
        for (s, &id) in ids.iter().enumerate() {
            if id < 0 || id >= idx.next_id || idx.slots.insert(id, s as u32).is_some() {
                return Err(bad("invalid or duplicate id"));
            }
        }
        let mut tf_sum = vec![0u64; n];
        for t in 0..nterms {
            let (a, b) = (termoff[t] as usize, termoff[t + 1] as usize);
            let (pa, pb) = (postoff[t] as usize, postoff[t + 1] as usize);
            if a > b || b > terms.len() || pa >= pb || pb * 2 > post.len() {
                return Err(bad("bad term or postings offsets"));
            }
            let term = std::str::from_utf8(&terms[a..b]).map_err(|_| bad("a term is not UTF-8"))?;
            if idx.vocab.insert(term.to_string(), t as u32).is_some() {
                return Err(bad("duplicate term"));
            }
            idx.terms.push(term.to_string());
            let mut list = Vec::with_capacity(pb - pa);
            for pair in post[pa * 2..pb * 2].chunks_exact(2) {
                let (slot, tf) = (pair[0], pair[1]);
                if slot as usize >= n || tf == 0 || list.last().is_some_and(|p: &Posting| p.slot >= slot) {
                    return Err(bad("bad posting (slot out of range, unsorted, or tf 0)"));
                }
                tf_sum[slot as usize] += tf as u64;
                list.push(Posting { slot, tf });
            }
            idx.df.push(list.len() as u32);
            idx.postings.push(list);
        }
        if tf_sum.iter().zip(&lens).any(|(&s, &l)| s != l as u64) {
            return Err(bad("document lengths do not match the postings"));
        }
        (idx.fwd, idx.fwd_off) = forward(&idx.postings, n);
        idx.total_len = lens.iter().map(|&l| l as u64).sum();
        idx.lens = lens;
        idx.slot_ids = ids;
        Ok(idx)
    }
}
