"""rf.maxsim and rf.PackedDocs against a float64 numpy reference, at every SIMD level."""

from __future__ import annotations

import numpy as np
import pytest

import rankfunnel as rf


def ref_maxsim(q: np.ndarray, docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """float64 MaxSim per document and the magnitude sum_i max_j |q_i| |d_j| (for tolerances)."""
    q64 = q.astype(np.float64)
    qn = np.linalg.norm(q64, axis=1)
    out, mag = np.zeros(len(docs)), np.zeros(len(docs))
    for i, d in enumerate(docs):
        if len(d) == 0:
            continue
        d64 = d.astype(np.float64)
        out[i] = (q64 @ d64.T).max(axis=1).sum()
        mag[i] = (qn[:, None] * np.linalg.norm(d64, axis=1)[None, :]).max(axis=1).sum()
    return out, mag


def ragged(rng: np.random.Generator, n: int, d: int, lo: int = 0, hi: int = 60) -> list[np.ndarray]:
    return [rng.standard_normal((int(k), d)).astype(np.float32) for k in rng.integers(lo, hi, n)]


@pytest.mark.parametrize("d,m", [(1, 1), (7, 5), (16, 16), (33, 17), (128, 32), (96, 70)])
def test_matches_float64_reference(simd_level: str, d: int, m: int) -> None:
    rng = np.random.default_rng(d * 100 + m)
    docs = ragged(rng, 40, d)
    docs[5] = np.zeros((0, d), dtype=np.float32)
    q = rng.standard_normal((m, d)).astype(np.float32)
    want, mag = ref_maxsim(q, docs)
    for got in (rf.maxsim(q, docs, threads=2), rf.maxsim(q, rf.PackedDocs(docs), threads=1)):
        assert got.shape == (40,) and got.dtype == np.float32
        assert np.all(np.abs(got - want) <= 1e-5 * np.maximum(mag, 1.0))
    assert got[5] == 0.0


def test_several_queries(simd_level: str) -> None:
    rng = np.random.default_rng(3)
    docs = ragged(rng, 25, 64, 1, 90)
    qs = [rng.standard_normal((m, 64)).astype(np.float32) for m in (1, 16, 31, 40)]
    got = rf.maxsim(qs, docs)
    assert got.shape == (4, 25)
    for i, q in enumerate(qs):
        want, mag = ref_maxsim(q, docs)
        assert np.all(np.abs(got[i] - want) <= 1e-5 * np.maximum(mag, 1.0))
    # A 3-D (nq, m, d) array and a 3-D docs array work too.
    q3 = np.stack([qs[1], qs[1]])
    d3 = np.stack([d[:1] for d in docs])
    np.testing.assert_array_equal(rf.maxsim(q3, d3)[1], rf.maxsim(qs[1], list(d3)))


@pytest.mark.parametrize("dtype,scale", [("f16", "token"), ("int8", "token"), ("int8", "dim")])
def test_compressed_tokens(simd_level: str, dtype: str, scale: str) -> None:
    rng = np.random.default_rng(7)
    d = 128
    docs = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in ragged(rng, 30, d, 1, 120)]
    q = rng.standard_normal((32, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    packed = rf.PackedDocs(docs, dtype=dtype, int8_scale=scale)
    got = rf.maxsim(q, packed)
    # Exactly (to f32 rounding) the MaxSim of the decoded tokens ...
    dec = [packed.doc(i) for i in range(len(packed))]
    want_dec, mag = ref_maxsim(q, dec)
    assert np.all(np.abs(got - want_dec) <= 1e-5 * np.maximum(mag, 1.0))
    # ... and within the documented bound of the float32 tokens' MaxSim.
    want, _ = ref_maxsim(q, docs)
    if dtype == "f16":
        bound = 32 * 2.0**-11
    else:
        peak = max(np.abs(x).max() for x in docs)
        bound = 32 * np.sqrt(d) * peak / 127 / 2
    assert np.abs(got - want).max() <= bound
    assert packed.nbytes < sum(x.nbytes for x in docs)


def test_from_flat_and_repr() -> None:
    rng = np.random.default_rng(1)
    flat = rng.standard_normal((50, 8)).astype(np.float32)
    offsets = np.array([0, 10, 10, 50])
    p = rf.PackedDocs.from_flat(flat, offsets)
    assert len(p) == 3 and p.dim == 8 and p.n_tokens == 50
    assert p.tokens is flat or np.shares_memory(p.tokens, flat)
    assert "n_docs=3" in repr(p)
    q = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(rf.maxsim(q, p), rf.maxsim(q, [flat[:10], flat[10:10], flat[10:]]))
    assert rf.maxsim(q, p)[1] == 0.0
    np.testing.assert_array_equal(p.lengths, [10, 0, 40])


def test_bad_input() -> None:
    rng = np.random.default_rng(2)
    docs = ragged(rng, 4, 16, 1, 10)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    with pytest.raises(rf.RankfunnelError, match="dimension mismatch"):
        rf.maxsim(q[:, :8], docs)
    with pytest.raises(rf.RankfunnelError, match="dimension mismatch"):
        rf.maxsim(q[:, :8], rf.PackedDocs(docs))
    with pytest.raises(rf.RankfunnelError, match="no tokens"):
        rf.maxsim(np.zeros((0, 16), np.float32), docs)
    bad = [d.copy() for d in docs]
    bad[2][0, 3] = np.nan
    with pytest.raises(rf.RankfunnelError, match="document 2"):
        rf.maxsim(q, bad)
    with pytest.raises(rf.RankfunnelError, match="document 2"):
        rf.PackedDocs(bad)
    bad[2][0, 3] = np.inf
    with pytest.raises(rf.RankfunnelError, match="document 2"):
        rf.maxsim(q, bad)
    qn = q.copy()
    qn[1, 1] = np.nan
    with pytest.raises(rf.RankfunnelError, match="NaN"):
        rf.maxsim(qn, docs)
    with pytest.raises(rf.RankfunnelError, match="offsets"):
        rf.PackedDocs.from_flat(np.zeros((5, 4), np.float32), [0, 3])
    with pytest.raises(rf.RankfunnelError, match="dtype"):
        rf.PackedDocs(docs, dtype="bf16")
    with pytest.raises(rf.RankfunnelError, match="4-D"):
        rf.maxsim(q, [np.zeros((1, 2, 3, 16))])
    with pytest.raises(rf.RankfunnelError):
        rf.maxsim(q, docs, threads=0)
    assert rf.maxsim(q, [np.zeros(0), np.zeros((0, 5)), docs[0]])[:2].tolist() == [0.0, 0.0]
    assert rf.maxsim(q, []).shape == (0,)
    assert rf.maxsim([q, q], []).shape == (2, 0)


def test_threads_give_identical_results() -> None:
    rng = np.random.default_rng(4)
    docs = ragged(rng, 300, 32, 0, 50)
    q = rng.standard_normal((20, 32)).astype(np.float32)
    a = rf.maxsim(q, docs, threads=1)
    np.testing.assert_array_equal(a, rf.maxsim(q, docs, threads=2))
    np.testing.assert_array_equal(a, rf.maxsim(q, docs, threads=3))
