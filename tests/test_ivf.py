"""IVFIndex: exactness at nprobe = nlist, int8 recall, refine, edits, persistence, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rankfunnel as rf
from conftest import assert_topk, reference
from rankfunnel import _core, synthetic

DATA = Path(__file__).parent / "data"


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    return synthetic.clustered(n, d, clusters=20, spread=0.3, seed=seed, normalize=False, unit_centres=False)


def built(
    metric: str, storage: str = "f32", n: int = 3000, d: int = 24, nlist: int = 16
) -> tuple[rf.IVFIndex, np.ndarray]:
    x = clustered(n, d)
    idx = rf.IVFIndex(d, nlist=nlist, metric=metric, storage=storage)
    idx.train(x)
    idx.add(x)
    return idx, x


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_full_probe_equals_flat_exactly(simd_level: str, metric: str) -> None:
    idx, x = built(metric)
    q = clustered(20, 24, seed=5)
    flat = rf.FlatIndex(24, metric)
    flat.add(x)
    s, i = idx.search(q, k=15, nprobe=idx.nlist)
    fs, fi = flat.search(q, k=15)
    np.testing.assert_array_equal(i, fi)
    np.testing.assert_allclose(s, fs, rtol=1e-5, atol=1e-5)
    assert_topk(s, i, q, x, metric, 15)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_int8_recall_and_refine(u8_kernel: str, metric: str) -> None:
    idx, x = built(metric, "int8", n=4000, d=32)
    q = clustered(100, 32, seed=9)
    truth = rf.topk(q, x, 10, metric)[1]
    assert recall(idx.search(q, k=10, nprobe=idx.nlist)[1], truth) >= 0.97
    s, i = idx.search(q, k=10, nprobe=idx.nlist, refine=4)
    assert recall(i, truth) >= 0.999
    # Refined scores are the exact float32 scores of the ids returned.
    ref = rf.FlatIndex(32, metric)
    ref.add(x)
    for row_s, row_i, qv in zip(s, i, q):
        exact = ref.search(qv, k=len(x))
        lookup = dict(zip(exact[1].tolist(), exact[0].tolist()))
        np.testing.assert_allclose(row_s, [lookup[j] for j in row_i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("d", [7, 32])
def test_int8_scan_matches_numpy(u8_kernel: str, metric: str, d: int) -> None:
    # Every vector in one list (nlist=1), so the int8 scores can be checked one by one against
    # float64 scores of the decoded vectors; the error comes from the int8 query weights only.
    x = clustered(500, d, seed=3)
    idx = rf.IVFIndex(d, nlist=1, metric=metric, storage="int8")
    idx.train(x)
    idx.add(x)
    lo, hi = x.min(0).astype(np.float64), x.max(0).astype(np.float64)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    dec = lo + np.clip(np.round((x - lo) / step), 0, 255) * step
    q = clustered(20, d, seed=4)
    s, i = idx.search(q, k=500, nprobe=1)
    ref = reference(q, dec, metric)
    got = np.take_along_axis(ref, i, 1)
    # Weights q * step are rounded to multiples of scale = max|q * step| / 127; the error per
    # dimension is at most scale / 2 times |code - 127.5| (the mid-range part is added back).
    scale = (np.abs(q.astype(np.float64)) * step).max(1, keepdims=True) / 127
    tol = scale / 2 * 127.5 * d * (2 if metric == "l2" else 1) + 1e-4 * (1 + np.abs(got))
    assert np.all(np.abs(s - got) <= tol)
    # ... and the ranking is close to the exact one on the decoded vectors.
    best = np.argsort(ref if metric == "l2" else -ref, axis=1)[:, :10]
    assert recall(i[:, :10], best) >= 0.9


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_format_1_int8_files_load(tmp_path: Path, metric: str) -> None:
    # Written by rankfunnel before the quad code layout (format 1): codes are converted on load,
    # and the result is the index this build makes from the same data.
    old = rf.load(DATA / f"ivf_int8_v1_{metric}.rfi")
    x = np.random.default_rng(7).standard_normal((300, 10)).astype(np.float32)
    new = rf.IVFIndex(10, nlist=4, metric=metric, storage="int8")
    # The v1 files were trained by an AVX-512 build, whose k-means sums match the scalar
    # reference bit for bit on this data; AVX2's 8-lane sums round the last bit differently.
    before = rf.simd_level()
    _core._force_simd_level("scalar")
    try:
        new.train(x, threads=1)
    finally:
        _core._force_simd_level(before)
    new.add(x, threads=1)
    new.remove([3, 100])
    for nprobe, refine in ((1, 0), (4, 0), (4, 3)):
        a = old.search(x[:40], k=8, nprobe=nprobe, refine=refine)
        b = new.search(x[:40], k=8, nprobe=nprobe, refine=refine)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    old.save(tmp_path / "a.rfi")
    new.save(tmp_path / "b.rfi")
    assert (tmp_path / "a.rfi").read_bytes() == (tmp_path / "b.rfi").read_bytes()


def test_int8_memory_is_under_a_third_of_f32() -> None:
    f, _ = built("l2", "f32", n=5000, d=256, nlist=8)
    q, _ = built("l2", "int8", n=5000, d=256, nlist=8)
    assert q.memory_bytes() <= 0.3 * f.memory_bytes()


def test_more_probes_never_lose_recall_on_average() -> None:
    idx, x = built("cosine", n=4000, nlist=32)
    q = clustered(100, 24, seed=2)
    truth = rf.topk(q, x, 10, "cosine")[1]
    recalls = [recall(idx.search(q, k=10, nprobe=p)[1], truth) for p in (1, 4, 16, 32)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0


@pytest.mark.parametrize("storage", ["f32", "int8"])
def test_remove_add_filter_and_single_query(storage: str) -> None:
    idx, x = built("l2", storage)
    gone = np.arange(0, 3000, 2)
    assert idx.remove(gone) == 1500
    assert len(idx) == 1500 and 0 not in idx and 1 in idx
    _, ids = idx.search(x[:50], k=20, nprobe=16, refine=2)
    assert not set(ids.ravel().tolist()) & set(gone.tolist())
    new = idx.add(x[:10])
    assert new.tolist() == list(range(3000, 3010))
    s, i = idx.search(x[4], k=3, nprobe=16)
    assert i.shape == (3,) and i[0] in (3000 + 4, 4)
    allowed = np.arange(1, 3000, 10)
    _, fi = idx.search(x[:5], k=5, nprobe=16, filter=allowed)
    assert set(fi.ravel().tolist()) <= set(allowed.tolist())
    with pytest.raises(rf.UnknownIdError):
        idx.remove([1, 0])
    assert 1 in idx


@pytest.mark.parametrize("storage", ["f32", "int8"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path: Path, storage: str, mmap: bool) -> None:
    idx, x = built("cosine", storage)
    idx.remove([5, 6, 7])
    path = tmp_path / "ivf.rfi"
    idx.save(path)
    before = path.read_bytes()
    back = rf.load(path, mmap=mmap)
    assert isinstance(back, rf.IVFIndex)
    assert (len(back), back.nlist, back.storage, back.metric) == (len(idx), 16, storage, "cosine")
    for nprobe, refine in ((3, 0), (16, 3)):
        a = idx.search(x[:30], k=7, nprobe=nprobe, refine=refine)
        b = back.search(x[:30], k=7, nprobe=nprobe, refine=refine)
        np.testing.assert_array_equal(a[1], b[1])
    assert back.add(x[:2]).tolist() == [3000, 3001]
    back.remove([8, 3000])
    assert path.read_bytes() == before
    if mmap and storage == "int8":
        assert rf.IVFIndex.load(path, mmap=True).refine_bytes() == 0


def test_damaged_file(tmp_path: Path) -> None:
    idx, _ = built("l2")
    path = tmp_path / "ivf.rfi"
    idx.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(rf.CorruptFileError):
        rf.IVFIndex.load(path)
    flat = rf.FlatIndex(4)
    flat.save(path)
    with pytest.raises(rf.CorruptFileError, match="not an IVFIndex"):
        rf.IVFIndex.load(path)


def test_untrained_index_and_bad_arguments() -> None:
    idx = rf.IVFIndex(8, nlist=4, metric="l2")
    with pytest.raises(rf.RankfunnelError, match="not trained"):
        idx.add(np.ones((3, 8)))
    with pytest.raises(rf.RankfunnelError, match="not trained"):
        idx.search(np.ones(8))
    with pytest.raises(rf.RankfunnelError, match="needs at least"):
        idx.train(np.ones((3, 8)))
    with pytest.raises(rf.RankfunnelError, match="unknown storage"):
        rf.IVFIndex(8, nlist=4, storage="int4")
    x = clustered(100, 8)
    idx.train(x)
    idx.add(x)
    with pytest.raises(rf.RankfunnelError, match="train before adding"):
        idx.train(x)
    with pytest.raises(rf.RankfunnelError, match="nprobe must be at least 1"):
        idx.search(x[0], nprobe=0)
    with pytest.raises(rf.RankfunnelError, match="dimension mismatch"):
        idx.search(np.ones(9))
    s, i = idx.search(x[0], k=5, nprobe=100)  # nprobe > nlist is capped
    assert i[0] == 0
    empty = rf.IVFIndex(8, nlist=2, metric="dot")
    empty.train(x)
    s, i = empty.search(x[:2], k=3)
    assert np.all(i == -1) and np.all(s == -np.inf)
