"""Fusing the results of several retrievers (dense, lexical, ...) into one ranking.

Every function takes results as the indexes return them: ``(scores, ids)`` pairs of shape
``(nq, k)`` or ``(k,)``, best first, higher scores better, padded with id ``-1`` (any negative
id is padding and ignored, whatever its score; an id repeated in one list counts once, at its
first position). The retrievers may return different ``k``; they
must answer the same queries. A document found by only some retrievers gets only their
contributions. The fused result has ``top`` columns (default: the widest input), best first,
ties to the lower id, padded with id -1 and score -inf when fewer documents were found; a 1-D
result comes back when every input is 1-D.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from ._arrays import positive_int
from ._index import Ids, Scores
from .errors import RankfunnelError

Result = tuple[npt.ArrayLike, npt.ArrayLike]

__all__ = ["convex_combination", "reciprocal_rank_fusion"]


def _rows(results: Sequence[Result]) -> tuple[list[tuple[npt.NDArray[np.float64], Ids]], bool, int]:
    """Inputs as 2-D (float64 scores, int64 ids) pairs, whether all were 1-D, and the widest k."""
    out = []
    dims = set()
    for i, r in enumerate(results):
        if not isinstance(r, (tuple, list)) or len(r) != 2:
            raise RankfunnelError(f"result {i} must be a (scores, ids) pair")
        scores, ids = np.asarray(r[0]), np.asarray(r[1])
        if scores.shape != ids.shape or scores.ndim not in (1, 2):
            raise RankfunnelError(
                f"result {i}: scores {scores.shape} and ids {ids.shape} must have the same 1-D or 2-D shape"
            )
        if ids.size and ids.dtype.kind not in "iu":
            raise RankfunnelError(f"result {i}: ids must be integers, got dtype {ids.dtype}")
        if scores.size and scores.dtype.kind not in "fiu":
            raise RankfunnelError(f"result {i}: scores must be numeric, got dtype {scores.dtype}")
        dims.add(scores.ndim)
        s2 = np.atleast_2d(scores).astype(np.float64)
        i2 = np.atleast_2d(ids).astype(np.int64)
        if not np.isfinite(s2[i2 >= 0]).all():
            raise RankfunnelError(f"result {i}: a non-padding score is NaN or infinite")
        out.append((s2, i2))
    nq = {s.shape[0] for s, _ in out}
    if len(nq) != 1:
        raise RankfunnelError(f"results answer different numbers of queries: {sorted(nq)}")
    return out, dims == {1}, max(s.shape[1] for s, _ in out)


def _weights(weights: Optional[Sequence[float]], n: int) -> npt.NDArray[np.float64]:
    """Per-retriever weights summing to 1 (equal by default); also rejects zero retrievers."""
    if n == 0:
        raise RankfunnelError("fusion needs at least one (scores, ids) result")
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise RankfunnelError(f"got {w.shape[0]} weights for {n} results")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise RankfunnelError("weights must be finite, non-negative and not all zero")
    out: npt.NDArray[np.float64] = w / w.sum()
    return out


def _valid(scores: npt.NDArray[np.float64], ids: Ids) -> tuple[npt.NDArray[np.float64], Ids]:
    """One row without padding and with each id kept once (its first, best, position)."""
    keep = ids >= 0
    s, i = scores[keep], ids[keep]
    _, first = np.unique(i, return_index=True)
    first.sort()
    return s[first], i[first]


def _fuse(parts: list[tuple[Ids, npt.NDArray[np.float64]]], top: int) -> tuple[Scores, Ids]:
    """Sum each id's contributions; the best ``top``, ties to the lower id, padded."""
    scores = np.full(top, -np.inf, dtype=np.float32)
    ids = np.full(top, -1, dtype=np.int64)
    all_ids = np.concatenate([p[0] for p in parts])
    if all_ids.size == 0:
        return scores, ids
    uniq, inv = np.unique(all_ids, return_inverse=True)
    total = np.bincount(inv, weights=np.concatenate([p[1] for p in parts]), minlength=uniq.size)
    order = np.lexsort((uniq, -total))[:top]
    scores[: order.size] = total[order]
    ids[: order.size] = uniq[order]
    return scores, ids


