"""HNSW scaling: build time, bytes per vector and QPS at recall@10 = 0.95 as the corpus grows,
for rankfunnel and its peers (M=16, ef_construction=200, inner product, same run).

Real sentence embeddings (the cached MiniLM vectors of the PyPI summaries: ``--vectors`` or
``$RANKFUNNEL_PYPI_VECTORS``; the last ``--nq`` rows are the queries, never indexed) at
``--real-sizes``, and generated embedding-like vectors (``common.embedding_like``: clumps near a
``--latent``-dimensional subspace; the queries are drawn with the data) at ``--generated-sizes``. After each table it
prints how each figure grows: the exponent ``e`` in ``figure ~ n^e`` between consecutive sizes.

    python benches/bench_scaling.py --real-sizes 100000,299000 --generated-sizes 1000000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_hnsw import at_recall
from test_hnsw import CONTENDERS, EFS, FLOAT32_ONLY, TARGET, WALK_CODES, build

import rankfunnel as rf
from common import best_of, embedding_like, load_vectors, recall, table


def measure(
    name: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, threads: int, repeat: int
) -> dict[str, Any]:
    """Build ``name`` over ``x``, then sweep ``ef`` until recall passes the target."""
    t = time.perf_counter()
    built = build(name, x, threads)
    secs = time.perf_counter() - t
    curve = []
    for ef in EFS:
        r = recall(built.search(q, ef), truth)
        curve.append((r, len(q) / best_of(lambda ef=ef: built.search(q, ef), repeat)))  # type: ignore[misc]
        if r >= TARGET + 0.01:  # one point past the target bounds the interpolation
            break
    return {"build": secs, "bpv": built.nbytes / len(x), "qps": at_recall(curve, TARGET)}


def growth(rows: list[dict[str, Any]], key: str, engine: str) -> str:
    """Exponents of ``key`` between consecutive sizes of one engine, e.g. ``n^1.08, n^1.12``."""
    pts = [(r["n"], r[key]) for r in rows if r["engine"] == engine and r[key]]
    return ", ".join(f"n^{math.log(b / a) / math.log(m / n):.2f}" for (n, a), (m, b) in zip(pts, pts[1:]))


def run(
    label: str, data: np.ndarray, q: np.ndarray, sizes: list[int], engines: list[str], a: argparse.Namespace
) -> None:
    rows = []
    for n in sizes:
        x = data[:n]
        _, truth = rf.topk(q, x, 10, "dot", threads=a.threads)
        for name in engines:
            try:
                m = measure(name, x, q, truth, a.threads, a.repeat)
            except BaseException as e:  # a missing anchor raises pytest's Skipped
                if isinstance(e, KeyboardInterrupt):
                    raise
                print(f"{name}: skipped ({e})", file=sys.stderr)
                continue
            rows.append({"n": n, "engine": name, **m})
            print(f"{label} n={n:,} {name}: {m}", file=sys.stderr)
    print(f"\n{label}: {len(q)} queries, k=10, {a.threads} threads, simd={rf.simd_level()}")
    print(
        table(
            [
                {
                    "n": f"{r['n']:,}",
                    "engine": r["engine"],
                    "build s": f"{r['build']:.1f}",
                    "bytes/vector": f"{r['bpv']:,.0f}",
                    f"QPS @ {TARGET}": "not reached" if r["qps"] is None else f"{r['qps']:,.0f}",
                }
                for r in rows
            ]
        )
    )
    for name in dict.fromkeys(r["engine"] for r in rows):
        print(f"  {name}: build {growth(rows, 'build', name)}; QPS {growth(rows, 'qps', name)}")
    ours = {r["n"]: r for r in rows if r["engine"] == CONTENDERS[0]}
    for n in sizes:
        peers = [r for r in rows if r["n"] == n and not r["engine"].startswith("rankfunnel") and r["qps"]]
        if n in ours and ours[n]["qps"] and peers:
            best = max(peers, key=lambda r: r["qps"])
            fastest = min(peers, key=lambda r: r["build"])
            print(
                f"  n={n:,}: QPS ours / {best['engine']} x{ours[n]['qps'] / best['qps']:.2f}; "
                f"build ours / {fastest['engine']} x{ours[n]['build'] / fastest['build']:.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--real-sizes", default="100000,299000", help="sizes over the cached MiniLM vectors ('' skips)"
    )
    ap.add_argument(
        "--generated-sizes", default="100000,300000,1000000", help="sizes of generated data ('' skips)"
    )
    ap.add_argument("--d", type=int, default=384, help="dimension of the generated vectors")
    ap.add_argument("--latent", type=int, default=96, help="intrinsic dimension of the generated vectors")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--engines",
        default=",".join([CONTENDERS[0], FLOAT32_ONLY, "hnswlib"]),
        help=f"comma-separated, from: {', '.join([*CONTENDERS, FLOAT32_ONLY, *WALK_CODES])}",
    )
    ap.add_argument(
        "--vectors", type=Path, default=Path(os.environ.get("RANKFUNNEL_PYPI_VECTORS", "pypi-minilm.npy"))
    )
    a = ap.parse_args()
    engines = a.engines.split(",")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
    except ImportError:
        pass
    real = [int(s) for s in a.real_sizes.split(",") if s]
    if real:
        if not a.vectors.is_file():
            sys.exit(
                f"error: {a.vectors} not found (cached MiniLM vectors of the PyPI summaries: see benches/bench_pipeline.py)"
            )
        v = np.load(a.vectors, mmap_mode="r")
        if max(real) + a.nq > len(v):
            sys.exit(
                f"error: {a.vectors} holds {len(v):,} rows: sizes up to {len(v) - a.nq:,} leave {a.nq} queries"
            )
        data = load_vectors(a.vectors, len(v), v.shape[1])
        run("real MiniLM embeddings", data, data[-a.nq :].copy(), real, engines, a)
    gen = [int(s) for s in a.generated_sizes.split(",") if s]
    if gen:
        data = embedding_like(max(gen) + a.nq, a.d, latent=a.latent, seed=1)
        run(
            f"generated embedding-like {a.d}-d (latent dimension {a.latent})",
            data[: max(gen)],
            data[max(gen) :].copy(),
            gen,
            engines,
            a,
        )


if __name__ == "__main__":
    main()
