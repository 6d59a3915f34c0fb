//! SIMD kernels with one scalar reference and one implementation per instruction set.
//!
//! The CPU is detected once and the result cached; `RANKFUNNEL_SIMD=scalar|avx2|avx512|neon`
//! forces a lower level (an unavailable level is an error, reported by [`level`] and at import).
//! [`force_level`] switches levels at run time so tests can run every path in one process.
//!
//! Two kernel families live here:
//! - pair kernels ([`dot`], [`l2sq`], [`norm_sq`]) on two contiguous vectors;
//! - tile kernels ([`score_block`]) that score `R` row-major queries against a *panel group*: `P`
//!   panels of [`PANEL`] vectors stored dimension-major (`panel[t * PANEL + j] = x_j[t]`).
//!   They are the register-blocked micro-kernels behind exact batched search.

// Register tiles are indexed arrays; index loops say what the kernels do more plainly.
#![allow(clippy::needless_range_loop)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::util::error::{Error, Result};

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

use crate::kernels::layout::{BLOCK, PANEL};

/// An instruction-set level, ordered from the portable reference up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable Rust, the reference every other level is tested against.
    Scalar = 0,
    /// x86-64 AVX2 + FMA.
    Avx2 = 1,
    /// x86-64 AVX-512 F.
    Avx512 = 2,
    /// aarch64 NEON.
    Neon = 3,
}

impl Level {
    /// Lower-case name: `scalar`, `avx2`, `avx512`, `neon`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }

    /// Parse a name accepted by `RANKFUNNEL_SIMD`.
    pub fn parse(name: &str) -> Result<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "off" => Ok(Level::Scalar),
            "avx2" => Ok(Level::Avx2),
            "avx512" | "avx-512" | "avx512f" => Ok(Level::Avx512),
            "neon" => Ok(Level::Neon),
            other => Err(Error::InvalidArgument(format!(
                "unknown SIMD level {other:?}: expected scalar, avx2, avx512 or neon"
            ))),
        }
    }

    fn from_u8(v: u8) -> Level {
        match v {
            1 => Level::Avx2,
            2 => Level::Avx512,
            3 => Level::Neon,
            _ => Level::Scalar,
        }
    }
}

/// Every level this CPU can run, scalar first, best last.
pub fn available() -> &'static [Level] {
    static AVAILABLE: OnceLock<Vec<Level>> = OnceLock::new();
    AVAILABLE.get_or_init(|| {
        #[allow(unused_mut)]
        let mut levels = vec![Level::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                levels.push(Level::Avx2);
                if is_x86_feature_detected!("avx512f") {
                    levels.push(Level::Avx512);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                levels.push(Level::Neon);
            }
        }
        levels
    })
}

/// The best level of this CPU, ignoring any override.
pub fn detected() -> Level {
    *available().last().expect("scalar is always available")
}

const UNSET: u8 = u8::MAX;
static CURRENT: AtomicU8 = AtomicU8::new(UNSET);
static ENV_ERROR: OnceLock<Option<String>> = OnceLock::new();

fn check_available(level: Level) -> Result<Level> {
    if available().contains(&level) {
        Ok(level)
    } else {
        Err(Error::InvalidArgument(format!(
            "SIMD level {:?} is not available on this CPU (available: {})",
            level.name(),
            available().iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
        )))
    }
}

fn init_from_env() -> Level {
    let mut err = None;
    let level = match std::env::var("RANKFUNNEL_SIMD") {
        Ok(v) if !v.trim().is_empty() => match Level::parse(&v).and_then(check_available) {
            Ok(l) => l,
            Err(e) => {
                err = Some(format!("RANKFUNNEL_SIMD={v}: {e}"));
                Level::Scalar
            }
        },
        _ => detected(),
    };
    let _ = ENV_ERROR.set(err);
    let _ = CURRENT.compare_exchange(UNSET, level as u8, Ordering::SeqCst, Ordering::SeqCst);
    Level::from_u8(CURRENT.load(Ordering::SeqCst))
}

/// The level in use: detected once (honouring `RANKFUNNEL_SIMD`) and cached.
#[inline]
pub fn level() -> Level {
    let v = CURRENT.load(Ordering::Relaxed);
    if v == UNSET {
        init_from_env()
    } else {
        Level::from_u8(v)
    }
}

