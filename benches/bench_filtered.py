"""Filtered HNSW benchmark: rankfunnel HNSWIndex vs faiss IndexHNSWFlat with an IDSelector and
hnswlib with its filter callable, same data, one build per engine, same run.

Allow-lists of 50%, 10%, 1% and 0.1% of the vectors, each of two kinds:

- random: a uniform sample of the ids; the queries are the run's queries;
- correlated: the ``f * n`` vectors nearest to a random anchor vector (one region of the space);
  the queries lie in that region (each the normalised midpoint of two random allowed vectors).

For every case and engine, ``ef`` is swept upward (stopping once recall@10 passes 0.97 or a run
takes longer than ``--max-seconds``); recall@10 is measured against the exact filtered top-10
(FlatIndex), and the QPS at recall@10 = 0.95 is interpolated between sweep points. The summary
prints ours / faiss and ours / hnswlib. hnswlib calls a Python callable per candidate, as its
users do, which is slow: it gets the first ``--hnswlib-nq`` queries only (its QPS is per query,
so comparable). Data: ``--vectors`` (a float32 (rows, 384) .npy such as the cached MiniLM vectors
of the PyPI corpus; rows ``[0, n)`` are the corpus and the next ``nq`` rows the queries) or,
without it, clustered unit vectors.

    python benches/bench_filtered.py --vectors /work/cache/pypi-minilm.npy --n 290000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from bench_hnsw import at_recall

import rankfunnel as rf
from common import best_of, clustered, faiss_hnsw, hnswlib_index, load_vectors, recall, table

FRACTIONS = (0.5, 0.1, 0.01, 0.001)
KINDS = ("random", "correlated")
TARGET = 0.95


def allow_list(x: np.ndarray, frac: float, kind: str, seed: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Sorted allowed ids (``frac`` of the rows, at least 1), and for ``"correlated"`` the anchor
    the allowed rows are nearest to (``None`` for ``"random"``)."""
    n = len(x)
    m = max(1, int(round(n * frac)))
    rng = np.random.default_rng(seed)
    if kind == "random":
        return np.sort(rng.choice(n, m, replace=False)).astype(np.int64), None
    if kind != "correlated":
        raise ValueError(f"unknown allow-list kind {kind!r}")
    anchor = x[int(rng.integers(n))]
    near = np.argpartition(-(x @ anchor), m - 1)[:m] if m < n else np.arange(n)
    return np.sort(near).astype(np.int64), anchor


def region_queries(x: np.ndarray, allow: np.ndarray, nq: int, seed: int) -> np.ndarray:
    """``nq`` queries inside the region of ``allow``: normalised midpoints of two allowed rows."""
    rng = np.random.default_rng(seed)
    a = x[allow[rng.integers(len(allow), size=nq)]]
    b = x[allow[rng.integers(len(allow), size=nq)]]
    q = (a + b).astype(np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return q


def faiss_selector(faiss: Any, n: int, allow: np.ndarray) -> tuple[Any, np.ndarray]:
    """A faiss IDSelectorBitmap over ``allow`` and the bitmap it reads (keep it alive)."""
    mask = np.zeros(n, dtype=bool)
    mask[allow] = True
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)), bits


def sweep(
    search: Callable[[int], np.ndarray],
    truth: np.ndarray,
    efs: list[int],
    repeat: int,
    max_seconds: float,
) -> list[tuple[int, float, float]]:
    """(ef, recall@k, QPS) for increasing ``ef`` until recall passes 0.97 or a run gets slow.

    A point where the engine fails (hnswlib raises when it finds fewer than k allowed results)
    is skipped."""
    nq = len(truth)
    out = []
    for ef in efs:
        t = time.perf_counter()
        try:
            found = search(ef)
        except RuntimeError as e:
            print(f"  ef={ef}: {e}", file=sys.stderr)
            continue
        first = time.perf_counter() - t
        slow = repeat <= 1 or first * repeat > max_seconds
        secs = first if slow else min(first, best_of(lambda ef=ef: search(ef), repeat - 1))
        r = recall(found, truth)
        out.append((ef, r, nq / secs))
        if r >= TARGET + 0.02 or first > max_seconds:
            break
    return out


def fmt(v: Optional[float]) -> str:
    """A QPS figure, or "not reached"."""
    return "not reached" if v is None else f"{v:,.0f}"


