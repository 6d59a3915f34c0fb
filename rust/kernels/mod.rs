//! Compute kernels: SIMD similarity, exact top-k, MaxSim, k-means, and the vector layouts and
//! number formats they read.

pub mod half;
pub mod kmeans;
pub mod layout;
pub mod maxsim;
pub mod metric;
pub mod pack;
pub mod simd;
pub mod sq8;
pub mod topk;
