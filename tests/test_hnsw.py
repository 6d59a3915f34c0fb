"""HNSWIndex: recall against FlatIndex, conventions, filters, a stateful model test, threads,
persistence and damaged files."""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import rankfunnel as rf
from conftest import assert_topk
from rankfunnel import synthetic


def clustered(n: int, d: int, *, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres (like sentence embeddings)."""
    return synthetic.clustered(n, d, clusters=clusters, spread=0.5, seed=seed)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def built() -> tuple[rf.HNSWIndex, rf.FlatIndex, np.ndarray, np.ndarray]:
    x = clustered(6000, 32, seed=1)
    q = clustered(200, 32, seed=2)
    h = rf.HNSWIndex(32, "cosine", m=16, ef_construction=100)
    h.add(x)
    f = rf.FlatIndex(32, "cosine")
    f.add(x)
    return h, f, x, q


def test_recall_is_high_and_grows_with_ef(
    built: tuple[rf.HNSWIndex, rf.FlatIndex, np.ndarray, np.ndarray],
) -> None:
    h, f, _, q = built
    _, truth = f.search(q, k=10)
    recalls = [recall(h.search(q, k=10, ef=ef)[1], truth) for ef in (10, 20, 40, 80, 160, 320)]
    assert recalls[-1] >= 0.99, recalls
    assert all(b >= a - 0.01 for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] < recalls[-1] or recalls[0] >= 0.99


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_every_simd_level_and_metric(simd_level: str, metric: str) -> None:
    x = clustered(1500, 24, seed=3) * np.float32(2.0)
    q = clustered(40, 24, seed=4)
    h = rf.HNSWIndex(24, metric, m=12, ef_construction=80, seed=5)
    h.add(x, threads=2)
    f = rf.FlatIndex(24, metric)
    f.add(x)
    fs, fi = f.search(q, k=10)
    hs, hi = h.search(q, k=10, ef=200)
    assert recall(hi, fi) >= 0.97
    # Where the top hit agrees, so does its score (the true metric value).
    same = hi[:, 0] == fi[:, 0]
    assert same.mean() >= 0.95
    np.testing.assert_allclose(hs[same, 0], fs[same, 0], rtol=1e-4, atol=1e-5)


def test_shapes_padding_ties_and_ef_below_k() -> None:
    x = np.array([[1, 0], [0, 1], [1, 0], [0.5, 0.5]], dtype=np.float32)
    for metric, pad in (("cosine", -np.inf), ("dot", -np.inf), ("l2", np.inf)):
        h = rf.HNSWIndex(2, metric, m=4)
        assert h.add(x, ids=[9, 4, 2, 7]).tolist() == [9, 4, 2, 7]
        s, i = h.search([1.0, 0.0], k=6, ef=1)
        assert s.shape == i.shape == (6,) and s.dtype == np.float32 and i.dtype == np.int64
        assert i[:2].tolist() == [2, 9]  # equal vectors: the lower id first
        assert i[4:].tolist() == [-1, -1] and np.all(s[4:] == pad)
        s2, i2 = h.search(np.stack([x[0], x[1]]), k=1)
        assert s2.shape == (2, 1) and i2[:, 0].tolist() == [2, 4]
    h = rf.HNSWIndex(2, "l2")
    s, i = h.search([0.0, 1.0], k=3)
    assert i.tolist() == [-1, -1, -1] and np.all(s == np.inf)
    assert len(h) == 0 and "HNSWIndex" in repr(h)


def test_cosine_normalises_and_get_returns_stored_vectors() -> None:
    h = rf.HNSWIndex(3, "cosine")
    h.add([[3.0, 0, 4.0], [0, 0, 0]], ids=[1, 2])
    np.testing.assert_allclose(h.get([1, 2]), [[0.6, 0, 0.8], [0, 0, 0]], rtol=1e-6)
    s, i = h.search([0.0, 0.0, 2.0], k=2)
    np.testing.assert_allclose(s, [0.8, 0.0], rtol=1e-6)
    assert i.tolist() == [1, 2] and 1 in h and 5 not in h


@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (lambda h: h.add(np.ones((2, 5))), rf.RankfunnelError, "dimension mismatch"),
        (lambda h: h.add(np.array([[1, np.nan, 0, 0]])), rf.RankfunnelError, "NaN or infinity"),
        (lambda h: h.add(np.ones((2, 4)), ids=[7, 7]), rf.RankfunnelError, "duplicate id 7"),
        (lambda h: h.add(np.ones((1, 4)), ids=[0]), rf.RankfunnelError, "already in the index"),
        (lambda h: h.add(np.ones((1, 4)), ids=[-3]), rf.RankfunnelError, "non-negative"),
        (lambda h: h.search(np.ones(4), k=0), rf.RankfunnelError, "k must be at least 1"),
        (lambda h: h.search(np.ones(4), ef=0), rf.RankfunnelError, "ef must be at least 1"),
        (lambda h: h.search(np.ones(3)), rf.RankfunnelError, "dimension mismatch"),
        (lambda h: h.search(np.full(4, np.inf)), rf.RankfunnelError, "NaN or infinity"),
        (lambda h: h.search(np.ones((2, 4)), filter=[[1]]), rf.RankfunnelError, "1 filter lists for 2"),
        (lambda h: h.search(np.ones(4), filter_mode="fast"), rf.RankfunnelError, "filter_mode"),
        (lambda h: h.remove([1, 99]), rf.UnknownIdError, "unknown id 99"),
    ],
)
def test_bad_input_raises_and_changes_nothing(call: object, exc: type, message: str) -> None:
    h = rf.HNSWIndex(4, "l2", m=4)
    h.add(np.eye(4, dtype=np.float32))
    with pytest.raises(exc, match=message):
        call(h)  # type: ignore[operator]
    assert len(h) == 4 and 1 in h
    assert sorted(h.search(np.ones(4), k=4)[1].tolist()) == [0, 1, 2, 3]


def test_bad_parameters() -> None:
    with pytest.raises(rf.RankfunnelError, match="m must be between 2"):
        rf.HNSWIndex(4, m=1)
    with pytest.raises(rf.RankfunnelError, match="unknown metric"):
        rf.HNSWIndex(4, "manhattan")
    with pytest.raises(rf.RankfunnelError, match="dim must be at least 1"):
        rf.HNSWIndex(0)
    with pytest.raises(rf.RankfunnelError, match="seed"):
        rf.HNSWIndex(4, seed=-1)


def test_small_allow_list_returns_k_allowed_results(
    built: tuple[rf.HNSWIndex, rf.FlatIndex, np.ndarray, np.ndarray],
) -> None:
    h, f, _, q = built
    allow = np.random.default_rng(0).choice(len(h), 25, replace=False)
    for mode in ("auto", "graph", "exact"):
        s, i = h.search(q[:50], k=10, ef=32, filter=allow, filter_mode=mode)
        assert np.isin(i, allow).all(), mode  # 10 valid allowed ids in every row
        _, want = f.search(q[:50], k=10, filter=allow)
        assert recall(i, want) >= 0.98, mode
    # Fewer allowed than k: all of them, then padding.
    s, i = h.search(q[0], k=10, filter=[5, 6, 7])
    assert sorted(i[:3].tolist()) == [5, 6, 7] and i[3:].tolist() == [-1] * 7
    assert np.all(s[3:] == -np.inf)
    _, i = h.search(q[0], k=3, filter=[])
    assert i.tolist() == [-1, -1, -1]


def test_broad_filter_walks_the_graph(
    built: tuple[rf.HNSWIndex, rf.FlatIndex, np.ndarray, np.ndarray],
) -> None:
    h, f, _, q = built
    allow = np.arange(0, len(h), 2)
    _, i = h.search(q, k=10, ef=128, filter=allow, filter_mode="graph")
    _, want = f.search(q, k=10, filter=allow)
    assert np.isin(i, allow).all() and recall(i, want) >= 0.97


def test_per_query_filters(built: tuple[rf.HNSWIndex, rf.FlatIndex, np.ndarray, np.ndarray]) -> None:
    h, f, _, q = built
    rng = np.random.default_rng(1)
    lists = [rng.choice(len(h), size, replace=False) for size in (3, 30, 300, 3000)]
    s, i = h.search(q[:4], k=5, ef=64, filter=lists)
    for row, allowed, qi in zip(i, lists, range(4)):
        valid = row[row >= 0]
        assert len(valid) == min(5, len(allowed)) and np.isin(valid, allowed).all()
        _, want = f.search(q[qi], k=5, filter=allowed)
        assert len(set(valid.tolist()) & set(want.tolist())) >= min(5, len(allowed)) - 1
    # A 2-D array is one row per query.
    _, i2 = h.search(q[:2], k=2, filter=np.array([[1, 2], [3, 4]]))
    assert set(i2[0].tolist()) == {1, 2} and set(i2[1].tolist()) == {3, 4}


def test_remove_and_slot_reuse() -> None:
    x = clustered(2000, 16, seed=7)
    h = rf.HNSWIndex(16, "l2", m=8, ef_construction=64)
    h.add(x)
    gone = np.arange(0, 2000, 2)
    assert h.remove(gone) == 1000 and len(h) == 1000
    _, i = h.search(x, k=10, ef=64)
    assert not np.isin(i, gone).any()
    slots = h._index.slots
    new = h.add(clustered(800, 16, seed=8))
    assert h._index.slots == slots  # deleted slots were reused
    assert new.tolist() == list(range(2000, 2800))
    live = h.ids
    _, i = h.search(h.get(live), k=1, ef=200)
    assert (i[:, 0] == live).mean() >= 0.99
    _, i = h.search(x, k=10)
    assert not np.isin(i, gone).any()


class HNSWModel(RuleBasedStateMachine):
    """Random adds, removes, searches and save/load against a dict of live vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.idx = rf.HNSWIndex(6, "l2", m=4, ef_construction=24, seed=3)
        self.live: dict[int, np.ndarray] = {}
        self.removed: set[int] = set()
        self.next_id = 0
        self.tmp = tempfile.TemporaryDirectory()

    def teardown(self) -> None:
        self.tmp.cleanup()

    @rule(n=st.integers(1, 25), seed=st.integers(0, 2**16), explicit=st.booleans())
    def add(self, n: int, seed: int, explicit: bool) -> None:
        v = np.random.default_rng(seed).standard_normal((n, 6)).astype(np.float32)
        if explicit:
            ids = np.arange(n) * 3 + self.next_id + 1000
            got = self.idx.add(v, ids=ids, threads=1)
        else:
            got = self.idx.add(v, threads=1)
        assert len(set(got.tolist()) & set(self.live)) == 0
        for i, row in zip(got.tolist(), v):
            self.live[i] = row
        self.removed -= set(got.tolist())
        self.next_id = max(self.live, default=-1) + 1 if self.live else self.next_id
        self.next_id = max(self.next_id, max(got.tolist()) + 1)

    @precondition(lambda self: len(self.live) > 0)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.live)), min_size=1, max_size=10, unique=True))
        if data.draw(st.booleans()):
            with pytest.raises(rf.UnknownIdError):
                self.idx.remove([*ids, 10**9])
            assert len(self.idx) == len(self.live)
            return
        assert self.idx.remove(ids) == len(ids)
        for i in ids:
            del self.live[i]
            self.removed.add(i)

    @rule(seed=st.integers(0, 2**16), k=st.integers(1, 12))
    def search(self, seed: int, k: int) -> None:
        q = np.random.default_rng(seed).standard_normal((3, 6)).astype(np.float32)
        s, i = self.idx.search(q, k=k, ef=16)
        assert not (set(i.ravel().tolist()) & self.removed)
        for row in i:
            valid = row[row >= 0]
            assert len(valid) == min(k, len(self.live)) and set(valid.tolist()) <= set(self.live)

    @rule(mmap=st.booleans())
    def save_load(self, mmap: bool) -> None:
        p = Path(self.tmp.name) / "h.rfi"
        self.idx.save(p)
        self.idx = rf.HNSWIndex.load(p, mmap=mmap)
        assert self.idx.is_mapped == mmap

    @invariant()
    def every_live_id_is_findable(self) -> None:
        assert len(self.idx) == len(self.live)
        if not self.live:
            return
        ids = np.array(sorted(self.live))
        vecs = np.stack([self.live[i] for i in ids])
        s, i = self.idx.search(vecs, k=1, ef=max(64, len(ids)))
        assert (s[:, 0] == 0).all(), "a live vector was not found by its own query"
        # The id found is this one, or an earlier one holding the very same vector.
        for want, got in zip(ids.tolist(), i[:, 0].tolist()):
            assert want == got or (got < want and np.array_equal(self.live[got], self.live[want]))