def ratio(qps95: dict[str, Optional[float]], ours: Optional[float], other: str) -> str:
    """``ours / qps95[other]`` as ``x1.23``; "skipped" when the engine did not run, "n/a" when
    either side never reached the target recall."""
    if other not in qps95:
        return "skipped"
    v = qps95[other]
    return "n/a" if ours is None or v is None else f"x{ours / v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--hnswlib-nq", type=int, default=200, help="queries given to hnswlib (slow callable)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--ef", default="10,16,24,32,48,64,96,128,192,256,384,512,768,1024")
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--modes", default="auto", help="our filter_mode values to sweep, e.g. auto,acorn,graph")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--max-seconds", type=float, default=20.0, help="stop an engine's sweep after a run this slow"
    )
    ap.add_argument(
        "--vectors",
        default=os.environ.get("RANKFUNNEL_PYPI_VECTORS", ""),
        help="float32 (rows, d) .npy of real vectors (default $RANKFUNNEL_PYPI_VECTORS; none: clustered)",
    )
    ap.add_argument("--skip", default="", help="comma-separated engines to skip: hnswlib,faiss")
    a = ap.parse_args()
    efs = [int(e) for e in a.ef.split(",")]
    fractions = [float(f) for f in a.fractions.split(",")]
    kinds = a.kinds.split(",")
    modes = a.modes.split(",")
    skip = set(filter(None, a.skip.split(",")))

    if a.vectors:
        rows = load_vectors(Path(a.vectors), a.n + a.nq, a.d)
        x, q = rows[: a.n], rows[a.n :]
        what = f"{a.vectors} (rows [0, {a.n}) corpus, the next {a.nq} queries)"
    else:
        x, q = clustered(a.n, a.d, seed=1), clustered(a.nq, a.d, seed=2)
        what = "clustered unit float32"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
    except ImportError:
        pass
    print(f"data {a.n} x {a.d} {what}, inner product, {a.nq} queries, k={a.k}")
    print(f"M={a.m} ef_construction={a.efc}, {a.threads} threads; rankfunnel simd={rf.simd_level()}")

    t = time.perf_counter()
    ours = rf.HNSWIndex(a.d, "dot", m=a.m, ef_construction=a.efc)
    ours.add(x, threads=a.threads)
    print(f"built rankfunnel in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    flat = rf.FlatIndex(a.d, "dot", bf16_copy=False)
    flat.add(x)

    fi: Any = None
    faiss: Any = None
    if "faiss" not in skip:
        try:
            import faiss

            t = time.perf_counter()
            fi = faiss_hnsw(x, a.m, a.efc, a.threads)
            print(f"built faiss in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        except ImportError:
            print("faiss-cpu not installed: skipped", file=sys.stderr)
    hl: Any = None
    if "hnswlib" not in skip:
        try:
            t = time.perf_counter()
            hl = hnswlib_index(x, a.m, a.efc, a.threads)
            print(f"built hnswlib in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        except ImportError:
            print("hnswlib not installed: skipped", file=sys.stderr)

    # Unfiltered reference: our QPS at recall 0.95 without a filter.
    _, truth = flat.search(q, a.k, threads=a.threads)
    base = sweep(
        lambda ef: ours.search(q, a.k, ef=ef, threads=a.threads)[1], truth, efs, a.repeat, a.max_seconds
    )
    unfiltered = at_recall([(r, s) for _, r, s in base], TARGET)
    print(f"unfiltered rankfunnel: QPS @ recall {TARGET} = {unfiltered or float('nan'):,.0f}")

    sweep_rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for ci, (kind, frac) in enumerate((k, f) for k in kinds for f in fractions):
        allow, anchor = allow_list(x, frac, kind, seed=100 + ci)
        qs = q if anchor is None else region_queries(x, allow, a.nq, seed=200 + ci)
        _, ftruth = flat.search(qs, a.k, filter=allow, threads=a.threads)
        case = f"{kind} {frac:g}"
        print(f"{case}: {len(allow)} allowed", file=sys.stderr)
        curves: dict[str, list[tuple[int, float, float]]] = {}
        for mode in modes:

            def ours_search(
                ef: int, mode: str = mode, qs: np.ndarray = qs, allow: np.ndarray = allow
            ) -> np.ndarray:
                return ours.search(qs, a.k, ef=ef, filter=allow, threads=a.threads, filter_mode=mode)[1]

            curves[f"rankfunnel {mode}"] = sweep(ours_search, ftruth, efs, a.repeat, a.max_seconds)
        if fi is not None:
            sel, _bits = faiss_selector(faiss, a.n, allow)

            def fi_search(ef: int, qs: np.ndarray = qs, sel: Any = sel) -> np.ndarray:
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
                return fi.search(qs, a.k, params=params)[1]  # type: ignore[no-any-return]

            curves["faiss IDSelectorBitmap"] = sweep(fi_search, ftruth, efs, a.repeat, a.max_seconds)
        if hl is not None:

            def hl_search(
                ef: int,
                hq: np.ndarray = qs[: a.hnswlib_nq],
                ok: Callable[[int], bool] = set(allow.tolist()).__contains__,
            ) -> np.ndarray:
                hl.set_ef(ef)
                return hl.knn_query(hq, k=a.k, num_threads=a.threads, filter=ok)[0]  # type: ignore[no-any-return]

            curves["hnswlib filter"] = sweep(hl_search, ftruth[: a.hnswlib_nq], efs, a.repeat, a.max_seconds)
        qps95: dict[str, Optional[float]] = {}
        for name, pts in curves.items():
            for ef, r, s in pts:
                sweep_rows.append(
                    {"case": case, "engine": name, "ef": ef, "recall@10": f"{r:.4f}", "QPS": f"{s:,.0f}"}
                )
            qps95[name] = at_recall([(r, s) for _, r, s in pts], TARGET)
        ours95 = qps95[f"rankfunnel {modes[0]}"]

        summary.append(
            {
                "case": case,
                "allowed": len(allow),
                **{f"{name} QPS@{TARGET}": fmt(v) for name, v in qps95.items()},
                "vs unfiltered": "n/a" if not (ours95 and unfiltered) else f"{ours95 / unfiltered:.2f}",
                "ours/faiss": ratio(qps95, ours95, "faiss IDSelectorBitmap"),
                "ours/hnswlib": ratio(qps95, ours95, "hnswlib filter"),
            }
        )
    print(table(sweep_rows))
    print()
    print(f"QPS at recall@10 = {TARGET} (interpolated); ratios use rankfunnel filter_mode={modes[0]}")
    print(table(summary))


if __name__ == "__main__":
    main()
