//! Concurrency: an index that many threads search while one thread adds, removes, trains or
//! saves it.
//!
//! [`Locked`] holds any index behind three locks: searches share the read lock; a call that
//! changes the index (or must see it unchanged from start to end, as a save) holds the edit
//! lock for its whole length, so such calls run one at a time; and it takes the write lock only
//! for short sections (one chunk of a batch, the bookkeeping of an HNSW insert). So a search is
//! never held up for the length of a large add or remove: it waits out at most about one
//! section, and it sees each add as a prefix of the batch, each item whole, and each remove as
//! a set of ids each either present or gone.
//!
//! ```
//! use rankfunnel::concurrent::Locked;
//! use rankfunnel::{FlatIndex, IdIndex, Metric};
//!
//! let index = Locked::new(FlatIndex::new(4, Metric::Dot, true).unwrap());
//! std::thread::scope(|s| {
//!     s.spawn(|| index.add(&[1.0; 4 * 1000], None, 1).unwrap());
//!     // Searches run while the add goes on and see a prefix of its batch.
//!     let found = index.search(&[1.0; 4], 1, &(), None, 1).unwrap();
//!     assert!(found.ids[0] == -1 || found.ids[0] < 1000);
//! });
//! assert_eq!(index.read().len(), 1000);
//! ```

mod add;
mod edit;
mod lock;

pub use add::ADD_CHUNK_FLOATS;
pub use lock::{Locked, ReadGuard};
