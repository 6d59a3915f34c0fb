"""rf.kmeans against a numpy Lloyd reference from the same initial centroids."""

from __future__ import annotations

import numpy as np
import pytest

import rankfunnel as rf


def lloyd(x: np.ndarray, c: np.ndarray, iters: int) -> tuple[np.ndarray, float]:
    x64 = x.astype(np.float64)
    c = c.astype(np.float64).copy()
    for _ in range(iters):
        a = ((x64[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(c)):
            if np.any(a == j):
                c[j] = x64[a == j].mean(0)
    a = ((x64[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    return c, float(((x64 - c[a]) ** 2).sum())


def blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 4
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inertia_no_worse_than_numpy_lloyd(simd_level: str, seed: int) -> None:
    x = blobs(600, 8, 10, seed)
    init = x[np.random.default_rng(seed).choice(600, 10, replace=False)]
    c, a, inertia = rf.kmeans(x, 10, iters=10, init=init, return_inertia=True)
    _, ref_inertia = lloyd(x, init, 10)
    assert inertia <= ref_inertia * (1 + 1e-4)
    # Returned assignments are the nearest centroids, and the inertia matches them.
    d2 = ((x[:, None].astype(np.float64) - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(a, d2.argmin(1))
    assert inertia == pytest.approx(d2.min(1).sum(), rel=1e-4)


def test_deterministic_by_seed_and_kmeanspp_beats_random() -> None:
    x = blobs(3000, 16, 40, 7)
    c1, a1 = rf.kmeans(x, 40, iters=5, seed=3)
    c2, a2 = rf.kmeans(x, 40, iters=5, seed=3)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(a1, a2)
    pp = [rf.kmeans(x, 40, iters=0, seed=s, return_inertia=True)[2] for s in range(3)]
    rnd = [rf.kmeans(x, 40, iters=0, seed=s, init="random", return_inertia=True)[2] for s in range(3)]
    assert np.mean(pp) < np.mean(rnd)


def test_spherical_centroids_are_unit_length() -> None:
    x = blobs(500, 8, 5, 1)
    c, a = rf.kmeans(x, 5, iters=5, metric="cosine")
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(a, (xn @ c.T).argmax(1))


def test_empty_clusters_are_refilled() -> None:
    x = blobs(800, 4, 4, 3)
    init = np.repeat(x[:2], [3, 1], axis=0)  # three identical centroids: two start empty
    c, a = rf.kmeans(x, 4, iters=10, init=init)
    assert len(np.unique(a)) == 4


def test_bad_input() -> None:
    with pytest.raises(rf.RankfunnelError, match="at least k"):
        rf.kmeans(np.ones((3, 2)), 5)
    with pytest.raises(rf.RankfunnelError, match="NaN"):
        rf.kmeans(np.full((10, 2), np.nan), 2)
    with pytest.raises(rf.RankfunnelError, match="init"):
        rf.kmeans(np.ones((10, 2)), 2, init="kmeans||")
    with pytest.raises(rf.RankfunnelError, match="dimension mismatch"):
        rf.kmeans(np.ones((10, 2)), 2, init=np.ones((2, 3)))
