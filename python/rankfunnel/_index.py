"""What every index wrapper shares: properties, ids, removal, persistence, ``repr``."""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt

from ._arrays import as_ids, as_matrix, positive_int

PathLike = Union[str, "os.PathLike[str]"]
Scores = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
T = TypeVar("T", bound="IdIndexBase")


class IdIndexBase:
    """Base of every index wrapper, vector or lexical (:class:`FlatIndex`, :class:`HNSWIndex`,
    :class:`IVFIndex`, :class:`MultiVectorIndex`, :class:`BM25Index`): ids, removal,
    persistence, ``repr``; holds the compiled index in ``_index``.

    A subclass names its compiled class in ``_CORE`` and the fields of its ``repr`` in
    ``_REPR`` (attribute names; ``"len"`` is the number of stored items), lists deprecated
    constructor keywords in ``_DEPRECATED_ARGS`` (hidden from index specs), and registers itself
    with :func:`rankfunnel.registry.register` so that :func:`rankfunnel.load` and
    :func:`rankfunnel.index_factory` know it.
    """

    _index: Any
    _CORE: ClassVar[Any]
    _REPR: ClassVar[tuple[str, ...]] = ("dim", "metric", "len")
    _REPR_LABELS: ClassVar[dict[str, str]] = {"n_tokens": "tokens", "is_trained": "trained"}
    _DEPRECATED_ARGS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _wrap(cls: type[T], core: Any) -> T:
        """A wrapper around an already built compiled index (from ``load``)."""
        obj = cls.__new__(cls)
        obj._index = core
        return obj

    @property
    def ids(self) -> Ids:
        """Stored ids (storage order, which changes on removal)."""
        out: Ids = self._index.ids()
        return out

    def __len__(self) -> int:
        return int(len(self._index))

    def __contains__(self, id: object) -> bool:
        return isinstance(id, (int, np.integer)) and bool(self._index.contains(int(id)))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{self._REPR_LABELS.get(name, name)}={len(self) if name == 'len' else getattr(self, name)!r}"
            for name in self._REPR
        )
        return f"{type(self).__name__}({fields})"

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ids; returns how many were removed.

        Removed ids are never returned by later searches.

        Raises
        ------
        UnknownIdError
            If any id is not stored; then nothing is removed.

        Notes
        -----
        Every id is checked first; they are then removed in chunks, searches from other threads
        running between them, so a concurrent search may still return some of the ids (whole and
        with their exact scores) but none once the call has returned.
        """
        return int(self._index.remove(as_ids(ids)))

    def memory_bytes(self) -> int:
        """Heap memory held by the index, in bytes (mmapped file pages excluded)."""
        return int(self._index.memory_bytes())

    def save(self, path: PathLike) -> None:
        """Write the index to ``path`` atomically (temporary file, fsync, rename).

        Every index kind shares one file format; :func:`rankfunnel.load` reads any of them.
        Searches from other threads keep running during a save; an add or remove from another
        thread waits for it (and a save waits for one in progress), so the file holds the index
        before or after each change, never part of one.
        """
        self._index.save(os.fspath(path))

    @classmethod
    def load(cls: type[T], path: PathLike, *, mmap: bool = False) -> T:
        """Load an index of this kind saved by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            File written by ``save``.
        mmap : bool, default False
            Read the bulk data from the mapped file instead of copying it into memory (what stays
            on disk depends on the kind: see its class docstring); the file is never modified.

        Raises
        ------
        CorruptFileError
            If the file is truncated, damaged, foreign or holds another index kind.
        UnsupportedVersionError
            If a newer rankfunnel wrote it.
        """
        return cls._wrap(cls._CORE.load(os.fspath(path), bool(mmap)))


def bf16_copy_arg(bf16_copy: bool, prefilter: Optional[bool], owner: str) -> bool:
    """Resolve ``bf16_copy=`` and its deprecated spelling ``prefilter=`` (which wins when given)."""
    if prefilter is None:
        return bool(bf16_copy)
    warnings.warn(
        f"{owner}(prefilter=...) is deprecated; use bf16_copy=...", DeprecationWarning, stacklevel=3
    )
    return bool(prefilter)


class BF16Copy:
    """The ``bf16_copy`` property (and its deprecated name ``prefilter``) of the indexes that can
    keep a bfloat16 copy of their vectors (:class:`FlatIndex`, :class:`HNSWIndex`)."""

    _index: Any

    @property
    def bf16_copy(self) -> bool:
        """Whether the bfloat16 copy of the vectors is kept (see the class docstring)."""
        return bool(self._index.prefilter)

    @property
    def prefilter(self) -> bool:
        """Deprecated name of :attr:`bf16_copy` (emits a :class:`DeprecationWarning`)."""
        warnings.warn(
            f"{type(self).__name__}.prefilter is deprecated; use .bf16_copy", DeprecationWarning, stacklevel=2
        )
        return self.bf16_copy


class IndexBase(IdIndexBase):
    """Base of the vector index wrappers: adds the dimension, metric, stored vectors and input
    checks."""

    @property
    def dim(self) -> int:
        """Vector dimension (token dimension for multi-vector indexes)."""
        return int(self._index.dim)

    @property
    def metric(self) -> str:
        """Metric name: ``"cosine"``, ``"dot"`` or ``"l2"``."""
        return str(self._index.metric)

    def _vectors(self, vectors: npt.ArrayLike, ids: Optional[npt.ArrayLike]) -> tuple[Any, Optional[Ids]]:
        v, _ = as_matrix(vectors, "vectors", dim=self.dim)
        return v, None if ids is None else as_ids(ids)

    def _queries(
        self, queries: npt.ArrayLike, k: int, filter: Optional[npt.ArrayLike]
    ) -> tuple[Any, bool, int, Optional[Ids]]:
        k = positive_int(k, "k")
        q, single = as_matrix(queries, "queries", dim=self.dim)
        return q, single, k, None if filter is None else as_ids(filter, "filter")

    @property
    def is_mapped(self) -> bool:
        """Whether stored data is read from a memory-mapped file (``load(..., mmap=True)``)."""
        return bool(self._index.is_mapped)

    def get(self, ids: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Stored vectors of ``ids`` as an ``(n, dim)`` array (unit length for cosine).

        Raises
        ------
        UnknownIdError
            If any id is not stored.
        """
        out: npt.NDArray[np.float32] = self._index.get(as_ids(ids))
        return out


def unbatch(single: bool, scores: Scores, ids: Ids) -> tuple[Scores, Ids]:
    """Drop the query axis of results for a 1-D query."""
    return (scores[0], ids[0]) if single else (scores, ids)
