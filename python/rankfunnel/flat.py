"""Exact search: :func:`topk` over any corpus and the :class:`FlatIndex`."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from . import _core
from ._arrays import as_matrix, metric_name, positive_int, threads_arg
from ._index import BF16Copy, Ids, IndexBase, Scores, bf16_copy_arg, unbatch
from .errors import RankfunnelError
from .registry import register


def topk(
    queries: npt.ArrayLike,
    corpus: npt.ArrayLike,
    k: int = 10,
    metric: str = "cosine",
    *,
    threads: Optional[int] = None,
) -> tuple[Scores, Ids]:
    """Exact top-k of every query against a corpus.

    Parameters
    ----------
    queries : array_like, shape (nq, d) or (d,)
        Query vectors. float32 is used as is; other numeric dtypes are converted.
    corpus : array_like, shape (n, d)
        Vectors to search.
    k : int
        Results per query; when ``k > n`` the rest is padded with id -1 and score -inf
        (+inf for ``"l2"``).
    metric : {"cosine", "dot", "l2"}
        ``"cosine"`` and ``"dot"`` are similarities (descending), ``"l2"`` is the squared
        Euclidean distance (ascending). The cosine of a zero vector is 0.
    threads : int, optional
        Thread cap for this call; default ``RANKFUNNEL_NUM_THREADS`` or every core.

    Returns
    -------
    scores : ndarray of float32, shape (nq, k) or (k,)
    ids : ndarray of int64, shape (nq, k) or (k,)
        Row indices into ``corpus``, best first; ties go to the lower index.
        A 1-D query gives 1-D results.
    """
    m = metric_name(metric)
    k = positive_int(k, "k")
    q, single = as_matrix(queries, "queries")
    c = np.asarray(corpus)
    if c.ndim == 2 and c.shape[0] == 0 and c.shape[1] == 0:
        c = c.reshape(0, q.shape[1])
    c32, _ = as_matrix(c, "corpus", dim=q.shape[1]) if c.ndim == 2 else _bad_corpus(c)
    scores, ids = _core.topk(q, c32, k, m, threads_arg(threads))
    return unbatch(single, scores, ids)


def _bad_corpus(c: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float32], bool]:
    raise RankfunnelError(f"corpus must be a 2-D (n, d) array, got {c.ndim}-D")


class FlatIndex(BF16Copy, IndexBase):
    """Exact (brute-force) vector index with ids, removal and persistence.

    Parameters
    ----------
    dim : int
        Vector dimension.
    metric : {"cosine", "dot", "l2"}
        Scoring; cosine indexes store unit-length vectors.
    bf16_copy : bool, default True
        Also keep a bfloat16 copy of the vectors (+50% memory). Searches of one or two queries
        are memory-bound; they then scan the half-size copy, bound every score's rounding error
        and rescore the few vectors that could still make the top k in float32, so results are
        exactly those of the full float32 scan at about half the memory traffic.
    prefilter : bool, optional
        Deprecated spelling of ``bf16_copy`` (emits a :class:`DeprecationWarning`).

    Notes
    -----
    ``load(path, mmap=True)`` reads the vectors from the mapped file.

    Examples
    --------
    >>> import numpy as np, rankfunnel as rf
    >>> idx = rf.FlatIndex(dim=4, metric="cosine")
    >>> idx.add(np.eye(4, dtype=np.float32))
    array([0, 1, 2, 3])
    >>> scores, ids = idx.search(np.array([1, 0.1, 0, 0]), k=2)
    >>> ids.tolist()
    [0, 1]
    """

    _CORE = _core.FlatIndex
    _DEPRECATED_ARGS = ("prefilter",)

    def __init__(
        self, dim: int, metric: str = "cosine", *, bf16_copy: bool = True, prefilter: Optional[bool] = None
    ) -> None:
        keep = bf16_copy_arg(bf16_copy, prefilter, "FlatIndex")
        self._index = _core.FlatIndex(positive_int(dim, "dim"), metric_name(metric), keep)

    def add(self, vectors: npt.ArrayLike, ids: Optional[npt.ArrayLike] = None) -> Ids:
        """Add vectors.

        Parameters
        ----------
        vectors : array_like, shape (n, dim) or (dim,)
            Finite numbers; converted to float32.
        ids : array_like of int, optional
            Non-negative, unique labels not already stored. Default: consecutive ids after the
            largest id ever given.

        Returns
        -------
        ndarray of int64
            The ids of the added vectors.

        Raises
        ------
        RankfunnelError
            On a wrong shape, NaN/inf, or bad/duplicate ids; the index is then unchanged.

        Notes
        -----
        Searches from other threads keep running during the call: the batch is stored in chunks,
        searches running between them. A concurrent search may see part of the batch, each vector
        either absent or whole, never partly written; the call returns once all of them are in. A
        batch that fails validation fails before any of it is stored. Adds, removes and saves of one
        index run one at a time.
        """
        out: Ids = self._index.add(*self._vectors(vectors, ids))
        return out

    def search(
        self,
        queries: npt.ArrayLike,
        k: int = 10,
        *,
        threads: Optional[int] = None,
        filter: Optional[npt.ArrayLike] = None,
    ) -> tuple[Scores, Ids]:
        """Exact top-k search.

        Parameters
        ----------
        queries : array_like, shape (nq, dim) or (dim,)
        k : int
            Results per query, padded with id -1 when fewer exist.
        threads : int, optional
            Thread cap for this call.
        filter : array_like of int, optional
            Allow-list: only these ids can be returned (unknown ids are ignored).

        Returns
        -------
        scores, ids : ndarray
            Shapes (nq, k), or (k,) for a 1-D query; best first, ties to the lower id.
        """
        q, single, k, allow = self._queries(queries, k, filter)
        return unbatch(single, *self._index.search(q, k, threads_arg(threads), allow))


register("flat", FlatIndex)
