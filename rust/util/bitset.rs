//! Sets of slots held as bits, one per slot: allow-lists, tombstones and visited marks all use
//! [`Bitset`] or, where the words live elsewhere (atomics, a file section, a kernel's borrowed
//! slice), the same [`locate`] and [`test`].

/// The word holding bit `i` and the mask of `i` in that word.
#[inline]
pub fn locate(i: usize) -> (usize, u64) {
    (i / 64, 1u64 << (i % 64))
}

/// Words needed for `n` bits.
#[inline]
pub fn words_for(n: usize) -> usize {
    n.div_ceil(64)
}

/// True when bit `i` of `words` is set.
#[inline]
pub fn test(words: &[u64], i: usize) -> bool {
    let (w, m) = locate(i);
    words[w] & m != 0
}

/// A set of slots `0..n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    /// The empty set over no slots (usable in a `const`).
    pub const fn empty() -> Bitset {
        Bitset { words: Vec::new() }
    }

    /// The empty set over slots `0..n`.
    pub fn new(n: usize) -> Bitset {
        Bitset { words: vec![0; words_for(n)] }
    }

    /// The set of `slots` (each below `n`).
    pub fn from_slots(n: usize, slots: impl IntoIterator<Item = usize>) -> Bitset {
        let mut b = Bitset::new(n);
        for s in slots {
            b.insert(s);
        }
        b
    }

    /// True when `i` is in the set.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        test(&self.words, i)
    }

    /// Add `i`; true when it was not in the set yet.
    #[inline]
    pub fn insert(&mut self, i: usize) -> bool {
        let (w, m) = locate(i);
        let new = self.words[w] & m == 0;
        self.words[w] |= m;
        new
    }

    /// The words, bit `i` in word `i / 64` (what the kernels read).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Word `w`.
    #[inline]
    pub fn word(&self, w: usize) -> u64 {
        self.words[w]
    }

    /// Clear word `w` (a set that remembers which words it touched clears only those).
    #[inline]
    pub fn clear_word(&mut self, w: usize) {
        self.words[w] = 0;
    }

    /// Empty the set and make room for slots `0..n`.
    pub fn reset(&mut self, n: usize) {
        self.words.fill(0);
        self.grow(n);
    }

    /// Room for slots `0..n`, keeping the members.
    pub fn grow(&mut self, n: usize) {
        if self.words.len() < words_for(n) {
            self.words.resize(words_for(n), 0);
        }
    }

    /// Heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bitset_holds_what_was_inserted() {
        let mut b = Bitset::from_slots(130, [0, 63, 64, 129]);
        for i in 0..130 {
            assert_eq!(b.contains(i), [0, 63, 64, 129].contains(&i), "slot {i}");
        }
        assert!(!b.insert(63) && b.insert(1));
        assert_eq!(b.words().len(), 3);
        assert!(test(b.words(), 129));
        b.clear_word(1);
        assert!(!b.contains(64) && b.contains(63));
        b.reset(300);
        assert!(b.words().iter().all(|&w| w == 0) && b.words().len() == 5);
    }
}
