//! `BM25Index`: a lexical index of texts with BM25 ("lucene" variant) scoring.
//!
//! Scoring, with `N` live documents, `df(t)` the live documents holding term `t`, `tf` the count
//! of `t` in a document of `dl` terms and `avgdl` the mean `dl` over live documents:
//!
//! ```text
//! idf(t)     = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
//! score(q,d) = sum over query terms t (repeats counted) of
//!              idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))
//! ```
//!
//! (bm25s's default `method="lucene"`.) `N`, `df` and the total length are kept current through
//! adds and removals, and the formula is evaluated at query time, so scores are always exact for
//! the current contents. Postings (slot, tf) are appended per term, so an add costs O(batch);
//! a removal marks the slot dead (a tombstone) and postings are compacted once a quarter of the
//! slots are dead.

mod analysis;
mod io;
mod search;

use std::collections::HashMap;

use rayon::prelude::*;

pub use analysis::{is_word_char, split_words, Analyzer, Stopwords, ENGLISH_STOPWORDS, LANGUAGES};

use std::path::Path;

use crate::format::storage::{IndexFile, Kind};
use crate::index::IdIndex;
use crate::util::error::{Error, Result};
use crate::{util::parallel, util::vectors};

/// One posting: the document slot and how often the term occurs there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Posting {
    /// Document slot.
    pub slot: u32,
    /// Term frequency (at least 1).
    pub tf: u32,
}

/// BM25 parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Term-frequency saturation (>= 0).
    pub k1: f32,
    /// Length normalisation, 0..=1.
    pub b: f32,
}

impl Params {
    /// Checked parameters.
    pub fn new(k1: f64, b: f64) -> Result<Params> {
        if !(k1.is_finite() && k1 >= 0.0) {
            return Err(Error::InvalidArgument(format!("k1 must be a finite number >= 0, got {k1}")));
        }
        if !(0.0..=1.0).contains(&b) {
            return Err(Error::InvalidArgument(format!("b must be between 0 and 1, got {b}")));
        }
        Ok(Params { k1: k1 as f32, b: b as f32 })
    }
}

/// Lexical index: texts in, BM25 top-k out. Ids are non-negative `i64` labels.
pub struct BM25Index {
    params: Params,
    analyzer: Analyzer,
    vocab: HashMap<String, u32>,
    terms: Vec<String>,
    postings: Vec<Vec<Posting>>,
    /// Live documents holding each term.
    df: Vec<u32>,
    /// Per slot: the id (-1 once removed), the length in terms, the distinct terms.
    slot_ids: Vec<i64>,
    lens: Vec<u32>,
    fwd: Vec<u32>,
    fwd_off: Vec<usize>,
    slots: HashMap<i64, u32>,
    dead: usize,
    total_len: u64,
    next_id: i64,
}

impl BM25Index {
    /// An empty index.
    pub fn new(params: Params, analyzer: Analyzer) -> BM25Index {
        BM25Index {
            params,
            analyzer,
            vocab: HashMap::new(),
            terms: Vec::new(),
            postings: Vec::new(),
            df: Vec::new(),
            slot_ids: Vec::new(),
            lens: Vec::new(),
            fwd: Vec::new(),
            fwd_off: vec![0],
            slots: HashMap::new(),
            dead: 0,
            total_len: 0,
            next_id: 0,
        }
    }

    /// BM25 parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The analyzer documents and queries go through.
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Number of distinct terms in the vocabulary (terms of removed documents included until the
    /// next compaction).
    pub fn vocab_len(&self) -> usize {
        self.terms.len()
    }

    /// Mean document length in terms over live documents (0 when empty).
    pub fn avgdl(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.total_len as f64 / self.len() as f64
        }
    }

    /// The analyzed terms of `text`.
    pub fn analyze(&self, text: &str) -> Vec<String> {
        self.analyzer.terms(text)
    }

