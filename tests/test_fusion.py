"""Fusion of retriever results: reciprocal rank fusion and convex combination."""

from __future__ import annotations

import numpy as np
import pytest

import rankfunnel as rf
from rankfunnel.fusion import convex_combination, reciprocal_rank_fusion


def pair(scores: list[float], ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(scores, dtype=np.float32), np.array(ids, dtype=np.int64)


def test_rrf_math_and_one_sided_documents() -> None:
    dense = pair([0.9, 0.8, 0.7], [1, 2, 3])
    lexical = pair([12.0, 5.0], [3, 4])
    scores, ids = reciprocal_rank_fusion(dense, lexical, k=60)
    want = {1: 0.5 / 61, 2: 0.5 / 62, 3: 0.5 / 63 + 0.5 / 61, 4: 0.5 / 62}
    assert ids.tolist() == [3, 1, 2]  # top defaults to the widest input (3)
    np.testing.assert_allclose(scores, [want[i] for i in ids.tolist()], rtol=1e-6)
    # 2 and 4 tie (both rank 2 in one list): the lower id wins; k > candidates pads.
    scores, ids = reciprocal_rank_fusion(dense, lexical, k=60, top=6)
    assert ids.tolist() == [3, 1, 2, 4, -1, -1]
    assert scores[2] == scores[3] and np.isneginf(scores[4:]).all()
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_rrf_weights_k_and_padding_are_respected() -> None:
    a = pair([3.0, 2.0, -np.inf], [7, 8, -1])
    b = pair([1.0, -np.inf, -np.inf], [8, -1, -1])
    scores, ids = reciprocal_rank_fusion(a, b, k=1, weights=[3, 1])
    # 7: 0.75/2 = 0.375, 8: 0.75/3 + 0.25/2 = 0.375: an exact tie, the lower id first
    assert scores[:2].tolist() == [0.375, 0.375]
    assert ids.tolist() == [7, 8, -1]
    scores, ids = reciprocal_rank_fusion(a, b, k=1, weights=[1, 3])
    assert ids.tolist() == [8, 7, -1]
    only = reciprocal_rank_fusion(a)
    assert only[1].tolist() == [7, 8, -1]
    for bad in ({"k": 0}, {"k": -1.0}, {"weights": [1]}, {"weights": [-1, 2]}, {"top": 0}):
        with pytest.raises(rf.RankfunnelError):
            reciprocal_rank_fusion(a, b, **bad)  # type: ignore[arg-type]


def test_convex_combination_min_max_per_query() -> None:
    dense = pair([0.9, 0.5, 0.1], [1, 2, 3])
    lexical = pair([10.0, 4.0, 1.0], [3, 4, 1])
    scores, ids = convex_combination(dense, lexical, weights=[0.7, 0.3], top=5)
    # dense norm: 1 -> 1, 2 -> 0.5, 3 -> 0; lexical norm: 3 -> 1, 4 -> 1/3, 1 -> 0
    want = {1: 0.7, 2: 0.35, 3: 0.3, 4: 0.1}
    assert ids.tolist() == [1, 2, 3, 4, -1]
    np.testing.assert_allclose(scores[:4], [want[i] for i in ids[:4].tolist()], rtol=1e-6)
    # A retriever with one document (or equal scores) normalises to 1.
    s, i = convex_combination(pair([5.0], [9]), pair([2.0, 2.0], [8, 9]))
    assert i.tolist() == [9, 8] and s.tolist() == pytest.approx([1.0, 0.5])
    with pytest.raises(rf.RankfunnelError):
        convex_combination(pair([np.nan], [1]))


def test_batches_shapes_and_errors() -> None:
    dense = (np.array([[0.9, 0.1], [0.3, 0.2]]), np.array([[1, 2], [5, 6]]))
    lexical = (np.array([[2.0, -np.inf], [-np.inf, -np.inf]]), np.array([[2, -1], [-1, -1]]))
    s, i = reciprocal_rank_fusion(dense, lexical)
    assert s.shape == i.shape == (2, 2)
    assert i.tolist() == [[2, 1], [5, 6]]
    s, i = convex_combination(dense, lexical, top=3)
    assert i[1].tolist() == [5, 6, -1]
    with pytest.raises(rf.RankfunnelError, match="different numbers of queries"):
        reciprocal_rank_fusion(dense, pair([1.0], [1]))
    with pytest.raises(rf.RankfunnelError):
        reciprocal_rank_fusion()
    with pytest.raises(rf.RankfunnelError):
        reciprocal_rank_fusion((np.zeros(2), np.zeros(3, dtype=np.int64)))
    with pytest.raises(rf.RankfunnelError):
        convex_combination((np.zeros(2), np.zeros(2)))  # float ids


def test_duplicate_ids_in_one_list_count_once() -> None:
    s, i = reciprocal_rank_fusion(pair([3.0, 2.0, 1.0], [4, 4, 5]), k=60)
    assert i.tolist() == [4, 5, -1]  # the repeat is dropped before ranking
    np.testing.assert_allclose(s[:2], [1 / 61, 1 / 62], rtol=1e-6)


def test_fuses_real_index_results() -> None:
    texts = ["red apples and green pears", "green tea", "apple pie recipe", "pear cider"]
    lex = rf.BM25Index()
    lex.add(texts)
    vecs = np.eye(4, dtype=np.float32)
    dense = rf.FlatIndex(dim=4)
    dense.add(vecs)
    d = dense.search(vecs[2] + 0.1, k=4)
    lx = lex.search("apple", k=4)
    s, i = reciprocal_rank_fusion(d, lx)
    assert i[0] == 2 and set(i.tolist()) == {0, 1, 2, 3}
    s, i = convex_combination(d, lx, weights=[0.5, 0.5])
    assert i[0] == 2 and s[0] == pytest.approx(1.0)
