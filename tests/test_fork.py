"""Fork safety: a child forked after multithreaded calls (searches, adds, model calls) gets the
same answers as its parent instead of hanging on the parent's thread pools.

`multiprocessing` forks by default on Linux before Python 3.14, and so do `gunicorn --preload` and
Celery prefork: the child has only the forking thread, so a pool started in the parent has no
workers there. Each test runs the work in the parent first (starting the pools), forks, runs it
again in the child under a deadline and compares the two results.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import time
from typing import Any, Callable

import numpy as np
import pytest

import rankfunnel as rf
from conftest import shared_dir

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

DEADLINE_S = 30.0
TINY_MODEL = shared_dir() / "models" / "tiny-bi-encoder-mean"


def in_forked_child(work: Callable[[], Any]) -> Any:
    """``work()`` in a forked child; its (pickled) result, or a failure if it hangs or raises."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            payload = pickle.dumps(("ok", work()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload, code = pickle.dumps(("error", repr(e))), 1
        with os.fdopen(write, "wb") as w:
            w.write(payload)
        os._exit(code)
    os.close(write)
    start = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > DEADLINE_S:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read)
            pytest.fail(f"the forked child hung for {DEADLINE_S:.0f} s")
        time.sleep(0.02)
    with os.fdopen(read, "rb") as r:
        kind, value = pickle.loads(r.read())
    assert kind == "ok", f"the forked child failed: {value}"
    assert os.WEXITSTATUS(status) == 0
    return value


def same(a: Any, b: Any) -> None:
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(7)
    x = g.standard_normal((3000, 32)).astype(np.float32)
    return x, x[:20] + np.float32(0.01)


def check(work: Callable[[], Any]) -> None:
    parent = work()  # starts the thread pools in the parent
    same(in_forked_child(work), parent)


def test_fork_after_topk(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    check(lambda: rf.topk(q, x, k=5, threads=2))


def test_fork_after_flat_add_and_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    idx = rf.FlatIndex(dim=32, metric="cosine")
    idx.add(x)
    check(lambda: idx.search(q, k=5, threads=2))

    def add_then_search() -> Any:
        fresh = rf.FlatIndex(dim=32, metric="dot")
        fresh.add(x)
        return fresh.search(q, k=5, threads=2)

    check(add_then_search)


def test_fork_after_hnsw_add_and_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data

    def build_and_search() -> Any:
        h = rf.HNSWIndex(dim=32, metric="cosine", m=8, ef_construction=40, seed=1)
        h.add(x, threads=1)  # one thread: the same graph in parent and child
        return h.search(q, k=5, ef=32, threads=2)

    h = rf.HNSWIndex(dim=32, metric="cosine", m=8, ef_construction=40, seed=1)
    h.add(x, threads=2)
    check(lambda: h.search(q, k=5, ef=32, threads=2))
    check(build_and_search)


def test_fork_after_ivf_train_and_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    ivf = rf.IVFIndex(dim=32, nlist=16, metric="l2")
    ivf.train(x)
    ivf.add(x)
    check(lambda: ivf.search(q, k=5, nprobe=4, threads=2))
    check(lambda: rf.kmeans(x, 8, seed=3, threads=2)[0])


def test_fork_after_bm25_and_maxsim() -> None:
    texts = [f"wing flow number {i} boundary layer {i % 7}" for i in range(500)]
    bm = rf.BM25Index()
    bm.add(texts)
    check(lambda: bm.search(["boundary layer 3", "wing"], k=5, threads=2))
    g = np.random.default_rng(1)
    docs = [g.standard_normal((int(n), 16)).astype(np.float32) for n in g.integers(1, 20, 200)]
    query = g.standard_normal((8, 16)).astype(np.float32)
    check(lambda: rf.maxsim(query, docs, threads=2))


def _pool_search(seed: int) -> Any:
    x = np.random.default_rng(seed).standard_normal((2000, 16)).astype(np.float32)
    return rf.topk(x[:4], x, k=3, threads=2)[1]


def test_multiprocessing_fork_pool_after_a_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    rf.topk(q, x, k=5, threads=2)  # the pools are running when the pool forks its workers
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map_async(_pool_search, [1, 2, 3]).get(timeout=DEADLINE_S)
    for seed, ids in zip([1, 2, 3], got):
        np.testing.assert_array_equal(ids, _pool_search(seed))


@pytest.mark.skipif(not TINY_MODEL.is_dir(), reason="needs ../shared/models")
def test_fork_after_a_model_call() -> None:
    pytest.importorskip("onnxruntime")
    enc = rf.BiEncoder(str(TINY_MODEL))
    texts = [f"a sentence about wings and flow, number {i}" for i in range(64)]
    parent = enc.encode(texts)
    child = in_forked_child(lambda: enc.encode(texts))
    np.testing.assert_allclose(child, parent, rtol=0, atol=1e-6)


def test_children_of_children(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    want = rf.topk(q, x, k=5, threads=2)

    def grandchild() -> Any:
        rf.topk(q, x, k=5, threads=2)  # the child's own pools, then fork again
        return in_forked_child(lambda: rf.topk(q, x, k=5, threads=2))

    same(in_forked_child(grandchild), want)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
