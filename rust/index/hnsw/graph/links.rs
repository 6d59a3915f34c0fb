//! Link lists: their shape, the atomic view inserts write through, and their storage.

use std::sync::atomic::{AtomicU32, Ordering as Mem};

use super::prefetch_bytes;

use crate::format::storage::{Buf, Mapping};

/// Read access to link lists.
pub(crate) trait Links: Sync {
    /// Replace `out` with the links of `s` at `level`.
    fn get(&self, s: u32, level: usize, out: &mut Vec<u32>);

    /// Ask the CPU to start loading the level-0 list of `s`.
    fn prefetch(&self, _s: u32) {}
}

/// Shape of the link arrays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub m: usize,
    pub m0: usize,
}

impl Shape {
    /// Range of the list of `s` at `level` in its array (level 0: `l0`, else `upper`).
    #[inline]
    pub fn range(&self, up_off: &[u32], s: u32, level: usize) -> (usize, usize) {
        if level == 0 {
            let w = self.m0 + 1;
            (s as usize * w, w)
        } else {
            let w = self.m + 1;
            (up_off[s as usize] as usize + (level - 1) * w, w)
        }
    }

    /// Capacity of a list at `level`.
    #[inline]
    pub fn cap(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.m
        }
    }
}

/// Link lists shared between inserting threads and searches: readers load without locking
/// (every value ever stored is a valid slot, so a read racing a write sees a usable, if mixed,
/// list); writers hold the node's lock.
pub(crate) struct AtomicLinks<'a> {
    pub l0: &'a [AtomicU32],
    pub up: &'a [AtomicU32],
    pub up_off: &'a [u32],
    pub shape: Shape,
}

impl AtomicLinks<'_> {
    fn list(&self, s: u32, level: usize) -> &[AtomicU32] {
        let (at, w) = self.shape.range(self.up_off, s, level);
        if level == 0 {
            &self.l0[at..at + w]
        } else {
            &self.up[at..at + w]
        }
    }

    /// Overwrite the list of `s` at `level` (the caller holds the lock of `s`).
    pub fn set(&self, s: u32, level: usize, links: &[u32]) {
        let list = self.list(s, level);
        let n = links.len().min(list.len() - 1);
        for (slot, &v) in list[1..].iter().zip(&links[..n]) {
            slot.store(v, Mem::Relaxed);
        }
        list[0].store(n as u32, Mem::Release);
    }
}

impl Links for AtomicLinks<'_> {
    #[inline]
    fn get(&self, s: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let list = self.list(s, level);
        let c = (list[0].load(Mem::Acquire) as usize).min(list.len() - 1);
        out.extend(list[1..1 + c].iter().map(|a| a.load(Mem::Relaxed)));
    }

    #[inline]
    fn prefetch(&self, s: u32) {
        let w = self.shape.m0 + 1;
        let at = s as usize * w;
        if at < self.l0.len() {
            prefetch_bytes(self.l0[at..].as_ptr() as *const u8, w * 4);
        }
    }
}

/// The words of one link array (a count then `cap` slots per list): owned atomics, which an
/// add rewrites while searches read them, or a read-only file mapping, which no one writes
/// (an add first copies it into memory with [`LinkWords::to_mut`]).
pub(crate) enum LinkWords {
    /// Heap memory, written by adds while searches load from it.
    Owned(Vec<AtomicU32>),
    /// A section of a read-only file mapping.
    Mapped(Buf<u32>),
}

impl Default for LinkWords {
    fn default() -> Self {
        LinkWords::Owned(Vec::new())
    }
}

impl LinkWords {
    /// Wrap a buffer read from a file: mapped stays mapped, owned words become atomics.
    pub fn from_buf(b: Buf<u32>) -> LinkWords {
        match b {
            Buf::Owned(v) => LinkWords::Owned(v.into_iter().map(AtomicU32::new).collect()),
            mapped => LinkWords::Mapped(mapped),
        }
    }

    /// The words, for loading.
    pub fn atomics(&self) -> &[AtomicU32] {
        match self {
            LinkWords::Owned(v) => v,
            LinkWords::Mapped(b) => {
                let s = b.as_slice();
                // SAFETY: AtomicU32 has the size, alignment and bit validity of u32. The mapped
                // words are only ever loaded (no one holds a writable view of them: an add copies
                // them first), and loads of read-only memory are fine for lock-free atomics.
                unsafe { &*(s as *const [u32] as *const [AtomicU32]) }
            }
        }
    }

    /// The owned words that an add may write through a shared reference (`None` while mapped).
    pub fn writable(&self) -> Option<&[AtomicU32]> {
        match self {
            LinkWords::Owned(v) => Some(v),
            LinkWords::Mapped(_) => None,
        }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        match self {
            LinkWords::Owned(v) => v.len(),
            LinkWords::Mapped(b) => b.as_slice().len(),
        }
    }

    /// Mutable access, copying a mapped buffer into memory first.
    pub fn to_mut(&mut self) -> &mut Vec<AtomicU32> {
        if let LinkWords::Mapped(b) = self {
            *self = LinkWords::Owned(b.as_slice().iter().map(|&w| AtomicU32::new(w)).collect());
        }
        match self {
            LinkWords::Owned(v) => v,
            LinkWords::Mapped(_) => unreachable!("copied above"),
        }
    }

    /// A copy with room for `n` words in all, or `None` when these have room (and are not
    /// mapped). Built aside while searches read these; see [`super::HnswIndex::room_for`].
    pub fn with_room(&self, n: usize) -> Option<LinkWords> {
        let len = self.len();
        let room = match self {
            LinkWords::Owned(v) => v.capacity() - v.len(),
            LinkWords::Mapped(_) => return Some(self.copy_with(n)),
        };
        (room < n.saturating_sub(len)).then(|| self.copy_with(n))
    }

    fn copy_with(&self, n: usize) -> LinkWords {
        let words = self.atomics();
        let mut v = Vec::with_capacity(crate::util::vectors::grown_capacity(words.len(), n));
        crate::util::pages::advise(&v);
        v.extend(words.iter().map(|w| AtomicU32::new(w.load(Mem::Relaxed))));
        crate::util::pages::prefault(&mut v, n);
        LinkWords::Owned(v)
    }

    /// Grow (or shrink) to `n` words, new ones zero (empty lists).
    pub fn resize(&mut self, n: usize) {
        let v = self.to_mut();
        crate::util::pages::reserve(v, n);
        v.resize_with(n, || AtomicU32::new(0));
    }

    /// A plain copy of the words (for saving).
    pub fn snapshot(&self) -> Vec<u32> {
        self.atomics().iter().map(|w| w.load(Mem::Relaxed)).collect()
    }

    /// The file mapping the words are read from, if any.
    pub fn mapping(&self) -> Option<&Mapping> {
        match self {
            LinkWords::Owned(_) => None,
            LinkWords::Mapped(b) => b.mapping(),
        }
    }

    /// Bytes of heap memory held (0 for a mapping).
    pub fn heap_bytes(&self) -> usize {
        match self {
            LinkWords::Owned(v) => v.capacity() * 4,
            LinkWords::Mapped(_) => 0,
        }
    }
}
