"""The ``rankfunnel`` command line (also ``python -m rankfunnel``).

    rankfunnel index CORPUS [--model DIR] [--lexical] [--reranker DIR] [--index hnsw] --out PIPELINE_DIR
    rankfunnel index CORPUS --model DIR --out SHARDED_DIR --ray [ADDRESS] --shards N
    rankfunnel search PIPELINE_DIR "query" [-k 10] [--mode dense|lexical|hybrid] [--json] [--where key=value]
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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import __version__, default_threads, simd_level
from .errors import RankfunnelError
from .flat import FlatIndex, topk
from .progress import progress_bar, track
from .registry import index_factory, kinds
from .synthetic import clustered, rng


def _index_spec(spec: str) -> str:
    try:
        # An empty index of any width checks the option values too ("ivf,coarse=graph"), so a bad
        # one fails here, before a corpus is read or a model loaded.
        index_factory(spec, 8)
    except RankfunnelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


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
    x = clustered(n, d, clusters=max(1, n // 100), spread=0.3, seed=1, unit_centres=False)
    q = x[rng(2).integers(0, n, nq)] + 0.05 * clustered(
        nq, d, clusters=max(1, nq // 100), spread=0.3, seed=3, unit_centres=False
    )
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


def _ray_init(address: Optional[str]) -> None:
    """Connect to Ray: ``address`` (``""``: ``$RAY_ADDRESS`` or a new local cluster)."""
    import logging

    from .distributed._ray import init

    r = init(address or None)
    # Ray Data's progress bars and INFO lines would bury the command's own output.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    r.data.DataContext.get_current().enable_progress_bars = False


def _index_sharded(a: argparse.Namespace) -> None:
    """``index --ray [ADDRESS] --shards N``: encode with Ray Data, build N shards with Ray tasks."""
    from .distributed import build_shards, read_corpus_dataset

    if a.shards is None:
        raise RankfunnelError("--ray needs --shards N (the number of shards to write)")
    if a.lexical:
        raise RankfunnelError(
            "--lexical is not available with --shards: BM25 statistics are corpus-wide, so a "
            "lexical or hybrid pipeline is built as one pipeline (without --ray/--shards)"
        )
    if (Path(a.out) / "pipeline.json").exists() or (Path(a.out) / "sharded.json").exists():
        raise RankfunnelError(f"{a.out} already holds a pipeline; a sharded build needs a new --out")
    _ray_init(a.ray)
    started = time.perf_counter()
    ds = read_corpus_dataset(a.corpus)
    manifest = build_shards(
        ds,
        a.out,
        shards=a.shards,
        encoder=a.model,
        index=a.index,
        reranker=a.reranker,
        late_interaction=a.colbert,
        metric=a.metric,
        candidates=a.candidates,
        quantize=a.quantize,
        batch_size=a.batch_size,
        encode_options={"model_batch_size": a.batch_size},
    )
    took = time.perf_counter() - started
    sizes = ", ".join(f"{s['docs']:,}" for s in manifest["shards"])
    print(
        f"{manifest['docs']:,} documents indexed into {a.out} in {took:.1f} s "
        f"({manifest['docs'] / max(took, 1e-9):,.1f} docs/s), {a.shards} shards: {sizes}"
    )


def _open_pipeline(path: str, address: Optional[str]) -> Any:
    """A pipeline folder for searching: a sharded one (told by its manifest) on Ray, or a single one."""
    from .distributed.layout import is_sharded

    if is_sharded(path):
        from .distributed import ShardedPipeline

        _ray_init(address)
        return ShardedPipeline(path)
    from . import Pipeline

    return Pipeline.load(path)


def _index(a: argparse.Namespace) -> None:
    from . import BiEncoder, ColBERTEncoder, CrossEncoder, Pipeline
    from .corpus import read_corpus

    if a.ray is not None or a.shards is not None:
        _index_sharded(a)
        return
    out = Path(a.out)
    show = _progress(a)
    # Read the whole corpus once before loading models or creating `out`: a bad record anywhere
    # (encoding, JSON, duplicate id) fails now, not hours into encoding; and the bar gets a total.
    checked = track(read_corpus(a.corpus), desc="check corpus", unit="doc", show=show, leave=False)
    count = sum(1 for _ in checked)
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
        if (p.lexical is not None) != a.lexical:
            differ.append("lexical")
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
            lexical=a.lexical,
            fusion=a.fusion,
            fusion_k=a.rrf_k,
            dense_weight=a.dense_weight,
        )
    started = time.perf_counter()
    total = skipped = 0
    batch: list[Any] = []

    def flush() -> None:
        nonlocal total, skipped
        seen = len(batch)
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
        bar.update(seen)

    bar = progress_bar(total=count, desc="index", unit="doc", show=show)
    try:
        with bar:
            for doc in docs:
                batch.append(doc)
                if len(batch) >= a.commit_every:
                    flush()
            flush()
    finally:
        p.close()
    took = time.perf_counter() - started
    extra = f" ({skipped:,} already there)" if skipped else ""
    print(
        f"{total:,} documents indexed into {out} in {took:.1f} s ({total / max(took, 1e-9):,.1f} docs/s){extra}"
    )


def _progress(a: argparse.Namespace) -> Optional[bool]:
    """--progress: always; --quiet: never; otherwise when stderr is a terminal."""
    if getattr(a, "quiet", False):
        return False
    return True if getattr(a, "progress", False) else None


def _where(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RankfunnelError(f"--where expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _search(a: argparse.Namespace) -> None:
    where = _where(a.where) or None
    p = _open_pipeline(a.pipeline, a.ray)
    hits = p.search(a.query, k=a.k, where=where, mode=a.mode)
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
    # The first stage's parts (dense, lexical, fused) when the pipeline has a lexical index.
    parts = [s for s in ("dense", "lexical", "fused") if any(s in h.scores for h in hits)]
    stages = (parts or ["retrieve"]) + p.stages()[1:]
    head = f"{'rank':>4}  {'doc_id':<12}" + "".join(f"{s:>10}" for s in stages) + "  text"
    print(head)
    print("-" * min(len(head) + 60, 120))
    for r, h in enumerate(hits, 1):
        cols = "".join(f"{h.scores.get(s, float('nan')):>10.4f}" for s in stages)
        text = " ".join(h.text.split())
        print(f"{r:>4}  {h.doc_id:<12}{cols}  {text[:70]}{'...' if len(text) > 70 else ''}")
    times = ", ".join(f"{s} {v * 1e3:.1f} ms" for s, v in p.last_timings.items())
    print(f"({len(hits)} results; {times})")


def _sweep(items: Sequence[str]) -> dict[str, list[int]]:
    from .eval import SETTINGS

    grid: dict[str, list[int]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or name not in SETTINGS:
            raise RankfunnelError(
                f"--sweep expects NAME=V1,V2,... with NAME one of {', '.join(SETTINGS)}, got {item!r}"
            )
        try:
            grid[name] = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise RankfunnelError(f"--sweep {name}: values must be integers, got {values!r}") from None
        if not grid[name] or min(grid[name]) < 1:
            raise RankfunnelError(f"--sweep {name}: give one or more positive integers, got {values!r}")
    return grid


def _print_rows(rows: list[dict[str, Any]], k: int, depth: int) -> None:
    from .eval import SETTINGS

    settings = [s for s in SETTINGS if any(s in r for r in rows)]
    metrics = [f"ndcg@{k}", f"mrr@{k}", f"recall@{depth}", "total p50_ms", "total p95_ms"]
    print("  ".join([f"{'stages':<26}"] + [f"{s:>10}" for s in settings] + [f"{m:>14}" for m in metrics]))
    for row in rows:
        cells = [f"{row['stages']:<26}"] + [f"{row.get(s, '-')!s:>10}" for s in settings]
        for m in metrics:
            v = float(row.get(m, float("nan")))
            cells.append(f"{v:>14.1f}" if m.endswith("ms") else f"{v:>14.4f}")
        print("  ".join(cells))
    print("per-stage latency (ms, p50/p95):")
    for row in rows:
        stages = sorted({key.rsplit(" ", 1)[0] for key in row if key.endswith(" p50_ms")} - {"total"})
        label = " ".join([row["stages"]] + [f"{s}={row[s]}" for s in settings if s in row])
        print(
            f"  {label}: "
            + ", ".join(f"{s} {row[s + ' p50_ms']:.1f}/{row[s + ' p95_ms']:.1f}" for s in stages)
        )


def _eval(a: argparse.Namespace) -> None:
    from .corpus import read_queries
    from .eval import evaluate, judged_queries, load_qrels, match_query_ids, sweep

    grid = _sweep(a.sweep)
    if a.plot:
        from .plot import _matplotlib

        _matplotlib()  # fail before the (long) evaluation when matplotlib is missing
    read = load_qrels(a.qrels, a.qrels_format)
    if read.note:
        print(f"rankfunnel: note: {read.path}: {read.note}", file=sys.stderr)
    queries = judged_queries(match_query_ids(read_queries(a.queries), read.qrels), read.qrels)
    p = _open_pipeline(a.pipeline, a.ray)
    show = _progress(a)
    if grid:
        rows = sweep(p, queries, read.qrels, grid, k=a.k, depth=a.depth, show_progress=show)
    else:
        rows = evaluate(p, queries, read.qrels, k=a.k, depth=a.depth, show_progress=show)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_rows(rows, a.k, a.depth)
    if a.plot:
        from .plot import plot_tradeoff

        plot_tradeoff(rows, a.plot, metrics=[f"recall@{a.depth}", f"ndcg@{a.k}"])
        print(f"plot written to {a.plot}", file=sys.stderr if a.json else sys.stdout)


def _bench(a: argparse.Namespace) -> None:
    from . import bench

    bench.main(a.suites, a.args, show_progress=_progress(a))


def _demo(a: argparse.Namespace) -> None:
    if a.vectors:
        demo_vectors(n=a.n, d=a.dim, k=a.k, threads=a.threads)
        return
    from . import demo

    demo.run(model=a.model, reranker=a.reranker)


def _export(a: argparse.Namespace) -> None:
    from .export import export

    result = export(
        a.src, a.out, a.kind, quantize=a.quantize, overwrite=a.overwrite, show_progress=_progress(a)
    )
    print(f"exported to {result['out']} (max |onnx - torch| = {result['max_abs_diff']:.2e})")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> Any:  # the base class declares NoReturn
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _common(progress: bool) -> OneLineParser:
    """Options every command takes (after the command name too)."""
    p = OneLineParser(add_help=False)
    p.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    if progress:
        p.add_argument(
            "--progress",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show progress bars even when stderr is not a terminal",
        )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rankfunnel`` command."""
    p = OneLineParser(prog="rankfunnel", description="Rust-accelerated retrieval funnel.")
    p.add_argument("--version", action="version", version=f"rankfunnel {__version__}")
    p.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    p.add_argument(
        "--progress", action="store_true", help="show progress bars even when stderr is not a terminal"
    )
    sub = p.add_subparsers(dest="command", required=True)
    quiet, busy = [_common(False)], [_common(True)]

    s = sub.add_parser(
        "index",
        parents=busy,
        help="index a corpus (JSONL, CSV/TSV, Parquet, BEIR folder, SMART; gzip too) into a pipeline folder",
    )
    s.add_argument("corpus")
    s.add_argument("--model", help="bi-encoder folder (first stage)")
    s.add_argument("--reranker", help="cross-encoder folder (last stage)")
    s.add_argument("--colbert", help="ColBERT folder (late interaction)")
    s.add_argument(
        "--index",
        default="flat",
        type=_index_spec,
        help=f"index spec: {', '.join(kinds())}, optionally sized and with options (hnsw32, ivf1024,int8)",
    )
    s.add_argument("--metric", default="cosine", choices=["cosine", "dot", "l2"])
    s.add_argument(
        "--lexical",
        action="store_true",
        help="also keep a BM25 index (k1 1.5, b 0.75, English stemmer and stopwords); with --model "
        "searches are hybrid by default, without it lexical (no model needed)",
    )
    s.add_argument(
        "--fusion",
        default="rrf",
        choices=["rrf", "convex"],
        help="hybrid fusion: reciprocal rank fusion, or convex combination of min-max normalised scores",
    )
    s.add_argument("--rrf-k", type=float, default=60.0, help="RRF rank offset (default 60)")
    s.add_argument(
        "--dense-weight", type=float, default=0.5, help="dense weight of --fusion convex (default 0.5)"
    )
    s.add_argument("--candidates", type=_positive, default=100)
    s.add_argument("--out", required=True, help="pipeline folder to create")
    s.add_argument("--batch-size", type=_positive, default=32, help="encoder batch size")
    s.add_argument(
        "--commit-every",
        type=_positive,
        default=2048,
        help="documents per crash-safe commit (each writes one small segment; with --index ivf the "
        f"lists are trained once the pipeline holds {IVF_TRAIN_DOCS:,} documents, exact until then)",
    )
    s.add_argument(
        "--quantize",
        choices=["int8"],
        help="run the models int8 (row-wise int8 copy, cached; recorded in the pipeline)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="build a sharded pipeline on a Ray cluster (ADDRESS, e.g. auto or host:6379; default "
        "$RAY_ADDRESS or a local cluster); needs rankfunnel[ray]",
    )
    s.add_argument("--shards", type=_positive, help="with --ray: the number of shards")
    s.set_defaults(run=_index)

    s = sub.add_parser("search", parents=quiet, help="search a pipeline folder")
    s.add_argument("pipeline")
    s.add_argument("query")
    s.add_argument("-k", type=_positive, default=10)
    s.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="metadata filter")
    s.add_argument(
        "--mode",
        choices=["dense", "lexical", "hybrid"],
        help="first stage: bi-encoder, BM25, or both fused (default: hybrid when the pipeline has both)",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--ray", metavar="ADDRESS", help="Ray cluster for a sharded pipeline (default $RAY_ADDRESS or local)"
    )
    s.set_defaults(run=_search)

    s = sub.add_parser("eval", parents=busy, help="nDCG, MRR, recall and latency per stage configuration")
    s.add_argument("pipeline")
    s.add_argument(
        "--queries", required=True, help="queries: JSONL, TSV/CSV, SMART .QRY, Parquet, or a BEIR folder"
    )
    s.add_argument(
        "--qrels", required=True, help="judgements: TREC, BEIR TSV, SMART .REL or Cranfield cranqrel"
    )
    s.add_argument(
        "--qrels-format",
        default="auto",
        choices=["auto", "trec", "beir", "smart", "cranfield"],
        help="the qrels format (default: told from the content)",
    )
    s.add_argument("-k", type=_positive, default=10, help="cut-off of nDCG and MRR")
    s.add_argument("--depth", type=_positive, default=100, help="cut-off of recall")
    s.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="evaluate at each value of a search setting: ef (HNSW), nprobe (IVF), candidates, "
        "candidates.retrieve, candidates.late; repeat for a grid",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--plot", help="write recall and nDCG against latency, one curve per configuration (needs matplotlib)"
    )
    s.add_argument(
        "--ray", metavar="ADDRESS", help="Ray cluster for a sharded pipeline (default $RAY_ADDRESS or local)"
    )
    s.set_defaults(run=_eval)

    s = sub.add_parser("bench", parents=busy, help="benchmarks against the anchors installed here")
    s.add_argument("suites", nargs="*", help="suites to run (default all)")
    s.add_argument("--args", nargs=argparse.REMAINDER, default=[], help="arguments passed to every suite")
    s.set_defaults(run=_bench)

    s = sub.add_parser(
        "demo",
        parents=quiet,
        help="index a small corpus with the default model and search it through every stage",
    )
    s.add_argument("--model", help="bi-encoder folder (default: all-MiniLM-L6-v2, resolved offline)")
    s.add_argument("--reranker", help="cross-encoder folder for the last stage")
    s.add_argument("--vectors", action="store_true", help="exact search on generated vectors instead")
    s.add_argument("-n", type=_positive, default=100_000, help="--vectors: corpus size")
    s.add_argument("-d", "--dim", type=int, default=384, help="--vectors: dimension")
    s.add_argument("-k", type=_positive, default=10)
    s.add_argument("--threads", type=_positive, default=None)
    s.set_defaults(run=_demo)

    s = sub.add_parser(
        "export",
        parents=busy,
        help="export a checkpoint to ONNX (needs rankfunnel[export]: torch, transformers)",
    )
    s.add_argument("src")
    s.add_argument("out")
    s.add_argument("--kind", required=True, choices=["bi", "cross", "colbert"])
    s.add_argument("--quantize", choices=["int8"])
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=_export)
    return p


def _describe(e: BaseException) -> str:
    """One line naming the problem."""
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, RankfunnelError):
        what = e.strerror or type(e).__name__
        return f"{what}: {e.filename}"
    msg = " ".join(str(e).split())
    if isinstance(e, (RankfunnelError, OSError, ImportError)):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg} (--verbose shows the traceback)" if msg else type(e).__name__


def _warn(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    print(f"rankfunnel: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status.

    Every error prints one line on stderr (``rankfunnel: error: ...``) and exits with status 1
    (2 for a usage error); ``--verbose`` shows the traceback instead. Warnings print one line each.
    """
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.showwarning = _warn
            args.run(args)
        return 0
    except KeyboardInterrupt:
        print("rankfunnel: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every error: one line, or the traceback with --verbose
        if verbose:
            raise
        print(f"rankfunnel: error: {_describe(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
