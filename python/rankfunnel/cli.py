"""The ``rankfunnel`` command line (also ``python -m rankfunnel``).

Errors print one clear line and exit with status 1; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np

from . import __version__, default_threads, simd_level
from .errors import RankfunnelError
from .flat import FlatIndex, topk


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def demo(n: int = 100_000, d: int = 384, nq: int = 1000, k: int = 10, threads: Optional[int] = None) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rankfunnel`` command."""
    p = argparse.ArgumentParser(prog="rankfunnel", description="Rust-accelerated retrieval funnel.")
    p.add_argument("--version", action="version", version=f"rankfunnel {__version__}")
    p.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="exact search on generated data, with results and timings")
    d.add_argument("-n", type=int, default=100_000, help="corpus size (default 100000)")
    d.add_argument("-d", "--dim", type=int, default=384, help="dimension (default 384)")
    d.add_argument("-k", type=int, default=10)
    d.add_argument("--threads", type=int, default=None)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            demo(n=args.n, d=args.dim, k=args.k, threads=args.threads)
        return 0
    except (RankfunnelError, OSError) as e:
        if args.verbose:
            raise
        print(f"rankfunnel: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
