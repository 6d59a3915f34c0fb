"""IVFIndex coarse quantizer: the centroid graph against brute force, its settings, persistence,
and files written before it existed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rankfunnel as rf
from conftest import assert_topk, reference

DATA = Path(__file__).parent / "data"


def owners(idx: rf.IVFIndex, x: np.ndarray) -> np.ndarray:
    """The list (nearest centroid, exactly) of each row of ``x``."""
    c = idx.centroids
    if idx.metric == "l2":
        return np.argmin(reference(x, c, "l2"), axis=1)
    return np.argmax(reference(x, c, "dot"), axis=1)


def probed(idx: rf.IVFIndex, q: np.ndarray, owner: np.ndarray, nprobe: int) -> set[int]:
    """Positions of the rows whose list (``owner``) is among the ``nprobe`` nearest to ``q``."""
    metric = "l2" if idx.metric == "l2" else "dot"
    ref = reference(q[None], idx.centroids, metric)[0]
    order = np.argsort(ref) if metric == "l2" else np.argsort(-ref)
    return set(np.flatnonzero(np.isin(owner, order[:nprobe])).tolist())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    d=st.sampled_from([3, 16, 33]),
    n=st.integers(80, 600),
    nlist=st.integers(2, 40),
    k=st.sampled_from([1, 5, 20]),
    metric=st.sampled_from(["cosine", "dot", "l2"]),
    nq=st.sampled_from([1, 3, 9]),
    seed=st.integers(0, 2**31),
)
def test_graph_search_matches_brute_force(
    simd_level: str, d: int, n: int, nlist: int, k: int, metric: str, nq: int, seed: int
) -> None:
    """With every list probed the graph changes nothing: results equal brute force exactly. With
    fewer lists, every result is a true score of a stored vector, best first, ids unique."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    idx = rf.IVFIndex(d, nlist=nlist, metric=metric, coarse="hnsw")
    idx.train(x, iters=3)
    idx.add(x)
    assert idx.has_graph
    s, i = idx.search(q, k=k, nprobe=nlist, coarse_ef=nlist)
    assert_topk(s, i, q, x, metric, k)
    s, i = idx.search(q, k=k, nprobe=max(1, nlist // 3))
    ref = reference(q, x, metric)
    for row in range(nq):
        found = i[row][i[row] >= 0]
        assert len(set(found.tolist())) == len(found)
        np.testing.assert_allclose(s[row, : len(found)], ref[row, found], rtol=1e-4, atol=1e-4)
        order = s[row, : len(found)]
        assert np.all(np.diff(order) >= -1e-6) if metric == "l2" else np.all(np.diff(order) <= 1e-6)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_graph_picks_the_nearest_lists(simd_level: str, metric: str) -> None:
    """List-choice recall of the graph walk, and search recall equal to the exact quantizer's."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((300, 32))
    x = (centres[rng.integers(0, 300, 6000)] + 0.3 * rng.standard_normal((6000, 32))).astype(np.float32)
    q = x[rng.choice(6000, 40, replace=False)] + 0.05
    exact = rf.IVFIndex(32, nlist=256, metric=metric, coarse="exact")
    exact.train(x, iters=4)
    exact.add(x)
    graph = rf.IVFIndex(32, nlist=256, metric=metric, coarse="hnsw")
    graph.train(x, iters=4)
    graph.add(x)
    np.testing.assert_array_equal(graph.centroids, exact.centroids)
    owner = owners(exact, x)
    for nprobe in (4, 16):
        hits = total = 0
        _, found = graph.search(q, k=len(x), nprobe=nprobe)
        for row, got in zip(q, found):
            want = probed(exact, row, owner, nprobe)
            got_set = set(got[got >= 0].tolist())
            hits += len(got_set & want)
            total += len(want)
        assert hits / total >= 0.95, (
            f"nprobe={nprobe}: the graph found {hits / total:.3f} of the lists' vectors"
        )
    a = exact.search(q, k=10, nprobe=16)[1]
    b = graph.search(q, k=10, nprobe=16)[1]
    assert np.mean([len(set(u) & set(v)) / 10 for u, v in zip(a, b)]) >= 0.95


def test_settings_and_auto_threshold() -> None:
    x = np.random.default_rng(0).standard_normal((1100, 8)).astype(np.float32)
    small = rf.IVFIndex(8, nlist=16)
    assert small.coarse == "auto"
    small.train(x)
    assert not small.has_graph  # below the threshold auto scans the centroids
    large = rf.IVFIndex(8, nlist=1024)
    large.train(x, iters=1)
    assert large.has_graph
    large.add(x)
    before = large.search(x[:5], k=3, nprobe=1024, coarse_ef=1024)
    large.set_coarse("exact")
    assert large.coarse == "exact" and not large.has_graph
    after = large.search(x[:5], k=3, nprobe=1024)
    np.testing.assert_array_equal(before[1], after[1])
    small.set_coarse("hnsw")
    assert small.has_graph
    untrained = rf.IVFIndex(8, nlist=4, coarse="hnsw")
    assert not untrained.has_graph and untrained.coarse == "hnsw"
    with pytest.raises(rf.RankfunnelError, match="coarse"):
        rf.IVFIndex(8, nlist=4, coarse="tree")
    with pytest.raises(rf.RankfunnelError, match="coarse"):
        small.set_coarse("tree")
    assert small.coarse == "hnsw" and small.has_graph
    with pytest.raises(rf.RankfunnelError, match="coarse_ef"):
        small.search(x[:1], k=1, coarse_ef=-1)


@pytest.mark.parametrize("coarse", ["hnsw", "exact", "auto"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path: Path, coarse: str, mmap: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((900, 12)).astype(np.float32)
    idx = rf.IVFIndex(12, nlist=30, metric="l2", coarse=coarse)
    idx.train(x)
    idx.add(x)
    idx.remove([5, 6])
    path = tmp_path / "ivf.rfi"
    idx.save(path)
    back = rf.load(path, mmap=mmap)
    assert isinstance(back, rf.IVFIndex)
    assert back.coarse == coarse and back.has_graph == idx.has_graph
    for nprobe in (1, 3, 30):
        a = idx.search(x[:50], k=7, nprobe=nprobe)
        b = back.search(x[:50], k=7, nprobe=nprobe)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    back.save(tmp_path / "again.rfi")
    assert (tmp_path / "again.rfi").read_bytes() == path.read_bytes()


def test_format_2_file_loads_and_rebuilds_the_graph(tmp_path: Path) -> None:
    """Written by rankfunnel before the coarse setting existed (format 2, nlist = 1024): it loads
    as ``coarse="auto"``, builds its graph, and searches like the index this build makes."""
    old = rf.load(DATA / "ivf_f32_v2_nlist1024.rfi")
    assert isinstance(old, rf.IVFIndex)
    assert old.coarse == "auto" and old.has_graph and old.nlist == 1024
    x = np.random.default_rng(11).standard_normal((1100, 2)).astype(np.float32)
    assert len(old) == len(x)
    exact = old.search(x[:30], k=5, nprobe=1024, coarse_ef=1024)
    assert_topk(exact[0], exact[1], x[:30], x, "l2", 5)
    walked = old.search(x[:30], k=1, nprobe=1)[1].ravel()
    assert np.mean(walked == np.arange(30)) >= 0.9
    old.save(tmp_path / "v3.rfi")
    again = rf.load(tmp_path / "v3.rfi")
    np.testing.assert_array_equal(
        again.search(x[:30], k=5, nprobe=8)[1], old.search(x[:30], k=5, nprobe=8)[1]
    )
