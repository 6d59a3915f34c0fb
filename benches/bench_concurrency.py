"""Searches while the index changes: single-query latency idle and during a large add, a remove
and a save, and add throughput alone vs with searches running.

Default case (issue #16, item 9): an HNSWIndex of 100k x 128-d clustered unit vectors, one add
of 20,000 more, then a remove of 20,000 and a save; ``--searchers`` threads (default 1) each run
single-query searches back to back the whole time. Targets: p99 during each change <= 3x the
idle p99, and add throughput with searches >= 90% of it alone. ``--kind all`` runs every vector
index kind (``--n``/``--add``/``--dim`` scale the case; ``--n 2000 --add 500`` is a smoke run).
Short phases (a flat add takes about 0.15 s) are repeated on fresh copies of the base until each
overlaps ``--min-searches`` searches, so their p99 is not the maximum of a handful. Then
``--stream`` single-vector adds into the base time a corpus that grows a document at a time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from functools import partial
from typing import Any, Callable

import numpy as np

import rankfunnel as rf
from common import clustered, table

P99_TARGET = 3.0
THROUGHPUT_TARGET = 0.9


def make(kind: str, dim: int, base: np.ndarray, args: argparse.Namespace) -> Any:
    """A ``kind`` index holding ``base`` (ids 0..)."""
    idx: Any
    if kind == "hnsw":
        idx = rf.HNSWIndex(dim, metric="ip")
        idx.add(base, threads=args.threads)
    elif kind == "flat":
        idx = rf.FlatIndex(dim, metric="ip")
        idx.add(base)
    else:
        idx = rf.IVFIndex(dim, nlist=args.nlist, metric="ip")
        idx.train(base[: max(args.nlist * 40, 10_000)])
        idx.add(base, threads=args.threads)
    return idx


def adder(kind: str, args: argparse.Namespace) -> Callable[[Any, np.ndarray, np.ndarray], object]:
    if kind == "flat":
        return lambda idx, v, ids: idx.add(v, ids)
    return lambda idx, v, ids: idx.add(v, ids, threads=args.threads)


def searcher(kind: str, args: argparse.Namespace) -> Callable[[Any, np.ndarray], object]:
    if kind == "hnsw":
        return lambda idx, q: idx.search(q, args.k, ef=args.ef, threads=1)
    if kind == "ivf":
        return lambda idx, q: idx.search(q, args.k, nprobe=args.nprobe, threads=1)
    return lambda idx, q: idx.search(q, args.k, threads=1)


def under_searches(
    idx: Any,
    search: Callable[[Any, np.ndarray], object],
    queries: np.ndarray,
    nthreads: int,
    work: Callable[[], Any],
) -> tuple[float, np.ndarray]:
    """Run ``work`` while ``nthreads`` threads search back to back; returns its wall time and the
    latencies (seconds) of the searches that overlapped it."""
    done = threading.Event()
    spans: list[list[tuple[float, float]]] = [[] for _ in range(nthreads)]

    def loop(j: int) -> None:
        i = j
        while not done.is_set():
            q = queries[i % len(queries)]
            t = time.perf_counter()
            search(idx, q)
            spans[j].append((t, time.perf_counter()))
            i += nthreads

    threads = [threading.Thread(target=loop, args=(j,)) for j in range(nthreads)]
    for t in threads:
        t.start()
    time.sleep(0.05)  # let the searchers start before the change does
    t0 = time.perf_counter()
    work()
    t1 = time.perf_counter()
    done.set()
    for t in threads:
        t.join()
    lat = [b - a for s in spans for a, b in s if a < t1 and b > t0]
    return t1 - t0, np.asarray(lat, dtype=np.float64)


def idle(
    idx: Any, search: Callable[[Any, np.ndarray], object], queries: np.ndarray, count: int
) -> np.ndarray:
    out = np.empty(count)
    for i in range(count):
        t = time.perf_counter()
        search(idx, queries[i % len(queries)])
        out[i] = time.perf_counter() - t
    return out


def ms(x: float) -> str:
    return f"{x * 1e3:.3f}"


def run(kind: str, args: argparse.Namespace) -> None:
    dim = args.dim
    data = clustered(args.n + args.add, dim, clusters=max(10, args.n // 100), seed=0)
    queries = clustered(2000, dim, clusters=max(10, args.n // 100), seed=1)
    base, batch = data[: args.n], data[args.n :]
    batch_ids = np.arange(args.n, args.n + args.add)
    search, add = searcher(kind, args), adder(kind, args)
    print(
        f"\n{kind}: {args.n:,} x {dim}-d, add {args.add:,}, remove {args.remove:,}, {args.searchers} searcher(s)"
    )
    gone = np.random.default_rng(2).choice(args.n + args.add, size=min(args.remove, args.n), replace=False)
    lat_add, lat_rm, lat_save, busy, alone, walls = [], [], [], [], [], {"rm": [], "save": []}
    with tempfile.TemporaryDirectory() as tmp:
        base_path, saved = os.path.join(tmp, "base.rf"), os.path.join(tmp, "saved.rf")
        t = time.perf_counter()
        make(kind, dim, base, args).save(base_path)
        print(f"base built in {time.perf_counter() - t:.1f} s")
        lat_idle = idle(rf.load(base_path), search, queries, args.idle)
        # Rounds of add, remove and save, each on a fresh copy of the base, until every phase
        # has --min-searches overlapping searches (one round when a phase is long, as HNSW's add).
        for _ in range(args.max_rounds):
            solo = rf.load(base_path)
            t = time.perf_counter()
            add(solo, batch, batch_ids)
            alone.append(time.perf_counter() - t)
            del solo
            idx = rf.load(base_path)
            wall, lat = under_searches(
                idx, search, queries, args.searchers, partial(add, idx, batch, batch_ids)
            )
            busy.append(wall)
            lat_add.append(lat)
            wall, lat = under_searches(idx, search, queries, args.searchers, partial(idx.remove, gone))
            walls["rm"].append(wall)
            lat_rm.append(lat)
            wall, lat = under_searches(idx, search, queries, args.searchers, partial(idx.save, saved))
            walls["save"].append(wall)
            lat_save.append(lat)
            if min(sum(map(len, x)) for x in (lat_add, lat_rm, lat_save)) >= args.min_searches:
                break
        streamed = (
            stream_adds(rf.load(base_path), batch[: args.stream], batch_ids[: args.stream])
            if args.stream
            else ""
        )
    rounds = len(busy)
    add_alone, add_busy = float(np.median(alone)), float(np.median(busy))
    print(f"{rounds} round(s) of add, remove and save; wall times are medians over the rounds")

    p99_idle = float(np.percentile(lat_idle, 99))
    rows = []
    for name, lat, wall in (
        ("idle", lat_idle, float(lat_idle.sum())),
        ("during add", np.concatenate(lat_add), add_busy),
        ("during remove", np.concatenate(lat_rm), float(np.median(walls["rm"]))),
        ("during save", np.concatenate(lat_save), float(np.median(walls["save"]))),
    ):
        p99 = float(np.percentile(lat, 99)) if len(lat) else float("nan")
        ratio = p99 / p99_idle
        rows.append(
            {
                "phase": name,
                "wall s": f"{wall:.3f}",
                "searches": len(lat),
                "p50 ms": ms(float(np.percentile(lat, 50))) if len(lat) else "-",
                "p99 ms": ms(p99),
                "max ms": ms(float(lat.max())) if len(lat) else "-",
                "p99 / idle p99": f"{ratio:.2f}",
                f"<= {P99_TARGET:g}x": "" if name == "idle" else ("yes" if ratio <= P99_TARGET else "NO"),
            }
        )
    print(table(rows))
    tp_alone, tp_busy = args.add / add_alone, args.add / add_busy
    keep = tp_busy / tp_alone
    print(
        f"add throughput: alone {tp_alone:,.0f} vec/s ({add_alone:.2f} s), with searches {tp_busy:,.0f} vec/s "
        f"({add_busy:.2f} s): {keep:.2f}x, target >= {THROUGHPUT_TARGET:g}x "
        f"{'yes' if keep >= THROUGHPUT_TARGET else 'NO'}"
    )
    if streamed:
        print(streamed)


def stream_adds(idx: Any, rows: np.ndarray, ids: np.ndarray) -> str:
    """One vector per ``add`` call into the loaded base: the cost of a corpus that grows a
    document at a time (the first call also grows the buffers: see ``max``)."""
    lat = np.empty(len(rows))
    for i in range(len(rows)):
        t = time.perf_counter()
        idx.add(rows[i : i + 1], ids[i : i + 1])
        lat[i] = time.perf_counter() - t
    return (
        f"{len(rows)} single-vector adds into {len(idx) - len(rows):,}: mean {ms(float(lat.mean()))} ms, "
        f"p50 {ms(float(np.median(lat)))} ms, p99 {ms(float(np.percentile(lat, 99)))} ms, max {ms(float(lat.max()))} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["hnsw", "flat", "ivf", "all"], default="hnsw")
    ap.add_argument("--n", type=int, default=100_000, help="vectors in the index before the add")
    ap.add_argument("--add", type=int, default=20_000, help="vectors in the add (and in the remove)")
    ap.add_argument("--remove", type=int, default=None, help="ids removed (default: --add)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ef", type=int, default=64, help="HNSW beam width")
    ap.add_argument("--nlist", type=int, default=1024, help="IVF lists")
    ap.add_argument("--nprobe", type=int, default=16, help="IVF lists probed")
    ap.add_argument(
        "--threads", type=int, default=None, help="add threads (default: the cores the searchers leave free)"
    )
    ap.add_argument("--searchers", type=int, default=1, help="threads searching during each change")
    ap.add_argument(
        "--stream",
        type=int,
        default=500,
        help="then time this many single-vector adds into the base (0: none)",
    )
    ap.add_argument("--idle", type=int, default=2000, help="idle searches timed")
    ap.add_argument(
        "--min-searches",
        type=int,
        default=300,
        help="rounds repeat until each phase overlaps this many searches",
    )
    ap.add_argument(
        "--max-rounds", type=int, default=30, help="at most this many rounds of add, remove, save"
    )
    args = ap.parse_args()
    if args.remove is None:
        args.remove = args.add
    args.nlist = min(args.nlist, max(1, args.n // 40))
    if args.threads is None:
        # Alone and with searches alike, so both throughputs get the same cores.
        args.threads = max(1, rf.default_threads() - args.searchers)
    print(
        f"rankfunnel {rf.__version__}, SIMD {rf.simd_level()}, {rf.default_threads()} default threads, "
        f"{args.threads} add threads"
    )
    for kind in ["hnsw", "flat", "ivf"] if args.kind == "all" else [args.kind]:
        run(kind, args)


if __name__ == "__main__":
    main()
