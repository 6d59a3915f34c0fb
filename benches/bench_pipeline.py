"""Pipeline storage benchmark (issue #12 targets): what a commit costs, what segments cost a search.

    python benches/bench_pipeline.py [--n 200000] [--add 1000] [--vectors pypi-minilm.npy]

1. Builds an ``--n``-document pipeline (flat, cosine, all-MiniLM-L6-v2) from the PyPI summaries
   with precomputed vectors (``embeddings=``), compacted into its main index.
2. Adds ``--add`` documents with their vectors: one segment. Bytes written (the write() bytes of
   this process, /proc/self/io, and the growth of the folder) and wall time, against a full
   rewrite (the same add, then the rewrite of the main index every commit used to do).
   Targets: <= 2% of the bytes, <= 5% of the time.
3. Keeps adding ``--add``-document commits while the tiered policy keeps them as segments, then
   compares the p50 latency of ``search`` (total, and the retrieve stage alone) with the same
   pipeline compacted. Target: <= 1.3x.
4. Lexical (issue #14): builds a lexical-only pipeline (BM25, no model) of ``--n`` documents,
   then adds ``--add`` documents: one segment commit, against a rebuild (a BM25 index over all
   the texts, written to disk). Then a hybrid pipeline (vectors + BM25, RRF) of the same
   documents: search latency p50/p95 of dense, lexical and hybrid in the same run.

``--part storage`` runs 1-3, ``--part lexical`` runs 4 (default both).

Vectors: row i of ``--vectors`` (float32 (300000, 384)) is line i of the jsonl; when the file is
absent, random unit vectors are used (a warning says so). Do not run at full size on a shared
machine; ``--n 5000 --add 100 --queries 20`` is a smoke run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

import rankfunnel as rf
from common import latencies, load_vectors, read_docs

SHARED = Path(os.environ.get("RANKFUNNEL_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


class Data(NamedTuple):
    """What every section uses: the encoder, the texts, their vectors and the held-out queries."""

    enc: rf.BiEncoder
    texts: list[str]
    vectors: np.ndarray
    queries: list[str]


def written_bytes() -> int:
    """Bytes this process passed to write() so far (``wchar`` of /proc/self/io; 0 if unavailable)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def folder_bytes(folder: Path) -> int:
    """Total size of the files in a folder."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def measure(fn: object, folder: Path) -> tuple[float, int, int]:
    """Wall time, write() bytes and folder growth of ``fn()``."""
    w0, f0 = written_bytes(), folder_bytes(folder)
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    took = time.perf_counter() - t
    return took, written_bytes() - w0, folder_bytes(folder) - f0


def p50(p: rf.Pipeline, queries: list[str]) -> tuple[float, float]:
    """Median latency of ``p.search`` (total and retrieve stage), in ms."""
    stage = []

    def one(i: int) -> None:
        p.search(queries[i], k=10)
        stage.append(p.last_timings["retrieve"])

    total = latencies(one, len(queries))
    return float(np.median(total) * 1e3), float(np.median(stage) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="documents in the pipeline")
    ap.add_argument("--add", type=int, default=1000, help="documents per measured commit")
    ap.add_argument("--queries", type=int, default=200, help="queries for the latency figures")
    ap.add_argument(
        "--vectors",
        default=os.environ.get("RANKFUNNEL_PYPI_VECTORS", "pypi-minilm.npy"),
        help="cached float32 (300000, 384) MiniLM vectors of the corpus (default $RANKFUNNEL_PYPI_VECTORS)",
    )
    ap.add_argument("--corpus", default=str(SHARED / "data" / "pypi-summaries-300k.jsonl.gz"))
    ap.add_argument("--model", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--dir", default=None, help="where to build the pipeline (default: a temporary folder)")
    ap.add_argument("--part", choices=["storage", "lexical", "all"], default="all")
    a = ap.parse_args()

    enc = rf.BiEncoder(a.model)
    limit = int(a.n * (1 + enc_fold_ratio())) + a.add + a.queries
    texts = [t for _, t in read_docs(Path(a.corpus), limit)]
    limit = len(texts)
    vectors = load_vectors(Path(a.vectors), limit, enc.dim)
    queries = texts[limit - a.queries :]
    base = tempfile.mkdtemp(prefix="rf-bench-pipeline-", dir=a.dir)
    if a.part in ("storage", "all"):
        storage(a, Data(enc, texts, vectors, queries), Path(base))
    if a.part in ("lexical", "all"):
        lexical(a, Data(enc, texts, vectors, queries), Path(base))
    if a.dir is None:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    os.sync()


def storage(a: argparse.Namespace, data: Data, base: Path) -> None:
    """Sections 1-3: commit cost, and search latency with segments against compacted."""
    enc, texts, vectors, queries = data
    limit = len(texts)
    folder = base / "p"
    p = rf.Pipeline(encoder=enc, path=folder)
    t = time.perf_counter()
    p.add(texts[: a.n], embeddings=vectors[: a.n])
    print(
        f"built {a.n:,} documents in {time.perf_counter() - t:.1f} s ({folder_bytes(folder) / 2**20:.0f} MiB)"
    )

    pos = a.n

    def add_one() -> None:
        nonlocal pos
        p.add(texts[pos : pos + a.add], embeddings=vectors[pos : pos + a.add])
        pos += a.add

    seg_t, seg_w, seg_f = measure(add_one, folder)
    fold_t, fold_w, fold_f = measure(p.compact, folder)
    full_t, full_w = seg_t + fold_t, seg_w + fold_w
    print(f"\nadding {a.add:,} documents to {a.n:,} (vectors given):")
    print(
        f"  segment commit : {seg_t * 1e3:9.1f} ms  {seg_w / 2**20:9.2f} MiB written  (folder +{seg_f / 2**20:.2f} MiB)"
    )
    print(f"  full rewrite   : {full_t * 1e3:9.1f} ms  {full_w / 2**20:9.2f} MiB written")
    print(
        f"  ratio          : time {seg_t / full_t:.3f} (target <= 0.05), bytes {seg_w / max(full_w, 1):.4f} (target <= 0.02)"
    )

    # Segments: as many as the policy allows before it would fold.
    rows = int(p._main["rows"])
    while pos + a.add <= limit - a.queries:
        seg_rows = [s["rows"] for s in p._segments] + [a.add]
        if p.policy.plan(rows, 0, seg_rows) == "fold":
            break
        add_one()
    n_seg = len(p._segments)
    in_seg = sum(s["rows"] for s in p._segments)
    seg_total, seg_stage = p50(p, queries)
    p.compact()
    cmp_total, cmp_stage = p50(p, queries)
    print(f"\nsearch p50 over {len(p):,} documents, k=10, {len(queries)} queries:")
    print(f"  {n_seg} segments ({in_seg:,} rows): total {seg_total:.2f} ms, retrieve {seg_stage:.2f} ms")
    print(f"  compacted           : total {cmp_total:.2f} ms, retrieve {cmp_stage:.2f} ms")
    print(
        f"  ratio               : total {seg_total / cmp_total:.3f}, retrieve {seg_stage / cmp_stage:.3f} "
        "(target <= 1.3)"
    )
    p.close()


def lexical(a: argparse.Namespace, data: Data, base: Path) -> None:
    """Section 4: adding to a lexical pipeline against a rebuild; hybrid latency against dense."""
    enc, texts, vectors, queries = data
    folder = base / "lex"
    p = rf.Pipeline(lexical=True, path=folder)
    t = time.perf_counter()
    p.add(texts[: a.n])
    print(f"\nlexical pipeline: built {a.n:,} documents in {time.perf_counter() - t:.1f} s")
    new = texts[a.n : a.n + a.add]
    seg_t, seg_w, seg_f = measure(lambda: p.add(new), folder)
    p.close()

    def rebuild() -> None:
        idx = rf.BM25Index()
        idx.add(texts[: a.n + a.add])
        idx.save(base / "rebuilt.rfi")

    reb_t, reb_w, _ = measure(rebuild, base)
    print(f"adding {a.add:,} documents to {a.n:,} (lexical only):")
    print(
        f"  segment commit : {seg_t * 1e3:9.1f} ms  {seg_w / 2**20:9.2f} MiB written  (folder +{seg_f / 2**20:.2f} MiB)"
    )
    print(f"  BM25 rebuild   : {reb_t * 1e3:9.1f} ms  {reb_w / 2**20:9.2f} MiB written")
    print(f"  ratio          : time {seg_t / reb_t:.4f}, bytes {seg_w / max(reb_w, 1):.4f}")

    h = rf.Pipeline(encoder=enc, lexical=True, path=base / "hybrid")
    h.add(texts[: a.n], embeddings=vectors[: a.n])
    print(f"\nsearch latency over {len(h):,} documents (compacted), k=10, {len(queries)} queries, ms:")
    for mode in ("dense", "lexical", "hybrid"):
        stage: list[float] = []

        def one(i: int, mode: str = mode, stage: list[float] = stage) -> None:
            h.search(queries[i], k=10, mode=mode)
            stage.append(h.last_timings["retrieve"])

        total = latencies(one, len(queries))
        print(
            f"  {mode:<8}: total p50 {np.median(total) * 1e3:7.2f}  p95 {np.percentile(total, 95) * 1e3:7.2f}   "
            f"retrieve p50 {np.median(stage) * 1e3:7.2f}  p95 {np.percentile(stage, 95) * 1e3:7.2f}"
        )
    h.close()


def enc_fold_ratio() -> float:
    """Fraction of the pipeline the policy lets segments hold (the extra texts needed)."""
    return rf.pipeline.TieredPolicy().fold_ratio


if __name__ == "__main__":
    main()