TestHNSWModel = HNSWModel.TestCase
TestHNSWModel.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_threads_search_while_one_thread_edits() -> None:
    d = 16
    base = clustered(3000, d, seed=11)
    h = rf.HNSWIndex(d, "cosine", m=8, ef_construction=48)
    h.add(base)
    removed: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = time.monotonic() + 5.0

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while time.monotonic() < stop:
                with lock:
                    gone = set(removed)
                q = rng.standard_normal((int(rng.integers(1, 8)), d)).astype(np.float32)
                flt: Optional[np.ndarray] = rng.integers(0, 6000, 200) if rng.random() < 0.3 else None
                s, i = h.search(q, k=10, ef=32, filter=flt, threads=int(rng.integers(1, 3)))
                assert s.shape == i.shape == (len(q), 10)
                assert not (set(i.ravel().tolist()) & gone)
                assert (i[i >= 0] >= 0).all() and np.isfinite(s[i >= 0]).all()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def editor() -> None:
        rng = np.random.default_rng(99)
        try:
            while time.monotonic() < stop:
                h.add(clustered(50, d, seed=int(rng.integers(1 << 30))), threads=2)
                live = h.ids
                victims = rng.choice(live, 40, replace=False)
                h.remove(victims)
                with lock:
                    removed.update(victims.tolist())
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=editor))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    _, i = h.search(h.get(h.ids), k=1, ef=128)
    assert not (set(i.ravel().tolist()) & removed)
    assert (i[:, 0] == h.ids).mean() >= 0.99


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_save_load_mmap_is_never_modified(tmp_path: Path) -> None:
    x = clustered(1500, 16, seed=12)
    h = rf.HNSWIndex(16, "cosine", m=8, ef_construction=64, seed=2)
    h.add(x)
    h.remove([3, 4, 5])
    p = tmp_path / "h.rfi"
    h.save(p)
    digest = _sha(p)
    assert rf._core.file_kind(str(p)) == "HNSWIndex"
    for loaded in (rf.load(p, mmap=True), rf.HNSWIndex.load(p, mmap=True), rf.HNSWIndex.load(p)):
        assert isinstance(loaded, rf.HNSWIndex)
        assert len(loaded) == len(h) and loaded.m == 8 and loaded.metric == "cosine"
        np.testing.assert_array_equal(loaded.search(x[:50], k=5)[1], h.search(x[:50], k=5)[1])
        loaded.search(x[:50], k=5, filter=np.arange(100))
        loaded.add(x[:20])
        loaded.remove([6, 7])
        assert not loaded.is_mapped and len(loaded) == len(h) + 18
        assert 3 not in loaded and not np.isin(loaded.search(x[:10], k=10)[1], [3, 4, 5, 6, 7]).any()
    assert _sha(p) == digest
    # A single-threaded build is deterministic for a seed.
    a, b = (rf.HNSWIndex(16, "l2", m=6, ef_construction=32, seed=9) for _ in range(2))
    a.add(x[:500], threads=1)
    b.add(x[:500], threads=1)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert _sha(tmp_path / "a") == _sha(tmp_path / "b")


