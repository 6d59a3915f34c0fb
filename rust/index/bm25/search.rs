//! Exact BM25 top-k: term-at-a-time accumulation over the query terms' postings, then a bounded
//! selection over the documents touched. Queries run in parallel.

use rayon::prelude::*;

use super::BM25Index;
use crate::index::IdIndex;
use crate::kernels::metric::Metric;
use crate::kernels::topk::{Results, TopK};
use crate::util::bitset::Bitset;
use crate::util::error::{Error, Result};
use crate::util::parallel;

/// Per-thread scratch: a dense accumulator per slot and the slots touched by the current query.
struct Scratch {
    acc: Vec<f32>,
    touched: Vec<u32>,
}

impl BM25Index {
    /// `idf(t)` for a term held by `df` live documents.
    #[inline]
    pub fn idf(&self, df: u32) -> f32 {
        let n = self.len() as f64;
        let df = df as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln() as f32
    }

    /// Distinct known query terms with their repeat counts, in order of first appearance.
    fn query_terms(&self, text: &str) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for term in self.analyzer.terms(text) {
            let Some(&t) = self.vocab.get(&term) else { continue };
            if self.df[t as usize] == 0 {
                continue;
            }
            match out.iter_mut().find(|(u, _)| *u == t) {
                Some((_, c)) => *c += 1,
                None => out.push((t, 1)),
            }
        }
        out
    }

    /// The BM25 score of every live document holding a query term, as (id, score) pairs.
    pub fn scores(&self, query: &str) -> Vec<(i64, f32)> {
        let mut s = Scratch { acc: vec![0.0; self.slot_ids.len()], touched: Vec::new() };
        self.accumulate(query, &mut s);
        let out = s
            .touched
            .iter()
            .filter(|&&x| self.slot_ids[x as usize] >= 0)
            .map(|&x| (self.slot_ids[x as usize], s.acc[x as usize]))
            .collect();
        out
    }

    fn accumulate(&self, query: &str, s: &mut Scratch) {
        let terms = self.query_terms(query);
        if terms.is_empty() {
            return;
        }
        let avgdl = self.avgdl() as f32;
        let k1 = self.params.k1;
        let b = self.params.b;
        let c0 = k1 * (1.0 - b);
        let c1 = if avgdl > 0.0 { k1 * b / avgdl } else { 0.0 };
        let lens = &self.lens[..];
        for (t, qtf) in terms {
            let w = self.idf(self.df[t as usize]) * qtf as f32;
            for p in &self.postings[t as usize] {
                let slot = p.slot as usize;
                let tf = p.tf as f32;
                let add = w * tf / (tf + (c0 + c1 * lens[slot] as f32));
                let a = &mut s.acc[slot];
                if *a == 0.0 {
                    s.touched.push(p.slot);
                }
                *a += add;
            }
        }
    }

    /// Top-`k` documents of each query, best first, ties to the lower id; `allow` restricts
    /// results to those ids. A query with no known term gets an all-padding row.
    pub fn search<S: AsRef<str> + Sync>(
        &self,
        queries: &[S],
        k: usize,
        threads: usize,
        allow: Option<&[i64]>,
    ) -> Result<Results> {
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        let nslots = self.slot_ids.len();
        let bitmap = allow.map(|ids| {
            Bitset::from_slots(nslots, ids.iter().filter_map(|id| self.slots.get(id)).map(|&s| s as usize))
        });
        let bits = bitmap.as_ref();
        let sel: Vec<TopK> = parallel::install(threads, || {
            queries
                .par_iter()
                .map_init(
                    || Scratch { acc: vec![0.0; nslots], touched: Vec::new() },
                    |s, q| {
                        self.accumulate(q.as_ref(), s);
                        let mut top = TopK::new(k);
                        for &x in &s.touched {
                            let slot = x as usize;
                            let score = std::mem::take(&mut s.acc[slot]);
                            let id = self.slot_ids[slot];
                            let allowed = bits.is_none_or(|b| b.contains(slot));
                            if id >= 0 && allowed && score >= top.threshold() {
                                top.push(score, id);
                            }
                        }
                        s.touched.clear();
                        top
                    },
                )
                .collect()
        });
        Results::from_selections(sel, k, Metric::Dot)
    }
}
