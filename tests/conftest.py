"""Shared fixtures: every SIMD level of this CPU, the seeded RNG, numpy references, the shared/ folder.

Clustered test data comes from :mod:`rankfunnel.synthetic` (shared with the benchmarks)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import rankfunnel as rf
from rankfunnel import _core, synthetic

LEVELS = rf.simd_levels()


@pytest.fixture(params=LEVELS)
def simd_level(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per SIMD level available here (scalar, avx2, avx512 / neon)."""
    before = rf.simd_level()
    _core._force_simd_level(request.param)
    try:
        yield request.param
    finally:
        _core._force_simd_level(before)


def _u8_variants() -> list[str]:
    """Each level, plus ``<level>-novnni`` where that level's int8 scan would use VNNI."""
    before = rf.simd_level()
    out = []
    for level in LEVELS:
        _core._force_simd_level(level)
        out.append(level)
        if _core._vnni_in_use():
            out.append(f"{level}-novnni")
    _core._force_simd_level(before)
    return out


@pytest.fixture(params=_u8_variants())
def u8_kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per u8 scan kernel here: every level, with and without VNNI."""
    level, _, novnni = request.param.partition("-")
    before = rf.simd_level()
    _core._force_simd_level(level)
    allowed = _core._allow_vnni(not novnni)
    try:
        yield request.param
    finally:
        _core._allow_vnni(allowed)
        _core._force_simd_level(before)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator seeded 0: the one seeded RNG of the test data (:func:`rankfunnel.synthetic.rng`)."""
    return synthetic.rng(0)


def shared_dir() -> Path:
    """The shared/ folder beside the repository (or $RANKFUNNEL_SHARED)."""
    env = os.environ.get("RANKFUNNEL_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def reference(queries: np.ndarray, corpus: np.ndarray, metric: str) -> np.ndarray:
    """float64 brute-force scores (nq, n): similarity for cosine/dot, squared distance for l2."""
    q = queries.astype(np.float64)
    c = corpus.astype(np.float64)
    if metric == "l2":
        return ((q[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    if metric == "cosine":
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        cn = np.linalg.norm(c, axis=1, keepdims=True)
        q = np.divide(q, qn, out=np.zeros_like(q), where=qn > 0)
        c = np.divide(c, cn, out=np.zeros_like(c), where=cn > 0)
    return q @ c.T


def tolerance(queries: np.ndarray, corpus: np.ndarray, metric: str) -> np.ndarray:
    """Per-pair absolute tolerance: 1e-5 relative to the magnitudes that enter each score."""
    q = np.linalg.norm(queries.astype(np.float64), axis=1)[:, None]
    c = np.linalg.norm(corpus.astype(np.float64), axis=1)[None, :]
    if metric == "cosine":
        return np.full((len(q), c.shape[1]), 1e-5)
    if metric == "dot":
        return 1e-5 * np.maximum(q * c, 1.0)
    return 1e-5 * np.maximum((q + c) ** 2, 1.0)


def assert_topk(
    scores: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    corpus: np.ndarray,
    metric: str,
    k: int,
    labels: np.ndarray | None = None,
) -> None:
    """Check results against the float64 reference: scores per rank, ids up to ties."""
    ref = reference(queries, corpus, metric)
    tol = tolerance(queries, corpus, metric)
    n = corpus.shape[0]
    labels = np.arange(n) if labels is None else labels
    pos = {int(lab): i for i, lab in enumerate(labels)}
    sign = 1.0 if metric == "l2" else -1.0
    assert scores.shape == ids.shape == (len(queries), k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    for qi in range(len(queries)):
        order = np.lexsort((labels, sign * ref[qi]))
        kk = min(k, n)
        got = [pos[int(i)] for i in ids[qi, :kk]]
        assert len(set(got)) == kk, "duplicate ids in one result row"
        # The score we report for each id is that id's true score ...
        np.testing.assert_allclose(
            scores[qi, :kk], ref[qi, got], atol=tol[qi, got].max() if kk else 0, rtol=0
        )
        # ... and rank by rank it equals the reference's (ids may differ only between ties).
        want = ref[qi, order[:kk]]
        assert np.all(np.abs(ref[qi, got] - want) <= 2 * tol[qi, got] + 2 * tol[qi, order[:kk]])
        # Padding.
        assert np.all(ids[qi, kk:] == -1)
        assert np.all(scores[qi, kk:] == (np.inf if metric == "l2" else -np.inf))
