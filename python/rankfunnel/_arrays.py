"""Input normalisation shared by every public entry point: dtype, shape, contiguity, ids."""

from __future__ import annotations

import operator
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import RankfunnelError

METRICS = ("cosine", "dot", "l2")
# Every accepted name -> canonical name: the core's table, so both layers accept the same names.
_NAMES: dict[str, str] = dict(_core.metric_names())


def metric_name(metric: Any) -> str:
    """Return the canonical metric name or raise :class:`RankfunnelError`."""
    if not isinstance(metric, str):
        raise RankfunnelError(f"metric must be a string, got {type(metric).__name__}")
    name = _NAMES.get(metric.lower())
    if name is None:
        raise RankfunnelError(f"unknown metric {metric!r}: expected 'cosine', 'dot' or 'l2'")
    return name


def _integer(value: Any, name: str, error: type[RankfunnelError]) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be an integer, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise error(f"{name} must be an integer, got {type(value).__name__}") from None


def positive_int(value: Any, name: str, error: type[RankfunnelError] = RankfunnelError) -> int:
    """Return ``value`` as an int >= 1 or raise ``error`` (a :class:`RankfunnelError`) naming ``name``."""
    v = _integer(value, name, error)
    if v <= 0:
        raise error(f"{name} must be at least 1, got {v}")
    return v


def non_negative_int(value: Any, name: str, error: type[RankfunnelError] = RankfunnelError) -> int:
    """Return ``value`` as an int >= 0 or raise ``error`` (a :class:`RankfunnelError`) naming ``name``."""
    v = _integer(value, name, error)
    if v < 0:
        raise error(f"{name} must be a non-negative integer, got {v}")
    return v


def threads_arg(threads: Optional[int], error: type[RankfunnelError] = RankfunnelError) -> Optional[int]:
    """Validate a ``threads=`` argument (``None`` means the default)."""
    return None if threads is None else positive_int(threads, "threads", error)


def as_matrix(x: Any, name: str, dim: Optional[int] = None) -> tuple[npt.NDArray[np.float32], bool]:
    """Return ``x`` as a C-contiguous float32 ``(n, d)`` matrix and whether it was one vector.

    Other numeric dtypes are converted (a copy); non-contiguous and Fortran arrays are copied.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise RankfunnelError(f"{name} must be numeric, got dtype {arr.dtype}")
    single = arr.ndim == 1
    if single:
        if arr.shape[0] == 0:
            raise RankfunnelError(f"{name} is an empty vector")
        arr = arr.reshape(1, -1)
    elif arr.ndim != 2:
        raise RankfunnelError(f"{name} must be a 1-D vector or a 2-D (n, d) array, got {arr.ndim}-D")
    if arr.shape[1] == 0:
        raise RankfunnelError(f"{name} have 0 dimensions")
    if dim is not None and arr.shape[1] != dim:
        raise RankfunnelError(f"dimension mismatch: {name} have {arr.shape[1]} dimensions, expected {dim}")
    return np.ascontiguousarray(arr, dtype=np.float32), single


def as_ids(x: Any, name: str = "ids") -> npt.NDArray[np.int64]:
    """Return ``x`` (an int, a sequence or an array of integers) as a contiguous int64 vector."""
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise RankfunnelError(f"{name} must be 1-D, got {arr.ndim}-D")
    if arr.size and arr.dtype.kind not in "iu":
        raise RankfunnelError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise RankfunnelError(f"{name} do not fit in int64")
    return np.ascontiguousarray(arr, dtype=np.int64)
