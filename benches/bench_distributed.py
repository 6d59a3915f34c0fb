"""Ray benchmark (issue #15): encode throughput, shard build time, sharded search latency.

    python benches/bench_distributed.py [--n 20000] [--encode-n 2000] [--shards 2,4] [--vectors PATH]

1. Encodes ``--encode-n`` PyPI summaries with all-MiniLM-L6-v2 through Ray Data
   (:func:`rankfunnel.distributed.encode_dataset`, ``--actors`` actors sharing the CPUs) and with
   one in-process ``BiEncoder.encode`` on the same texts; prints both rates and their ratio
   (target >= 0.85x on one machine: Ray must cost little over the model itself), overall (with
   the actors' start-up and model load) and without that fixed cost (the time of a one-batch
   run, taken off; shown once the run is at least twice as long).
2. For each shard count of ``--shards``: builds a sharded flat pipeline of ``--n`` documents
   (given vectors: ``--vectors`` row i is line i of the corpus; random unit vectors when the
   file is absent) and reports the build time, then the p50/p95 latency of ``search`` (k=10)
   over ``--queries`` queries against one single-machine pipeline of the same documents.

Ray starts a local cluster (or joins ``--address``). Do not run at full size on a shared
machine; ``--n 2000 --encode-n 200 --queries 20`` is a smoke run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import rankfunnel as rf
from common import latencies, load_vectors, read_docs, table

SHARED = Path(os.environ.get("RANKFUNNEL_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


def encode_figures(
    ray: object, model: str, texts: list[str], actors: int, batch: int, ray_batch: int
) -> dict[str, object]:
    """Texts/s of Ray Data encoding vs one in-process BiEncoder.encode (same texts, same batch)."""
    from rankfunnel.distributed import encode_dataset

    cpus = max(1, (os.cpu_count() or 1) // actors)
    enc = rf.BiEncoder(model)
    enc.encode(texts[:64])  # warm-up
    t = time.perf_counter()
    enc.encode(texts, batch_size=batch)
    local = len(texts) / (time.perf_counter() - t)
    ds = ray.data.from_items([{"text": s} for s in texts])  # type: ignore[attr-defined]

    def run(data: object) -> int:
        encoded = encode_dataset(
            data, model, concurrency=actors, num_cpus=cpus, batch_size=ray_batch, model_batch_size=batch
        )
        return sum(len(b["embedding"]) for b in encoded.iter_batches(batch_size=None, batch_format="numpy"))

    # The fixed cost of a run (actors start, models load, one Ray batch encoded), measured alone.
    t = time.perf_counter()
    run(ds.limit(ray_batch))
    fixed = time.perf_counter() - t
    t = time.perf_counter()
    n = run(ds)
    took = time.perf_counter() - t
    assert n == len(texts)
    overall = n / took
    # Without the fixed cost, once the run is long enough for the difference to mean something.
    steady = f"{n / (took - fixed) / local:.2f}x" if took > 2 * fixed else "n/a (raise --encode-n)"
    return {
        "texts": n,
        "BiEncoder.encode /s": f"{local:,.0f}",
        f"Ray {actors}x{cpus} CPU /s": f"{overall:,.0f}",
        "ratio": f"{overall / local:.2f}x",
        "Ray start-up s": f"{fixed:.1f}",
        "ratio without start-up": steady,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="documents in the pipelines")
    ap.add_argument("--encode-n", type=int, default=2000, help="texts encoded for the throughput figures")
    ap.add_argument("--shards", default="2,4", help="shard counts to measure")
    ap.add_argument("--queries", type=int, default=200, help="queries for the latency figures")
    ap.add_argument("--actors", type=int, default=1, help="encoder actors (each gets cores / actors CPUs)")
    ap.add_argument("--batch", type=int, default=32, help="encoder batch size")
    ap.add_argument("--ray-batch", type=int, default=1024, help="texts per Ray Data batch (map_batches)")
    ap.add_argument(
        "--vectors",
        default=os.environ.get("RANKFUNNEL_PYPI_VECTORS", "pypi-minilm.npy"),
        help="cached float32 (300000, 384) MiniLM vectors of the corpus (default $RANKFUNNEL_PYPI_VECTORS)",
    )
    ap.add_argument("--corpus", default=str(SHARED / "data" / "pypi-summaries-300k.jsonl.gz"))
    ap.add_argument("--model", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--address", default=None, help="Ray cluster (default: a new local one)")
    ap.add_argument("--dir", default=None, help="where to build (default: a temporary folder)")
    a = ap.parse_args()

    import ray

    from rankfunnel.distributed import ShardedPipeline, build_shards

    ray.init(address=a.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    docs = read_docs(Path(a.corpus), max(a.n + a.queries, a.encode_n))
    texts = [t for _, t in docs]
    print(table([encode_figures(ray, a.model, texts[: a.encode_n], a.actors, a.batch, a.ray_batch)]))

    enc = rf.BiEncoder(a.model)
    vectors = load_vectors(Path(a.vectors), a.n, enc.dim)
    queries = texts[a.n : a.n + a.queries]
    base = Path(tempfile.mkdtemp(prefix="rf-bench-distributed-", dir=a.dir))
    try:
        one = rf.Pipeline(encoder=enc)
        t = time.perf_counter()
        one.add(texts[: a.n], doc_ids=[d for d, _ in docs[: a.n]], embeddings=vectors)
        build_one = time.perf_counter() - t
        for q in queries[:5]:
            one.search(q)
        lat = latencies(lambda i: one.search(queries[i], k=10), len(queries)) * 1e3
        rows = [
            {
                "pipeline": "one (in process)",
                "docs": a.n,
                "build s": f"{build_one:.1f}",
                "p50 ms": f"{np.percentile(lat, 50):.2f}",
                "p95 ms": f"{np.percentile(lat, 95):.2f}",
            }
        ]
        ds = ray.data.from_items(
            [{"row": i, "id": docs[i][0], "text": texts[i], "embedding": vectors[i]} for i in range(a.n)]
        ).materialize()
        for shards in (int(s) for s in a.shards.split(",") if s.strip()):
            out = base / f"s{shards}"
            t = time.perf_counter()
            build_shards(ds, out, shards=shards, encoder=a.model)
            took = time.perf_counter() - t
            with ShardedPipeline(out) as sp:
                for q in queries[:5]:
                    sp.search(q)
                # The same results as one pipeline (exact search, exact merge).
                for q in queries[:10]:
                    assert [h.id for h in sp.search(q)] == [h.id for h in one.search(q)]
                lat = latencies(lambda i, sp=sp: sp.search(queries[i], k=10), len(queries)) * 1e3
            rows.append(
                {
                    "pipeline": f"{shards} shards (Ray actors)",
                    "docs": a.n,
                    "build s": f"{took:.1f}",
                    "p50 ms": f"{np.percentile(lat, 50):.2f}",
                    "p95 ms": f"{np.percentile(lat, 95):.2f}",
                }
            )
        print(table(rows))
    finally:
        shutil.rmtree(base, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
