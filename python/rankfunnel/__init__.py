"""rankfunnel: a Rust-accelerated retrieval funnel.

Exact and approximate vector search, late-interaction scoring and ONNX encoders for the
bi-encoder -> cross-encoder pattern. See the README for a tour.
"""

from __future__ import annotations

from ._core import __version__, default_threads, simd_level, simd_levels
from .errors import CorruptFileError, RankfunnelError, UnknownIdError, UnsupportedVersionError
from .flat import FlatIndex, topk
from .hnsw import HNSWIndex
from .io import load
from .kmeans import kmeans

__all__ = [
    "CorruptFileError",
    "FlatIndex",
    "HNSWIndex",
    "RankfunnelError",
    "UnknownIdError",
    "UnsupportedVersionError",
    "__version__",
    "default_threads",
    "kmeans",
    "load",
    "simd_level",
    "simd_levels",
    "topk",
]
