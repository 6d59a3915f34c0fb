//! An add in steps, so that searches run while it goes on (see
//! [`crate::concurrent::Locked`]): buffers grown aside ([`HnswIndex::room_for`], under the shared
//! lock), swapped in ([`HnswIndex::install`]) and the vectors stored ([`HnswIndex::stage`]) in short
//! write sections, the batch linked into the graph ([`HnswIndex::link`], under the shared lock),
//! and its entry point published ([`HnswIndex::publish`], a last short section).

use std::collections::HashMap;

use super::*;

/// An add between its steps: vectors stored by [`HnswIndex::stage`], not published yet.
#[derive(Default)]
pub(crate) struct Staged {
    /// Ids of the batch, in order.
    ids: Vec<i64>,
    /// Slots of the batch, in order (reused ones first).
    order: Vec<u32>,
    /// The lists each reused slot had, level by level (their owners are repaired).
    old: HashMap<u32, Vec<Vec<u32>>>,
}

impl Staged {
    /// Take in a later part of the same add (staged after this one), to link them as one batch.
    pub(crate) fn append(&mut self, later: Staged) {
        self.ids.extend(later.ids);
        self.order.extend(later.order);
        self.old.extend(later.old);
    }
}

/// Buffers grown aside for an add ([`HnswIndex::room_for`]); after [`HnswIndex::install`], the
/// ones they replaced.
#[derive(Default)]
pub(crate) struct Room {
    pub(super) vectors: Option<Buf<f32>>,
    pub(super) codes: Option<WalkCodes>,
    pub(super) links0: Option<LinkWords>,
    idmap: Option<crate::index::ids::IdMap<u32>>,
}

/// The entry point an add's [`HnswIndex::link`] leaves, for [`HnswIndex::publish`].
pub(crate) struct Linked {
    entry: Option<u32>,
    level: usize,
}

impl HnswIndex {
    /// Buffers with room for an add of `n` vectors, copied aside from the current ones while
    /// searches share the index (a mapped buffer is copied into memory here too), so that
    /// [`HnswIndex::stage`] neither reallocates nor copies under the write lock. Empty when the
    /// buffers have room. Hand it to [`HnswIndex::install`] before staging the add; nothing may
    /// change the index in between (the caller holds the edit lock).
    pub(crate) fn room_for(&self, n: usize) -> Room {
        let book = self.book.read();
        let fresh = n.saturating_sub(book.free.len());
        let idmap = (!book.idmap.has_room(n)).then(|| book.idmap.with_room(n));
        drop(book);
        let total = self.ids.len() + fresh;
        let d = self.dim;
        Room {
            vectors: self.vectors.with_room(total * d),
            codes: self.codes.with_room(total * d),
            links0: self.links0.with_room(total * (self.shape.m0 + 1)),
            idmap,
        }
    }

    /// Swap in the buffers of `room` (from [`HnswIndex::room_for`]) where they still hold what
    /// the index holds; `room` keeps the replaced ones, to be freed after the write section.
    pub(crate) fn install(&mut self, room: &mut Room) {
        if let Some(v) = room.vectors.as_mut() {
            if v.as_slice().len() == self.vectors.as_slice().len() {
                std::mem::swap(v, &mut self.vectors);
            }
        }
        if let Some(c) = room.codes.as_mut() {
            if c.len() == self.codes.len() && c.kind() == self.codes.kind() {
                std::mem::swap(c, &mut self.codes);
            }
        }
        if let Some(l) = room.links0.as_mut() {
            if l.len() == self.links0.len() {
                std::mem::swap(l, &mut self.links0);
            }
        }
        if let Some(m) = room.idmap.as_mut() {
            let book = self.book.get_mut();
            if m.len() == book.idmap.len() {
                std::mem::swap(m, &mut book.idmap);
            }
        }
    }

