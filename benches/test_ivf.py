"""IVF (inner product, float32 lists): rankfunnel IVFIndex vs faiss IndexIVFFlat.

Train + add is one group (same k-means iterations for both); search is timed at the smallest
``nprobe`` of each engine that reaches recall@10 >= 0.95 (found outside the timing).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from conftest import Setup, Vectors, anchor, recall

ITERS, TARGET = 10, 0.95
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
CONTENDERS = ["rankfunnel IVFIndex", "faiss IVFFlat"]

Search = Callable[[np.ndarray, int], np.ndarray]


def nlist(n: int) -> int:
    """About 4 sqrt(n) lists, the usual faiss advice."""
    return max(1, int(4 * np.sqrt(n)))


def build(name: str, x: np.ndarray, threads: int) -> Search:
    n, d = x.shape
    k, nl = 10, nlist(n)
    if name == "faiss IVFFlat":
        faiss = anchor("faiss")
        faiss.omp_set_num_threads(threads)
        qz = faiss.IndexFlatIP(d)
        fi = faiss.IndexIVFFlat(qz, d, nl, faiss.METRIC_INNER_PRODUCT)
        fi.cp.niter = ITERS
        fi.train(x)
        fi.add(x)

        def fi_search(q: np.ndarray, nprobe: int) -> np.ndarray:
            fi.nprobe = nprobe
            return fi.search(q, k)[1]  # type: ignore[no-any-return]

        fi_search.index = (qz, fi)  # type: ignore[attr-defined]  # keep the quantizer alive
        return fi_search
    import rankfunnel as rf

    idx = rf.IVFIndex(d, nlist=nl, metric="dot")
    idx.train(x, iters=ITERS, threads=threads)
    idx.add(x, threads=threads)
    return lambda q, nprobe: idx.search(q, k, nprobe=nprobe, threads=threads)[1]


@pytest.fixture(scope="module")
def built() -> dict[str, Search]:
    """Contenders built so far in this module."""
    return {}


@pytest.mark.parametrize("contender", CONTENDERS)
def test_train_add(
    benchmark: Any, contender: str, vectors: Vectors, setup: Setup, built: dict[str, Search]
) -> None:
    """k-means training (same iterations) plus adding every vector."""
    benchmark.group = f"ivf train+add: {setup.n} x {setup.d}, nlist={nlist(setup.n)}, {ITERS} iterations"
    if contender == "faiss IVFFlat":
        anchor("faiss")
    built[contender] = benchmark.pedantic(build, args=(contender, vectors.x, setup.threads), rounds=1)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_search_at_recall(
    benchmark: Any, contender: str, vectors: Vectors, setup: Setup, built: dict[str, Search]
) -> None:
    """Batch search at the smallest nprobe reaching recall@10 >= 0.95."""
    benchmark.group = f"ivf search @ recall@10 {TARGET}: {setup.nq} queries"
    if contender not in built:
        built[contender] = build(contender, vectors.x, setup.threads)
    search = built[contender]
    nprobe = next((p for p in NPROBES if recall(search(vectors.q, p), vectors.truth) >= TARGET), None)
    if nprobe is None:
        pytest.fail(f"{contender} never reaches recall@10 {TARGET} (nprobe up to {NPROBES[-1]})")
    found = benchmark.pedantic(search, args=(vectors.q, nprobe), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(nprobe=nprobe, recall=recall(found, vectors.truth))
    benchmark.extra_info["QPS"] = setup.nq / benchmark.stats.stats.min