    /// Add documents; returns their ids (`next_id..` when `ids` is `None`). Costs O(batch):
    /// texts are analyzed on `threads` threads and their postings appended.
    ///
    /// Everything is checked before anything changes, so a failed add leaves the index as it was.
    pub fn add<S: AsRef<str> + Sync>(
        &mut self,
        texts: &[S],
        ids: Option<&[i64]>,
        threads: usize,
    ) -> Result<Vec<i64>> {
        self.assign_ids(texts.len(), ids)?;
        let analyzed = self.analyze_all(texts, threads);
        self.add_analyzed(analyzed, ids)
    }

    /// The terms of each text, analyzed on `threads` threads: the heavy part of an add, which
    /// changes nothing (so it can run while searches share the index).
    pub fn analyze_all<S: AsRef<str> + Sync>(&self, texts: &[S], threads: usize) -> Vec<Vec<String>> {
        let analyzer = &self.analyzer;
        parallel::install(threads, || texts.par_iter().map(|t| analyzer.terms(t.as_ref())).collect())
    }

    /// Add documents given as their analyzed terms (see [`BM25Index::analyze_all`]) under `ids`
    /// (or the next free ids); returns the ids given. Checks the ids before changing anything.
    pub fn add_analyzed(&mut self, analyzed: Vec<Vec<String>>, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        let new_ids = self.assign_ids(analyzed.len(), ids)?;
        let mut doc: Vec<u32> = Vec::new();
        for (terms, &id) in analyzed.into_iter().zip(&new_ids) {
            let slot = self.slot_ids.len() as u32;
            let len = terms.len();
            doc.clear();
            for term in terms {
                let t = match self.vocab.get(&term) {
                    Some(&t) => t,
                    None => {
                        let t = self.terms.len() as u32;
                        self.vocab.insert(term.clone(), t);
                        self.terms.push(term);
                        self.postings.push(Vec::new());
                        self.df.push(0);
                        t
                    }
                };
                doc.push(t);
            }
            doc.sort_unstable();
            let mut i = 0;
            while i < doc.len() {
                let t = doc[i];
                let run = doc[i..].iter().take_while(|&&x| x == t).count();
                self.postings[t as usize].push(Posting { slot, tf: run as u32 });
                self.df[t as usize] += 1;
                self.fwd.push(t);
                i += run;
            }
            self.fwd_off.push(self.fwd.len());
            self.lens.push(len.min(u32::MAX as usize) as u32);
            self.total_len += len as u64;
            self.slot_ids.push(id);
            self.slots.insert(id, slot);
        }
        if let Some(&m) = new_ids.iter().max() {
            self.next_id = self.next_id.max(m + 1);
        }
        Ok(new_ids)
    }

    /// Drop dead slots and terms no live document holds; live slots keep their order.
    pub fn compact(&mut self) {
        let c = self.compacted();
        let mut slots = HashMap::with_capacity(c.ids.len());
        for (s, &id) in c.ids.iter().enumerate() {
            slots.insert(id, s as u32);
        }
        let (fwd, fwd_off) = forward(&c.postings, c.ids.len());
        self.df = c.postings.iter().map(|p| p.len() as u32).collect();
        self.vocab = c.terms.iter().enumerate().map(|(t, s)| (s.clone(), t as u32)).collect();
        self.terms = c.terms;
        self.postings = c.postings;
        self.slot_ids = c.ids;
        self.lens = c.lens;
        self.fwd = fwd;
        self.fwd_off = fwd_off;
        self.slots = slots;
        self.dead = 0;
    }

    /// The live contents renumbered densely (what compaction keeps and what a file stores).
    fn compacted(&self) -> Compacted {
        let mut remap = vec![u32::MAX; self.slot_ids.len()];
        let mut ids = Vec::with_capacity(self.len());
        let mut lens = Vec::with_capacity(self.len());
        for (s, &id) in self.slot_ids.iter().enumerate() {
            if id >= 0 {
                remap[s] = ids.len() as u32;
                ids.push(id);
                lens.push(self.lens[s]);
            }
        }
        let mut terms = Vec::new();
        let mut postings = Vec::new();
        for (t, p) in self.postings.iter().enumerate() {
            if self.df[t] == 0 {
                continue;
            }
            let kept: Vec<Posting> = p
                .iter()
                .filter(|q| remap[q.slot as usize] != u32::MAX)
                .map(|q| Posting { slot: remap[q.slot as usize], tf: q.tf })
                .collect();
            terms.push(self.terms[t].clone());
            postings.push(kept);
        }
        Compacted { ids, lens, terms, postings }
    }
}