/// The error from a bad `RANKFUNNEL_SIMD` value, if any (the level then falls back to scalar).
pub fn env_error() -> Option<String> {
    level();
    ENV_ERROR.get().cloned().flatten()
}

/// Switch the level for the whole process (tests use it to cover every path).
pub fn force_level(level: Level) -> Result<()> {
    check_available(level)?;
    CURRENT.store(level as u8, Ordering::SeqCst);
    Ok(())
}

/// Scores `R` queries (row-major, stride `d`) against `P` consecutive panels.
///
/// Row `r` of the `R x (P * PANEL)` scores goes to `out[r * ldo..r * ldo + P * PANEL]`.
pub type TileFn = fn(q: &[f32], d: usize, panels: &[f32], out: &mut [f32], ldo: usize);

/// Like [`TileFn`] for panels of bfloat16 bit patterns (the prefilter copy of a FlatIndex).
pub type TileBf16Fn = fn(q: &[f32], d: usize, panels: &[u16], out: &mut [f32], ldo: usize);

/// One query against one bfloat16 row (bit patterns): inner product or squared L2 (the graph
/// walk over HNSW's half-size copy).
pub type PairBf16Fn = fn(q: &[f32], x: &[u16]) -> f32;

/// Squared L2 between one query and one row of u8 codes (the graph walk over HNSW's int8 copy):
/// `sum_t (step[t] * x[t] - q[t])^2`, the caller folding the quantizer's minimum into `q` (see
/// [`crate::kernels::sq8`]).
pub type PairU8L2Fn = fn(q: &[f32], step: &[f32], x: &[u8]) -> f32;

/// One query as 16-bit fixed-point weights against one row of u8 codes: `sum_t w[t] * x[t]`,
/// exact in i32 (the caller bounds `|w|` by `(2^31 - 1) / (255 * len)`, see
/// [`fixed_point_bound`]); the inner products of the graph walk over HNSW's int8 copy.
pub type PairU8I16Fn = fn(w: &[i16], x: &[u8]) -> i32;

/// Largest weight magnitude a [`PairU8I16Fn`] over `len` codes may take without overflowing i32.
pub fn fixed_point_bound(len: usize) -> i32 {
    (i32::MAX as usize / (255 * len.max(1))).min(i16::MAX as usize) as i32
}

/// `R` rows of int8 weights (stride `dp`) against one panel of [`PANEL`] u8 codes in quad
/// layout ([`QUAD`](crate::kernels::layout::QUAD) consecutive dimensions of a vector per 32-bit lane:
/// `codes[g * QUAD * PANEL + j * QUAD + u] = code_j[QUAD * g + u]`, `dp` a multiple of [`QUAD`](crate::kernels::layout::QUAD)):
/// `out[r * ldo + j] = sum_t w[r][t] * code_j[t]`, exact in i32 (the scalar-quantized scan of
/// `IVFIndex`).
pub type TileU8Fn = fn(w: &[i8], dp: usize, codes: &[u8], out: &mut [i32], ldo: usize);

/// Widest row tile of the u8 kernels.
pub const U8_ROWS: usize = 4;

/// The kernels of one level.
pub struct Kernels {
    /// Level these kernels run at.
    pub level: Level,
    /// Inner product of two equal-length vectors.
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// Squared Euclidean distance of two equal-length vectors.
    pub l2sq: fn(&[f32], &[f32]) -> f32,
    /// Squared L2 norm.
    pub norm_sq: fn(&[f32]) -> f32,
    /// Widest query tile (`R`) of [`Kernels::tile_dot`] / [`Kernels::tile_l2`].
    pub max_rows: usize,
    /// Panels per tile (`P`).
    pub panels: usize,
    /// Inner-product tile kernels indexed by `R - 1`.
    pub tile_dot: &'static [TileFn],
    /// Squared-L2 tile kernels indexed by `R - 1`.
    pub tile_l2: &'static [TileFn],
    /// One-query inner-product and squared-L2 kernels on bfloat16 panels.
    pub tile_bf16: [TileBf16Fn; 2],
    /// Inner-product and squared-L2 kernels of one query and one bfloat16 row.
    pub pair_bf16: [PairBf16Fn; 2],
    /// Squared L2 of one prepared query and one row of u8 codes.
    pub pair_u8_l2: PairU8L2Fn,
    /// The inner product of 16-bit fixed-point weights and one row of u8 codes.
    pub pair_u8_i16: PairU8I16Fn,
    /// u8-code tile kernels indexed by `R - 1` (`R <= U8_ROWS`), one panel per call.
    pub tile_u8: [TileU8Fn; U8_ROWS],
    /// The same with VNNI dot-product instructions (AVX512-VNNI / AVX-VNNI), used instead of
    /// [`Kernels::tile_u8`] when [`vnni_available`] says this CPU has them; see [`u8_kernels`].
    pub tile_u8_vnni: Option<[TileU8Fn; U8_ROWS]>,
}

