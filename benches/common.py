"""Shared helpers of the Python benchmarks: clustered data like real embeddings, timing, tables."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def clustered(n: int, d: int, *, clusters: int = 1000, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """Unit vectors drawn around random centres, as sentence embeddings are (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d)).astype(
        np.float32
    ) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def latencies(fn: Callable[[int], object], count: int) -> np.ndarray:
    """Per-call wall times (seconds) of ``fn(i)`` for ``i`` in ``range(count)``."""
    out = np.empty(count)
    for i in range(count):
        t = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def table(rows: list[dict[str, object]]) -> str:
    """Render rows of equal keys as an aligned text table."""
    keys = list(rows[0])
    cells = [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, "-" * len(line), *body])