def _run(results: Sequence[Result], top: Optional[int], contribution: Any) -> tuple[Scores, Ids]:
    rows, single, widest = _rows(results)
    top = widest if top is None else positive_int(top, "top")
    nq = rows[0][0].shape[0]
    out_s = np.empty((nq, top), dtype=np.float32)
    out_i = np.empty((nq, top), dtype=np.int64)
    for q in range(nq):
        parts = [contribution(j, *_valid(s[q], i[q])) for j, (s, i) in enumerate(rows)]
        out_s[q], out_i[q] = _fuse(parts, top)
    return (out_s[0], out_i[0]) if single else (out_s, out_i)


def reciprocal_rank_fusion(
    *results: Result, k: float = 60.0, weights: Optional[Sequence[float]] = None, top: Optional[int] = None
) -> tuple[Scores, Ids]:
    """Reciprocal rank fusion (Cormack et al., 2009).

    A document's fused score is ``sum_i w_i / (k + rank_i)`` over the retrievers ``i`` that
    returned it, ``rank_i`` its 1-based position in retriever ``i``'s list (padding and repeats
    of an id skipped).
    Scores are used only for their order, so retrievers on any scale mix.

    Parameters
    ----------
    *results : (scores, ids) pairs
        One per retriever; see the module docstring for shapes and padding.
    k : float, default 60
        Rank offset (> 0); larger values flatten the difference between top and lower ranks.
    weights : sequence of float, optional
        One non-negative weight per retriever, normalised to sum 1; default equal (so with
        equal weights the scores are ``1/n`` of the textbook sum; the order is the same).
    top : int, optional
        Results per query; default the widest input.

    Returns
    -------
    scores : ndarray of float32, shape (nq, top) or (top,)
    ids : ndarray of int64, shape (nq, top) or (top,)
        Best first, ties to the lower id, padded with -1 / -inf.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not np.isfinite(k) or k <= 0:
        raise RankfunnelError(f"k must be a positive number, got {k!r}")
    w = _weights(weights, len(results))

    def contribution(
        j: int, scores: npt.NDArray[np.float64], ids: Ids
    ) -> tuple[Ids, npt.NDArray[np.float64]]:
        return ids, w[j] / (k + np.arange(1, ids.size + 1, dtype=np.float64))

    return _run(results, top, contribution)


def convex_combination(
    *results: Result, weights: Optional[Sequence[float]] = None, top: Optional[int] = None
) -> tuple[Scores, Ids]:
    """Convex combination of per-query min-max normalised scores.

    Each retriever's scores for a query are mapped to ``(s - min) / (max - min)`` over the
    documents it returned for that query (all 1.0 when they are equal, e.g. a single document);
    a document's fused score is ``sum_i w_i * norm_i``, with 0 from a retriever that did not
    return it. Scores must be "higher is better" (negate L2 distances first).

    Parameters
    ----------
    *results : (scores, ids) pairs
        One per retriever; see the module docstring for shapes and padding.
    weights : sequence of float, optional
        One non-negative weight per retriever, normalised to sum 1 (``(0.7, 0.3)``: 70% the
        first); default equal.
    top : int, optional
        Results per query; default the widest input.

    Returns
    -------
    scores : ndarray of float32, shape (nq, top) or (top,)
        Fused scores in [0, 1].
    ids : ndarray of int64, shape (nq, top) or (top,)
        Best first, ties to the lower id, padded with -1 / -inf.
    """
    w = _weights(weights, len(results))

    def contribution(
        j: int, scores: npt.NDArray[np.float64], ids: Ids
    ) -> tuple[Ids, npt.NDArray[np.float64]]:
        if ids.size == 0:
            return ids, scores
        lo, hi = scores.min(), scores.max()
        norm = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        return ids, w[j] * norm

    return _run(results, top, contribution)
