"""HNSWIndex filtered search, every ``filter_mode`` against numpy brute force: random and
correlated allow-lists at every selectivity, ``k`` above the allowed count, empty lists, unknown
ids, one list per query, deleted ids, at every SIMD level."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rankfunnel as rf
from rankfunnel import synthetic

N, D = 2000, 16
MODES = ("auto", "graph", "acorn", "exact")


def make(metric: str, removed: int) -> tuple[rf.HNSWIndex, np.ndarray, np.ndarray]:
    """An index over clustered vectors (ids = rows), ``removed`` of them removed; returns it, the
    vectors and the live mask."""
    x = synthetic.clustered(N, D, clusters=20, spread=0.5, seed=1)
    h = rf.HNSWIndex(D, metric, m=8, ef_construction=64, seed=2)
    h.add(x, threads=1)
    live = np.ones(N, dtype=bool)
    if removed:
        gone = np.random.default_rng(3).choice(N, removed, replace=False)
        h.remove(gone)
        live[gone] = False
    return h, x, live


@pytest.fixture(scope="module")
def indexes() -> dict[tuple[str, int], tuple[rf.HNSWIndex, np.ndarray, np.ndarray]]:
    """One index per (metric, removed count), built once."""
    return {(metric, removed): make(metric, removed) for metric in ("cosine", "l2") for removed in (0, 300)}


def scores_of(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """float64 brute-force scores (nq, n): cosine similarity or squared L2 distance."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        return ((q64[:, None, :] - x64[None]) ** 2).sum(-1)
    q64 /= np.linalg.norm(q64, axis=1, keepdims=True)
    x64 /= np.linalg.norm(x64, axis=1, keepdims=True)
    return q64 @ x64.T


def allow_list(x: np.ndarray, frac: float, kind: str, seed: int) -> np.ndarray:
    """``frac`` of the ids: random, or the ones nearest to a random anchor row (one region)."""
    rng = np.random.default_rng(seed)
    m = int(round(N * frac))
    if kind == "random":
        return rng.choice(N, m, replace=False)
    anchor = x[int(rng.integers(N))]
    return np.argsort(((x - anchor) ** 2).sum(1), kind="stable")[:m]


def check(
    ids: np.ndarray,
    scores: np.ndarray,
    q: np.ndarray,
    x: np.ndarray,
    metric: str,
    k: int,
    allowed: list[np.ndarray],
    exact: bool,
) -> float:
    """Assert the invariants every mode keeps; returns recall@k against brute force.

    Every row holds ``min(k, allowed live)`` distinct allowed live ids, each with its true score
    (float32), best first, then padding; exact searches also match the brute-force ranking."""
    ref = scores_of(q, x, metric)
    sign = 1.0 if metric == "l2" else -1.0
    pad = np.inf if metric == "l2" else -np.inf
    hits = total = 0
    for qi, ok in enumerate(allowed):
        ok = np.unique(ok)
        want_n = min(k, len(ok))
        row = ids[qi]
        got = row[:want_n]
        assert np.all(row[want_n:] == -1) and np.all(scores[qi, want_n:] == pad), "padding"
        assert np.isin(got, ok).all() and len(set(got.tolist())) == want_n, "allowed, distinct ids"
        np.testing.assert_allclose(scores[qi, :want_n], ref[qi, got], rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(sign * scores[qi, :want_n]) >= -1e-6), "best first"
        best = ok[np.lexsort((ok, sign * ref[qi, ok]))][:want_n]
        if exact:
            np.testing.assert_allclose(ref[qi, got], ref[qi, best], rtol=1e-5, atol=1e-5)
        if want_n:
            # Tie-aware: an id scoring as well as the k-th best counts (a correlated query is the
            # midpoint of two rows, which then tie for the top).
            kth = sign * ref[qi, best[-1]]
            hits += int(np.sum(sign * ref[qi, got] <= kth + 1e-6))
        total += want_n
    return hits / total if total else 1.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    metric=st.sampled_from(["cosine", "l2"]),
    removed=st.sampled_from([0, 300]),
    mode=st.sampled_from(MODES),
    kind=st.sampled_from(["random", "correlated"]),
    frac=st.sampled_from([0.5, 0.1, 0.01, 0.001, 0.0]),
    k=st.sampled_from([1, 5, 10, 30]),
    nq=st.sampled_from([1, 3, 12]),
    per_query=st.booleans(),
    unknown=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_mode_against_brute_force(
    simd_level: str,
    indexes: dict[tuple[str, int], tuple[rf.HNSWIndex, np.ndarray, np.ndarray]],
    metric: str,
    removed: int,
    mode: str,
    kind: str,
    frac: float,
    k: int,
    nq: int,
    per_query: bool,
    unknown: bool,
    seed: int,
) -> None:
    h, x, live = indexes[(metric, removed)]
    rng = np.random.default_rng(seed)
    lists = [allow_list(x, frac, kind, seed + i) for i in range(nq if per_query else 1)]
    if kind == "correlated":
        # Queries in the allowed region: midpoints of two allowed rows (any rows when empty).
        pool = [lst if len(lst) else np.arange(N) for lst in lists]
        pick = [pool[i % len(pool)] for i in range(nq)]
        q = np.stack([(x[rng.choice(p)] + x[rng.choice(p)]) / 2 for p in pick]).astype(np.float32)
    else:
        q = synthetic.clustered(nq, D, clusters=20, spread=0.5, seed=seed)
    if unknown:
        lists = [np.concatenate([lst, [N + 5, 10**12]]) for lst in lists]
    flt: object = lists if per_query else lists[0]
    scores, ids = h.search(q, k=k, ef=64, filter=flt, filter_mode=mode)
    known = [lst[(lst < N)] for lst in lists]
    allowed = [lst[live[lst]] for lst in (known if per_query else known * nq)]
    r = check(ids, scores, q, x, metric, k, allowed, exact=mode == "exact")
    # Approximate modes may miss a neighbour; one miss in a handful of results says nothing (the
    # graph is built on 2 threads, so it varies run to run): recall is only held to a bar over 20
    # or more results here, and test_recall_at_every_selectivity measures it properly.
    if mode != "exact" and sum(min(k, len(np.unique(a))) for a in allowed) >= 20:
        assert r >= 0.6, f"recall {r}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["random", "correlated"])
