"""Loading any saved index by the kind its file header names."""

from __future__ import annotations

import os
from typing import Union

from . import _core
from ._index import PathLike
from .bm25 import BM25Index
from .flat import FlatIndex
from .hnsw import HNSWIndex
from .ivf import IVFIndex
from .multivector import MultiVectorIndex
from .registry import wrap_core

AnyIndex = Union[FlatIndex, IVFIndex, HNSWIndex, MultiVectorIndex, BM25Index]


def load(path: PathLike, *, mmap: bool = False) -> AnyIndex:
    """Load an index saved by any rankfunnel index class.

    Parameters
    ----------
    path : str or os.PathLike
        File written by ``save``.
    mmap : bool
        Map the file instead of reading it into memory, where the index kind allows.

    Returns
    -------
    FlatIndex, IVFIndex, HNSWIndex, MultiVectorIndex or BM25Index
        The loaded index, of the kind recorded in the file (any kind in
        :mod:`rankfunnel.registry`).

    Raises
    ------
    CorruptFileError
        If the file is truncated, damaged or foreign.
    UnsupportedVersionError
        If a newer rankfunnel wrote it.
    """
    out: AnyIndex = wrap_core(_core.load(os.fspath(path), bool(mmap)))
    return out
