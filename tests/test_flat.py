"""FlatIndex: results against numpy, id handling, removal, persistence and bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rankfunnel as rf
from conftest import assert_topk


def make(n: int, d: int, metric: str = "cosine", seed: int = 0) -> tuple[rf.FlatIndex, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    idx = rf.FlatIndex(d, metric)
    idx.add(x)
    return idx, x


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    d=st.one_of(st.integers(1, 33), st.sampled_from([128, 384, 1536])),
    n=st.integers(0, 300),
    k=st.integers(1, 320),
    metric=st.sampled_from(["cosine", "dot", "l2"]),
    seed=st.integers(0, 2**31),
    one_d=st.booleans(),
)
def test_search_matches_numpy(
    simd_level: str, d: int, n: int, k: int, metric: str, seed: int, one_d: bool
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.permutation(10 * n + 1)[:n].astype(np.int64)
    idx = rf.FlatIndex(d, metric)
    assert idx.add(x, ids=labels).tolist() == labels.tolist()
    q = rng.standard_normal((3, d)).astype(np.float32)
    if one_d:
        s, i = idx.search(q[0], k=k)
        assert s.shape == (k,)
        assert_topk(s[None], i[None], q[:1], x, metric, k, labels)
    else:
        s, i = idx.search(q, k=k)
        assert_topk(s, i, q, x, metric, k, labels)


def test_default_ids_continue_and_remove_works() -> None:
    idx, x = make(10, 4, "l2")
    assert idx.add(x[:2]).tolist() == [10, 11]
    assert idx.add(x[:1], ids=[100]).tolist() == [100]
    assert idx.add(x[:1]).tolist() == [101]
    assert len(idx) == 14
    assert idx.remove([0, 5, 100]) == 3
    assert len(idx) == 11 and 5 not in idx and 6 in idx
    _, ids = idx.search(x, k=14)
    assert not ({0, 5, 100} & set(ids.ravel().tolist()))
    np.testing.assert_allclose(idx.get([6]), x[6:7])


def test_remove_unknown_id_removes_nothing() -> None:
    idx, _ = make(10, 4)
    with pytest.raises(rf.UnknownIdError, match="unknown id 42"):
        idx.remove([1, 42])
    with pytest.raises(KeyError):
        idx.remove(43)
    assert len(idx) == 10 and 1 in idx


@pytest.mark.parametrize(
    ("vectors", "ids", "message"),
    [
        (np.ones((2, 5)), None, "dimension mismatch"),
        (np.ones((2, 4, 1)), None, "2-D"),
        (np.array([[1, 2, np.nan, 4]]), None, "NaN or infinity"),
        (np.array([[1, 2, -np.inf, 4]]), None, "NaN or infinity"),
        (np.ones((2, 4)), [7, 7], "duplicate id 7"),
        (np.ones((2, 4)), [3, 20], "id 3 is already in the index"),
        (np.ones((2, 4)), [-1, 20], "non-negative"),
        (np.ones((2, 4)), [20], "got 1 ids for 2 vectors"),
        (np.ones((2, 4)), [1.5, 2.5], "integers"),
        (np.ones((2, 4)), [[1, 2]], "1-D"),
    ],
)
def test_failed_add_leaves_the_index_unchanged(vectors: object, ids: object, message: str) -> None:
    idx, x = make(10, 4)
    before = idx.search(x, k=10)
    with pytest.raises(rf.RankfunnelError, match=message):
        idx.add(vectors, ids=ids)
    assert len(idx) == 10
    after = idx.search(x, k=10)
    np.testing.assert_array_equal(before[1], after[1])
    assert idx.add(x[:1]).tolist() == [10]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda i: i.search(np.ones(3)), "dimension mismatch"),
        (lambda i: i.search(np.ones(4), k=0), "k must be at least 1"),
        (lambda i: i.search(np.full(4, np.nan)), "NaN or infinity"),
        (lambda i: rf.FlatIndex(0), "dim must be at least 1"),
        (lambda i: rf.FlatIndex(4, metric="manhattan"), "unknown metric"),
    ],
)
def test_bad_search_arguments(call: object, message: str) -> None:
    idx, _ = make(5, 4)
    with pytest.raises(rf.RankfunnelError, match=message):
        call(idx)  # type: ignore[operator]


def test_filter_restricts_results() -> None:
    idx, x = make(500, 16, "dot")
    allowed = np.arange(0, 500, 7)
    s, ids = idx.search(x[:5], k=20, filter=allowed)
    assert set(ids.ravel().tolist()) <= set(allowed.tolist())
    sub = rf.FlatIndex(16, "dot")
    sub.add(x[allowed], ids=allowed)
    s2, ids2 = sub.search(x[:5], k=20)
    np.testing.assert_array_equal(ids, ids2)
    s3, ids3 = idx.search(x[0], k=5, filter=[3, 999_999])
    assert ids3.tolist() == [3, -1, -1, -1, -1]


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_save_load_round_trip(tmp_path: Path, mmap: bool, metric: str) -> None:
    idx, x = make(1000, 24, metric)
    idx.remove([3, 500])
    path = tmp_path / "flat.rfi"
    idx.save(path)
    for back in (rf.FlatIndex.load(path, mmap=mmap), rf.load(path, mmap=mmap)):
        assert isinstance(back, rf.FlatIndex)
        assert (len(back), back.dim, back.metric) == (len(idx), 24, metric)
        np.testing.assert_array_equal(back.search(x[:7], k=9)[1], idx.search(x[:7], k=9)[1])
        assert back.add(x[:1]).tolist() == [1000]


def test_mmap_loaded_file_is_never_modified(tmp_path: Path) -> None:
    idx, x = make(300, 8)
    path = tmp_path / "i.rfi"
    idx.save(path)
    before = path.read_bytes()
    back = rf.FlatIndex.load(path, mmap=True)
    back.search(x, k=5)
    back.add(x[:3])
    back.remove([1, 2])
    assert path.read_bytes() == before
    assert len(rf.FlatIndex.load(path)) == 300


def test_corrupted_truncated_and_foreign_files(tmp_path: Path, rng: np.random.Generator) -> None:
    idx, _ = make(100, 8)
    path = tmp_path / "i.rfi"
    idx.save(path)
    good = path.read_bytes()
    bad = tmp_path / "bad.rfi"
    for pos in [0, 5, 8, 12, 30, 61, *rng.integers(64, len(good), 25).tolist()]:
        data = bytearray(good)
        data[pos] ^= 0xFF
        bad.write_bytes(bytes(data))
        with pytest.raises(rf.CorruptFileError):
            rf.FlatIndex.load(bad)
    for cut in [0, 7, 40, 64, 100, len(good) // 2, len(good) - 1]:
        bad.write_bytes(good[:cut])
        with pytest.raises(rf.CorruptFileError, match="truncated|bad magic"):
            rf.load(bad, mmap=True)
    bad.write_bytes(b"PK\x03\x04 this is a zip file, not an index" * 4)
    with pytest.raises(rf.CorruptFileError, match="not a rankfunnel index"):
        rf.load(bad)
    newer = bytearray(good)
    newer[8] = 200
    bad.write_bytes(bytes(newer))
    with pytest.raises(rf.UnsupportedVersionError, match="newer"):
        rf.load(bad)
    with pytest.raises(FileNotFoundError):
        rf.load(tmp_path / "missing.rfi")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    idx, _ = make(50, 4)
    path = tmp_path / "i.rfi"
    idx.save(path)
    idx.add(np.ones((1, 4)))
    idx.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["i.rfi"]
    assert len(rf.load(path)) == 51
    with pytest.raises(OSError):
        idx.save(tmp_path / "no-such-dir" / "i.rfi")
    assert [p.name for p in tmp_path.iterdir()] == ["i.rfi"]


def test_concurrent_adds_and_searches_are_safe() -> None:
    idx, x = make(2000, 32, "dot")
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                s, ids = idx.search(x[:4], k=10)
                assert np.all(ids >= 0)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(50):
        new = idx.add(x[i : i + 5])
        idx.remove(new[:2])
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(idx) == 2000 + 50 * 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    d=st.sampled_from([1, 3, 16, 31, 128, 384]),
    n=st.integers(1024, 2500),
    k=st.sampled_from([1, 10, 100, 3000]),
    metric=st.sampled_from(["cosine", "dot", "l2"]),
    nq=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**31),
    clustered=st.booleans(),
    filtered=st.booleans(),
)
def test_bf16_prefilter_is_exact(
    simd_level: str, d: int, n: int, k: int, metric: str, nq: int, seed: int, clustered: bool, filtered: bool
) -> None:
    """One- and two-query searches scan the bfloat16 copy; results must equal the float32 scan."""
    rng = np.random.default_rng(seed)
    if clustered:  # near-duplicates make the rounding margins matter
        base = rng.standard_normal((8, d))
        x = (base[rng.integers(0, 8, n)] + 1e-3 * rng.standard_normal((n, d))).astype(np.float32)
    else:
        x = rng.standard_normal((n, d)).astype(np.float32) * 10
    x[5] = x[7]  # an exact tie
    labels = rng.permutation(n).astype(np.int64)
    fast = rf.FlatIndex(d, metric)
    slow = rf.FlatIndex(d, metric, bf16_copy=False)
    fast.add(x, ids=labels)
    slow.add(x, ids=labels)
    q = x[rng.integers(0, n, nq)] + rng.standard_normal((nq, d)).astype(np.float32) * 0.01
    allow = rng.choice(labels, size=n // 3, replace=False) if filtered else None
    s1, i1 = fast.search(q, k=k, filter=allow)
    s2, i2 = slow.search(q, k=k, filter=allow)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    if not filtered:
        assert_topk(s1, i1, q, x, metric, k, labels)


def test_prefilter_survives_remove_and_save(tmp_path: Path) -> None:
    idx, x = make(3000, 20, "l2")
    idx.remove(np.arange(0, 3000, 3))
    ref = rf.FlatIndex(20, "l2", bf16_copy=False)
    keep = np.setdiff1d(np.arange(3000), np.arange(0, 3000, 3))
    ref.add(x[keep], ids=keep)
    for q in x[:20]:
        np.testing.assert_array_equal(idx.search(q, k=7)[1], ref.search(q, k=7)[1])
    path = tmp_path / "p.rfi"
    idx.save(path)
    back = rf.FlatIndex.load(path, mmap=True)
    assert back.bf16_copy
    np.testing.assert_array_equal(back.search(x[:2], k=7)[1], ref.search(x[:2], k=7)[1])
    ref.save(path)
    assert not rf.FlatIndex.load(path).bf16_copy


@pytest.mark.parametrize("prefilter", [False, True])
def test_a_stream_of_single_adds_equals_one_bulk_add(prefilter: bool) -> None:
    """Buffers grown by half their length at a time (a single add into a large index no longer
    copies it whole): the result, ids, rows and scores, is that of one bulk add, with the memory
    held within the growth factor."""
    g = np.random.default_rng(7)
    x = g.standard_normal((600, 24)).astype(np.float32)
    q = g.standard_normal((9, 24)).astype(np.float32)
    bulk = rf.FlatIndex(24, "l2", bf16_copy=prefilter)
    bulk.add(x)
    stream = rf.FlatIndex(24, "l2", bf16_copy=prefilter)
    stream.add(x[:400])
    for i in range(400, 600):
        assert stream.add(x[i : i + 1])[0] == i
    assert len(stream) == 600 and np.array_equal(stream.get(np.arange(600)), x)
    s1, i1 = bulk.search(q, 10)
    s2, i2 = stream.search(q, 10)
    assert np.array_equal(i1, i2) and np.array_equal(s1, s2)
    assert stream.memory_bytes() <= 2.5 * bulk.memory_bytes()
