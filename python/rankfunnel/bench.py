"""Benchmarks against the anchors installed in the environment (numpy, faiss-cpu, ...).

Each suite builds the same data for every library, runs them in the same process and prints
ratios. ``rankfunnel bench [suite ...]`` runs them; ``benches/*.py`` are thin wrappers.
Speed is shown here, never asserted in tests.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

import rankfunnel as rf
from rankfunnel import _core
from rankfunnel.cli import OneLineParser
from rankfunnel.ivf import GRAPH_MIN_NLIST
from rankfunnel.progress import progress_bar, track
from rankfunnel.synthetic import clustered

FLAT_DOC = """Exact search benchmark: rankfunnel vs numpy and faiss IndexFlatIP on the same data, same run.

100k x 384 clustered float32, 1000 queries, k=10, 2 threads. Prints batch QPS, single-query
latency (median and p95 over 200 queries), recall against numpy, and ratios.
Run with ``make bench-python`` (which unsets OPENBLAS_CORETYPE for a fair numpy)."""

IVF_DOC = """IVF benchmark: rankfunnel IVFIndex (f32, int8 + refine) vs faiss IndexIVFFlat and
IndexIVFScalarQuantizer (SQ8) on the same data, same run, sweeping nprobe.

100k x 384 clustered float32 (or --vectors: real embeddings, queries held out from the end),
1000 queries, k=10, nlist=1264, 2 threads, the same k-means iterations and training sample for
both. Prints train and add time, memory, and recall@10 / batch QPS / one-query QPS per nprobe,
then QPS and ratios at recall@10 = 0.90 and 0.95 (int8 without refine and with refine=2 and 4).
With nlist >= 1024 it adds ours with every search walking the centroid graph (coarse="hnsw")
against faiss IVFFlat over an IndexHNSWFlat quantizer."""


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


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Render rows of equal keys as an aligned text table."""
    keys = list(rows[0])
    cells = [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, "-" * len(line), *body])


def _ours_ivf(idx: Any, q: np.ndarray, k: int, nprobe: int, refine: int, threads: int) -> Any:
    if idx.coarse != "auto":
        idx.set_coarse("auto")
    return idx.search(q, k, nprobe=nprobe, refine=refine, threads=threads)[1]


def _ours_ivf_walk(idx: Any, q: np.ndarray, k: int, nprobe: int, refine: int, threads: int) -> Any:
    """Search with ``coarse="hnsw"``: the lists always picked by walking the centroid graph."""
    if idx.coarse != "hnsw":
        idx.set_coarse("hnsw")
    return idx.search(q, k, nprobe=nprobe, refine=refine, threads=threads)[1]


def _one_query(search: Callable[..., Any], q: np.ndarray, k: int, nprobe: int, refine: int, i: int) -> Any:
    """Query ``i`` of ``q`` alone, one thread."""
    return search(q[i : i + 1], k, nprobe, refine, 1)


def _faiss_ivf(
    index: Any, quantizer: Any, q: np.ndarray, k: int, nprobe: int, refine: int, threads: int
) -> Any:
    """faiss IVF search with ``nprobe`` (``quantizer`` is held so it outlives the index)."""
    index.nprobe = nprobe
    return index.search(q, k)[1]


NPROBES = [1, 2, 4, 8, 16, 32, 64]
IVF_NPROBES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
IVF_REFINES = (2, 4)


def qps_at(points: list[tuple[float, float]], target: float) -> float:
    """QPS at a recall target, interpolated on the (recall, qps) curve; 0 if never reached."""
    pts = sorted(points)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return q0 + (q1 - q0) * (target - r0) / max(r1 - r0, 1e-12)
    return max((q for r, q in pts if r >= target), default=0.0)