    /// First step of an add: check everything, then store the vectors in their slots (deleted
    /// slots first, then new ones) and make sure the link arrays are in memory and large enough.
    /// Nothing is linked yet; see [`HnswIndex::link`].
    ///
    /// An error leaves the index as it was. Once this returns, searches may find the staged
    /// vectors (exact scans see them; graph walks reach them as [`HnswIndex::link`] connects
    /// them), each one whole: its row is written before any search can read it.
    pub(crate) fn stage(&mut self, vectors: &[f32], ids: Option<&[i64]>) -> Result<Staged> {
        let d = self.dim;
        let n = vectors::rows(vectors, d, "vectors")?;
        vectors::check_finite(vectors, d, "vectors")?;
        let new_ids = self.book.get_mut().idmap.assign(n, ids, "vectors")?;
        if n == 0 {
            return Ok(Staged { ids: new_ids, order: Vec::new(), old: HashMap::new() });
        }
        let rows: Cow<[f32]> = if self.metric == Metric::Cosine {
            Cow::Owned(vectors::normalized(vectors, d))
        } else {
            Cow::Borrowed(vectors)
        };
        let reuse = n.min(self.book.get_mut().free.len());
        let old_n = self.ids.len();
        let total = old_n + (n - reuse);
        if total >= u32::MAX as usize {
            return Err(invalid!("an HnswIndex holds at most 2^32-2 vectors"));
        }
        let fresh_levels: Vec<usize> = (0..n - reuse).map(|_| self.draw_level()).collect();
        let up_w = self.shape.m + 1;
        let extra: usize = fresh_levels.iter().map(|&l| l * up_w).sum();
        if self.upper.len() + extra > u32::MAX as usize {
            return Err(invalid!("too many upper-level links for one index"));
        }

        // Nothing fails from here on.
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut old_links: HashMap<u32, Vec<Vec<u32>>> = HashMap::new();
        for _ in 0..reuse {
            let s = self.book.get_mut().free.pop().expect("counted above");
            let links = self.links();
            let mut lists = Vec::new();
            for l in 0..=self.levels[s as usize] as usize {
                let mut v = Vec::new();
                links.get(s, l, &mut v);
                lists.push(v);
            }
            old_links.insert(s, lists);
            order.push(s);
        }
        order.extend(old_n as u32..total as u32);
        let mut up_len = self.upper.len();
        for &l in &fresh_levels {
            self.up_off.push(up_len as u32);
            self.levels.push(l as u8);
            up_len += l * up_w;
        }
        self.upper.resize(up_len);
        self.links0.resize(total * (self.shape.m0 + 1));
        crate::util::pages::reserve(&mut self.indeg, total);
        self.indeg.resize_with(total, || AtomicU32::new(0));
        self.ids.resize(total, -1);
        self.deleted.resize(total);
        let book = self.book.get_mut();
        let data = self.vectors.to_mut();
        crate::util::pages::reserve(data, total * d);
        data.resize(total * d, 0.0);
        for ((&s, row), &id) in order.iter().zip(rows.chunks_exact(d)).zip(&new_ids) {
            let s = s as usize;
            data[s * d..(s + 1) * d].copy_from_slice(row);
            self.ids[s] = id;
            self.deleted.unmark(s as u32);
            book.idmap.insert(id, s as u32);
        }
        book.idmap.advance(&new_ids);
        self.codes.store(&order, &rows, self.vectors.as_slice(), d);
        Ok(Staged { ids: new_ids, order, old: old_links })
    }

    /// Second step of an add: link the staged nodes into the graph, in parallel, through a
    /// shared reference, so searches can run meanwhile. Searches read the lists with atomic
    /// loads: a list being rewritten may read as a mix of its old and new links, every one a
    /// valid slot whose vector is whole, so a search always routes through whole vectors.
    /// Returns the new entry point, for [`HnswIndex::publish`]; until then searches start from
    /// the old one, which stays valid.
    ///
    /// Run one `link` at a time, and no [`Index::save`] meanwhile (the binding holds the index's
    /// edit lock): overlapping ones are memory-safe but would save or build a muddled graph.
    /// Searches are welcome.
    pub(crate) fn link(&self, staged: &Staged, threads: usize) -> Linked {
        let (entry, level) = if staged.order.is_empty() {
            (self.entry, self.max_level)
        } else {
            self.build(&staged.order, &staged.old, threads)
        };
        Linked { entry, level }
    }

    /// Last step of an add: make the entry point found by [`HnswIndex::link`] the one searches
    /// start from; returns the ids of the batch.
    pub(crate) fn publish(&mut self, staged: Staged, top: Linked) -> Vec<i64> {
        (self.entry, self.max_level) = (top.entry, top.level);
        staged.ids
    }
}
