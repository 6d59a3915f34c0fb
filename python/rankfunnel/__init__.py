"""rankfunnel: a Rust-accelerated retrieval funnel.

Exact and approximate vector search, late-interaction scoring and ONNX encoders for the
bi-encoder -> cross-encoder pattern. See the README for a tour.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._core import __version__, _huge_pages_env_error, default_threads, simd_level, simd_levels
from .bm25 import BM25Index
from .errors import CorruptFileError, RankfunnelError, UnknownIdError, UnsupportedVersionError
from .flat import FlatIndex, topk
from .fusion import convex_combination, reciprocal_rank_fusion
from .hnsw import HNSWIndex
from .io import load
from .ivf import IVFIndex
from .kmeans import kmeans
from .maxsim import PackedDocs, maxsim
from .multivector import MultiVectorIndex
from .pipeline import Hit, Pipeline
from .registry import index_factory

if (_message := _huge_pages_env_error()) is not None:
    warnings.warn(_message, RuntimeWarning, stacklevel=2)

__all__ = [
    "BM25Index",
    "CorruptFileError",
    "BiEncoder",
    "ColBERTEncoder",
    "CrossEncoder",
    "FlatIndex",
    "Hit",
    "IVFIndex",
    "Pipeline",
    "HNSWIndex",
    "MultiVectorIndex",
    "PackedDocs",
    "RankfunnelError",
    "UnknownIdError",
    "UnsupportedVersionError",
    "__version__",
    "convex_combination",
    "default_threads",
    "index_factory",
    "kmeans",
    "load",
    "maxsim",
    "reciprocal_rank_fusion",
    "simd_level",
    "simd_levels",
    "topk",
]


_MODELS = ("BiEncoder", "CrossEncoder", "ColBERTEncoder")


def __getattr__(name: str) -> Any:
    # The ONNX models need onnxruntime and tokenizers (the ``models`` extra): import on first use.
    if name in _MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'rankfunnel' has no attribute {name!r}")
