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
    "faiss_hnsw",
    "hnswlib_index",
    "latencies",
    "read_docs",
    "load_vectors",
    "recall",
    "table",
]


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
