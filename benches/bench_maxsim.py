"""MaxSim benchmark: rankfunnel vs maxsim-cpu and numpy on the same data, same run.

Default: 32 query tokens, 1000 documents of 64-300 tokens, d=128, unit-length float32 tokens,
2 threads. Prints documents scored per second (best of several runs, averaged over queries),
ratios against the best anchor, the error of f16 / int8 documents against float32, and the
fraction of the machine's FLOP peak. Then the MultiVectorIndex (PLAID-style) section: QPS,
recall@10 against brute-force MaxSim and memory per token (``--mv-docs 0`` skips it).
Run with ``make bench-python``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common import best_of, recall, table
from rankfunnel.synthetic import token_docs, token_queries


def sgemm_peak(threads: int) -> float:
    """GFLOP/s of a large numpy float32 matrix product (the BLAS's peak on this machine)."""
    a = np.random.default_rng(0).standard_normal((3072, 3072)).astype(np.float32)
    t = best_of(lambda: a @ a, 3)
    return 2 * 3072**3 / t / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=300)
    ap.add_argument("--m", type=int, default=32, help="query tokens")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--nq", type=int, default=10, help="queries timed (one call each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fma-per-cycle", type=int, default=2, help="512-bit FMAs per cycle per core")
    ap.add_argument(
        "--ghz", type=float, default=0.0, help="core clock for the nominal peak (default: /proc/cpuinfo)"
    )
    ap.add_argument("--mv-docs", type=int, default=100_000, help="MultiVectorIndex documents (0 skips)")
    ap.add_argument("--mv-queries", type=int, default=100)
    a = ap.parse_args()

    # Thread caps before the anchors load their pools.
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import rankfunnel as rf

    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(a.threads)
        blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '')}" for i in threadpool_info())
    except ImportError:
        blas = "unknown (threadpoolctl missing)"
    try:
        import maxsim_cpu
    except ImportError:
        maxsim_cpu = None

    docs, centres = token_docs(
        a.docs, a.d, topics=200, lengths=(a.min_len, a.max_len), mix=4, spread=0.6, seed=1
    )
    qs = token_queries(centres, a.nq, a.m, mix=3, spread=0.6, seed=2)
    n_tok = sum(len(x) for x in docs)
    flop = 2.0 * a.m * a.d * n_tok  # per query
    print(
        f"{a.docs} documents of {a.min_len}-{a.max_len} tokens ({n_tok} tokens, mean {n_tok / a.docs:.0f}), "
        f"d={a.d}, {a.m} query tokens, {a.nq} queries, {a.threads} threads"
    )
    print(f"rankfunnel {rf.__version__} simd={rf.simd_level()}; numpy {np.__version__} BLAS: {blas}")

    ref = np.array([[(q.astype(np.float64) @ x.astype(np.float64).T).max(1).sum() for x in docs] for q in qs])

    def numpy_maxsim(q: np.ndarray) -> np.ndarray:
        return np.array([(q @ x.T).max(axis=1).sum() for x in docs], dtype=np.float32)

    packed = {dt: rf.PackedDocs(docs, dtype=dt) for dt in ("f32", "f16", "int8")}
    engines: dict[str, object] = {
        "numpy (GEMM + row max per doc)": numpy_maxsim,
    }
    if maxsim_cpu is not None:
        engines["maxsim-cpu maxsim_scores_variable"] = lambda q: maxsim_cpu.maxsim_scores_variable(q, docs)
    ours = {
        "rankfunnel maxsim (list of arrays)": lambda q: rf.maxsim(q, docs, threads=a.threads),
        "rankfunnel maxsim (PackedDocs f32)": lambda q: rf.maxsim(q, packed["f32"], threads=a.threads),
        "rankfunnel maxsim (PackedDocs f16)": lambda q: rf.maxsim(q, packed["f16"], threads=a.threads),
        "rankfunnel maxsim (PackedDocs int8)": lambda q: rf.maxsim(q, packed["int8"], threads=a.threads),
    }
    results: dict[str, tuple[float, float]] = {}
    for name, fn in [*engines.items(), *ours.items()]:
        got = np.stack([np.asarray(fn(q), dtype=np.float64).ravel() for q in qs])  # type: ignore[operator]
        err = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-9)))
        t = best_of(lambda fn=fn: [fn(q) for q in qs], a.repeat) / a.nq  # type: ignore[misc,operator]
        results[name] = (t, err)
    # Batched: all queries in one call (documents read once for all of them).
    t_batch = best_of(lambda: rf.maxsim(qs, packed["f32"], threads=a.threads), a.repeat) / a.nq
    got = rf.maxsim(qs, packed["f32"], threads=a.threads).astype(np.float64)
    results[f"rankfunnel maxsim ({a.nq} queries per call, f32)"] = (
        t_batch,
        float(np.max(np.abs(got - ref) / np.abs(ref))),
    )

    best_anchor = min(results[n][0] for n in engines)
    ghz = a.ghz
    if not ghz:
        try:
            mhz = [float(x.split(":")[1]) for x in open("/proc/cpuinfo") if x.startswith("cpu MHz")]
            ghz = max(mhz) / 1000
        except (OSError, ValueError, IndexError):
            ghz = 3.0
    nominal = a.threads * a.fma_per_cycle * 16 * 2 * ghz
    sgemm = sgemm_peak(a.threads)
    rows = []
    for name, (t, err) in results.items():
        gflops = flop / t / 1e9
        rows.append(
            {
                "engine": name,
                "ms/query": f"{t * 1e3:.2f}",
                "docs/s": f"{a.docs / t:,.0f}",
                "vs best anchor": f"{best_anchor / t:.2f}x",
                "GFLOP/s": f"{gflops:.0f}",
                "% sgemm": f"{100 * gflops / sgemm:.0f}%",
                "% nominal peak": f"{100 * gflops / nominal:.0f}%",
                "max rel err vs f64": f"{err:.1e}",
            }
        )
    print(table(rows))
    print(
        f"peaks: numpy sgemm 3072^3 = {sgemm:.0f} GFLOP/s; nominal AVX-512 = {a.threads} cores x "
        f"{a.fma_per_cycle} FMA x 16 lanes x 2 x {ghz:.2f} GHz = {nominal:.0f} GFLOP/s (at the clock "
        "/proc/cpuinfo reports; turbo clocks are higher, so more than 100% is possible)"
    )
    sys.stdout.flush()

    if a.mv_docs > 0:
        bench_multivector(a, rf)