/// Whether this CPU has the VNNI extension the `tile_u8_vnni` kernels of `level` need
/// (AVX512-VNNI for avx512, AVX-VNNI for avx2); detected separately from the level itself.
pub fn vnni_available(level: Level) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<(bool, bool)> = OnceLock::new();
        let (v512, v256) = *HAS.get_or_init(|| {
            (
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"),
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni"),
            )
        });
        match level {
            Level::Avx512 => v512 && available().contains(&level),
            Level::Avx2 => v256 && available().contains(&level),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        false
    }
}

static VNNI_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Allow or forbid the VNNI u8 kernels for the whole process (tests use it to cover the
/// fallback on VNNI machines); returns the previous setting.
pub fn allow_vnni(allowed: bool) -> bool {
    VNNI_ALLOWED.swap(allowed, Ordering::SeqCst)
}

/// True when [`u8_kernels`] of the current level use VNNI instructions.
pub fn vnni_in_use() -> bool {
    let k = kernels();
    k.tile_u8_vnni.is_some() && VNNI_ALLOWED.load(Ordering::Relaxed) && vnni_available(k.level)
}

/// The u8 tile kernels to run at `k`'s level: the VNNI ones when the CPU has them (and they are
/// allowed), else the level's portable ones.
#[inline]
pub fn u8_kernels(k: &'static Kernels) -> &'static [TileU8Fn; U8_ROWS] {
    match &k.tile_u8_vnni {
        Some(v) if VNNI_ALLOWED.load(Ordering::Relaxed) && vnni_available(k.level) => v,
        _ => &k.tile_u8,
    }
}

/// The kernels of the current [`level`].
#[inline]
pub fn kernels() -> &'static Kernels {
    kernels_for(level())
}

/// The kernels of a given level; the scalar ones when this CPU lacks that level.
pub fn kernels_for(level: Level) -> &'static Kernels {
    if !available().contains(&level) {
        return &scalar::KERNELS;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => &avx512::KERNELS,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => &avx2::KERNELS,
        #[cfg(target_arch = "aarch64")]
        Level::Neon => &neon::KERNELS,
        _ => &scalar::KERNELS,
    }
}

/// Inner product at the current level.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared L2 distance at the current level.
#[inline]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2sq)(a, b)
}

/// Squared norm at the current level.
#[inline]
pub fn norm_sq(a: &[f32]) -> f32 {
    (kernels().norm_sq)(a)
}

/// Hint the CPU to start loading `row` into cache (a no-op where there is no prefetch).
#[inline]
pub fn prefetch_row<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(row);
        let p = row.as_ptr() as *const i8;
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch never faults, and every address is inside `row`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Scores one query against one block of bfloat16 vectors (approximate: see `FlatIndex`).
#[inline]
pub fn score_block_bf16(k: &Kernels, l2: bool, q: &[f32], d: usize, block: &[u16], out: &mut [f32]) {
    let f = k.tile_bf16[l2 as usize];
    let step = k.panels * PANEL;
    let mut j = 0;
    while j < BLOCK {
        f(q, d, &block[j * d..], &mut out[j..], BLOCK);
        j += step;
    }
}

/// Scores `rows` (<= `k.max_rows`) queries against one block of [`BLOCK`] vectors.
///
/// Row `r` of the scores goes to `out[r * BLOCK..(r + 1) * BLOCK]`.
#[inline]
pub fn score_block(k: &Kernels, l2: bool, rows: usize, q: &[f32], d: usize, block: &[f32], out: &mut [f32]) {
    let f = if l2 { k.tile_l2[rows - 1] } else { k.tile_dot[rows - 1] };
    let step = k.panels * PANEL;
    let mut j = 0;
    while j < BLOCK {
        f(q, d, &block[j * d..], &mut out[j..], BLOCK);
        j += step;
    }
}
