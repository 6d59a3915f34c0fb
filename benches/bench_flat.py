"""Exact search benchmark: rankfunnel vs numpy and faiss IndexFlatIP on the same data, same run.

100k x 384 clustered float32, 1000 queries, k=10, 2 threads. Prints batch QPS, single-query
latency (median and p95 over 200 queries), recall against numpy, and ratios.
Run with ``make bench-python`` (which unsets OPENBLAS_CORETYPE for a fair numpy).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import rankfunnel as rf
from common import best_of, clustered, latencies, recall, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=200, help="queries timed one by one")
    a = ap.parse_args()

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
    for name, (batch, single) in engines.items():
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
    for name, (qps, lat) in stats.items():
        if not name.startswith("rankfunnel"):
            print(
                f"ours/{name}: batch QPS x{ours_qps / qps:.2f}, single-query latency x{lat / ours_lat:.2f} faster"
            )
    gflop = 2 * a.n * a.d * a.nq / 1e9
    print(
        f"ours batch: {gflop * ours_qps / a.nq:.0f} GFLOP/s; single: {a.n * a.d * 4 / ours_lat / 1e9:.1f} GB/s"
    )


if __name__ == "__main__":
    main()
