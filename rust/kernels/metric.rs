//! Similarity metrics and the score conventions shared by every index.

use crate::util::error::{Error, Result};

/// How two vectors are compared.
///
/// `Cosine` and `Dot` are similarities (higher is better); `L2` is the squared Euclidean
/// distance (lower is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine similarity; vectors are L2-normalised on the way in, zero vectors score 0.
    Cosine,
    /// Inner product.
    Dot,
    /// Squared Euclidean distance.
    L2,
}

impl Metric {
    /// Every accepted metric name (case-insensitive) and the metric it means: the one table both
    /// the core and the Python layer parse with.
    pub const NAMES: [(&'static str, Metric); 9] = [
        ("cosine", Metric::Cosine),
        ("cos", Metric::Cosine),
        ("dot", Metric::Dot),
        ("ip", Metric::Dot),
        ("inner_product", Metric::Dot),
        ("l2", Metric::L2),
        ("l2sq", Metric::L2),
        ("euclidean", Metric::L2),
        ("sqeuclidean", Metric::L2),
    ];

    /// Parse a name from [`Metric::NAMES`]: `"cosine" | "dot" | "l2"` and their aliases.
    pub fn parse(name: &str) -> Result<Metric> {
        let lower = name.to_ascii_lowercase();
        Metric::NAMES.iter().find(|(n, _)| *n == lower).map(|&(_, m)| m).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown metric {name:?}: expected \"cosine\", \"dot\" or \"l2\""))
        })
    }

    /// Canonical name, as accepted by [`Metric::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Stable numeric code used in index files.
    pub fn code(self) -> u32 {
        match self {
            Metric::Cosine => 1,
            Metric::Dot => 2,
            Metric::L2 => 3,
        }
    }

    /// Inverse of [`Metric::code`].
    pub fn from_code(code: u32) -> Option<Metric> {
        match code {
            1 => Some(Metric::Cosine),
            2 => Some(Metric::Dot),
            3 => Some(Metric::L2),
            _ => None,
        }
    }

    /// True when higher scores are better (cosine, dot).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// The score given to padding slots when fewer than k results exist.
    pub fn worst_score(self) -> f32 {
        if self.higher_is_better() {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        }
    }
}