def flat(argv: Optional[Sequence[str]] = None, show_progress: Optional[bool] = None) -> None:
    """The exact-search suite (see ``FLAT_DOC``); ``show_progress`` as :func:`rankfunnel.progress.wanted`."""
    ap = OneLineParser(prog="rankfunnel bench flat", description=FLAT_DOC)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=200, help="queries timed one by one")
    a = ap.parse_args(argv)

    x = clustered(a.n, a.d, seed=1)
    q = clustered(a.nq, a.d, seed=2)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(a.threads)
        blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '')}" for i in threadpool_info())
    except ImportError:
        blas = "unknown (threadpoolctl missing)"
    print(f"data {a.n} x {a.d} float32, {a.nq} queries, k={a.k}, {a.threads} threads")
    print(f"rankfunnel {rf.__version__} simd={rf.simd_level()}; numpy {np.__version__} BLAS: {blas}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")

    def numpy_search(qs: np.ndarray) -> np.ndarray:
        s = qs @ x.T
        top = np.argpartition(-s, a.k, axis=1)[:, : a.k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
        return np.take_along_axis(top, order, 1)

    truth = np.concatenate([numpy_search(q[i : i + 100]) for i in range(0, a.nq, 100)])
    idx = rf.FlatIndex(a.d, "dot")
    idx.add(x)

    engines: dict[str, tuple[object, object]] = {
        "numpy": (
            lambda: [numpy_search(q[i : i + 100]) for i in range(0, a.nq, 100)],
            lambda i: numpy_search(q[i : i + 1]),
        ),
        "rankfunnel topk": (
            lambda: rf.topk(q, x, a.k, "dot", threads=a.threads),
            lambda i: rf.topk(q[i], x, a.k, "dot", threads=a.threads),
        ),
        "rankfunnel FlatIndex": (
            lambda: idx.search(q, a.k, threads=a.threads),
            lambda i: idx.search(q[i], a.k, threads=a.threads),
        ),
    }
    found = {"rankfunnel FlatIndex": idx.search(q, a.k)[1], "rankfunnel topk": rf.topk(q, x, a.k, "dot")[1]}
    try:
        import faiss

        faiss.omp_set_num_threads(a.threads)
        fi = faiss.IndexFlatIP(a.d)
        fi.add(x)
        engines["faiss IndexFlatIP"] = (lambda: fi.search(q, a.k), lambda i: fi.search(q[i : i + 1], a.k))
        found["faiss IndexFlatIP"] = fi.search(q, a.k)[1]
    except ImportError:
        print("faiss-cpu not installed: skipped", file=sys.stderr)
    found["numpy"] = truth

    rows = []
    stats = {}
    for name, (batch, single) in track(engines.items(), len(engines), "flat", "engine", show_progress):
        t = best_of(batch)  # type: ignore[arg-type]
        lat = latencies(single, a.single)  # type: ignore[arg-type]
        stats[name] = (a.nq / t, float(np.median(lat)))
        rows.append(
            {
                "engine": name,
                "batch QPS": f"{a.nq / t:,.0f}",
                "single p50 ms": f"{np.median(lat) * 1e3:.3f}",
                "single p95 ms": f"{np.percentile(lat, 95) * 1e3:.3f}",
                "recall@k": f"{recall(found[name], truth):.4f}",
            }
        )
    print(table(rows))
    ours_qps, ours_lat = stats["rankfunnel FlatIndex"]
    for name, (qps, lat_p50) in stats.items():
        if not name.startswith("rankfunnel"):
            print(
                f"ours/{name}: batch QPS x{ours_qps / qps:.2f}, single-query latency x{lat_p50 / ours_lat:.2f} faster"
            )
    gflop = 2 * a.n * a.d * a.nq / 1e9
    print(
        f"ours batch: {gflop * ours_qps / a.nq:.0f} GFLOP/s; single: {a.n * a.d * 4 / ours_lat / 1e9:.1f} GB/s"
    )


def _ivf_data(a: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """Corpus, queries and a label: ``--vectors`` rows (queries held out from the end) or clustered data."""
    if a.vectors:
        v = np.load(a.vectors, mmap_mode="r")
        if v.ndim != 2 or v.shape[0] <= a.nq:
            raise rf.RankfunnelError(f"{a.vectors} has shape {v.shape}: need (n > {a.nq}, d) vectors")
        n = min(a.n, v.shape[0] - a.nq)
        x = np.ascontiguousarray(v[:n], dtype=np.float32)
        q = np.ascontiguousarray(v[v.shape[0] - a.nq :], dtype=np.float32)
        return x, q, f"{a.vectors} (queries: its last {a.nq} rows)"
    return clustered(a.n, a.d, seed=1), clustered(a.nq, a.d, seed=2), "clustered"


def ivf(argv: Optional[Sequence[str]] = None, show_progress: Optional[bool] = None) -> None:
    """The IVF suite (see ``IVF_DOC``); ``show_progress`` as :func:`rankfunnel.progress.wanted`."""
    ap = OneLineParser(prog="rankfunnel bench ivf", description=IVF_DOC)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384, help="dimension of the clustered data (without --vectors)")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=1264)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10, help="k-means iterations (both libraries)")
    ap.add_argument(
        "--vectors",
        default=os.environ.get("RANKFUNNEL_PYPI_VECTORS") or None,
        help="float32 .npy of real embeddings (default $RANKFUNNEL_PYPI_VECTORS; clustered data without it)",
    )
    ap.add_argument("--no-int8", action="store_true", help="skip int8 storage and faiss SQ8")
    ap.add_argument(
        "--single", type=int, default=200, help="queries searched one at a time for single-query QPS (0: off)"
    )
    a = ap.parse_args(argv)
    x, q, source = _ivf_data(a)
    n, d = x.shape
    truth = rf.topk(q, x, a.k, "dot")[1]
    vnni = " (VNNI int8 scan)" if _core._vnni_in_use() else ""
    large = a.nlist >= GRAPH_MIN_NLIST
    print(
        f"data {n} x {d} from {source}, {len(q)} queries, k={a.k}, nlist={a.nlist}, {a.threads} threads, "
        f"simd={rf.simd_level()}{vnni}"
    )

    # name -> (train s, add s, memory bytes, search(q, nprobe) -> ids)
    builds: dict[str, tuple[float, float, int, Callable[..., Any]]] = {}
    storages = ("f32",) if a.no_int8 else ("f32", "int8")
    for storage in storages:
        idx = rf.IVFIndex(d, nlist=a.nlist, metric="dot", storage=storage)
        t = time.perf_counter()
        idx.train(x, iters=a.iters, threads=a.threads)
        t1 = time.perf_counter()
        idx.add(x, threads=a.threads)
        t2 = time.perf_counter()
        builds[f"ours {storage}"] = (t1 - t, t2 - t1, idx.memory_bytes(), functools.partial(_ours_ivf, idx))
        if large and storage == "f32":
            # The same index with every search walking the centroid graph (auto may scan a
            # batch's centroids exactly when that is cheaper).
            builds["ours f32 hnsw-q"] = (
                t1 - t,
                t2 - t1,
                idx.memory_bytes(),
                functools.partial(_ours_ivf_walk, idx),
            )
    try:
        import faiss

        faiss.omp_set_num_threads(a.threads)
        makers: list[tuple[str, Callable[[], Any], Callable[[Any], Any]]] = [
            (
                "faiss IVFFlat",
                lambda: faiss.IndexFlatIP(d),
                lambda qz: faiss.IndexIVFFlat(qz, d, a.nlist, faiss.METRIC_INNER_PRODUCT),
            )
        ]
        if not a.no_int8:
            makers.append(
                (
                    "faiss IVFSQ8",
                    lambda: faiss.IndexFlatIP(d),
                    lambda qz: faiss.IndexIVFScalarQuantizer(
                        qz, d, a.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                    ),
                )
            )
        if large:
            # faiss's own graph quantizer for many lists: the peer of ours f32 hnsw-q.
            makers.append(
                (
                    "faiss IVFFlat hnsw-q",
                    lambda: faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT),
                    lambda qz: faiss.IndexIVFFlat(qz, d, a.nlist, faiss.METRIC_INNER_PRODUCT),
                )
            )
        for name, make_q, make in makers:
            qz = make_q()
            fi = make(qz)
            fi.cp.niter = a.iters
            t = time.perf_counter()
            fi.train(x)
            t1 = time.perf_counter()
            fi.add(x)
            t2 = time.perf_counter()
            inv: Any = fi.invlists
            mem = sum(inv.list_size(i) * (inv.code_size + 8) for i in range(a.nlist)) + a.nlist * d * 4
            builds[name] = (t1 - t, t2 - t1, mem, functools.partial(_faiss_ivf, fi, qz))
    except ImportError:
        print("faiss-cpu not installed: skipped")

    rows = []
    curves: dict[str, list[tuple[float, float]]] = {}
    single: dict[str, list[tuple[float, float]]] = {}
    nsingle = min(a.single, len(q))
    runs = sum(1 + len(IVF_REFINES) * n.endswith("int8") for n in builds) * len(IVF_NPROBES)
    bar = progress_bar(total=runs, desc="ivf search", unit="run", show=show_progress)
    for name, (_, _, _, search) in builds.items():
        variants = [(name, 0)]
        if name.endswith("int8"):
            variants += [(f"{name} refine={r}", r) for r in IVF_REFINES]
        for label, refine in variants:
            curves[label] = []
            single[label] = []
            for nprobe in IVF_NPROBES:
                run = functools.partial(search, q, a.k, nprobe, refine, a.threads)
                found = run()
                t = best_of(run, 2)
                rec = recall(found, truth)
                curves[label].append((rec, len(q) / t))
                row = {
                    "engine": label,
                    "nprobe": nprobe,
                    "recall@10": f"{rec:.4f}",
                    "QPS": f"{len(q) / t:,.0f}",
                }
                if nsingle:
                    one = functools.partial(_one_query, search, q, a.k, nprobe, refine)
                    lat = latencies(one, nsingle)
                    single[label].append((recall(found[:nsingle], truth[:nsingle]), 1 / float(np.mean(lat))))
                    row["1-query QPS"] = f"{1 / float(np.mean(lat)):,.0f}"
                bar.update(1)
                rows.append(row)
    bar.close()
    print(table(rows))
    print()
    print(
        table(
            [
                {
                    "engine": n,
                    "train s": f"{b[0]:.2f}",
                    "add s": f"{b[1]:.2f}",
                    "train+add s": f"{b[0] + b[1]:.2f}",
                    "memory MiB": f"{b[2] / 2**20:.1f}",
                }
                for n, b in builds.items()
            ]
        )
    )
    pairs = [("ours f32", "faiss IVFFlat"), ("ours f32 hnsw-q", "faiss IVFFlat hnsw-q")]
    pairs += [(label, "faiss IVFSQ8") for label in curves if label.startswith("ours int8")]
    for target in (0.90, 0.95):
        for kind, table_of in (("batch", curves), ("1-query", single if nsingle else {})):
            at = {name: qps_at(c, target) for name, c in table_of.items()}
            if not at:
                continue
            print(
                f"\n{kind} QPS at recall@10 = {target}: " + ", ".join(f"{n} {v:,.0f}" for n, v in at.items())
            )
            for ours, theirs in pairs:
                if at.get(ours, 0) > 0 and at.get(theirs, 0) > 0:
                    print(f"{ours} / {theirs}: x{at[ours] / at[theirs]:.2f}")
    if "faiss IVFFlat" in builds:
        mine, peer = builds["ours f32"], builds["faiss IVFFlat"]
        print(
            f"\nspeed ours f32 / faiss IVFFlat (higher is faster): train x{peer[0] / mine[0]:.2f}, "
            f"add x{peer[1] / mine[1]:.2f}, train+add x{(peer[0] + peer[1]) / (mine[0] + mine[1]):.2f}"
        )
    if "ours int8" in builds:
        print(f"int8 index memory / f32: {builds['ours int8'][2] / builds['ours f32'][2]:.2f}")


SUITES: dict[str, Callable[[Optional[Sequence[str]], Optional[bool]], None]] = {"flat": flat, "ivf": ivf}


def main(
    suites: Sequence[str] = (), argv: Optional[Sequence[str]] = None, show_progress: Optional[bool] = None
) -> None:
    """Run the named suites (default: all) with the same extra arguments.

    Parameters
    ----------
    suites : sequence of str
        Names from :data:`SUITES` (default: all).
    argv : sequence of str, optional
        Arguments every suite parses.
    show_progress : bool, optional
        Progress bars on stderr; None: when stderr is a terminal.
    """
    unknown = [name for name in suites if name not in SUITES]
    if unknown:
        raise rf.RankfunnelError(f"unknown benchmark suite {unknown[0]!r}: choose from {sorted(SUITES)}")
    for name in suites or list(SUITES):
        print(f"\n=== {name} ===")
        SUITES[name](argv or [], show_progress)
