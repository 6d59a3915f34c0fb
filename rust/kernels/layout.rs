//! Constants of the block layout shared by the storage code ([`crate::kernels::pack`]) and the tile kernels
//! ([`crate::kernels::simd`], [`crate::kernels::maxsim`]). A leaf module, so neither side imports the other.

/// Vectors per panel in the dimension-major layout used by the tile kernels.
pub const PANEL: usize = 16;

/// Vectors per block: the unit of the panel storage (two panels), a multiple of every `P`.
pub const BLOCK: usize = 2 * PANEL;

/// Dimensions per 32-bit lane in the quad layout of u8 codes (what `vpdpbusd` consumes).
pub const QUAD: usize = 4;
