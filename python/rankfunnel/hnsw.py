"""Approximate search over a hierarchical navigable small-world graph: :class:`HNSWIndex`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._arrays import as_ids, as_matrix, metric_name, non_negative_int, positive_int, threads_arg
from ._index import BF16Copy, Ids, IndexBase, Scores, bf16_copy_arg, unbatch
from .errors import RankfunnelError
from .registry import register

Filter = Union[npt.ArrayLike, Sequence[npt.ArrayLike], None]

_MODES = ("auto", "graph", "acorn", "exact")
"""The ``filter_mode`` values of :meth:`HNSWIndex.search`."""

CODES = ("bf16", "int8", "none")
"""The ``codes`` values of :class:`HNSWIndex`: the copy of the vectors graph walks read."""

DEFAULT_CODES = "int8"
"""The walk copy of an :class:`HNSWIndex` built without ``codes=`` or ``bf16_copy=``: int8 walks
reached recall@10 0.95 about 30% faster than bfloat16 ones on 100k MiniLM vectors, with a third
less memory for the copy and faster builds."""


class HNSWIndex(BF16Copy, IndexBase):
    """Approximate nearest-neighbour index over an HNSW graph (Malkov & Yashunin).

    Vectors live in row-major float32 with compact ``uint32`` neighbour lists (``2 * m`` on the
    bottom level, ``m`` above). Adds insert in parallel; removed ids are never returned again
    and their slots are reused by later adds.

    Parameters
    ----------
    dim : int
        Vector dimension.
    metric : {"cosine", "dot", "l2"}
        Scoring; cosine indexes store unit-length vectors, ``"l2"`` scores are squared
        distances.
    m : int, default 16
        Links per node on the upper levels (level 0 keeps ``2 * m``). More links: better recall,
        more memory, slower builds.
    ef_construction : int, default 200
        Beam width while inserting; higher builds a better graph, more slowly.
    seed : int, default 0
        Seed of the random node levels; a build with one thread is deterministic for a seed.
    codes : {"int8", "bf16", "none"}, optional
        The compact copy of the vectors that graph walks (searches and inserts) read; the
        candidates a walk keeps are rescored in float32, so reported scores are exact whichever
        copy is walked. ``"int8"`` (the default) keeps one byte per dimension (+25% of the
        float32 bytes), quantized per dimension over the range of the vectors: the ranges are fit
        on the first add and refit, re-encoding the copy, whenever the index has doubled since
        and a batch falls outside them (values outside the ranges clamp in between); inner
        products multiply the codes by 16-bit fixed-point query weights. ``"bf16"`` keeps a
        bfloat16 copy (+50%), ``"none"`` none: walks read the float32 vectors.
    bf16_copy : bool, optional
        Older spelling: ``True`` is ``codes="bf16"``, ``False`` is ``codes="none"``. Give
        ``codes`` or ``bf16_copy``, not both.
    prefilter : bool, optional
        Deprecated spelling of ``bf16_copy`` (emits a :class:`DeprecationWarning`).

    Notes
    -----
    Removed ids are never returned by later searches; their graph slots are reused by later
    adds. ``load(path, mmap=True)`` reads vectors and links from the mapped file (never
    modified); a later add copies them into memory first.

    Examples
    --------
    >>> import numpy as np, rankfunnel as rf
    >>> x = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)
    >>> h = rf.HNSWIndex(16, "l2", m=8)
    >>> ids = h.add(x)
    >>> scores, found = h.search(x[3], k=1)
    >>> int(found[0])
    3
    """

    _CORE = _core.HNSWIndex
    _DEPRECATED_ARGS = ("prefilter",)
    _REPR = ("dim", "metric", "m", "len")

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        m: int = 16,
        ef_construction: int = 200,
        seed: int = 0,
        *,
        codes: Optional[str] = None,
        bf16_copy: Optional[bool] = None,
        prefilter: Optional[bool] = None,
    ) -> None:
        if bf16_copy is not None or prefilter is not None:
            if codes is not None:
                raise RankfunnelError("give codes= or bf16_copy= (prefilter=), not both")
            keep = bf16_copy_arg(True if bf16_copy is None else bf16_copy, prefilter, "HNSWIndex")
            codes = "bf16" if keep else "none"
        elif codes is None:
            codes = DEFAULT_CODES
        if codes not in CODES:
            raise RankfunnelError(f"unknown codes {codes!r}: expected 'bf16', 'int8' or 'none'")
        self._index = _core.HNSWIndex(
            positive_int(dim, "dim"),
            metric_name(metric),
            positive_int(m, "m"),
            positive_int(ef_construction, "ef_construction"),
            non_negative_int(seed, "seed") % 2**64,
            codes == "bf16",
            codes,
        )

    @property
    def codes(self) -> str:
        """The copy of the vectors graph walks read: ``"bf16"``, ``"int8"`` or ``"none"``."""
        return str(self._index.codes)

    @property
    def m(self) -> int:
        """Links per node on the upper levels (level 0 keeps twice as many)."""
        return int(self._index.m)

    @property
    def ef_construction(self) -> int:
        """Beam width used while inserting."""
        return int(self._index.ef_construction)

    def add(
        self, vectors: npt.ArrayLike, ids: Optional[npt.ArrayLike] = None, *, threads: Optional[int] = None
    ) -> Ids:
        """Insert vectors into the graph, in parallel.

        Parameters
        ----------
        vectors : array_like, shape (n, dim) or (dim,)
            Finite numbers; converted to float32.
        ids : array_like of int, optional
            Non-negative, unique labels not already stored. Default: consecutive ids after the
            largest id ever given.
        threads : int, optional
            Build threads; default ``RANKFUNNEL_NUM_THREADS`` or every core.

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
        Searches from other threads keep running during the call: the new nodes are linked into the
        graph while searches walk it. A concurrent search may see part of the batch, each vector
        either absent or whole, never partly written; the call returns once all of them are in. A
        batch that fails validation fails before any of it is stored. Adds, removes and saves of one
        index run one at a time.
        """
        out: Ids = self._index.add(*self._vectors(vectors, ids), threads_arg(threads))
        return out

    def search(
        self,
        queries: npt.ArrayLike,
        k: int = 10,
        ef: int = 64,
        filter: Filter = None,
        threads: Optional[int] = None,
        *,
        filter_mode: str = "auto",
    ) -> tuple[Scores, Ids]:
        """Approximate top-k search.

        Parameters
        ----------
        queries : array_like, shape (nq, dim) or (dim,)
        k : int
            Results per query, padded with id -1 (score -inf, +inf for l2) when fewer exist.
        ef : int, default 64
            Beam width of the graph walk (raised to ``k``): higher is more accurate and slower.
        filter : array_like of int, or a sequence of them, optional
            Allow-list: one array of ids for every query, or a list with one array per query.
            Only allowed ids are returned (unknown ids are ignored), ``min(k, allowed)`` of them per
            query, with exact float32 scores. See ``filter_mode`` for how.
        threads : int, optional
            Thread cap for this call (queries are spread over threads).
        filter_mode : {"auto", "graph", "acorn", "exact"}
            ``"exact"`` scans the allowed vectors exactly. ``"graph"`` walks the graph through
            every node and keeps the allowed ones (hnswlib's filter: it slows down as the filter
            gets selective). ``"acorn"`` walks the allowed nodes only, reaching past a node
            outside the filter to its neighbours (two-hop expansion, as ACORN-1 does), so only
            allowed vectors are scored. ``"auto"`` (the default) scans when a cost model says
            the scan is cheaper than a walk of width ``ef`` (small allow-lists), else walks as
            ``"graph"`` does when at least 40% of the vectors are allowed and as ``"acorn"``
            does below that, switching to the scan once the walk has scored as many vectors as
            the scan would (allowed vectors far from the query). Every mode scans when its walk
            finds fewer than ``k`` allowed results.

        Returns
        -------
        scores, ids : ndarray
            Shapes (nq, k), or (k,) for a 1-D query; best first, ties to the lower id.
        """
        k = positive_int(k, "k")
        ef = positive_int(ef, "ef")
        if filter_mode not in _MODES:
            raise RankfunnelError(
                f"unknown filter_mode {filter_mode!r}: expected 'auto', 'graph', 'acorn' or 'exact'"
            )
        q, single = as_matrix(queries, "queries", dim=self.dim)
        allow, lists = _filter(filter, len(q))
        scores, ids = self._index.search(q, k, ef, threads_arg(threads), allow, lists, filter_mode)
        return unbatch(single, scores, ids)


def _filter(
    filter: Filter, nq: int
) -> tuple[Optional[npt.NDArray[np.int64]], Optional[list[npt.NDArray[np.int64]]]]:
    """Split ``filter`` into one shared allow-list or one list per query."""
    if filter is None:
        return None, None
    per_query = (isinstance(filter, np.ndarray) and filter.ndim == 2) or (
        isinstance(filter, (list, tuple)) and len(filter) > 0 and not isinstance(filter[0], (int, np.integer))
    )
    if per_query:
        assert isinstance(filter, (np.ndarray, list, tuple))
        if len(filter) != nq:
            raise RankfunnelError(f"got {len(filter)} filter lists for {nq} queries")
        return None, [as_ids(f, "filter") for f in filter]
    return as_ids(filter, "filter"), None


register(
    "hnsw",
    HNSWIndex,
    number="m",
    words={"bf16": {"codes": "bf16"}, "int8": {"codes": "int8"}, "f32": {"codes": "none"}},
)
