"""PLAID-style late-interaction retrieval: :class:`MultiVectorIndex`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from . import _core
from ._arrays import as_ids, non_negative_int, positive_int, threads_arg
from ._index import Ids, IndexBase, Scores
from .errors import RankfunnelError
from .maxsim import PackedDocs, _queries, _tokens
from .registry import register


class MultiVectorIndex(IndexBase):
    """ColBERT-style index over documents of token vectors, searched by MaxSim.

    Token vectors are stored compressed as in ColBERTv2: the id of the nearest of
    ``n_centroids`` k-means centroids (trained on the first :meth:`add`, reused by later ones)
    plus, per dimension, an ``nbits`` bucket of the residual ``x - centroid`` (one scalar
    quantizer per dimension, fitted to the training residuals by Lloyd-Max). Memory per
    token: ``4 + dim * nbits / 8`` bytes (36 at dim=128, nbits=2) plus up to 4 bytes of
    inverted list; ``nbits=0`` keeps float32 tokens (``4 * dim`` bytes) and makes scores exact.

    Search (PLAID-like): query tokens are scored against the centroids; each probes its
    ``nprobe`` best centroids and the documents listed under them get an approximate MaxSim
    from those centroid scores; the ``candidates`` best are decompressed and scored exactly
    with the fused MaxSim kernel.

    Compression costs ranking fidelity where documents differ by less than the residual error
    (2 bits per dimension keep roughly 0.85-0.93 of the exact top 10, 4 bits 0.95-0.97, on the
    benchmark and test data). For exact results with compressed scoring, build the index with
    ``refine_dtype="f16"`` (or ``"f32"``): it also keeps an exact copy of every token
    (``2 * dim`` / ``4 * dim`` bytes), and ``search(..., refine=r)`` rescores the best ``r * k``
    documents with it. After ``save`` and ``load(mmap=True)`` that copy stays on disk: only the
    ``r * k`` documents read per query are paged in.

    Parameters
    ----------
    dim : int
        Token dimension.
    nbits : {0, 1, 2, 4, 8}
        Residual bits per dimension (0 = float32 tokens). ``dim * nbits`` must be a multiple of 8.
    n_centroids : int, optional
        Number of centroids; default ``2**floor(log2(4 * sqrt(tokens in the first add)))``.
    nprobe : int
        Default centroids probed per query token.
    seed : int
        Seed of the k-means training.
    refine_dtype : {None, "f16", "f32"}
        Keep an exact copy of the tokens for ``search(refine=...)`` and :meth:`rerank`
        (not with ``nbits=0``, whose tokens are exact already).

    Notes
    -----
    ``nprobe`` is a search setting, not saved with the index (a loaded index uses 4).
    ``load(path, mmap=True)`` leaves the token codes and the refine copy in the mapped file.
    MaxSim sums dot products of token vectors, so :attr:`metric` is ``"dot"``.

    Examples
    --------
    >>> import numpy as np, rankfunnel as rf
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((n, 16)).astype(np.float32) for n in (5, 8, 3)]
    >>> mv = rf.MultiVectorIndex(dim=16, nbits=0)
    >>> mv.add(docs)
    array([0, 1, 2])
    >>> scores, ids = mv.search(docs[1][:4], k=1)
    >>> ids.tolist()
    [1]
    """

    _CORE = _core.MultiVectorIndex
    _REPR = ("dim", "nbits", "n_centroids", "len", "n_tokens", "refine_dtype")
    nprobe: int = 4
    """Default centroids probed per query token."""

    def __init__(
        self,
        dim: int,
        nbits: int = 2,
        *,
        n_centroids: Optional[int] = None,
        nprobe: int = 4,
        seed: int = 0,
        refine_dtype: Optional[str] = None,
    ) -> None:
        nc = 0 if n_centroids is None else positive_int(n_centroids, "n_centroids")
        if refine_dtype is not None and not isinstance(refine_dtype, str):
            raise RankfunnelError(f"refine_dtype must be None, 'f16' or 'f32', got {refine_dtype!r}")
        refine = "none" if refine_dtype is None else refine_dtype.lower()
        if refine == "none" and refine_dtype is not None:
            raise RankfunnelError("refine_dtype must be None, 'f16' or 'f32', got 'none'")
        self._index = _core.MultiVectorIndex(
            positive_int(dim, "dim"), non_negative_int(nbits, "nbits"), nc, int(seed), refine
        )
        self.nprobe = positive_int(nprobe, "nprobe")

    @property
    def metric(self) -> str:
        """``"dot"``: MaxSim sums dot products of token vectors."""
        return "dot"

    @property
    def nbits(self) -> int:
        """Residual bits per dimension (0 = float32 tokens)."""
        return int(self._index.nbits)

    @property
    def n_centroids(self) -> int:
        """Number of centroids (0 before the first add)."""
        return int(self._index.n_centroids)

    @property
    def n_tokens(self) -> int:
        """Tokens stored (a removed document's stay until the next compaction, at a quarter of the
        documents removed)."""
        return int(self._index.n_tokens)

    @property
    def bytes_per_token(self) -> int:
        """Bytes of token storage per token (centroid id + residual, or 4 * dim for nbits=0)."""
        return int(self._index.bytes_per_token)

    @property
    def refine_dtype(self) -> Optional[str]:
        """The exact copy kept for ``refine``: ``"f16"``, ``"f32"`` or None."""
        name = str(self._index.refine_dtype)
        return None if name == "none" else name

    @property
    def refine_bytes_per_token(self) -> int:
        """Bytes per token of the exact refine copy (0 without one)."""
        return int(self._index.refine_bytes_per_token)

    def add(
        self,
        docs: Sequence[npt.ArrayLike] | PackedDocs,
        ids: Optional[npt.ArrayLike] = None,
        *,
        threads: Optional[int] = None,
    ) -> Ids:
        """Add documents (each an ``(n_i, dim)`` array of token vectors, or a float32 PackedDocs).

        The first add with tokens trains the centroids and residual buckets on them (k-means on
        a sample); later adds reuse them.

        Parameters
        ----------
        docs : sequence of array_like (n_i, dim), or PackedDocs of dtype "f32"
        ids : array_like of int, optional
            Non-negative, unique labels not already stored; default consecutive ids.
        threads : int, optional
            Thread cap for this call.

        Returns
        -------
        ndarray of int64
            The ids of the added documents.

        Raises
        ------
        RankfunnelError
            On a wrong dimension, NaN/inf, or bad/duplicate ids; the index is then unchanged.

        Notes
        -----
        Searches from other threads keep running during the call: once the centroids exist, tokens
        are encoded first, then the batch is stored in chunks, searches running between them. A
        concurrent search may see part of the batch, each document either absent or whole, never
        partly written; the call returns once all of them are in. A batch that fails validation
        fails before any of it is stored. Adds, removes and saves of one index run one at a time.
        """
        if isinstance(docs, PackedDocs):
            if docs.dtype != "f32":
                raise RankfunnelError("MultiVectorIndex.add takes float32 PackedDocs (it compresses itself)")
            if docs.dim != self.dim:
                raise RankfunnelError(
                    f"dimension mismatch: documents have {docs.dim} dimensions, the index has {self.dim}"
                )
            flat, offsets = docs.tokens, docs.offsets
        else:
            arrs = []
            for i, x in enumerate(docs):
                a = _tokens(x, f"document {i}")
                if a.shape[1] != self.dim:
                    if a.size == 0:
                        a = np.zeros((0, self.dim), dtype=np.float32)
                    else:
                        raise RankfunnelError(
                            f"dimension mismatch: document {i} has {a.shape[1]} dimensions, the index has {self.dim}"
                        )
                arrs.append(a)
            offsets = np.zeros(len(arrs) + 1, dtype=np.int64)
            np.cumsum([a.shape[0] for a in arrs], out=offsets[1:])
            flat = np.concatenate(arrs) if arrs else np.zeros((0, self.dim), dtype=np.float32)
        id_arr = None if ids is None else as_ids(ids)
        out: Ids = self._index.add(flat, offsets, id_arr, threads_arg(threads))
        return out

    def _qs(self, query: Any) -> tuple[list[npt.NDArray[np.float32]], bool]:
        qs, single = _queries(query)
        for i, q in enumerate(qs):
            if q.shape[0] == 0:
                raise RankfunnelError(f"query {i} has no tokens")
            if q.shape[1] != self.dim:
                raise RankfunnelError(
                    f"dimension mismatch: query {i} has {q.shape[1]} dimensions, the index has {self.dim}"
                )
        return qs, single

    def search(
        self,
        query_tokens: Any,
        k: int = 10,
        candidates: int = 1000,
        *,
        nprobe: Optional[int] = None,
        threads: Optional[int] = None,
        filter: Optional[npt.ArrayLike] = None,
        refine: int = 0,
    ) -> tuple[Scores, Ids]:
        """Top-k documents by MaxSim.

        Parameters
        ----------
        query_tokens : array_like (m, dim), or a list of them / an array (nq, m, dim)
        k : int
            Results per query, padded with id -1 and score -inf when fewer exist.
        candidates : int
            Documents decompressed and scored exactly (more = higher recall, slower).
        nprobe : int, optional
            Centroids probed per query token (default: the index's ``nprobe``).
        threads : int, optional
            Thread cap; several queries run in parallel, one query splits its exact stage.
        filter : array_like of int, optional
            Allow-list: only these ids can be returned (unknown ids are ignored). An allow-list
            of at most ``candidates`` documents is scored exactly in full.
        refine : int
            Rescore the best ``refine * k`` documents with the exact token copy (needs an index
            built with ``refine_dtype``; ignored with ``nbits=0``). 0 = off.

        Returns
        -------
        scores, ids : ndarray
            Shapes (k,) for one query, (nq, k) for several; best first, ties to the lower id.
            Scores are MaxSim on the stored (decompressed) tokens, or on the exact copy with
            ``refine``. Documents without tokens are never candidates (they score 0 in
            :meth:`rerank`).

        Raises
        ------
        RankfunnelError
            Bad ``k`` / ``candidates`` / ``nprobe`` / ``refine``, a query of another dimension, or
            ``refine > 0`` on an index without a refine copy.
        """
        k = positive_int(k, "k")
        cand = positive_int(candidates, "candidates")
        probe = self.nprobe if nprobe is None else positive_int(nprobe, "nprobe")
        qs, single = self._qs(query_tokens)
        allow = None if filter is None else as_ids(filter, "filter")
        refine = non_negative_int(refine, "refine")
        scores, ids = self._index.search(qs, k, cand, probe, threads_arg(threads), allow, refine)
        return (scores[0], ids[0]) if single else (scores, ids)

    def rerank(
        self, query_tokens: Any, candidate_ids: npt.ArrayLike, k: int = 10, *, threads: Optional[int] = None
    ) -> tuple[Scores, Ids]:
        """MaxSim of the query over ``candidate_ids`` only; top k.

        Scores use the exact refine copy when the index has one, else the stored tokens
        (exact for ``nbits=0``, decompressed otherwise).

        Raises
        ------
        UnknownIdError
            If a candidate id is not stored.
        """
        k = positive_int(k, "k")
        qs, single = self._qs(query_tokens)
        scores, ids = self._index.rerank(qs, as_ids(candidate_ids, "candidate_ids"), k, threads_arg(threads))
        return (scores[0], ids[0]) if single else (scores, ids)

    def get(self, id: int) -> npt.NDArray[np.float32]:  # type: ignore[override]
        """Stored tokens of document ``id`` as ``(n_i, dim)`` float32 (decompressed)."""
        out: npt.NDArray[np.float32] = self._index.get(int(id))
        return out


register("multivector", MultiVectorIndex, number="nbits")