@pytest.mark.parametrize("frac", [0.5, 0.1, 0.01, 0.001])
def test_recall_at_every_selectivity(
    indexes: dict[tuple[str, int], tuple[rf.HNSWIndex, np.ndarray, np.ndarray]],
    mode: str,
    kind: str,
    frac: float,
) -> None:
    """recall@10 >= 0.95 at ef=128 for every mode, selectivity and kind (the issue's target)."""
    h, x, live = indexes[("cosine", 0)]
    allow = allow_list(x, frac, kind, seed=7)
    rng = np.random.default_rng(8)
    if kind == "correlated":
        q = ((x[rng.choice(allow, 40)] + x[rng.choice(allow, 40)]) / 2).astype(np.float32)
    else:
        q = synthetic.clustered(40, D, clusters=20, spread=0.5, seed=9)
    scores, ids = h.search(q, k=10, ef=128, filter=allow, filter_mode=mode)
    r = check(ids, scores, q, x, "cosine", 10, [allow] * len(q), exact=mode == "exact")
    assert r >= 0.95, f"{mode} {kind} {frac}: recall {r}"


def test_empty_and_unknown_only_allow_lists(
    indexes: dict[tuple[str, int], tuple[rf.HNSWIndex, np.ndarray, np.ndarray]],
) -> None:
    h, x, _ = indexes[("l2", 300)]
    for mode in MODES:
        for flt in ([], [N + 1, N + 2], [[]], [[N + 7]]):
            s, i = h.search(x[:1], k=4, filter=flt, filter_mode=mode)
            assert i.tolist() == [[-1] * 4] and np.all(s == np.inf), (mode, flt)


def test_removed_ids_in_the_allow_list_never_return(
    indexes: dict[tuple[str, int], tuple[rf.HNSWIndex, np.ndarray, np.ndarray]],
) -> None:
    h, x, live = indexes[("cosine", 300)]
    dead = np.flatnonzero(~live)
    allow = np.concatenate([dead, np.flatnonzero(live)[:20]])
    for mode in MODES:
        _, i = h.search(x[dead[:10]], k=30, ef=64, filter=allow, filter_mode=mode)
        assert not np.isin(i, dead).any(), mode
        assert (i[:, :20] >= 0).all() and (i[:, 20:] == -1).all(), mode


def test_allowed_set_far_from_the_query_still_gets_exact_results(
    indexes: dict[tuple[str, int], tuple[rf.HNSWIndex, np.ndarray, np.ndarray]],
) -> None:
    """A correlated allow-list on the far side of the space from the query: the auto walk gives
    up for the exact scan (or finds the same), every query gets its true top-k."""
    h, x, _ = indexes[("l2", 0)]
    anchor = x[0]
    far = np.argsort(((x - anchor) ** 2).sum(1))[-100:]
    q = x[:8] + np.float32(0.01)
    for nq in (1, 8):
        s, i = h.search(q[:nq], k=10, ef=32, filter=far, filter_mode="auto")
        r = check(i, s, q[:nq], x, "l2", 10, [far] * nq, exact=False)
        assert r >= 0.95


def test_unknown_filter_mode_names_the_choices() -> None:
    h = rf.HNSWIndex(4, "l2")
    h.add(np.eye(4, dtype=np.float32))
    with pytest.raises(rf.RankfunnelError, match="'auto', 'graph', 'acorn' or 'exact'"):
        h.search(np.ones(4), filter=[1], filter_mode="two-hop")
