"""The ``rankfunnel`` command line (also ``python -m rankfunnel``).

    rankfunnel index CORPUS --model DIR [--reranker DIR] [--index hnsw] --out PIPELINE_DIR
    rankfunnel search PIPELINE_DIR "query" [-k 10] [--json] [--where key=value]
    rankfunnel eval PIPELINE_DIR --queries Q --qrels R [--plot out.png]
    rankfunnel bench [flat ivf ...]
    rankfunnel demo [--model DIR] [--reranker DIR] | rankfunnel demo --vectors
    rankfunnel export SRC OUT --kind bi|cross|colbert [--quantize int8]

Errors print one clear line and exit with status 1; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import __version__, default_threads, simd_level
from .errors import RankfunnelError
from .flat import FlatIndex, topk


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def demo_vectors(
    n: int = 100_000, d: int = 384, nq: int = 1000, k: int = 10, threads: Optional[int] = None
) -> None:
    """Exact search on generated embedding-like data: print results and timings.

    Parameters
    ----------
    n, d : int
        Corpus size and dimension.
    nq : int
        Queries in the batch timing.
    k : int
        Results per query.
    threads : int, optional
        Thread cap (default: every core).
    """
    print(f"rankfunnel {__version__}: SIMD {simd_level()}, {threads or default_threads()} threads")
    t = time.perf_counter()
    x = _clustered(n, d, seed=1)
    q = x[np.random.default_rng(2).integers(0, n, nq)] + 0.05 * _clustered(nq, d, seed=3)
    print(f"generated {n:,} x {d} unit vectors in {time.perf_counter() - t:.2f} s")
    idx = FlatIndex(d, "cosine")
    t = time.perf_counter()
    idx.add(x)
    print(
        f"FlatIndex.add: {n / (time.perf_counter() - t):,.0f} vectors/s ({idx.memory_bytes() / 2**20:.0f} MiB)"
    )
    scores, ids = idx.search(q[:3], k=5, threads=threads)
    for i in range(3):
        hits = ", ".join(f"{int(j)} ({s:.4f})" for s, j in zip(scores[i], ids[i]))
        print(f"  query {i}: {hits}")
    t = time.perf_counter()
    idx.search(q, k=k, threads=threads)
    batch = time.perf_counter() - t
    lat = []
    for i in range(50):
        t = time.perf_counter()
        idx.search(q[i], k=k, threads=threads)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    topk(q, x, k=k, metric="cosine", threads=threads)
    raw = time.perf_counter() - t
    print(
        f"batch of {nq} queries: {nq / batch:,.0f} QPS (FlatIndex), {nq / raw:,.0f} QPS (rf.topk on raw arrays)"
    )
    print(f"single query: p50 {np.median(lat) * 1e3:.2f} ms, p95 {np.percentile(lat, 95) * 1e3:.2f} ms")


IVF_TRAIN_DOCS = 65_536
"""Documents an IVF pipeline holds before its lists are trained (it searches exactly until then)."""


def _index(a: argparse.Namespace) -> None:
    from . import BiEncoder, ColBERTEncoder, CrossEncoder, Pipeline
    from .corpus import read_corpus

    out = Path(a.out)
    docs = read_corpus(a.corpus)
    q = a.quantize
    enc = BiEncoder(a.model, quantize=q) if a.model else None
    reranker = CrossEncoder(a.reranker, quantize=q) if a.reranker else None
    colbert = ColBERTEncoder(a.colbert, quantize=q) if a.colbert else None
    if (out / "pipeline.json").exists():
        # A rerun after a failure resumes: the folder keeps every committed batch, and the
        # documents already in it (by their corpus id) are skipped.
        p = Pipeline.load(out)

        def where(model: Any) -> Optional[Path]:
            return None if model is None else Path(model.model_dir).resolve()

        pairs = {
            "encoder": (enc, p.encoder),
            "reranker": (reranker, p.reranker),
            "late_interaction": (colbert, p.late_interaction),
        }
        differ = [name for name, (want, have) in pairs.items() if where(want) != where(have)]
        if differ or p.index_kind != a.index or p.metric != a.metric:
            raise RankfunnelError(
                f"{out} already holds a different pipeline ({', '.join(differ) or 'index/metric'} differ); "
                "choose another --out or delete it"
            )
        if not a.quiet:
            print(f"resuming: {out} holds {len(p):,} documents; those are skipped", file=sys.stderr)
    else:
        p = Pipeline(
            encoder=enc,
            index=a.index,
            reranker=reranker,
            late_interaction=colbert,
            candidates=a.candidates,
            metric=a.metric,
            path=out,
            ivf_train_at=IVF_TRAIN_DOCS,
        )
    started = time.perf_counter()
    total = skipped = 0
    batch: list[Any] = []

    def flush() -> None:
        nonlocal total, skipped
        if len(p) and batch:
            known = p.docs.ids_for_ext([d.id for d in batch])
            fresh = [d for d, i in zip(batch, known) if i is None]
            skipped += len(batch) - len(fresh)
            batch[:] = fresh
        if batch:
            # Each commit writes one segment of just these documents (the pipeline folds
            # segments into the main index by its size-ratio policy), so commits cost what
            # they add: a steady --commit-every is O(n) bytes in all.
            p.add(
                [d.text for d in batch],
                metadata=[d.metadata for d in batch],
                doc_ids=[d.id for d in batch],
                batch_size=a.batch_size,
            )
            total += len(batch)
            batch.clear()
            if not a.quiet:
                rate = total / (time.perf_counter() - started)
                print(
                    f"\rindexed {total:,} documents ({rate:,.1f} docs/s)", end="", file=sys.stderr, flush=True
                )

    try:
        for doc in docs:
            batch.append(doc)
            if len(batch) >= a.commit_every:
                flush()
        flush()
    finally:
        p.close()
    took = time.perf_counter() - started
    if not a.quiet:
        print(file=sys.stderr)
    extra = f" ({skipped:,} already there)" if skipped else ""
    print(
        f"{total:,} documents indexed into {out} in {took:.1f} s ({total / max(took, 1e-9):,.1f} docs/s){extra}"
    )


def _where(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise RankfunnelError(f"--where expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _search(a: argparse.Namespace) -> None:
    from . import Pipeline

    p = Pipeline.load(a.pipeline)
    hits = p.search(a.query, k=a.k, where=_where(a.where) or None)
    if a.json:
        print(
            json.dumps(
                [
                    {
                        "id": h.id,
                        "doc_id": h.doc_id,
                        "score": h.score,
                        "scores": h.scores,
                        "text": h.text,
                        "metadata": h.metadata,
                    }
                    for h in hits
                ],
                indent=2,
            )
        )
        return
    stages = p.stages()
    head = f"{'rank':>4}  {'doc_id':<12}" + "".join(f"{s:>10}" for s in stages) + "  text"
    print(head)
    print("-" * min(len(head) + 60, 120))
    for r, h in enumerate(hits, 1):
        cols = "".join(f"{h.scores.get(s, float('nan')):>10.4f}" for s in stages)
        text = " ".join(h.text.split())
        print(f"{r:>4}  {h.doc_id:<12}{cols}  {text[:70]}{'...' if len(text) > 70 else ''}")
    times = ", ".join(f"{s} {v * 1e3:.1f} ms" for s, v in p.last_timings.items())
    print(f"({len(hits)} results; {times})")


def _eval(a: argparse.Namespace) -> None:
    from . import Pipeline
    from .corpus import read_queries
    from .eval import evaluate, match_query_ids, read_qrels

    p = Pipeline.load(a.pipeline)
    qrels = read_qrels(a.qrels, a.qrels_format)
    queries = match_query_ids(read_queries(a.queries), qrels)
    rows = evaluate(p, queries, qrels, k=a.k, depth=a.depth)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        keys = ["stages", f"ndcg@{a.k}", f"mrr@{a.k}", f"recall@{a.depth}", "total p50_ms", "total p95_ms"]
        print("  ".join(f"{k:>14}" if i else f"{k:<26}" for i, k in enumerate(keys)))
        for row in rows:
            cells = [f"{row[keys[0]]:<26}"] + [
                f"{row[k]:>14.4f}" if "ms" not in k else f"{row[k]:>14.1f}" for k in keys[1:]
            ]
            print("  ".join(cells))
        print("per-stage latency (ms, p50/p95):")
        for row in rows:
            stages = sorted({k.rsplit(" ", 1)[0] for k in row if k.endswith("p50_ms")} - {"total"})
            print(
                f"  {row['stages']}: "
                + ", ".join(f"{s} {row[s + ' p50_ms']:.1f}/{row[s + ' p95_ms']:.1f}" for s in stages)
            )
    if a.plot:
        _plot(rows, a.plot, a.depth)


def _plot(rows: list[dict[str, Any]], path: str, depth: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RankfunnelError("--plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        ax.scatter(row["total p50_ms"], row[f"recall@{depth}"], s=60)
        ax.annotate(row["stages"], (row["total p50_ms"], row[f"recall@{depth}"]), fontsize=8)
    ax.set_xlabel("query latency p50 (ms)")
    ax.set_ylabel(f"recall@{depth}")
    ax.set_title("rankfunnel: recall vs latency per stage configuration")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def _bench(a: argparse.Namespace) -> None:
    from . import bench

    bench.main(a.suites, a.args)


def _demo(a: argparse.Namespace) -> None:
    if a.vectors:
        demo_vectors(n=a.n, d=a.dim, k=a.k, threads=a.threads)
        return
    from . import demo

    demo.run(model=a.model, reranker=a.reranker)


def _export(a: argparse.Namespace) -> None:
    from .export import export

    result = export(a.src, a.out, a.kind, quantize=a.quantize, overwrite=a.overwrite)
    print(f"exported to {result['out']} (max |onnx - torch| = {result['max_abs_diff']:.2e})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rankfunnel`` command."""
    p = argparse.ArgumentParser(prog="rankfunnel", description="Rust-accelerated retrieval funnel.")
    p.add_argument("--version", action="version", version=f"rankfunnel {__version__}")
    p.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "index", help="index a corpus (JSONL, CSV/TSV, BEIR folder, SMART) into a pipeline folder"
    )
    s.add_argument("corpus")
    s.add_argument("--model", help="bi-encoder folder (first stage)")
    s.add_argument("--reranker", help="cross-encoder folder (last stage)")
    s.add_argument("--colbert", help="ColBERT folder (late interaction)")
    s.add_argument("--index", default="flat", choices=["flat", "hnsw", "ivf"])
    s.add_argument("--metric", default="cosine", choices=["cosine", "dot", "l2"])
    s.add_argument("--candidates", type=int, default=100)
    s.add_argument("--out", required=True, help="pipeline folder to create")
    s.add_argument("--batch-size", type=int, default=32, help="encoder batch size")
    s.add_argument(
        "--commit-every",
        type=int,
        default=2048,
        help="documents per crash-safe commit, at least: commits grow to 1/8 of the documents indexed "
        f"so far, and with --index ivf the first waits for {IVF_TRAIN_DOCS:,} (the training sample)",
    )
    s.add_argument(
        "--quantize",
        choices=["int8"],
        help="run the models int8 (row-wise int8 copy, cached; recorded in the pipeline)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(run=_index)

    s = sub.add_parser("search", help="search a pipeline folder")
    s.add_argument("pipeline")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="metadata filter")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_search)

    s = sub.add_parser("eval", help="nDCG, MRR, recall and latency per stage configuration")
    s.add_argument("pipeline")
    s.add_argument("--queries", required=True, help="queries (any corpus format, or a BEIR folder)")
    s.add_argument("--qrels", required=True, help="TREC or BEIR qrels, or Cranfield cranqrel")
    s.add_argument("--qrels-format", default="auto", choices=["auto", "trec", "beir", "cranfield"])
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--depth", type=int, default=100)
    s.add_argument("--json", action="store_true")
    s.add_argument("--plot", help="write a recall/latency plot (PNG, needs matplotlib)")
    s.set_defaults(run=_eval)

    s = sub.add_parser("bench", help="benchmarks against the anchors installed here")
    s.add_argument("suites", nargs="*", help="suites to run (default all)")
    s.add_argument("--args", nargs=argparse.REMAINDER, default=[], help="arguments passed to every suite")
    s.set_defaults(run=_bench)

    s = sub.add_parser(
        "demo", help="index a small corpus with the default model and search it through every stage"
    )
    s.add_argument("--model", help="bi-encoder folder (default: all-MiniLM-L6-v2, resolved offline)")
    s.add_argument("--reranker", help="cross-encoder folder for the last stage")
    s.add_argument("--vectors", action="store_true", help="exact search on generated vectors instead")
    s.add_argument("-n", type=int, default=100_000, help="--vectors: corpus size")
    s.add_argument("-d", "--dim", type=int, default=384, help="--vectors: dimension")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(run=_demo)

    s = sub.add_parser(
        "export", help="export a checkpoint to ONNX (needs rankfunnel[export]: torch, transformers)"
    )
    s.add_argument("src")
    s.add_argument("out")
    s.add_argument("--kind", required=True, choices=["bi", "cross", "colbert"])
    s.add_argument("--quantize", choices=["int8"])
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=_export)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
        return 0
    except (RankfunnelError, OSError, ImportError) as e:
        if args.verbose:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"rankfunnel: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rankfunnel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
