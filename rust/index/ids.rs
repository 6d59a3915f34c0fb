//! [`IdMap`]: the id bookkeeping every index shares: which slot holds an id, and the next id an
//! `add` without ids hands out.
//!
//! The label of each slot stays with each index, because each lays it out for its own scans:
//! a dense `Vec` (FlatIndex, MultiVectorIndex), a `Vec` with tombstones (HNSWIndex), one `Vec`
//! per inverted list (IVFIndex).

use std::collections::HashMap;

use crate::util::error::{Error, Result};
use crate::util::vectors;

/// An integer type that numbers slots (`u32` keeps the map small for the graph and IVF indexes).
pub trait Slot: Copy {
    /// The slot as an index.
    fn index(self) -> usize;
    /// A slot from an index (callers keep it in range).
    fn from_index(i: usize) -> Self;
}

impl Slot for usize {
    #[inline]
    fn index(self) -> usize {
        self
    }
    #[inline]
    fn from_index(i: usize) -> Self {
        i
    }
}

impl Slot for u32 {
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
    #[inline]
    fn from_index(i: usize) -> Self {
        i as u32
    }
}

/// The id -> slot map of an index and the next id to hand out.
#[derive(Clone, Debug, Default)]
pub struct IdMap<S: Slot = usize> {
    slots: HashMap<i64, S>,
    next_id: i64,
}

impl<S: Slot> IdMap<S> {
    /// An empty map whose first automatic id is 0.
    pub fn new() -> Self {
        IdMap { slots: HashMap::new(), next_id: 0 }
    }

    /// A copy with room for `extra` more ids without rehashing (built aside, then swapped in).
    pub fn with_room(&self, extra: usize) -> Self {
        let n = self.slots.len();
        let mut slots = HashMap::with_capacity(crate::util::vectors::grown_capacity(n, n + extra));
        slots.extend(self.slots.iter().map(|(&k, &v)| (k, v)));
        IdMap { slots, next_id: self.next_id }
    }

    /// True when `extra` more ids fit without rehashing.
    pub fn has_room(&self, extra: usize) -> bool {
        self.slots.capacity() >= self.slots.len() + extra
    }

    /// An empty map for `n` ids, whose next automatic id is `next_id` (loading a file).
    pub fn with_capacity(n: usize, next_id: i64) -> Self {
        IdMap { slots: HashMap::with_capacity(n), next_id }
    }

    /// Number of ids held.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no id is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Capacity of the hash map (for `memory_bytes`).
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// The id the next `add` without ids starts at.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// True when `id` is held.
    #[inline]
    pub fn contains(&self, id: i64) -> bool {
        self.slots.contains_key(&id)
    }

    /// The slot of `id`, if held.
    #[inline]
    pub fn get(&self, id: i64) -> Option<S> {
        self.slots.get(&id).copied()
    }

    /// The slot of `id`, or [`Error::UnknownId`].
    #[inline]
    pub fn slot(&self, id: i64) -> Result<S> {
        self.get(id).ok_or(Error::UnknownId(id))
    }

    /// Error with the first id of `ids` not held (so a remove can check before it changes anything).
    pub fn check_known(&self, ids: &[i64]) -> Result<()> {
        match ids.iter().find(|id| !self.slots.contains_key(id)) {
            Some(&bad) => Err(Error::UnknownId(bad)),
            None => Ok(()),
        }
    }

    /// The ids an add of `n` rows (`what`: "vectors", "documents") gets: see [`vectors::new_ids`].
    /// Changes nothing; [`IdMap::insert`] them, then [`IdMap::advance`].
    pub fn assign(&self, n: usize, ids: Option<&[i64]>, what: &str) -> Result<Vec<i64>> {
        vectors::new_ids(n, ids, self.next_id, what, |id| self.slots.contains_key(&id))
    }

    /// Map `id` to `slot` (replacing its old slot when it moved).
    #[inline]
    pub fn insert(&mut self, id: i64, slot: S) {
        self.slots.insert(id, slot);
    }

    /// Map `id` to `slot` while loading a file: false when the id is negative or already held.
    pub fn insert_loaded(&mut self, id: i64, slot: S) -> bool {
        id >= 0 && self.slots.insert(id, slot).is_none()
    }

    /// Forget `id`, returning its slot.
    #[inline]
    pub fn remove(&mut self, id: i64) -> Option<S> {
        self.slots.remove(&id)
    }

    /// Move the next automatic id past every id of `added`.
    pub fn advance(&mut self, added: &[i64]) {
        if let Some(&m) = added.iter().max() {
            self.next_id = self.next_id.max(m + 1);
        }
    }

    /// Replace the whole map with `ids` in slot order (after a compaction).
    pub fn reset_to(&mut self, ids: &[i64]) {
        self.slots = ids.iter().enumerate().map(|(s, &id)| (id, S::from_index(s))).collect();
    }
}
