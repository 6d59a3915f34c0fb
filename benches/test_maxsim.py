"""ColBERT MaxSim scoring (32 query tokens x 1,000 documents of 64-300 tokens, d=128):
rankfunnel vs maxsim-cpu and numpy. Every contender's scores are checked against a float64
reference before it is timed."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from conftest import Setup, anchor

CONTENDERS = ["rankfunnel maxsim (PackedDocs)", "rankfunnel maxsim (list)", "maxsim-cpu", "numpy"]
Score = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="module")
def tokens() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Documents, one query, and its float64 reference scores."""
    from rankfunnel.synthetic import token_docs, token_queries

    docs, centres = token_docs(1000, 128, topics=200, lengths=(64, 300), mix=4, spread=0.6, seed=1)
    q = token_queries(centres, 1, 32, mix=3, spread=0.6, seed=2)[0]
    ref = np.array([(q.astype(np.float64) @ d.astype(np.float64).T).max(1).sum() for d in docs])
    return docs, q, ref


def make(name: str, docs: list[np.ndarray], threads: int) -> Score:
    if name == "numpy":
        return lambda q: np.array([(q @ d.T).max(axis=1).sum() for d in docs], dtype=np.float32)
    if name == "maxsim-cpu":
        maxsim_cpu = anchor("maxsim_cpu")
        return lambda q: np.asarray(maxsim_cpu.maxsim_scores_variable(q, docs))
    import rankfunnel as rf

    if name == "rankfunnel maxsim (list)":
        return lambda q: rf.maxsim(q, docs, threads=threads)
    packed = rf.PackedDocs(docs, dtype="f32")
    return lambda q: rf.maxsim(q, packed, threads=threads)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_maxsim(benchmark: Any, contender: str, tokens: Any, setup: Setup) -> None:
    """Score one query against every document."""
    docs, q, ref = tokens
    benchmark.group = "maxsim: 32 query tokens x 1,000 documents, d=128"
    score = make(contender, docs, setup.threads)
    got = np.asarray(score(q), dtype=np.float64).ravel()
    assert np.max(np.abs(got - ref) / np.abs(ref)) < 1e-4, f"{contender} scores differ from the reference"
    benchmark(score, q)
    benchmark.extra_info["docs/s"] = len(docs) / benchmark.stats.stats.min
