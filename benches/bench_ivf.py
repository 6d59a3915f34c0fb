"""IVF benchmark: rankfunnel IVFIndex (f32, int8 + refine) vs faiss IndexIVFFlat and
IndexIVFScalarQuantizer (SQ8) on the same data, same run, sweeping nprobe.

100k x 384 clustered float32, 1000 queries, k=10, nlist=1264, 2 threads. Prints train + add
time, memory, and recall@10 / QPS per nprobe, then QPS ratios at recall@10 = 0.90.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import rankfunnel as rf
from common import best_of, clustered, recall, table

NPROBES = [1, 2, 4, 8, 16, 32, 64]


def qps_at(points: list[tuple[float, float]], target: float) -> float:
    """QPS at a recall target, interpolated on the (recall, qps) curve; 0 if never reached."""
    pts = sorted(points)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return q0 + (q1 - q0) * (target - r0) / max(r1 - r0, 1e-12)
    return max((q for r, q in pts if r >= target), default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=1264)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10, help="k-means iterations (both libraries)")
    a = ap.parse_args()
    x = clustered(a.n, a.d, seed=1)
    q = clustered(a.nq, a.d, seed=2)
    truth = rf.topk(q, x, a.k, "dot")[1]
    print(
        f"data {a.n} x {a.d}, {a.nq} queries, k={a.k}, nlist={a.nlist}, {a.threads} threads, simd={rf.simd_level()}"
    )

    builds: dict[str, tuple[float, int, object]] = {}
    for storage in ("f32", "int8"):
        idx = rf.IVFIndex(a.d, nlist=a.nlist, metric="dot", storage=storage)
        t = time.perf_counter()
        idx.train(x, iters=a.iters, threads=a.threads)
        idx.add(x, threads=a.threads)
        builds[f"ours {storage}"] = (time.perf_counter() - t, idx.memory_bytes(), idx)
    try:
        import faiss

        faiss.omp_set_num_threads(a.threads)
        for name, make in (
            ("faiss IVFFlat", lambda qz: faiss.IndexIVFFlat(qz, a.d, a.nlist, faiss.METRIC_INNER_PRODUCT)),
            (
                "faiss IVFSQ8",
                lambda qz: faiss.IndexIVFScalarQuantizer(
                    qz, a.d, a.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                ),
            ),
        ):
            qz = faiss.IndexFlatIP(a.d)
            fi = make(qz)
            fi.cp.niter = a.iters
            t = time.perf_counter()
            fi.train(x)
            fi.add(x)
            el = time.perf_counter() - t
            inv = fi.invlists
            mem = sum(inv.list_size(i) * (inv.code_size + 8) for i in range(a.nlist)) + a.nlist * a.d * 4
            builds[name] = (el, mem, (fi, qz))
    except ImportError:
        print("faiss-cpu not installed: skipped")

    rows = []
    curves: dict[str, list[tuple[float, float]]] = {}
    for name, (_, _, obj) in builds.items():
        variants = [(name, 0)] if not name.endswith("int8") else [(name, 0), (name + " refine=4", 4)]
        for label, refine in variants:
            curves[label] = []
            for nprobe in NPROBES:
                if name.startswith("ours"):
                    idx = obj

                    def run(nprobe: int = nprobe, refine: int = refine, idx: object = idx) -> np.ndarray:
                        return idx.search(q, a.k, nprobe=nprobe, refine=refine, threads=a.threads)[1]  # type: ignore[attr-defined]
                else:
                    fi, _ = obj  # type: ignore[misc]
                    fi.nprobe = nprobe

                    def run(fi: object = fi) -> np.ndarray:
                        return fi.search(q, a.k)[1]  # type: ignore[attr-defined]

                found = run()
                t = best_of(run, 2)
                rec = recall(found, truth)
                curves[label].append((rec, a.nq / t))
                rows.append(
                    {"engine": label, "nprobe": nprobe, "recall@10": f"{rec:.4f}", "QPS": f"{a.nq / t:,.0f}"}
                )
    print(table(rows))
    print()
    print(
        table(
            [
                {"engine": n, "train+add s": f"{b[0]:.2f}", "memory MiB": f"{b[1] / 2**20:.1f}"}
                for n, b in builds.items()
            ]
        )
    )
    target = 0.90
    at = {name: qps_at(c, target) for name, c in curves.items()}
    print(f"\nQPS at recall@10 = {target}: " + ", ".join(f"{n} {v:,.0f}" for n, v in at.items()))
    if "faiss IVFFlat" in at and at["faiss IVFFlat"] > 0:
        print(f"ours f32 / faiss IVFFlat: x{at['ours f32'] / at['faiss IVFFlat']:.2f}")
        print(
            f"ours int8+refine / faiss IVFSQ8: x{at['ours int8 refine=4'] / max(at['faiss IVFSQ8'], 1e-9):.2f}"
        )
        print(
            f"train+add ours f32 / faiss IVFFlat: x{builds['ours f32'][0] / builds['faiss IVFFlat'][0]:.2f}"
        )
    print(f"int8 index memory / f32: {builds['ours int8'][1] / builds['ours f32'][1]:.2f}")


if __name__ == "__main__":
    main()
