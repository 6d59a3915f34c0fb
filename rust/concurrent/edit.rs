//! The edits every index shares: remove and save, and the chunked add the per-kind adds
//! ([`super::add`]) are built on.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

use super::Locked;
use crate::index::IdIndex;
use crate::util::error::{Error, Result};

impl<T: IdIndex> Locked<T> {
    /// Remove `ids` while other threads search. Every id is checked first (an unknown one fails
    /// the call before anything is removed); they are then removed in parts of
    /// [`IdIndex::remove_batch`], each in one write section, so searches run between parts and
    /// see every id either present or removed, and none once this returns. An index that
    /// removes through a shared reference ([`IdIndex::remove_concurrent`]) takes only the read
    /// lock, so searches never wait. Returns the count (repeated ids count once).
    pub fn remove(&self, ids: &[i64]) -> Result<usize> {
        let _e = self.edit();
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<i64> = ids.iter().copied().filter(|&id| seen.insert(id)).collect();
        let per = {
            let g = self.checked()?;
            if let Some(&bad) = unique.iter().find(|&&id| !g.contains(id)) {
                return Err(Error::UnknownId(bad));
            }
            g.remove_batch().max(1)
        };
        let mut removed = 0;
        for part in unique.chunks(per) {
            let shared = self.checked()?.remove_concurrent(part);
            removed += match shared {
                Some(r) => r?,
                None => self.section(|g| g.check_mapping().and_then(|()| g.remove(part)))?,
            };
        }
        Ok(removed)
    }

    /// Save atomically to `path` while other threads search: the file holds the index as it
    /// was between two edits (no edit runs while it is written).
    pub fn save(&self, path: &Path) -> Result<()> {
        let _e = self.edit();
        self.checked()?.save(path)
    }

    /// Adds `n` items under the edit lock in chunks of `per_chunk(&prepared)`, each chunk applied
    /// by `apply` (given the index, what `prepare` returned, the chunk's item range and its ids)
    /// in one write section, so searches run between chunks and see a prefix of the batch, each
    /// item whole.
    ///
    /// `prepare` runs first, under the read lock (searches go on): it checks the whole batch's
    /// data and may do the batch's heavy work. The ids are checked and assigned next, before
    /// anything changes, so the call stays all-or-nothing. Should a later chunk still fail, the
    /// chunks already added are removed again before the error is returned.
    pub(crate) fn add_chunked<P>(
        &self,
        n: usize,
        ids: Option<&[i64]>,
        per_chunk: impl FnOnce(&P) -> usize,
        prepare: impl FnOnce(&T) -> Result<P>,
        apply: impl FnMut(&mut T, &mut P, Range<usize>, &[i64]) -> Result<Vec<i64>>,
    ) -> Result<Vec<i64>> {
        self.add_chunked_then(n, ids, per_chunk, prepare, apply, |_, all| Ok(all))
    }

    /// [`Locked::add_chunked`], then `finish` (given what `prepare` returned, after every chunk,
    /// and the ids) still under the edit lock: an HNSW add links the staged chunks there, while
    /// searches run.
    pub(crate) fn add_chunked_then<P>(
        &self,
        n: usize,
        ids: Option<&[i64]>,
        per_chunk: impl FnOnce(&P) -> usize,
        prepare: impl FnOnce(&T) -> Result<P>,
        mut apply: impl FnMut(&mut T, &mut P, Range<usize>, &[i64]) -> Result<Vec<i64>>,
        finish: impl FnOnce(P, Vec<i64>) -> Result<Vec<i64>>,
    ) -> Result<Vec<i64>> {
        let _e = self.edit();
        let (mut prep, all) = {
            let g = self.checked()?;
            (prepare(&g)?, g.assign_ids(n, ids)?)
        };
        if n == 0 {
            self.section(|g| g.check_mapping().and_then(|()| apply(g, &mut prep, 0..0, &[])))?;
            return finish(prep, all);
        }
        let per_chunk = per_chunk(&prep).max(1);
        let mut start = 0;
        while start < n {
            let r = start..(start + per_chunk).min(n);
            let done = self.section(|g| {
                g.check_mapping().and_then(|()| apply(g, &mut prep, r.clone(), &all[r.clone()]))
            });
            if let Err(e) = done {
                if start > 0 {
                    // Best effort: the ids were just added, so removing them cannot be refused.
                    let _ = self.section(|g| g.remove(&all[..start]));
                }
                return Err(e);
            }
            start = r.end;
        }
        finish(prep, all)
    }
}
