"""Inputs that used to abort or crash the interpreter, or give silently wrong results (issue #13).

Every index kind (FlatIndex, HNSWIndex, IVFIndex, MultiVectorIndex) and rf.topk: huge ``k``
and ``ef``, a panic in the core, a mapped file truncated or edited under the index, cosine of
vectors whose squared norm leaves float32, scores that overflow float32, and degenerate k-means.
Calls that used to kill the process run in a subprocess, to prove the interpreter survives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import rankfunnel as rf

D = 8
KINDS = ["flat", "hnsw", "ivf"]


def vector_index(kind: str, x: np.ndarray, metric: str = "cosine") -> Any:
    """A vector index of ``kind`` holding ``x``."""
    d = x.shape[1]
    if kind == "flat":
        idx: Any = rf.FlatIndex(d, metric)
    elif kind == "hnsw":
        idx = rf.HNSWIndex(d, metric, m=4, ef_construction=16)
    else:
        idx = rf.IVFIndex(d, nlist=2, metric=metric)
        idx.train(x)
    idx.add(x)
    return idx


def docs(n: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, D)).astype(np.float32) for _ in range(n)]


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (after ``import rankfunnel as rf; import numpy as np``) in a fresh interpreter."""
    src = "import numpy as np\nimport rankfunnel as rf\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=120)


def assert_clear_error(code: str, words: str) -> None:
    """``code`` must raise a RankfunnelError mentioning ``words`` and the interpreter must go on."""
    wrapped = f"""
try:
{textwrap.indent(textwrap.dedent(code), "    ")}
except rf.RankfunnelError as e:
    print("ERR", e)
else:
    print("OK")
print("ALIVE")
"""
    r = run_isolated(wrapped)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ALIVE" in r.stdout
    assert "ERR" in r.stdout and words in r.stdout, r.stdout


SETUP = """
x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
"""

HUGE_K = {
    "flat": "idx = rf.FlatIndex(8); idx.add(x); idx.search(x, k=10**12)",
    "hnsw": "idx = rf.HNSWIndex(8, m=4); idx.add(x); idx.search(x, k=10**12)",
    "ivf": "idx = rf.IVFIndex(8, nlist=2); idx.train(x); idx.add(x); idx.search(x, k=10**12)",
    "multivector": "idx = rf.MultiVectorIndex(8); idx.add([x[:5], x[5:]]); idx.search(x[:3], k=10**12)",
    "multivector-rerank": (
        "idx = rf.MultiVectorIndex(8); idx.add([x[:5], x[5:]]); idx.rerank(x[:3], [0, 1], k=10**12)"
    ),
    "topk": "rf.topk(x, x, k=10**12)",
}


@pytest.mark.parametrize("case", sorted(HUGE_K))
def test_huge_k_is_a_clear_error_not_an_abort(case: str) -> None:
    assert_clear_error(SETUP + HUGE_K[case], "asks for a result of")


def test_huge_ef_is_served() -> None:
    r = run_isolated(
        SETUP
        + """
idx = rf.HNSWIndex(8, "l2", m=4)
idx.add(x)
s, i = idx.search(x, k=3, ef=2**40)
assert i[:, 0].tolist() == list(range(20)), i
print("ALIVE")
"""
    )
    assert r.returncode == 0 and "ALIVE" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("kind", KINDS)
def test_large_allocatable_k_is_padded(kind: str) -> None:
    x = np.random.default_rng(1).standard_normal((30, D)).astype(np.float32)
    idx = vector_index(kind, x, "l2")
    k = 200_000
    kwargs = {"nprobe": 2} if kind == "ivf" else {}
    s, i = idx.search(x[:2], k=k, **kwargs)
    assert s.shape == i.shape == (2, k)
    assert sorted(i[0, :30].tolist()) == list(range(30))
    assert (i[:, 30:] == -1).all() and np.isinf(s[:, 30:]).all()


def test_large_allocatable_k_multivector_and_topk() -> None:
    mv = rf.MultiVectorIndex(D)
    mv.add(docs())
    s, i = mv.search(docs(1, seed=5)[0], k=100_000, nprobe=64)
    assert i.shape == (100_000,) and sorted(i[:6].tolist()) == list(range(6)) and (i[6:] == -1).all()
    x = np.random.default_rng(2).standard_normal((10, D)).astype(np.float32)
    s, i = rf.topk(x, x, k=100_000)
    assert i.shape == (10, 100_000) and (i[:, 10:] == -1).all() and (i[:, 0] == np.arange(10)).all()


