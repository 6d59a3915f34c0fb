//! The on-disk format shared by every index kind (versioned, checksummed, mmap-able).

pub mod storage;
