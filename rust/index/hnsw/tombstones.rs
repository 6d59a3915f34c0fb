//! [`Tombstones`]: the bitmap of deleted slots, and [`Book`]: the id map and free list. Both
//! change under a shared reference, so a remove runs while searches do (see
//! [`super::HnswIndex::remove_shared`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::index::ids::IdMap;
use crate::util::bitset;

/// Bitmap of deleted slots that a remove marks through a shared reference.
///
/// Loads and marks are relaxed atomics (plain loads and a locked `or` on x86-64 and aarch64): a
/// search that reads a bit just before a remove marks it returns the id as it was before that
/// remove, which is a consistent answer. Slots are unmarked only when an add reuses them, under
/// exclusive access.
#[derive(Default)]
pub(super) struct Tombstones {
    words: Vec<AtomicU64>,
    /// Number of marked slots.
    dead: AtomicUsize,
}

impl Tombstones {
    /// A bitmap from its words (as saved).
    pub(super) fn from_words(words: Vec<u64>) -> Tombstones {
        let dead = words.iter().map(|w| w.count_ones() as usize).sum();
        Tombstones { words: words.into_iter().map(AtomicU64::new).collect(), dead: AtomicUsize::new(dead) }
    }

    /// A copy of the words (to save).
    pub(super) fn to_words(&self) -> Vec<u64> {
        self.words.iter().map(|w| w.load(Relaxed)).collect()
    }

    /// Word `w` (bits `64 w ..`).
    #[inline]
    pub(super) fn word(&self, w: usize) -> u64 {
        self.words[w].load(Relaxed)
    }

    /// Number of words.
    pub(super) fn len_words(&self) -> usize {
        self.words.len()
    }

    /// True when slot `s` is deleted.
    #[inline]
    pub(super) fn has(&self, s: u32) -> bool {
        let (w, m) = bitset::locate(s as usize);
        self.word(w) & m != 0
    }

    /// True when any slot is deleted.
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.dead.load(Relaxed) > 0
    }

    /// Mark slot `s` deleted (it must be live).
    pub(super) fn mark(&self, s: u32) {
        let (w, m) = bitset::locate(s as usize);
        if self.words[w].fetch_or(m, Relaxed) & m == 0 {
            self.dead.fetch_add(1, Relaxed);
        }
    }

    /// Unmark slot `s` (an add reuses it).
    pub(super) fn unmark(&mut self, s: u32) {
        let (w, b) = bitset::locate(s as usize);
        let w = self.words[w].get_mut();
        if *w & b != 0 {
            *w &= !b;
            *self.dead.get_mut() -= 1;
        }
    }

    /// Room for `slots` slots (new ones live).
    pub(super) fn resize(&mut self, slots: usize) {
        self.words.resize_with(bitset::words_for(slots), || AtomicU64::new(0));
    }

    /// Heap bytes.
    pub(super) fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

/// The id bookkeeping a remove changes: which slot holds each id, and the deleted slots later
/// adds reuse (the last one first). It sits behind its own lock in the index.
#[derive(Default)]
pub(super) struct Book {
    pub(super) idmap: IdMap<u32>,
    pub(super) free: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_count_once_and_round_trip() {
        let mut t = Tombstones::default();
        t.resize(130);
        assert!(!t.any());
        t.mark(3);
        t.mark(3);
        t.mark(129);
        assert!(t.has(3) && t.has(129) && !t.has(4));
        let again = Tombstones::from_words(t.to_words());
        assert_eq!(again.dead.load(Relaxed), 2);
        t.unmark(3);
        t.unmark(3);
        assert!(!t.has(3) && t.any());
        t.unmark(129);
        assert!(!t.any());
        assert_eq!(t.len_words(), 3);
    }
}
