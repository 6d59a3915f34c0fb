"""Subprocess side of the pipeline crash, random-kill and two-writer tests (test_pipeline_store.py).

python pipeline_worker.py crash MODELS FOLDER OP POINT   # builds a base, then OP dies at POINT
python pipeline_worker.py churn MODELS FOLDER SEED       # adds/removes until killed
python pipeline_worker.py writer MODELS FOLDER TAG N     # adds N documents, 10 per commit

The crash and churn pipelines keep a lexical (BM25) index beside the vectors;
:func:`assert_lexical_matches` checks it after recovery.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

import rankfunnel as rf
from rankfunnel.pipeline import TieredPolicy
from rankfunnel.pipeline.fields import LexicalField, VectorField, new_lexical

DIM = 16  # the tiny bi-encoder's dimension
QUERIES = ["wing lift", "flow", "shells buckling pressure", "slipstream", "document wings", "updated text"]


def vectors(ids: list[int], salt: int = 0) -> np.ndarray:
    """A fixed random unit vector per (id, salt)."""
    out = np.stack([np.random.default_rng(10_000 * salt + i).standard_normal(DIM) for i in ids])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def texts(ids: list[int]) -> list[str]:
    """The text of document ``i`` in the crash scenario."""
    return [f"document {i} about wings and shells" for i in ids]


def dense_ids(p: rf.Pipeline) -> set[int]:
    f = p._fields["vectors"]
    assert isinstance(f, VectorField)
    return {int(i) for part in (f.main, f.delta) if part is not None for i in part.ids}


def assert_lexical_matches(p: rf.Pipeline, queries: list[str] = QUERIES) -> None:
    """The pipeline's BM25 holds exactly the live documents (and the same ids as the dense side,
    when there is one), and scores every query as a fresh BM25Index over the live texts."""
    live = sorted(int(i) for i in p.docs.where({}))
    terms = p._fields["terms"]
    assert isinstance(terms, LexicalField)
    assert sorted(terms.index.ids.tolist()) == live
    if "vectors" in p._fields:
        assert dense_ids(p) == set(live)
    assert p.lexical is not None
    fresh = new_lexical(p.lexical)
    rows = p.docs.get(live)
    fresh.add([r[0] for r in rows if r is not None], ids=live)
    n = max(1, len(live))
    for q in queries:
        s1, i1 = terms.index.search(q, k=n)
        s2, i2 = fresh.search(q, k=n)
        assert i1.tolist() == i2.tolist(), q
        np.testing.assert_array_equal(s1, s2)


def crash(models: Path, folder: Path, op: str, point: str) -> None:
    """Build 25 documents (a main index of 20, one segment of 5), then run OP with a crash point armed."""
    p = rf.Pipeline(
        encoder=rf.BiEncoder(models / "tiny-bi-encoder-mean"),
        late_interaction=rf.ColBERTEncoder(models / "tiny-colbert"),
        path=folder,
        lexical=True,
    )
    p.policy = TieredPolicy(fold_ratio=1000.0, merge_factor=2)
    base = list(range(25))
    p.add(texts(base[:20]), embeddings=vectors(base[:20]))
    p.add(texts(base[20:]), embeddings=vectors(base[20:]))
    if op == "compact":
        p.remove([3, 22])
    if op == "update-compact":
        p.update([4, 21], ["updated text 4", "updated text 21"], embeddings=vectors([4, 21], salt=1))
    os.environ["RANKFUNNEL_CRASH_AT"] = point
    if op == "add":  # a second segment: the policy then merges the two
        p.add(texts(list(range(25, 30))), embeddings=vectors(list(range(25, 30))))
    elif op == "remove":
        p.remove([3, 22])
    elif op == "update":
        p.update([4, 21], ["updated text 4", "updated text 21"], embeddings=vectors([4, 21], salt=1))
    elif op in ("compact", "update-compact"):
        p.compact()
    print("survived", flush=True)


def churn(models: Path, folder: Path, seed: int) -> None:
    """Add 3 documents per op (doc ids ``r{seed}op{i}-{j}``); every 4th op, remove one of the previous op's."""
    p = rf.Pipeline.load(folder)
    p.policy = TieredPolicy(fold_ratio=0.5, merge_factor=2)
    rng = np.random.default_rng(seed)
    print("ready", flush=True)
    for i in range(100_000):
        v = rng.standard_normal((3, DIM)).astype(np.float32)
        names = [f"r{seed}op{i}-{j}" for j in range(3)]
        p.add([f"op {i} doc {j}" for j in range(3)], doc_ids=names, embeddings=v)
        print(f"add {i}", flush=True)
        if i % 4 == 3:
            p.remove([f"r{seed}op{i - 1}-0"])
            print(f"remove {i - 1}", flush=True)


def writer(models: Path, folder: Path, tag: str, n: int) -> None:
    """Add ``n`` documents, 10 per commit, waiting for the writer lock."""
    p = rf.Pipeline.load(folder, lock_timeout=120)
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    for start in range(0, n, 10):
        batch = [f"{tag} {i}" for i in range(start, min(n, start + 10))]
        p.add(batch, embeddings=rng.standard_normal((len(batch), DIM)).astype(np.float32))
    p.close()


if __name__ == "__main__":
    what, models, folder = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if what == "crash":
        crash(models, folder, sys.argv[4], sys.argv[5])
    elif what == "churn":
        churn(models, folder, int(sys.argv[4]))
    else:
        writer(models, folder, sys.argv[4], int(sys.argv[5]))