def bench_multivector(a: argparse.Namespace, rf: object) -> None:
    import rankfunnel as rf

    n = a.mv_docs
    t0 = time.perf_counter()
    docs, centres = token_docs(n, a.d, topics=1000, lengths=(16, 64), mix=4, spread=0.6, seed=3)
    qs = token_queries(centres, a.mv_queries, a.m, mix=3, spread=0.6, seed=4)
    n_tok = sum(len(x) for x in docs)
    print(
        f"\nMultiVectorIndex: {n} documents of 16-64 tokens ({n_tok} tokens), d={a.d}, "
        f"{len(qs)} queries of {a.m} tokens, k=10, {a.threads} threads (data {time.perf_counter() - t0:.0f} s)"
    )
    packed = rf.PackedDocs(docs)
    t0 = time.perf_counter()
    truth_scores = rf.maxsim(qs, packed, threads=a.threads)
    truth = np.argsort(-truth_scores, axis=1, kind="stable")[:, :10]
    t_exact = (time.perf_counter() - t0) / len(qs)
    rows = [
        {
            "engine": "brute-force rf.maxsim (f32)",
            "build s": "-",
            "QPS": f"{1 / t_exact:.1f}",
            "recall@10": "1.000",
            "bytes/token": f"{packed.nbytes / n_tok:.1f} (f32)",
        }
    ]
    settings: tuple[tuple[int, Optional[str], tuple[tuple[int, int], ...]], ...] = (
        (0, None, ((1024, 0),)),
        (2, None, ((256, 0), (1024, 0), (4096, 0))),
        (4, None, ((1024, 0), (4096, 0))),
        (2, "f16", ((256, 4), (1024, 4))),
    )
    for nbits, refine_dtype, cands in settings:
        mv = rf.MultiVectorIndex(dim=a.d, nbits=nbits, refine_dtype=refine_dtype)
        t0 = time.perf_counter()
        mv.add(packed, threads=a.threads)
        build = time.perf_counter() - t0
        if refine_dtype is not None:
            # As deployed: saved, then loaded with mmap so the exact copy stays on disk.
            with tempfile.TemporaryDirectory() as tmp:
                mv.save(Path(tmp) / "mv.rfi")
                mv = rf.MultiVectorIndex.load(Path(tmp) / "mv.rfi", mmap=True)
                mv.search(qs[0], k=10, candidates=64, refine=1)
                rows.extend(mv_rows(mv, qs, truth, cands, a.threads, build, n_tok))
                del mv
            continue
        rows.extend(mv_rows(mv, qs, truth, cands, a.threads, build, n_tok))
        del mv
    print(table(rows))


def mv_rows(
    mv: Any,
    qs: list[Any],
    truth: Any,
    cands: tuple[tuple[int, int], ...],
    threads: int,
    build: float,
    n_tok: int,
) -> list[dict[str, str]]:
    """One table row per (candidates, refine) setting of ``mv``."""
    rows = []
    for cand, refine in cands:
        found = np.stack([mv.search(q, k=10, candidates=cand, threads=threads, refine=refine)[1] for q in qs])
        t = best_of(
            lambda cand=cand, refine=refine: [
                mv.search(q, k=10, candidates=cand, threads=threads, refine=refine) for q in qs
            ],
            1,
        )
        extra = f" refine={refine} ({mv.refine_dtype} copy, mmapped)" if refine else ""
        disk = f" + {mv.refine_bytes_per_token} on disk" if mv.refine_dtype else ""
        rows.append(
            {
                "engine": f"MultiVectorIndex nbits={mv.nbits} candidates={cand}{extra} ({mv.n_centroids} centroids)",
                "build s": f"{build:.1f}",
                "QPS": f"{len(qs) / t:.1f}",
                "recall@10": f"{recall(found, truth):.3f}",
                "bytes/token": f"{mv.memory_bytes() / n_tok:.1f} ({mv.bytes_per_token} codes{disk})",
            }
        )
    return rows


if __name__ == "__main__":
    main()
