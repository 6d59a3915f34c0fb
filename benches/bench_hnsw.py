"""HNSW benchmark: rankfunnel HNSWIndex vs hnswlib, faiss IndexHNSWFlat and usearch, same data,
same run.

100k x 384 clustered unit float32 (inner product), 1000 queries, k=10, M=16,
ef_construction=200, 2 threads. Prints build time, bytes per vector, a recall@10 / QPS sweep over
ef for every engine, the QPS each reaches at recall@10 = 0.95 (interpolated), and filtered search
with a 10% allow-list against our unfiltered QPS. ``--n`` runs a smaller corpus.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import numpy as np

import rankfunnel as rf
from common import best_of, clustered, faiss_hnsw, hnswlib_index, recall, table

Search = Callable[[int], np.ndarray]


def at_recall(points: list[tuple[float, float]], target: float) -> Optional[float]:
    """QPS at ``target`` recall, interpolated between sweep points (None if never reached)."""
    pts = sorted(points)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return q0 if r1 == r0 else q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    if pts and pts[0][0] >= target:
        return max(q for r, q in pts if r >= target)
    return None


def file_bytes(save: Callable[[str], Any]) -> int:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "index")
        save(p)
        return os.path.getsize(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--ef", default="10,16,24,32,48,64,96,128,192")
    ap.add_argument("--filter-frac", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated engines to skip: hnswlib,faiss,usearch")
    a = ap.parse_args()
    efs = [int(e) for e in a.ef.split(",")]
    skip = set(filter(None, a.skip.split(",")))

    x = clustered(a.n, a.d, seed=1)
    q = clustered(a.nq, a.d, seed=2)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
    except ImportError:
        pass
    print(f"data {a.n} x {a.d} clustered unit float32 (inner product), {a.nq} queries, k={a.k}")
    print(f"M={a.m} ef_construction={a.efc}, {a.threads} threads; rankfunnel simd={rf.simd_level()}")
    _, truth = rf.topk(q, x, a.k, "dot", threads=a.threads)

    # name -> (build seconds, bytes per vector, set_ef+search)
    engines: dict[str, tuple[float, float, Callable[[int], np.ndarray]]] = {}

    t = time.perf_counter()
    ours = rf.HNSWIndex(a.d, "dot", m=a.m, ef_construction=a.efc)
    ours.add(x, threads=a.threads)
    build = time.perf_counter() - t
    engines["rankfunnel"] = (
        build,
        ours.memory_bytes() / a.n,
        lambda ef: ours.search(q, a.k, ef=ef, threads=a.threads)[1],
    )
    print(f"built rankfunnel in {build:.1f}s", file=sys.stderr)

    if "hnswlib" not in skip:
        try:
            t = time.perf_counter()
            hl = hnswlib_index(x, a.m, a.efc, a.threads)
            build = time.perf_counter() - t

            def hl_search(ef: int) -> np.ndarray:
                hl.set_ef(ef)
                return hl.knn_query(q, k=a.k, num_threads=a.threads)[0]

            engines["hnswlib"] = (build, file_bytes(hl.save_index) / a.n, hl_search)
            print(f"built hnswlib in {build:.1f}s", file=sys.stderr)
        except ImportError:
            print("hnswlib not installed: skipped", file=sys.stderr)

    fi: Any = None
    if "faiss" not in skip:
        try:
            import faiss

            t = time.perf_counter()
            fi = faiss_hnsw(x, a.m, a.efc, a.threads)
            build = time.perf_counter() - t

            def fi_search(ef: int) -> np.ndarray:
                fi.hnsw.efSearch = ef
                return fi.search(q, a.k)[1]

            engines["faiss HNSWFlat"] = (build, faiss.serialize_index(fi).nbytes / a.n, fi_search)
            print(f"built faiss in {build:.1f}s", file=sys.stderr)
        except ImportError:
            print("faiss-cpu not installed: skipped", file=sys.stderr)

    if "usearch" not in skip:
        try:
            from usearch.index import Index

            us = Index(ndim=a.d, metric="ip", dtype="f32", connectivity=a.m, expansion_add=a.efc)
            t = time.perf_counter()
            us.add(np.arange(a.n), x, threads=a.threads)
            build = time.perf_counter() - t

            def us_search(ef: int) -> np.ndarray:
                us.expansion_search = ef
                return np.asarray(us.search(q, a.k, threads=a.threads).keys)

            engines["usearch"] = (build, us.memory_usage / a.n, us_search)
            print(f"built usearch in {build:.1f}s", file=sys.stderr)
        except ImportError:
            print("usearch not installed: skipped", file=sys.stderr)

    sweep_rows = []
    curves: dict[str, list[tuple[float, float]]] = {}
    for name, (_, _, search) in engines.items():
        curves[name] = []
        for ef in efs:
            found = search(ef)
            secs = best_of(lambda ef=ef, search=search: search(ef), a.repeat)  # type: ignore[misc]
            r = recall(found, truth)
            curves[name].append((r, a.nq / secs))
            sweep_rows.append(
                {"engine": name, "ef": ef, "recall@10": f"{r:.4f}", "QPS": f"{a.nq / secs:,.0f}"}
            )
    print(table(sweep_rows))
    print()

    summary = []
    qps95 = {name: at_recall(c, 0.95) for name, c in curves.items()}
    for name, (build, bpv, _) in engines.items():
        v = qps95[name]
        summary.append(
            {
                "engine": name,
                "build s": f"{build:.1f}",
                "bytes/vector": f"{bpv:,.0f}",
                "QPS @ recall 0.95": "not reached" if v is None else f"{v:,.0f}",
                "max recall": f"{max(r for r, _ in curves[name]):.4f}",
            }
        )
    print(table(summary))
    ours_qps = qps95["rankfunnel"]
    ours_build = engines["rankfunnel"][0]
    others = {n: v for n, v in qps95.items() if n != "rankfunnel" and v}
    if ours_qps and others:
        best = max(others, key=lambda n: others[n] or 0)
        print(f"QPS @ 0.95: ours / best anchor ({best}) = x{ours_qps / others[best]:.2f}")
    builds = {n: e[0] for n, e in engines.items() if n != "rankfunnel"}
    if builds:
        fastest = min(builds, key=lambda n: builds[n])
        print(f"build time: ours / fastest anchor ({fastest}) = x{ours_build / builds[fastest]:.2f}")

    # Filtered search: one random allow-list of filter_frac of the ids for every query.
    rng = np.random.default_rng(3)
    allow = np.sort(rng.choice(a.n, int(a.n * a.filter_frac), replace=False)).astype(np.int64)
    flat = rf.FlatIndex(a.d, "dot", bf16_copy=False)
    flat.add(x)
    _, ftruth = flat.search(q, a.k, filter=allow, threads=a.threads)
    ef95 = next((ef for ef, (r, _) in zip(efs, curves["rankfunnel"]) if r >= 0.95), efs[-1])
    unf = dict(zip(efs, (qps for _, qps in curves["rankfunnel"])))[ef95]
    rows = []
    for mode, ef in [
        ("auto", ef95),
        ("graph", ef95),
        ("graph", 2 * ef95),
        ("acorn", ef95),
        ("acorn", 2 * ef95),
        ("exact", ef95),
    ]:

        def run(mode: str = mode, ef: int = ef) -> np.ndarray:
            return ours.search(q, a.k, ef=ef, filter=allow, threads=a.threads, filter_mode=mode)[1]

        found = run()
        secs = best_of(run, a.repeat)
        rows.append(
            {
                "engine": f"rankfunnel filter_mode={mode}",
                "ef": ef,
                "recall@10": f"{recall(found, ftruth):.4f}",
                "QPS": f"{a.nq / secs:,.0f}",
                "vs unfiltered QPS": f"{a.nq / secs / unf:.2f}",
            }
        )
    if fi is not None:
        import faiss

        sel = faiss.IDSelectorBatch(allow)
        for ef in (ef95, 4 * ef95):
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
            found = fi.search(q, a.k, params=params)[1]
            secs = best_of(lambda params=params: fi.search(q, a.k, params=params), a.repeat)  # type: ignore[misc]
            rows.append(
                {
                    "engine": "faiss HNSWFlat IDSelectorBatch",
                    "ef": ef,
                    "recall@10": f"{recall(found, ftruth):.4f}",
                    "QPS": f"{a.nq / secs:,.0f}",
                    "vs unfiltered QPS": f"{a.nq / secs / unf:.2f}",
                }
            )
    print()
    print(
        f"filtered: {len(allow)} allowed ids ({a.filter_frac:.0%}); unfiltered ours at ef={ef95}: {unf:,.0f} QPS"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
