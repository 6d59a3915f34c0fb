//! Per-thread scratch of a walk: visited marks and the candidate heaps.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;
use crate::util::bitset::{self, Bitset};

/// Per-thread "visited" marks: one bit per slot (100k slots take 12.5 KiB, which stays in the
/// L1 and L2 caches where a stamp per slot would not), cleared word by word from the list of
/// words a search set.
pub(crate) struct Visited {
    bits: Bitset,
    touched: Vec<u32>,
}

impl Visited {
    pub(super) fn reset(&mut self, n: usize) {
        if self.touched.len() > bitset::words_for(n) / 8 {
            self.bits.reset(n);
        } else {
            for &w in &self.touched {
                self.bits.clear_word(w as usize);
            }
        }
        self.touched.clear();
        self.bits.grow(n);
    }

    /// Mark `s`; true when it was not marked yet in this search.
    #[inline]
    pub(super) fn insert(&mut self, s: u32) -> bool {
        let w = s as usize / 64;
        if self.bits.word(w) == 0 {
            self.touched.push(w as u32);
        }
        self.bits.insert(s as usize)
    }
}

/// Reusable per-thread buffers of the graph walk.
pub(crate) struct Scratch {
    pub(super) visited: Visited,
    pub(super) cand: BinaryHeap<Reverse<Cand>>,
    pub(super) top: BinaryHeap<Cand>,
    pub(super) links: Vec<u32>,
    pub(super) fresh: Vec<u32>,
    /// Neighbours outside the filter of the node being expanded (the two-hop walk).
    pub(super) hops: Vec<u32>,
    /// The links of one of `hops`.
    pub(super) second: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Visited { bits: Bitset::empty(), touched: Vec::new() },
            cand: BinaryHeap::new(),
            top: BinaryHeap::new(),
            links: Vec::new(),
            fresh: Vec::new(),
            hops: Vec::new(),
            second: Vec::new(),
        })
    };
}

/// Run `f` with this thread's scratch buffers.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with_borrow_mut(f)
}
