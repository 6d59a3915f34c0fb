"""rankfunnel: a Rust-accelerated retrieval funnel.

Exact and approximate vector search, late-interaction scoring and ONNX encoders for the
bi-encoder -> cross-encoder pattern. See the README for a tour.
"""

from __future__ import annotations

from ._core import __version__, default_threads, simd_level, simd_levels
from .errors import CorruptFileError, RankfunnelError, UnknownIdError, UnsupportedVersionError
from .flat import FlatIndex, topk
from .io import load
from .kmeans import kmeans
from .maxsim import PackedDocs, maxsim
from .multivector import MultiVectorIndex

__all__ = [
    "CorruptFileError",
    "FlatIndex",
    "MultiVectorIndex",
    "PackedDocs",
    "RankfunnelError",
    "UnknownIdError",
    "UnsupportedVersionError",
    "__version__",
    "default_threads",
    "kmeans",
    "load",
    "maxsim",
    "simd_level",
    "simd_levels",
    "topk",
]