MAPPED = {
    "flat": "idx = rf.FlatIndex(8); idx.add(x)",
    "hnsw": "idx = rf.HNSWIndex(8, m=4); idx.add(x)",
    "ivf": "idx = rf.IVFIndex(8, nlist=2); idx.train(x); idx.add(x)",
    "multivector": "idx = rf.MultiVectorIndex(8, nbits=0); idx.add([x[:5], x[5:]])",
}


def mapped_script(kind: str, path: Path, change: str) -> str:
    search = "m.search(x[:3], k=3)" if kind == "multivector" else "m.search(x, k=3)"
    return (
        SETUP
        + MAPPED[kind]
        + f"""
idx.save({str(path)!r})
m = type(idx).load({str(path)!r}, mmap=True)
assert m.is_mapped
{search}
{change}
try:
    {search}
except rf.RankfunnelError as e:
    print("ERR", e)
else:
    print("OK")
print("ALIVE")
"""
    )


@pytest.mark.parametrize("kind", sorted(MAPPED))
def test_search_on_a_truncated_mapped_file_is_a_clear_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "i.rf"
    change = f"os.truncate({str(path)!r}, 100)"
    r = run_isolated("import os\n" + mapped_script(kind, path, change))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ALIVE" in r.stdout and "was truncated" in r.stdout and "load it again" in r.stdout, r.stdout


@pytest.mark.parametrize("kind", sorted(MAPPED))
def test_search_on_an_edited_mapped_file_is_a_clear_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "i.rf"
    change = f"""
import time
time.sleep(0.01)
with open({str(path)!r}, "r+b") as f:
    f.seek(-64, 2)
    f.write(b"\\xff" * 64)
"""
    r = run_isolated(mapped_script(kind, path, change))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ALIVE" in r.stdout and "was modified" in r.stdout, r.stdout


