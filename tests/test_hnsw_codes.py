"""HNSWIndex walk copies (``codes="bf16" | "int8" | "none"``): results against numpy brute force at
every SIMD level, exact float32 scores, ranges refit as the index grows, persistence (and files
written before int8 codes existed), memory and the constructor's spellings."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rankfunnel as rf
from conftest import assert_topk, reference
from rankfunnel import _core, synthetic

DATA = Path(__file__).parent / "data"
METRICS = ["cosine", "dot", "l2"]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def truth(q: np.ndarray, x: np.ndarray, metric: str, k: int) -> np.ndarray:
    ref = reference(q, x, metric)
    return np.argsort(ref if metric == "l2" else -ref, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", METRICS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 250),
    d=st.integers(2, 40),
    k=st.integers(1, 12),
    offset=st.floats(-3, 3),
    spread=st.floats(0.1, 10),
    seed=st.integers(0, 2**16),
)
def test_int8_walks_match_numpy(
    simd_level: str, metric: str, n: int, d: int, k: int, offset: float, spread: float, seed: int
) -> None:
    # With ef >= n the beam holds every node the walk reaches, so the rescored results are the
    # exact top-k, scores included, when every node is reachable on level 0. Inner products on
    # vectors of unequal norms can leave a node unreachable (with any walk copy, float32 too),
    # so for "dot" only the scores of what is found, and the count, are checked; so can exact
    # duplicates (d = 1 after normalizing), which the data here avoids.
    g = np.random.default_rng(seed)
    x = (offset + spread * g.standard_normal((n, d))).astype(np.float32)
    q = (offset + spread * g.standard_normal((7, d))).astype(np.float32)
    h = rf.HNSWIndex(d, metric, m=6, ef_construction=32, seed=seed, codes="int8")
    h.add(x, threads=2)
    s, i = h.search(q, k=k, ef=n)
    if metric != "dot":
        assert_topk(s, i, q, x, metric, k)
        return
    assert np.all(i[:, : min(k, n)] >= 0) and np.all(i[:, min(k, n) :] == -1)
    ref = reference(q, x, metric)
    found = np.take_along_axis(ref, np.maximum(i, 0), 1)[:, : min(k, n)]
    # float32 sums against float64: the error scales with |q| |x|, not with the (maybe cancelled) score.
    scale = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(x, axis=1)[np.maximum(i, 0)][:, : min(k, n)]
    tol = 1e-5 * np.maximum(scale, 1.0)
    assert np.all(np.abs(s[:, : min(k, n)] - found) <= tol)


@pytest.mark.parametrize("metric", METRICS)
def test_int8_recall_at_every_level_is_that_of_bf16(simd_level: str, metric: str) -> None:
    x = synthetic.clustered(3000, 32, clusters=30, spread=0.5, seed=1, normalize=metric == "cosine")
    q = synthetic.clustered(100, 32, clusters=30, spread=0.5, seed=2, normalize=metric == "cosine")
    want = truth(q, x, metric, 10)
    found = {}
    for codes in ("bf16", "int8"):
        # One build thread: the graph is then the same on every run, so the comparison is of the
        # walk copies alone (threaded builds are covered elsewhere and move recall by +-0.03 here).
        h = rf.HNSWIndex(32, metric, m=12, ef_construction=80, seed=4, codes=codes)
        h.add(x, threads=1)
        found[codes] = recall(h.search(q, k=10, ef=48)[1], want)
        s, i = h.search(q, k=10, ef=128)
        # Every id comes with its exact float32 score.
        ref = reference(q, x, metric)
        np.testing.assert_allclose(s, np.take_along_axis(ref, i, 1), rtol=1e-5, atol=1e-5)
        if metric != "dot":
            assert recall(i, want) >= 0.97, (codes, metric)
    # Inner products of vectors of unequal norms are the graph's hard case (recall about 0.82 at
    # ef=48 with either copy); the codes may cost a little more there.
    assert found["int8"] >= found["bf16"] - (0.05 if metric == "dot" else 0.03), found


def test_vectors_outside_the_fitted_ranges() -> None:
    # The ranges are fit on a first add of five nearly equal vectors; the next, larger adds
    # refit them (the index doubled), and a small far batch after that clamps yet is found.
    d = 16
    x = synthetic.clustered(2000, d, clusters=20, spread=0.5, seed=6, normalize=False, unit_centres=False)
    h = rf.HNSWIndex(d, "l2", m=8, ef_construction=64, codes="int8")
    h.add(x[:5] * np.float32(0.001))
    h.add(x[5:1000])
    h.add(x[1000:])
    far = x[:3] * np.float32(40.0)
    far_ids = h.add(far)
    everything = np.vstack([x[:5] * np.float32(0.001), x[5:], far])
    q = synthetic.clustered(50, d, clusters=20, spread=0.5, seed=7, normalize=False, unit_centres=False)
    assert recall(h.search(q, k=10, ef=64)[1], truth(q, everything, "l2", 10)) >= 0.95
    s, i = h.search(far, k=1, ef=64)
    np.testing.assert_array_equal(i[:, 0], far_ids)
    np.testing.assert_allclose(s[:, 0], 0.0, atol=1e-3)


@pytest.mark.parametrize("codes", ["bf16", "int8", "none"])
@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip_then_add(tmp_path: Path, codes: str, mmap: bool) -> None:
    x = synthetic.clustered(800, 20, clusters=10, spread=0.5, seed=8)
    h = rf.HNSWIndex(20, "cosine", m=8, ef_construction=48, codes=codes)
    h.add(x)
    h.remove([3, 4])
    h.save(tmp_path / "h.rfi")
    g = rf.HNSWIndex.load(tmp_path / "h.rfi", mmap=mmap)
    assert (g.codes, g.bf16_copy, g.is_mapped) == (codes, codes == "bf16", mmap)
    if mmap:  # the vectors, links and walk copy stay in the mapped file
        assert g.memory_bytes() < h.memory_bytes() / 2
    q = x[:50]
    np.testing.assert_array_equal(h.search(q, k=5)[1], g.search(q, k=5)[1])
    # Vectors far outside the fitted ranges, added after the load.
    more = synthetic.clustered(30, 20, clusters=3, spread=0.5, seed=9) * np.float32(-1.0)
    ids = g.add(more)
    s, i = g.search(more, k=1, ef=64)
    np.testing.assert_array_equal(i[:, 0], ids)
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)
    g.save(tmp_path / "g.rfi")
    assert rf.load(tmp_path / "g.rfi").codes == codes


def _fixture_vectors(n: int, d: int) -> np.ndarray:
    """The vectors tests/data/hnsw_*_v3_*.rfi hold (exact in float32, same formula in Rust)."""
    i = np.arange(n)[:, None]
    t = np.arange(d)[None, :]
    return (((i * 31 + t * 17 + (i * t) % 7) % 101 - 50) * 0.03125).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "metric", "codes"), [("bf16_v3_l2", "l2", "bf16"), ("none_v3_dot", "dot", "none")]
)
def test_format_3_files_load(tmp_path: Path, name: str, metric: str, codes: str) -> None:
    # Written by rankfunnel before int8 walk codes (format 3, one build thread, scalar level):
    # they load, search and take adds, and this build writes the same layout from the same data
    # (same sections and sizes, same stored vectors; the links differ since the level-0 neighbour
    # choice of an insert keeps m links, as hnswlib does, where it kept 2m).
    path = DATA / f"hnsw_{name}.rfi"
    x = _fixture_vectors(400, 12)
    before = rf.simd_level()
    _core._force_simd_level("scalar")
    try:
        new = rf.HNSWIndex(12, metric, m=6, ef_construction=40, seed=3, codes=codes)
        new.add(x, threads=1)
        new.remove([5, 17, 200])
        new.save(tmp_path / "new.rfi")
    finally:
        _core._force_simd_level(before)
    assert len((tmp_path / "new.rfi").read_bytes()) == len(path.read_bytes())
    written, fixture = rf.HNSWIndex.load(tmp_path / "new.rfi"), rf.HNSWIndex.load(path)
    np.testing.assert_array_equal(written.ids, fixture.ids)
    np.testing.assert_array_equal(written.get(written.ids), fixture.get(fixture.ids))
    for mmap in (False, True):
        old = rf.HNSWIndex.load(path, mmap=mmap)
        assert (old.codes, old.bf16_copy, len(old)) == (codes, codes == "bf16", 397)
        live = np.delete(np.arange(400), [5, 17, 200])
        s, i = old.search(x[:30], k=8, ef=400)
        assert_topk(s, i, x[:30], x[live], metric, 8, labels=live)
        old.add(x[:10] + np.float32(1.0))
        assert len(old) == 407


def test_memory_per_vector() -> None:
    x = synthetic.clustered(2000, 64, clusters=20, spread=0.5, seed=10)
    size = {}
    for codes in ("none", "bf16", "int8"):
        h = rf.HNSWIndex(64, "cosine", m=16, codes=codes)
        h.add(x, threads=1)
        size[codes] = h.memory_bytes()
    assert size["bf16"] - size["none"] == 2000 * 64 * 2
    assert size["int8"] - size["none"] == 2000 * 64 + 2 * 64 * 4


def test_constructor_spellings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rf.HNSWIndex(4).codes == rf.hnsw.DEFAULT_CODES
        assert rf.HNSWIndex(4, bf16_copy=True).codes == "bf16"
        assert rf.HNSWIndex(4, bf16_copy=False).codes == "none"
        assert rf.HNSWIndex(4, codes="int8").bf16_copy is False
    with pytest.warns(DeprecationWarning):
        assert rf.HNSWIndex(4, prefilter=False).codes == "none"
    with pytest.raises(rf.RankfunnelError, match="not both"):
        rf.HNSWIndex(4, codes="int8", bf16_copy=True)
    with pytest.raises(rf.RankfunnelError, match="unknown codes 'int4'"):
        rf.HNSWIndex(4, codes="int4")
    assert rf.index_factory("hnsw8,int8", 4).codes == "int8"
    assert rf.index_factory("hnsw8,f32", 4).codes == "none"
    assert rf.index_factory("hnsw,codes=bf16", 4).codes == "bf16"
