"""Lexical (BM25) benchmark: rankfunnel BM25Index vs bm25s, SQLite FTS5 and tantivy, same data,
same run.

Corpus: ../shared/data/pypi-summaries-300k.jsonl.gz (short PyPI package summaries). The last
``--nq`` texts are held out; each query is the first ``--words`` words of one of them, and the
index holds the first ``n - nq`` texts. Reported per engine: indexing time (analysis included),
index bytes on disk, top-``k`` queries/s at 1 and 2 threads (query analysis included), and the
time to add the ``nq`` held-out texts to the built index (O(batch) for ours; bm25s has no
incremental add, so its figure is a rebuild). Engines that are not installed are skipped.
``--n`` runs a smaller corpus (a smoke run).
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

import rankfunnel as rf
from common import read_docs, table

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pypi-summaries-300k.jsonl.gz")
WORD = re.compile(r"\w+")


def dir_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def split_threads(queries: list[str], threads: int, run: Any) -> None:
    """Run ``run(chunk)`` over ``threads`` contiguous chunks of the queries in parallel."""
    if threads == 1:
        run(queries)
        return
    chunks = [list(c) for c in np.array_split(np.array(queries, dtype=object), threads)]
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(run, chunks))


class Ours:
    name = "rankfunnel BM25Index"

    def build(self, texts: list[str]) -> None:
        self.idx = rf.BM25Index()
        self.idx.add(texts)

    def add(self, texts: list[str]) -> None:
        self.idx.add(texts)

    def search(self, queries: list[str], k: int, threads: int) -> Any:
        return self.idx.search(queries, k=k, threads=threads)

    def save(self, path: str) -> str:
        self.idx.save(path)
        return path


class BM25S:
    name = "bm25s"

    def __init__(self) -> None:
        import bm25s
        import Stemmer

        self.bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")

    def _tok(self, texts: list[str]) -> Any:
        return self.bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False)

    def build(self, texts: list[str]) -> None:
        self.texts = list(texts)
        self.retriever = self.bm25s.BM25(k1=1.5, b=0.75)
        self.retriever.index(self._tok(self.texts), show_progress=False)

    def add(self, texts: list[str]) -> None:  # no incremental add: rebuild
        self.build(self.texts + list(texts))

    def search(self, queries: list[str], k: int, threads: int) -> Any:
        return self.retriever.retrieve(self._tok(queries), k=k, n_threads=threads, show_progress=False)

    def save(self, path: str) -> str:
        self.retriever.save(path)
        return path


class FTS5:
    name = "SQLite FTS5 (porter unicode61)"

    def build(self, texts: list[str]) -> None:
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "fts.db")
        con = sqlite3.connect(self.path)
        con.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61')")
        con.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)", enumerate(texts))
        con.commit()
        self.n = len(texts)
        self.con = con

    def add(self, texts: list[str]) -> None:
        self.con.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)", enumerate(texts, self.n))
        self.con.commit()
        self.n += len(texts)

    def search(self, queries: list[str], k: int, threads: int) -> Any:
        def run(chunk: list[str]) -> None:
            con = sqlite3.connect(self.path, check_same_thread=False)
            for q in chunk:
                words = WORD.findall(q)
                if words:
                    match = " OR ".join('"' + w + '"' for w in words)
                    sql = "SELECT rowid, bm25(t) FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT ?"
                    con.execute(sql, (match, k)).fetchall()
            con.close()

        split_threads(queries, threads, run)

    def save(self, path: str) -> str:
        return self.path


class Tantivy:
    name = "tantivy (en_stem)"

    def __init__(self) -> None:
        import tantivy

        self.tantivy = tantivy

    def build(self, texts: list[str]) -> None:
        t = self.tantivy
        sb = t.SchemaBuilder()
        sb.add_text_field("text", stored=False, tokenizer_name="en_stem")
        sb.add_integer_field("id", stored=True, fast=True)
        self.dir = tempfile.mkdtemp()
        self.index = t.Index(sb.build(), path=self.dir)
        self.n = 0
        self.add(texts)

    def add(self, texts: list[str]) -> None:
        w = self.index.writer(heap_size=256_000_000, num_threads=1)
        for i, text in enumerate(texts, self.n):
            w.add_document(self.tantivy.Document(id=i, text=text))
        w.commit()
        w.wait_merging_threads()
        self.index.reload()
        self.n += len(texts)

    def search(self, queries: list[str], k: int, threads: int) -> Any:
        searcher = self.index.searcher()

        def run(chunk: list[str]) -> None:
            for q in chunk:
                words = WORD.findall(q)
                if words:
                    searcher.search(
                        self.index.parse_query(" ".join(w.lower() for w in words), ["text"]), k
                    )  # AND/OR/NOT are operators

        split_threads(queries, threads, run)

    def save(self, path: str) -> str:
        return self.dir


def load(path: str, n: int) -> list[str]:
    """The first ``n`` texts of the corpus."""
    return [t for _, t in read_docs(path, n)]


def measure(engine: Any, corpus: list[str], queries: list[str], held: list[str], k: int) -> dict[str, Any]:
    t = time.perf_counter()
    engine.build(corpus)
    build_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        size = dir_bytes(engine.save(os.path.join(d, "index")))
    qps = {}
    for threads in (1, 2):
        engine.search(queries[:50], k, threads)  # warm-up
        t = time.perf_counter()
        engine.search(queries, k, threads)
        qps[threads] = len(queries) / (time.perf_counter() - t)
    t = time.perf_counter()
    engine.add(held)
    add_s = time.perf_counter() - t
    return {
        "engine": engine.name,
        "index s": f"{build_s:.2f}",
        "index MB": f"{size / 1e6:.1f}",
        "QPS 1 thr": f"{qps[1]:.0f}",
        "QPS 2 thr": f"{qps[2]:.0f}",
        f"add {len(held)} s": f"{add_s:.3f}",
    }


def engines(only: Optional[list[str]]) -> list[Any]:
    out: list[Any] = []
    for cls in (Ours, BM25S, FTS5, Tantivy):
        key = cls.__name__.lower()
        if only and key not in only:
            continue
        try:
            out.append(cls())
        except ImportError as e:
            print(f"skipping {cls.name}: {e}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--n", type=int, default=300_000, help="texts read (index n - nq, hold out nq)")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--words", type=int, default=5, help="query = first WORDS words of a held-out text")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--engines", nargs="*", help="subset of: ours bm25s fts5 tantivy")
    args = ap.parse_args()
    texts = load(args.data, args.n)
    corpus, held = texts[: len(texts) - args.nq], texts[len(texts) - args.nq :]
    queries = [" ".join(t.split()[: args.words]) for t in held]
    print(f"{len(corpus)} documents, {len(queries)} queries of <= {args.words} words, top-{args.k}")
    rows = [measure(e, corpus, queries, held, args.k) for e in engines(args.engines)]
    print(table(rows))


if __name__ == "__main__":
    main()
