"""Approximate search with an inverted-file index: :class:`IVFIndex`."""

from __future__ import annotations

from typing import Optional

import numpy as np
import numpy.typing as npt

from . import _core
from ._arrays import as_matrix, metric_name, non_negative_int, positive_int, threads_arg
from ._index import Ids, IndexBase, Scores, unbatch
from .errors import RankfunnelError
from .registry import register

GRAPH_MIN_NLIST: int = _core.IVF_GRAPH_MIN_NLIST
"""From this many lists on, ``coarse="auto"`` keeps an HNSW graph over the centroids."""


class IVFIndex(IndexBase):
    """Inverted-file index: k-means lists, float32 or 8-bit scalar-quantized storage.

    Vectors are assigned to the nearest of ``nlist`` k-means centroids; a search scores only
    the ``nprobe`` lists nearest to each query. Batched searches group queries by list, so each
    probed list is read once for all the queries that probe it.

    Parameters
    ----------
    dim : int
        Vector dimension.
    nlist : int
        Number of lists (k-means centroids); about ``sqrt(n)`` to ``4 sqrt(n)`` is typical.
    metric : {"cosine", "dot", "l2"}
        Cosine vectors are normalised on the way in; cosine and dot use spherical k-means.
    storage : {"f32", "int8"}
        ``"int8"`` stores one byte per dimension (per-dimension min/step learned by
        :meth:`train`, like FAISS SQ8) for about 4x less memory, and keeps the float32 vectors
        for ``refine`` (after ``save`` + ``load(mmap=True)`` they stay on disk).
    coarse : {"auto", "exact", "hnsw"}
        How a search picks its ``nprobe`` lists. ``"exact"`` scores every centroid;
        ``"hnsw"`` walks a small HNSW graph over the centroids (built by :meth:`train`, saved
        with the index), visiting a few hundred of them; ``"auto"`` keeps a graph from
        ``nlist >= 1024`` on and, per search, walks it unless a batch is cheaper to score
        exactly through the blocked kernels. Adds always pick lists exactly.

    Notes
    -----
    ``get`` returns the stored vectors: exact for ``"f32"``, decoded from the codes for ``"int8"``.

    Examples
    --------
    >>> import numpy as np, rankfunnel as rf
    >>> x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
    >>> ivf = rf.IVFIndex(16, nlist=32, metric="l2")
    >>> ivf.train(x)
    >>> ivf.add(x)[:3]
    array([0, 1, 2])
    >>> ivf.search(x[:2], k=1, nprobe=32)[1].ravel().tolist()
    [0, 1]
    """

    _CORE = _core.IVFIndex
    _REPR = ("dim", "nlist", "metric", "storage", "len", "is_trained")

    def __init__(
        self, dim: int, nlist: int = 1024, metric: str = "cosine", storage: str = "f32", coarse: str = "auto"
    ) -> None:
        if storage not in ("f32", "int8"):
            raise RankfunnelError(f"unknown storage {storage!r}: expected 'f32' or 'int8'")
        self._index = _core.IVFIndex(
            positive_int(dim, "dim"), positive_int(nlist, "nlist"), metric_name(metric), storage, coarse
        )

    @property
    def nlist(self) -> int:
        """Number of lists."""
        return int(self._index.nlist)

    @property
    def storage(self) -> str:
        """``"f32"`` or ``"int8"``."""
        return str(self._index.storage)

    @property
    def coarse(self) -> str:
        """The coarse quantizer setting: ``"auto"``, ``"exact"`` or ``"hnsw"``."""
        return str(self._index.coarse)

    @property
    def has_graph(self) -> bool:
        """Whether searches can walk a graph over the centroids (trained, and ``coarse`` wants one)."""
        return bool(self._index.has_graph)

    def set_coarse(self, coarse: str, *, threads: Optional[int] = None) -> None:
        """Change the coarse quantizer (see the class docs); builds or drops the centroid graph.

        Raises
        ------
        RankfunnelError
            On an unknown name; the index is then unchanged.
        """
        self._index.set_coarse(coarse, threads_arg(threads))

    @property
    def is_trained(self) -> bool:
        """Whether :meth:`train` has run."""
        return bool(self._index.is_trained)

    @property
    def centroids(self) -> npt.NDArray[np.float32]:
        """The ``(nlist, dim)`` centroids (``(0, dim)`` before training)."""
        out: npt.NDArray[np.float32] = self._index.centroids()
        return out

    def list_sizes(self) -> Ids:
        """Number of vectors in each list."""
        out: Ids = self._index.list_sizes()
        return out

    def refine_bytes(self) -> int:
        """Heap bytes of the float32 vectors kept for ``refine`` (0 when mmapped or f32 storage)."""
        return int(self._index.refine_bytes())

    def train(
        self, sample: npt.ArrayLike, *, iters: int = 10, seed: int = 0, threads: Optional[int] = None
    ) -> None:
        """Learn the centroids (k-means++ then ``iters`` Lloyd iterations) and int8 ranges.

        At most ``256 * nlist`` points of ``sample`` are used (a seeded random subsample), as
        FAISS does. ``sample`` needs at least ``nlist`` vectors; train before adding.
        """
        x, _ = as_matrix(sample, "sample", dim=self.dim)
        self._index.train(x, non_negative_int(iters, "iters"), int(seed) & (2**64 - 1), threads_arg(threads))

    def add(
        self, vectors: npt.ArrayLike, ids: Optional[npt.ArrayLike] = None, *, threads: Optional[int] = None
    ) -> Ids:
        """Add vectors to their nearest lists; returns their ids.

        Parameters
        ----------
        vectors : array_like, shape (n, dim) or (dim,)
        ids : array_like of int, optional
            Non-negative unique labels; default consecutive after the largest id given so far.

        Raises
        ------
        RankfunnelError
            Before training, or on bad vectors or ids; the index is then unchanged.

        Notes
        -----
        Searches from other threads keep running during the call: the lists are chosen first, then
        the batch is stored in chunks, searches running between them. A concurrent search may see
        part of the batch, each vector either absent or whole, never partly written; the call
        returns once all of them are in. A batch that fails validation fails before any of it is
        stored. Adds, removes and saves of one index run one at a time.
        """
        v, id_arr = self._vectors(vectors, ids)
        out: Ids = self._index.add(v, id_arr, threads_arg(threads))
        return out

    def search(
        self,
        queries: npt.ArrayLike,
        k: int = 10,
        *,
        nprobe: int = 16,
        refine: int = 0,
        threads: Optional[int] = None,
        filter: Optional[npt.ArrayLike] = None,
        coarse_ef: int = 0,
    ) -> tuple[Scores, Ids]:
        """Approximate top-k over the ``nprobe`` nearest lists of each query.

        Parameters
        ----------
        queries : array_like, shape (nq, dim) or (dim,)
        k : int
            Results per query, padded with id -1 when fewer are found.
        nprobe : int
            Lists scanned per query (capped at ``nlist``); ``nprobe = nlist`` with f32 storage
            is exact.
        refine : int
            With int8 storage, rescore the best ``refine * k`` candidates with float32 vectors.
        threads : int, optional
            Thread cap.
        filter : array_like of int, optional
            Allow-list of ids.
        coarse_ef : int
            Beam width of the walk over the centroid graph when one is used (0: the default
            ``max(nprobe + nprobe // 2, 32)``); wider finds the true nearest lists more often.

        Returns
        -------
        scores, ids : ndarray
            Shapes (nq, k), or (k,) for a 1-D query; same conventions as :class:`FlatIndex`.
        """
        q, single, k, allow = self._queries(queries, k, filter)
        refine = non_negative_int(refine, "refine")
        nprobe = positive_int(nprobe, "nprobe")
        coarse_ef = non_negative_int(coarse_ef, "coarse_ef")
        return unbatch(
            single, *self._index.search(q, k, nprobe, refine, threads_arg(threads), allow, coarse_ef)
        )


def nlist_for(n: int) -> dict[str, int]:
    """The default ``nlist`` for about ``n`` vectors: ``min(n / 39, 4 sqrt(n))``, at least 1.

    39 vectors per list is the fewest FAISS trains k-means with; ``4 sqrt(n)`` is the usual
    upper end. :func:`rankfunnel.index_factory` uses it for ``"ivf"`` given a ``size_hint``.
    """
    return {"nlist": int(max(1, min(n // 39, 4 * np.sqrt(max(n, 1)))))}


register(
    "ivf",
    IVFIndex,
    number="nlist",
    words={"f32": {"storage": "f32"}, "int8": {"storage": "int8"}},
    sizing=nlist_for,
)
