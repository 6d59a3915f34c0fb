"""Shared helpers of the benchmark scripts (the timing helpers live in :mod:`rankfunnel.bench`
and :mod:`rankfunnel.synthetic`; the corpus readers are here)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any, Union

import numpy as np

from rankfunnel.bench import best_of, latencies, recall, table
from rankfunnel.synthetic import clustered

__all__ = [
    "best_of",
    "clustered",
    "embedding_like",
    "faiss_hnsw",
    "hnswlib_index",
    "latencies",
    "read_docs",
    "load_vectors",
    "recall",
    "table",
]


def embedding_like(
    n: int, d: int, *, latent: int = 96, clusters: int = 1000, spread: float = 1.0, seed: int = 0
) -> np.ndarray:
    """``n`` unit float32 vectors of dimension ``d`` that lie near a ``latent``-dimensional
    subspace, in ``clusters`` clumps: like sentence embeddings, whose intrinsic dimension is far
    below their width. Split one call into data and queries, so both come from one distribution
    (:func:`clustered` with two seeds draws the queries around other centres).

    A random orthonormal map takes clumps of Gaussian points (``spread`` times a centre's length)
    from the latent space to ``d`` dimensions; a little isotropic noise (5%) keeps the vectors
    off the subspace itself. Built in parts of 2^16 rows, so 1M x 384 needs no more than the result.
    """
    g = np.random.default_rng(seed)
    latent = min(latent, d)
    # latent x d, orthonormal rows
    basis = np.linalg.qr(g.standard_normal((d, latent)))[0].T.astype(np.float32)
    centres = g.standard_normal((clusters, latent)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 16):
        m = min(1 << 16, n - s)
        z = centres[g.integers(0, clusters, m)]
        z += np.float32(spread / np.sqrt(latent)) * g.standard_normal((m, latent), dtype=np.float32)
        x = z @ basis
        x += np.float32(0.05 / np.sqrt(d)) * g.standard_normal((m, d), dtype=np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def read_docs(path: Union[str, Path], count: int) -> list[tuple[str, str]]:
    """The first ``count`` (id, text) pairs of a jsonl(.gz) corpus (the PyPI summaries)."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            out.append((str(d["id"]), d["text"]))
            if len(out) == count:
                break
    return out


def load_vectors(path: Path, count: int, dim: int) -> np.ndarray:
    """Rows ``[0, count)`` of the cached vectors, or random unit vectors (with a warning)."""
    if path.is_file():
        v = np.load(path, mmap_mode="r")
        if v.ndim == 2 and v.shape[0] >= count and v.shape[1] == dim:
            return np.ascontiguousarray(v[:count], dtype=np.float32)
        print(
            f"warning: {path} has shape {v.shape}, need ({count}, {dim}): using random vectors",
            file=sys.stderr,
        )
    else:
        print(f"warning: {path} not found: using random unit vectors", file=sys.stderr)
    x = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def hnswlib_index(x: np.ndarray, m: int, efc: int, threads: int) -> Any:
    """An hnswlib inner-product index over ``x`` (labels = row numbers), built with ``threads``."""
    import hnswlib

    hl = hnswlib.Index(space="ip", dim=x.shape[1])
    hl.init_index(max_elements=len(x), ef_construction=efc, M=m, random_seed=0)
    hl.set_num_threads(threads)
    hl.add_items(x, np.arange(len(x)))
    return hl


def faiss_hnsw(x: np.ndarray, m: int, efc: int, threads: int) -> Any:
    """A faiss IndexHNSWFlat (inner product) over ``x``, OpenMP capped at ``threads``."""
    import faiss

    faiss.omp_set_num_threads(threads)
    fi = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    fi.hnsw.efConstruction = efc
    fi.add(x)
    return fi
