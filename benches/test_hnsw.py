"""HNSW (M=16, ef_construction=200, inner product): rankfunnel vs hnswlib, faiss HNSWFlat, usearch.

Build time is one group; search is timed at the smallest ``ef`` of each engine that reaches
recall@10 >= 0.95 on the run's queries (found by a sweep outside the timing), so the contenders
are compared at equal quality, as in benches/bench_hnsw.py.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import pytest

from common import faiss_hnsw, hnswlib_index
from conftest import Setup, Vectors, anchor, recall

M, EFC, TARGET = 16, 200, 0.95
EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
CONTENDERS = ["rankfunnel HNSWIndex", "hnswlib", "faiss HNSWFlat", "usearch"]
FLOAT32_ONLY = "rankfunnel HNSWIndex bf16_copy=False"  # ours without the bfloat16 walk copy
# Ours with each walk copy named explicitly (the default is one of them).
WALK_CODES = {f"rankfunnel HNSWIndex codes={c}": c for c in ("bf16", "int8")}

Search = Callable[[np.ndarray, int], np.ndarray]


class Built(NamedTuple):
    """A built contender: ``search(queries, ef) -> ids`` and the bytes the index holds."""

    search: Search
    nbytes: int


def build(name: str, x: np.ndarray, threads: int) -> Built:
    """Build contender ``name`` over ``x`` (bytes: ours and usearch report their memory, hnswlib
    and faiss the size of their serialised index, which is what they hold in memory)."""
    n, d = x.shape
    k = 10
    if name == "hnswlib":
        anchor("hnswlib")
        hl = hnswlib_index(x, M, EFC, threads)

        def hl_search(q: np.ndarray, ef: int) -> np.ndarray:
            hl.set_ef(ef)
            return hl.knn_query(q, k=k, num_threads=threads)[0]  # type: ignore[no-any-return]

        return Built(hl_search, hl.index_file_size())
    if name == "faiss HNSWFlat":
        faiss = anchor("faiss")
        fi = faiss_hnsw(x, M, EFC, threads)

        def fi_search(q: np.ndarray, ef: int) -> np.ndarray:
            fi.hnsw.efSearch = ef
            return fi.search(q, k)[1]  # type: ignore[no-any-return]

        return Built(fi_search, faiss.serialize_index(fi).nbytes)
    if name == "usearch":
        index = anchor("usearch.index")
        us = index.Index(ndim=d, metric="ip", dtype="f32", connectivity=M, expansion_add=EFC)
        us.add(np.arange(n), x, threads=threads)

        def us_search(q: np.ndarray, ef: int) -> np.ndarray:
            us.expansion_search = ef
            return np.asarray(us.search(q, k, threads=threads).keys)

        return Built(us_search, us.memory_usage)
    import rankfunnel as rf

    codes = "none" if name == FLOAT32_ONLY else WALK_CODES.get(name)
    ours = rf.HNSWIndex(d, "dot", m=M, ef_construction=EFC, codes=codes)
    ours.add(x, threads=threads)
    return Built(lambda q, ef: ours.search(q, k, ef=ef, threads=threads)[1], ours.memory_bytes())


@pytest.fixture(scope="module")
def built() -> dict[str, Built]:
    """Contenders built so far in this module."""
    return {}


def get(name: str, vectors: Vectors, setup: Setup, cache: dict[str, Built]) -> Search:
    if name not in cache:
        cache[name] = build(name, vectors.x, setup.threads)
    return cache[name].search


@pytest.mark.parametrize("contender", CONTENDERS)
def test_build(
    benchmark: Any, contender: str, vectors: Vectors, setup: Setup, built: dict[str, Built]
) -> None:
    """Index construction (one round: it takes seconds)."""
    benchmark.group = f"hnsw build: {setup.n} x {setup.d}, M={M}, efC={EFC}"
    if contender != "rankfunnel HNSWIndex":
        anchor({"hnswlib": "hnswlib", "faiss HNSWFlat": "faiss", "usearch": "usearch.index"}[contender])
    built[contender] = benchmark.pedantic(build, args=(contender, vectors.x, setup.threads), rounds=1)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_search_at_recall(
    benchmark: Any, contender: str, vectors: Vectors, setup: Setup, built: dict[str, Built]
) -> None:
    """Batch search at the smallest ef reaching recall@10 >= 0.95."""
    benchmark.group = f"hnsw search @ recall@10 {TARGET}: {setup.nq} queries"
    search = get(contender, vectors, setup, built)
    ef = next((e for e in EFS if recall(search(vectors.q, e), vectors.truth) >= TARGET), None)
    if ef is None:
        pytest.fail(f"{contender} never reaches recall@10 {TARGET} (ef up to {EFS[-1]})")
    found = benchmark.pedantic(search, args=(vectors.q, ef), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(ef=ef, recall=recall(found, vectors.truth))
    benchmark.extra_info["QPS"] = setup.nq / benchmark.stats.stats.min
