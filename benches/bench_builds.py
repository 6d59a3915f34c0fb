"""Before/after: the same workloads timed against two builds of rankfunnel, interleaved.

    python benches/bench_builds.py --a OLD/python --b NEW/python [--rounds 5] [--only exact,hnsw]

``--a`` and ``--b`` are folders that hold a built ``rankfunnel`` package (a checkout's
``python/`` after ``make build``, or a copy of it). Every workload runs in a fresh process per
side, through the public API only (``import rankfunnel as rf``), on data generated once with a
fixed seed and cached in a temporary folder; the sides take turns at each workload in every
round, and each side's best round is kept, so a slow spell of this shared machine hits both.
Prints one row per workload: each side's best time and the ratio ``a / b`` (above 1: b is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Self-contained on purpose (no benches/common.py, no rankfunnel helpers beyond the public API):
# the same file must run against any two builds, whatever their internal modules are.
SHARED = Path(os.environ.get("RANKFUNNEL_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
PYPI = SHARED / "data" / "pypi-summaries-300k.jsonl.gz"


def _vectors(cache: Path, name: str, n: int, d: int, seed: int) -> np.ndarray:
    path = cache / f"{name}.npy"
    if not path.exists():
        g = np.random.default_rng(seed)
        centres = g.standard_normal((256, d)).astype(np.float32)
        x = centres[g.integers(0, 256, n)] + 0.6 * g.standard_normal((n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(path, x.astype(np.float32))
    return np.load(path)


def _texts(n: int) -> list[str]:
    import gzip

    out = []
    with gzip.open(PYPI, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def _best(f: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def work_exact(rf: Any, cache: Path) -> dict[str, float]:
    x = _vectors(cache, "flat", 100_000, 384, 1)
    q = _vectors(cache, "flatq", 1_000, 384, 2)
    idx = rf.FlatIndex(dim=384, metric="dot")
    idx.add(x)
    return {
        "FlatIndex.search 1000q x 100k x 384": _best(lambda: idx.search(q, k=10)),
        "topk 1000q x 100k x 384": _best(lambda: rf.topk(q, x, k=10, metric="dot")),
    }


def work_hnsw(rf: Any, cache: Path) -> dict[str, float]:
    x = _vectors(cache, "hnsw", 20_000, 128, 3)
    q = _vectors(cache, "hnswq", 2_000, 128, 4)
    idx = rf.HNSWIndex(dim=128, metric="cosine", m=16, ef_construction=100, seed=0)
    t = time.perf_counter()
    idx.add(x)
    build = time.perf_counter() - t
    return {
        "HNSW build 20k x 128": build,
        "HNSW search 2000q ef=64": _best(lambda: idx.search(q, k=10, ef=64)),
    }


def work_ivf(rf: Any, cache: Path) -> dict[str, float]:
    x = _vectors(cache, "ivf", 50_000, 128, 5)
    q = _vectors(cache, "ivfq", 2_000, 128, 6)
    idx = rf.IVFIndex(dim=128, nlist=256, metric="cosine")
    t = time.perf_counter()
    idx.train(x)
    idx.add(x)
    build = time.perf_counter() - t
    return {
        "IVF train+add 50k x 128": build,
        "IVF search 2000q nprobe=16": _best(lambda: idx.search(q, k=10, nprobe=16)),
    }


def work_maxsim(rf: Any, cache: Path) -> dict[str, float]:
    toks = _vectors(cache, "tokens", 2_000 * 64, 128, 7).reshape(2_000, 64, 128)
    q = _vectors(cache, "qtokens", 50 * 32, 128, 8).reshape(50, 32, 128)
    docs = rf.PackedDocs(list(toks))
    return {"maxsim 50q x 32 tok vs 2000 docs x 64 tok": _best(lambda: rf.maxsim(list(q), docs))}


def work_bm25(rf: Any, cache: Path) -> dict[str, float]:
    texts = _texts(50_000)
    idx = rf.BM25Index()
    t = time.perf_counter()
    idx.add(texts)
    build = time.perf_counter() - t
    queries = [" ".join(s.split()[:3]) for s in texts[:2_000]]
    return {"BM25 add 50k texts": build, "BM25 search 2000q": _best(lambda: idx.search(queries, k=10))}


def work_models(rf: Any, cache: Path) -> dict[str, float]:
    texts = _texts(512)
    enc = rf.BiEncoder(str(MINILM))
    enc.encode(texts[:16])
    return {"BiEncoder.encode 512 texts (MiniLM)": _best(lambda: enc.encode(texts), repeat=2)}


def work_pipeline(rf: Any, cache: Path) -> dict[str, float]:
    texts = _texts(20_000)
    enc = rf.BiEncoder(str(MINILM))
    x = cache / "pipe_vectors.npy"
    if not x.exists():  # encoding 20k texts takes a while: once per benchmark run, not per side
        np.save(x, enc.encode(texts))
    pipe = rf.Pipeline(encoder=enc, lexical=True)
    pipe.add(texts, embeddings=np.load(x))
    queries = [" ".join(s.split()[:4]) for s in texts[:200]]
    lat = []
    for qtext in queries:
        t = time.perf_counter()
        pipe.search(qtext, k=10, mode="hybrid")
        lat.append(time.perf_counter() - t)
    return {"pipeline hybrid search p50 (20k docs)": float(np.median(lat))}


WORK = {
    "exact": work_exact,
    "hnsw": work_hnsw,
    "ivf": work_ivf,
    "maxsim": work_maxsim,
    "bm25": work_bm25,
    "models": work_models,
    "pipeline": work_pipeline,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="folder holding the 'before' rankfunnel package")
    p.add_argument("--b", required=True, help="folder holding the 'after' rankfunnel package")
    p.add_argument("--rounds", type=int, default=3, help="rounds (each side once per workload)")
    p.add_argument("--only", default=",".join(WORK), help=f"comma-separated workloads of {sorted(WORK)}")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        import rankfunnel as rf

        print(json.dumps(WORK[a.worker](rf, Path(a.cache))))
        return
    names = [w for w in a.only.split(",") if w]
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as cache:
        for r in range(a.rounds):
            for w in names:
                for side, path in (("a", a.a), ("b", a.b)) if r % 2 == 0 else (("b", a.b), ("a", a.a)):
                    env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
                    cmd = [sys.executable, __file__, "--a", a.a, "--b", a.b, "--worker", w, "--cache", cache]
                    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                    for key, secs in json.loads(out.strip().splitlines()[-1]).items():
                        best[(key, side)] = min(best.get((key, side), float("inf")), secs)
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    keys = list(dict.fromkeys(k for k, _ in best))
    width = max(len(k) for k in keys)
    print(f"{'workload':<{width}}  {'a (s)':>10}  {'b (s)':>10}  {'a/b':>6}")
    for k in keys:
        ta, tb = best[(k, "a")], best[(k, "b")]
        print(f"{k:<{width}}  {ta:10.4f}  {tb:10.4f}  {ta / tb:6.2f}")


if __name__ == "__main__":
    main()
