//! Utilities every part of the core shares: the error type, bitsets, threads, seeded randomness, huge pages
//! and input checks.

pub mod bitset;
pub mod error;
pub mod pages;
pub mod parallel;
pub mod rng;
pub mod vectors;