def test_damaged_files_raise_clear_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    h = rf.HNSWIndex(8, "l2", m=4)
    h.add(clustered(300, 8, seed=13))
    p = tmp_path / "h.rfi"
    h.save(p)
    good = p.read_bytes()
    bad = tmp_path / "bad.rfi"
    for cut in (0, 10, 63, 64, 500, len(good) // 2, len(good) - 1):
        bad.write_bytes(good[:cut])
        with pytest.raises(rf.CorruptFileError):
            rf.HNSWIndex.load(bad)
    for at in rng.integers(0, len(good), 20):
        data = bytearray(good)
        data[at] ^= 0x10
        bad.write_bytes(bytes(data))
        for mmap in (False, True):
            with pytest.raises(rf.CorruptFileError):
                rf.load(bad, mmap=mmap)
    f = rf.FlatIndex(8)
    f.add(np.ones((2, 8)))
    f.save(bad)
    with pytest.raises(rf.CorruptFileError, match="not an HNSWIndex"):
        rf.HNSWIndex.load(bad)
    with pytest.raises(FileNotFoundError):
        rf.HNSWIndex.load(tmp_path / "missing.rfi")


def test_memory_is_compact() -> None:
    x = clustered(2000, 64, seed=14)
    h = rf.HNSWIndex(64, "cosine", m=16, bf16_copy=False)
    h.add(x)
    per_vector = h.memory_bytes() / len(h)
    # 256 bytes of vector + 33 u32 of level-0 links + ids and map: well under 2x the vector.
    assert 64 * 4 < per_vector < 64 * 4 + 33 * 4 + 120
    # The bfloat16 walk copy adds 2 bytes per dimension, and gives the same results here.
    p = rf.HNSWIndex(64, "cosine", m=16, codes="bf16")
    p.add(x, threads=1)
    h2 = rf.HNSWIndex(64, "cosine", m=16, bf16_copy=False)
    h2.add(x, threads=1)
    assert p.bf16_copy and not h2.bf16_copy
    assert 0 < p.memory_bytes() / len(p) - per_vector <= 64 * 2 + 8
    q = clustered(50, 64, seed=15)
    _, ip = p.search(q, k=10, ef=200)
    _, ih = h2.search(q, k=10, ef=200)
    assert recall(ip, ih) >= 0.97


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_stream_of_single_adds_keeps_every_vector_findable(metric: str) -> None:
    """Single-vector adds carry the graph's in-degrees over and reconnect islands only every
    ``n / 32`` nodes (a full pass is O(n)); every vector stays reachable, so ``ef = n`` is exact."""
    x = synthetic.clustered(1500, 16, clusters=12, spread=0.4, seed=3, normalize=metric == "cosine")
    h = rf.HNSWIndex(16, metric, m=8, ef_construction=48, seed=1)
    h.add(x[:1000])
    for i in range(1000, 1500):
        h.add(x[i : i + 1])
    s, ids = h.search(x[::5], k=1, ef=1500)
    assert np.array_equal(ids[:, 0], np.arange(0, 1500, 5))
    q = synthetic.clustered(20, 16, clusters=12, spread=0.4, seed=4, normalize=metric == "cosine")
    assert_topk(*h.search(q, k=10, ef=1500), q, x, metric, 10)
