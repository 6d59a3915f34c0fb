"""What every index wrapper shares: properties, ids, removal, persistence."""

from __future__ import annotations

import os
from typing import Any, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt

from ._arrays import as_ids, as_matrix, positive_int

PathLike = Union[str, "os.PathLike[str]"]
Scores = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
T = TypeVar("T", bound="IdIndexBase")


class IdIndexBase:
    """Base of every index wrapper (vector or lexical): ids, removal, persistence; holds the
    compiled index in ``_index``."""

    _index: Any

    @classmethod
    def _wrap(cls: type[T], core: Any) -> T:
        obj = cls.__new__(cls)
        obj._index = core
        return obj

    def __len__(self) -> int:
        return int(len(self._index))

    def __contains__(self, id: object) -> bool:
        return isinstance(id, (int, np.integer)) and bool(self._index.contains(int(id)))

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ids; returns how many were removed.

        Raises
        ------
        UnknownIdError
            If any id is not stored; then nothing is removed.
        """
        return int(self._index.remove(as_ids(ids)))

    def memory_bytes(self) -> int:
        """Heap memory held by the index, in bytes (mmapped file pages excluded)."""
        return int(self._index.memory_bytes())

    def save(self, path: PathLike) -> None:
        """Write the index to ``path`` atomically (temporary file, fsync, rename)."""
        self._index.save(os.fspath(path))


class IndexBase(IdIndexBase):
    """Base of the vector index wrappers: adds the dimension, metric and input checks."""

    @property
    def dim(self) -> int:
        """Vector dimension."""
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


def unbatch(single: bool, scores: Scores, ids: Ids) -> tuple[Scores, Ids]:
    """Drop the query axis of results for a 1-D query."""
    return (scores[0], ids[0]) if single else (scores, ids)
