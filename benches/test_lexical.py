"""BM25 top-100 (PyPI summaries; queries are the first 5 words of held-out summaries):
rankfunnel BM25Index vs bm25s, SQLite FTS5 and tantivy, through the engines of
benches/bench_lexical.py. Needs ../shared/data (skipped without it)."""

from __future__ import annotations

import os
from typing import Any

import bench_lexical as lex
import pytest

from conftest import Setup

CONTENDERS = ["ours", "bm25s", "fts5", "tantivy"]
K, NQ, WORDS = 100, 1000, 5


@pytest.fixture(scope="module")
def corpus(setup: Setup) -> tuple[list[str], list[str]]:
    """Indexed texts and the queries."""
    if not os.path.exists(lex.DATA):
        pytest.skip(f"{lex.DATA} not found (the shared data folder)")
    texts = lex.load(lex.DATA, setup.texts)
    held = texts[-NQ:]
    return texts[:-NQ], [" ".join(t.split()[:WORDS]) for t in held]


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    """Engines built so far in this module."""
    return {}


def engine(name: str) -> Any:
    cls = {"ours": lex.Ours, "bm25s": lex.BM25S, "fts5": lex.FTS5, "tantivy": lex.Tantivy}[name]
    try:
        return cls()
    except ImportError as e:
        pytest.skip(f"{cls.name}: {e}")


@pytest.mark.parametrize("contender", CONTENDERS)
def test_index(benchmark: Any, contender: str, corpus: Any, built: dict[str, Any]) -> None:
    """Index the corpus (analysis included)."""
    texts, _ = corpus
    benchmark.group = f"bm25 index: {len(texts)} texts"
    e = engine(contender)
    benchmark.pedantic(e.build, args=(texts,), rounds=1)
    built[contender] = e


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("contender", CONTENDERS)
def test_search(benchmark: Any, contender: str, threads: int, corpus: Any, built: dict[str, Any]) -> None:
    """Answer every query (query analysis included)."""
    texts, queries = corpus
    benchmark.group = f"bm25 top-{K}: {len(queries)} queries, {threads} thread(s)"
    if contender not in built:
        built[contender] = engine(contender)
        built[contender].build(texts)
    e = built[contender]
    benchmark.pedantic(e.search, args=(queries, K, threads), rounds=3, warmup_rounds=1)
    benchmark.extra_info["QPS"] = len(queries) / benchmark.stats.stats.min
