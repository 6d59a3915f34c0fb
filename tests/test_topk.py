"""rf.topk against a numpy float64 brute force: every metric, shape and SIMD level."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rankfunnel as rf
from conftest import assert_topk

METRICS = ["cosine", "dot", "l2"]


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, str, int]:
    d = draw(st.one_of(st.integers(1, 40), st.sampled_from([64, 127, 384, 768, 1536])))
    n = draw(st.integers(0, max(0, 3000 // d + 40)))
    nq = draw(st.integers(1, 12))
    k = draw(st.integers(1, n + 5))
    metric = draw(st.sampled_from(METRICS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 100.0]))
    corpus = (rng.standard_normal((n, d)) * scale).astype(np.float32)
    if n and draw(st.booleans()):
        corpus[rng.integers(0, n)] = 0.0  # a zero vector
    if n > 3 and draw(st.booleans()):
        corpus[1] = corpus[0]  # exact duplicates (ties)
    queries = (rng.standard_normal((nq, d)) * scale).astype(np.float32)
    threads = draw(st.integers(1, 3))
    return queries, corpus, k, metric, threads


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problems())
def test_topk_matches_numpy(simd_level: str, problem: tuple[np.ndarray, np.ndarray, int, str, int]) -> None:
    queries, corpus, k, metric, threads = problem
    scores, ids = rf.topk(queries, corpus, k=k, metric=metric, threads=threads)
    assert_topk(scores, ids, queries, corpus, metric, k)


@pytest.mark.parametrize("metric", METRICS)
def test_single_query_gives_1d_results(metric: str, rng: np.random.Generator) -> None:
    corpus = rng.standard_normal((50, 8)).astype(np.float32)
    s, i = rf.topk(corpus[3], corpus, k=4, metric=metric)
    assert s.shape == (4,) and i.shape == (4,)
    if metric != "dot":
        assert i[0] == 3


def test_ties_go_to_the_lower_id() -> None:
    corpus = np.ones((40, 4), dtype=np.float32)
    _, ids = rf.topk(np.ones(4), corpus, k=5, metric="dot")
    assert ids.tolist() == [0, 1, 2, 3, 4]


def test_zero_vectors_score_zero_under_cosine() -> None:
    corpus = np.zeros((3, 5), dtype=np.float32)
    s, _ = rf.topk(np.zeros(5), corpus, k=3, metric="cosine")
    assert np.all(s == 0.0)


def test_other_dtypes_and_layouts_are_converted() -> None:
    rng = np.random.default_rng(1)
    c64 = rng.standard_normal((30, 6))
    q = rng.standard_normal((2, 6))
    want = rf.topk(q.astype(np.float32), c64.astype(np.float32), k=5, metric="l2")
    for corpus in (c64, np.asfortranarray(c64), c64.astype(np.float16), np.repeat(c64, 2, axis=0)[::2]):
        got = rf.topk(q, corpus, k=5, metric="l2")
        np.testing.assert_array_equal(got[1], want[1])
    ints = rf.topk(np.ones((1, 3), dtype=np.int32), np.eye(3, dtype=np.int64), k=1, metric="dot")
    assert ints[0].dtype == np.float32


@pytest.mark.parametrize(
    ("queries", "corpus", "kwargs", "message"),
    [
        (np.ones((2, 3)), np.ones((5, 4)), {}, "dimension mismatch"),
        (np.ones((2, 3, 1)), np.ones((5, 3)), {}, "2-D"),
        (np.ones(3), np.ones(3), {}, "2-D"),
        (np.ones((2, 3)), np.ones((5, 3)), {"k": 0}, "k must be at least 1"),
        (np.ones((2, 3)), np.ones((5, 3)), {"k": -3}, "k must be at least 1"),
        (np.ones((2, 3)), np.ones((5, 3)), {"k": 2.5}, "k must be an integer"),
        (np.ones((2, 3)), np.ones((5, 3)), {"metric": "hamming"}, "unknown metric"),
        (np.array([[np.nan, 1, 2]]), np.ones((5, 3)), {}, "NaN or infinity"),
        (np.ones((1, 3)), np.array([[1, 2, np.inf]] * 4), {}, "NaN or infinity"),
        (np.ones((1, 3)), np.array([[1, 2, np.nan]] * 4), {"metric": "l2"}, "NaN or infinity"),
        (np.ones((1, 0)), np.ones((5, 0)), {}, "0 dimensions"),
        (np.array([]), np.ones((5, 3)), {}, "empty vector"),
        (np.array([["a", "b"]]), np.ones((5, 2)), {}, "numeric"),
        (np.ones((1, 3)), np.ones((5, 3)), {"threads": 0}, "threads must be at least 1"),
    ],
)
def test_bad_input_raises_a_clear_error(queries: object, corpus: object, kwargs: dict, message: str) -> None:
    with pytest.raises(rf.RankfunnelError, match=message):
        rf.topk(queries, corpus, **kwargs)


def test_errors_are_value_errors() -> None:
    assert issubclass(rf.RankfunnelError, ValueError)
    assert issubclass(rf.UnknownIdError, KeyError)


def test_empty_query_batch_and_empty_corpus() -> None:
    s, i = rf.topk(np.ones((0, 4)), np.ones((3, 4)), k=2)
    assert s.shape == (0, 2) and i.shape == (0, 2)
    s, i = rf.topk(np.ones((2, 4)), np.ones((0, 4)), k=2, metric="l2")
    assert np.all(i == -1) and np.all(s == np.inf)
