"""Exact top-10 search (inner product): rankfunnel vs numpy and faiss IndexFlatIP."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from conftest import Setup, Vectors, anchor, recall

Search = Callable[[np.ndarray], np.ndarray]
CONTENDERS = ["rankfunnel FlatIndex", "rankfunnel topk", "faiss IndexFlatIP", "numpy"]


def numpy_search(x: np.ndarray, k: int) -> Search:
    def search(q: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(q), 100):  # bounded score matrix, as a careful numpy user would
            s = q[i : i + 100] @ x.T
            top = np.argpartition(-s, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
            out.append(np.take_along_axis(top, order, 1))
        return np.concatenate(out)

    return search


@pytest.fixture(scope="module")
def built() -> dict[str, Search]:
    """Contenders built so far in this module (built once, outside the timing)."""
    return {}


def make(name: str, vectors: Vectors, setup: Setup, cache: dict[str, Search]) -> Search:
    """The contender ``name`` built once per module (indexes are not part of the timing)."""
    if name in cache:
        return cache[name]
    x, k, t = vectors.x, vectors.k, setup.threads
    if name == "numpy":
        fn: Search = numpy_search(x, k)
    elif name == "faiss IndexFlatIP":
        faiss = anchor("faiss")
        faiss.omp_set_num_threads(t)
        fi = faiss.IndexFlatIP(x.shape[1])
        fi.add(x)
        fn = lambda q: fi.search(q, k)[1]  # noqa: E731
    else:
        import rankfunnel as rf

        if name == "rankfunnel topk":
            fn = lambda q: rf.topk(q, x, k, "dot", threads=t)[1]  # noqa: E731
        else:
            idx = rf.FlatIndex(x.shape[1], "dot")
            idx.add(x)
            fn = lambda q: idx.search(q, k, threads=t)[1]  # noqa: E731
    cache[name] = fn
    return fn


@pytest.mark.parametrize("contender", CONTENDERS)
def test_batch(
    benchmark: Any, contender: str, vectors: Vectors, setup: Setup, built: dict[str, Search]
) -> None:
    """All queries in one call."""
    benchmark.group = f"exact batch: {setup.nq} queries x {setup.n} x {setup.d}"
    search = make(contender, vectors, setup, built)
    found = benchmark.pedantic(search, args=(vectors.q,), rounds=3, warmup_rounds=1)
    benchmark.extra_info["recall@10"] = recall(found, vectors.truth)
    benchmark.extra_info["QPS"] = setup.nq / benchmark.stats.stats.min
    assert benchmark.extra_info["recall@10"] >= 0.999


@pytest.mark.parametrize("contender", CONTENDERS)
def test_single_query(
    benchmark: Any, contender: str, vectors: Vectors, setup: Setup, built: dict[str, Search]
) -> None:
    """One query per call (latency)."""
    benchmark.group = f"exact single query: {setup.n} x {setup.d}"
    search = make(contender, vectors, setup, built)
    q = vectors.q[:1]
    found = benchmark(search, q)
    assert recall(found, vectors.truth[:1]) >= 0.999