impl IdIndex for BM25Index {
    const KIND: Kind = Kind::Bm25;

    /// 0: a BM25Index holds texts, not vectors.
    fn dim(&self) -> usize {
        0
    }

    /// Number of live documents.
    fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when `id` is stored.
    fn contains(&self, id: i64) -> bool {
        self.slots.contains_key(&id)
    }

    /// Live ids in slot (insertion) order.
    fn ids(&self) -> Vec<i64> {
        self.slot_ids.iter().copied().filter(|&id| id >= 0).collect()
    }

    /// The ids an add of `n` documents with `ids` (or the next free ids) would get, after
    /// checking them (no duplicates, none already held, room left); changes nothing.
    fn assign_ids(&self, n: usize, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        let new_ids = vectors::new_ids(n, ids, self.next_id, "documents", |id| self.slots.contains_key(&id))?;
        if self.slot_ids.len() + n > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "a BM25Index holds at most {} document slots",
                u32::MAX
            )));
        }
        Ok(new_ids)
    }

    /// Remove ids; an unknown id is an error and then nothing is removed. Returns the count.
    fn remove(&mut self, ids: &[i64]) -> Result<usize> {
        if let Some(&bad) = ids.iter().find(|id| !self.slots.contains_key(id)) {
            return Err(Error::UnknownId(bad));
        }
        let mut removed = 0;
        for id in ids {
            let Some(slot) = self.slots.remove(id) else { continue };
            let s = slot as usize;
            for &t in &self.fwd[self.fwd_off[s]..self.fwd_off[s + 1]] {
                self.df[t as usize] -= 1;
            }
            self.total_len -= self.lens[s] as u64;
            self.slot_ids[s] = -1;
            self.dead += 1;
            removed += 1;
        }
        if self.dead * 4 > self.slot_ids.len() {
            self.compact();
        }
        Ok(removed)
    }

    /// Heap bytes used (postings, vocabulary, per-document arrays, maps).
    fn memory_bytes(&self) -> usize {
        let postings: usize = self.postings.iter().map(|p| p.capacity() * 8 + 24).sum();
        let terms: usize = self.terms.iter().map(|t| t.capacity() + 24).sum();
        postings
            + terms * 2
            + self.vocab.capacity() * (24 + 4 + 8)
            + self.df.capacity() * 4
            + self.slot_ids.capacity() * 8
            + self.lens.capacity() * 4
            + self.fwd.capacity() * 4
            + self.fwd_off.capacity() * 8
            + self.slots.capacity() * (8 + 4 + 8)
    }

    /// Save atomically to `path` (removed documents are left out).
    fn save(&self, path: &Path) -> Result<()> {
        self.write_file(path)
    }

    /// Load from an opened file, checking every count, offset, slot and id; the postings are
    /// always read into memory (a mapped file is not kept).
    fn from_file(f: &IndexFile) -> Result<BM25Index> {
        BM25Index::read_file(f)
    }
}

/// The forward index of `n` slots from postings: the terms of slot `s` are
/// `fwd[off[s]..off[s + 1]]`, ascending.
fn forward(postings: &[Vec<Posting>], n: usize) -> (Vec<u32>, Vec<usize>) {
    let mut off = vec![0usize; n + 1];
    for q in postings.iter().flatten() {
        off[q.slot as usize + 1] += 1;
    }
    for i in 1..off.len() {
        off[i] += off[i - 1];
    }
    let mut fill = off.clone();
    let mut fwd = vec![0u32; off[n]];
    for (t, p) in postings.iter().enumerate() {
        for q in p {
            fwd[fill[q.slot as usize]] = t as u32;
            fill[q.slot as usize] += 1;
        }
    }
    (fwd, off)
}

/// Live documents and terms in dense numbering.
struct Compacted {
    ids: Vec<i64>,
    lens: Vec<u32>,
    terms: Vec<String>,
    postings: Vec<Vec<Posting>>,
}