def test_a_mapped_file_replaced_by_rename_keeps_working(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((20, D)).astype(np.float32)
    idx = rf.FlatIndex(D, "l2")
    idx.add(x)
    path = tmp_path / "i.rf"
    idx.save(path)
    m = rf.FlatIndex.load(path, mmap=True)
    idx.add(x[:2])
    idx.save(path)  # temp file + rename: the mapping keeps the old file
    s, i = m.search(x, k=1)
    assert i[:, 0].tolist() == list(range(20))
    assert len(rf.FlatIndex.load(path)) == 22


def test_get_on_a_truncated_mapped_file_is_a_clear_error(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((20, D)).astype(np.float32)
    idx = rf.FlatIndex(D)
    idx.add(x)
    path = tmp_path / "i.rf"
    idx.save(path)
    m = rf.FlatIndex.load(path, mmap=True)
    os.truncate(path, 100)
    with pytest.raises(rf.RankfunnelError, match="was truncated"):
        m.get([3])
    with pytest.raises(rf.RankfunnelError, match="was truncated"):
        m.add(x[:1])
    assert len(m) == 20


def cosine_truth(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    xn = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    return qn @ xn.T


@pytest.mark.parametrize("scale", [1e19, 1e-25])
@pytest.mark.parametrize("kind", KINDS + ["topk"])
def test_cosine_of_huge_and_tiny_vectors(kind: str, scale: float) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((40, D)) * scale).astype(np.float32)
    q = (rng.standard_normal((5, D)) * scale).astype(np.float32)
    assert np.isfinite(x).all() and np.isfinite(q).all()
    truth = cosine_truth(q, x)
    k = 5
    if kind == "topk":
        s, i = rf.topk(q, x, k=k, metric="cosine")
    else:
        idx = vector_index(kind, x)
        kwargs: dict[str, int] = {"nprobe": 2} if kind == "ivf" else {"ef": 64} if kind == "hnsw" else {}
        s, i = idx.search(q, k=k, **kwargs)
    expected = np.argsort(-truth, axis=1, kind="stable")[:, :k]
    assert (i == expected).all(), (i, expected)
    np.testing.assert_allclose(s, np.take_along_axis(truth, expected, axis=1), atol=1e-5)
    if kind != "topk":
        got = idx.get(np.arange(3))
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


OVERFLOW: dict[str, Callable[[np.ndarray, str], Any]] = {
    "flat": lambda x, m: vector_index("flat", x, m).search(x, k=3),
    "hnsw": lambda x, m: vector_index("hnsw", x, m).search(x, k=3),
    "ivf": lambda x, m: vector_index("ivf", x, m).search(x, k=3, nprobe=2),
    "topk": lambda x, m: rf.topk(x, x, k=3, metric=m),
}


@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("kind", sorted(OVERFLOW))
def test_scores_overflowing_float32_are_a_clear_error_everywhere(kind: str, metric: str) -> None:
    x = (np.random.default_rng(4).standard_normal((20, D)) * 1e19).astype(np.float32)
    with pytest.raises(rf.RankfunnelError, match="overflow float32"):
        OVERFLOW[kind](x, metric)


def test_a_panic_in_the_core_is_a_rankfunnel_error() -> None:
    r = run_isolated(
        """
from rankfunnel import _core
try:
    _core._panic()
except rf.RankfunnelError as e:
    print("ERR", e)
print("ALIVE")
"""
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ERR internal error: a deliberate panic" in r.stdout and "please report" in r.stdout, r.stdout
    assert "ALIVE" in r.stdout


@pytest.mark.parametrize("nbits", [0, 2])
def test_multivector_with_few_distinct_tokens_finds_its_documents(nbits: int) -> None:
    # The first add has far fewer distinct tokens than centroids (degenerate k-means).
    base = np.random.default_rng(6).standard_normal((3, D)).astype(np.float32)
    documents = [np.repeat(base[i % 3][None], 40, axis=0) for i in range(30)]
    mv = rf.MultiVectorIndex(D, nbits=nbits, n_centroids=64)
    mv.add(documents)
    assert mv.n_centroids <= 3
    q = base[:1]
    s, i = mv.search(q, k=30)
    r_s, r_i = mv.rerank(q, np.arange(30), k=30)
    assert set(i[:10].tolist()) == set(range(0, 30, 3)) == set(r_i[:10].tolist())
    assert (i >= 0).all()
    np.testing.assert_allclose(s[:10], r_s[:10], rtol=1e-2)


SAVE_LOOP_INDEXES = {
    "flat": "rf.FlatIndex(32, 'ip')",
    "hnsw": "rf.HNSWIndex(32, 'ip', m=4, ef_construction=16)",
    # Format 3's graph sections over the centroids, besides the lists.
    "ivf-graph": "rf.IVFIndex(32, nlist=64, metric='ip', coarse='hnsw')",
    "ivf-int8": "rf.IVFIndex(32, nlist=16, metric='ip', storage='int8')",
}


@pytest.mark.parametrize("kind", SAVE_LOOP_INDEXES)
@pytest.mark.parametrize("delay", [0.05, 0.4])
def test_kill_during_save_leaves_the_old_or_the_new_file(tmp_path: Path, kind: str, delay: float) -> None:
    """kill -9 while `save` rewrites a file, again and again: the file loads whole, as the first
    version (100 vectors) or the second (all of them), with every vector as it was stored."""
    import signal
    import time

    path = tmp_path / "index.rf"
    script = f"""
import numpy as np
import rankfunnel as rf
x = np.random.default_rng(0).standard_normal((30_000, 32)).astype(np.float32)
idx = {SAVE_LOOP_INDEXES[kind]}
if hasattr(idx, "train"):
    idx.train(x[:5_000])
idx.add(x[:100])
idx.save({str(path)!r})
idx.add(x[100:])
print("saving", flush=True)
while True:
    idx.save({str(path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "saving"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    x = np.random.default_rng(0).standard_normal((30_000, 32)).astype(np.float32)
    for mmap in (False, True):
        loaded = rf.load(path, mmap=mmap)
        n = len(loaded)
        assert n in (100, 30_000)
        np.testing.assert_array_equal(np.sort(loaded.ids), np.arange(n))
        if kind != "ivf-int8":  # int8 lists keep codes, not the float32 vectors
            np.testing.assert_array_equal(loaded.get(np.arange(n)), x[:n])
        _, ids = loaded.search(x[:5], 1, threads=1)
        assert (ids >= 0).all()
        del loaded
    # What a kill leaves beside the file is a temporary one, never a second index name.
    assert all(p.name == "index.rf" or ".tmp" in p.name for p in tmp_path.iterdir())
