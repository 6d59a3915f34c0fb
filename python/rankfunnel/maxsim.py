"""Late interaction: the fused MaxSim kernel (:func:`maxsim`) and packed documents (:class:`PackedDocs`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._arrays import as_ids, threads_arg
from .errors import RankfunnelError

DTYPES = ("f32", "f16", "int8")
_DTYPE_ALIASES = {"float32": "f32", "float16": "f16", "half": "f16", "i8": "int8"}
F32 = npt.NDArray[np.float32]


def _dtype_name(dtype: Any) -> str:
    if not isinstance(dtype, str):
        raise RankfunnelError(f"dtype must be a string, got {type(dtype).__name__}")
    name = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    if name not in DTYPES:
        raise RankfunnelError(f"unknown dtype {dtype!r}: expected 'f32', 'f16' or 'int8'")
    return name


def _tokens(x: Any, what: str) -> F32:
    """``x`` as a C-contiguous float32 ``(n, d)`` array (a 1-D array is one token)."""
    arr = x if type(x) is np.ndarray and x.dtype == np.float32 else np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise RankfunnelError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim != 2:
        raise RankfunnelError(f"{what} must be a 2-D (tokens, dim) array, got {arr.ndim}-D")
    out: F32 = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def _queries(query: Any) -> tuple[list[F32], bool]:
    """A list of query token arrays, and whether a single query was given."""
    if isinstance(query, np.ndarray) and query.ndim == 3:
        return [_tokens(q, f"query {i}") for i, q in enumerate(query)], False
    if isinstance(query, (list, tuple)):
        if len(query) == 0:
            raise RankfunnelError("no queries given")
        if all(isinstance(q, np.ndarray) and q.ndim == 2 for q in query) or isinstance(
            query[0], (list, tuple)
        ):
            return [_tokens(q, f"query {i}") for i, q in enumerate(query)], False
    return [_tokens(query, "query")], True


def _check_queries(qs: list[F32], dim: Optional[int]) -> None:
    for i, q in enumerate(qs):
        if q.shape[0] == 0:
            raise RankfunnelError(f"query {i} has no tokens")
        if dim is not None and q.shape[1] != dim:
            raise RankfunnelError(
                f"dimension mismatch: query {i} has {q.shape[1]} dimensions, the documents have {dim}"
            )


class PackedDocs:
    """Documents' token vectors packed back to back, optionally as float16 or int8.

    Packing once and scoring many queries avoids re-checking the documents on every call, and
    the float16 / int8 forms halve / quarter the memory (and memory traffic) of the tokens.

    Parameters
    ----------
    docs : sequence of array_like, each (n_i, d)
        Token vectors of each document; ``n_i`` may be 0 (an empty document scores 0).
    dtype : {"f32", "f16", "int8"}
        Storage type. ``"f16"`` rounds to IEEE half (relative error <= 2**-11 per value);
        ``"int8"`` stores ``round(x / scale)`` with a symmetric scale (``max |x| / 127``)
        per token (``int8_scale="token"``, the default) or per dimension (``"dim"``), an
        absolute error <= ``scale / 2`` per value. Queries always stay float32.
    int8_scale : {"token", "dim"}
        Scale granularity for ``dtype="int8"``.
    dim : int, optional
        Expected dimension (needed when there are no documents).

    Notes
    -----
    The MaxSim error against float32 documents is at most ``sum_i max_j |<q_i, e_j>|`` where
    ``e_j`` is the rounding error of token ``j``: for unit-length tokens about ``m * 2**-11``
    for f16 and ``m * sqrt(d) * scale / 2`` (Cauchy-Schwarz) for int8, with ``m`` query tokens.

    Examples
    --------
    >>> import numpy as np, rankfunnel as rf
    >>> docs = [np.eye(4, dtype=np.float32)[:2], np.eye(4, dtype=np.float32)[2:]]
    >>> packed = rf.PackedDocs(docs, dtype="f16")
    >>> rf.maxsim(np.eye(4, dtype=np.float32)[:1], packed).tolist()
    [1.0, 0.0]
    """

    tokens: npt.NDArray[Any]
    offsets: npt.NDArray[np.int64]
    scale: Optional[F32]

    def __init__(
        self,
        docs: Sequence[npt.ArrayLike],
        *,
        dtype: str = "f32",
        int8_scale: str = "token",
        dim: Optional[int] = None,
    ) -> None:
        arrs = [_tokens(x, f"document {i}") for i, x in enumerate(docs)]
        if dim is None:
            if not arrs:
                raise RankfunnelError("no documents given: pass dim= to pack an empty collection")
            dim = int(arrs[0].shape[1])
        for i, a in enumerate(arrs):
            if a.shape[1] != dim:
                raise RankfunnelError(
                    f"dimension mismatch: document {i} has {a.shape[1]} dimensions, expected {dim}"
                )
        lengths = np.array([a.shape[0] for a in arrs], dtype=np.int64)
        offsets = np.zeros(len(arrs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(arrs) if arrs else np.zeros((0, dim), dtype=np.float32)
        self._set(flat, offsets, _dtype_name(dtype), int8_scale)

    @classmethod
    def from_flat(
        cls,
        flat: npt.ArrayLike,
        offsets: npt.ArrayLike,
        *,
        dtype: str = "f32",
        int8_scale: str = "token",
    ) -> PackedDocs:
        """Pack from all tokens ``flat`` (N, d) and ``offsets`` (n_docs + 1,): document ``i`` is
        ``flat[offsets[i]:offsets[i + 1]]``. A float32 C-contiguous ``flat`` is used without a copy."""
        arr = _tokens(flat, "flat tokens")
        offs = as_ids(offsets, "offsets")
        obj = cls.__new__(cls)
        obj._set(arr, offs, _dtype_name(dtype), int8_scale)
        return obj

    def _set(self, flat: F32, offsets: npt.NDArray[np.int64], dtype: str, int8_scale: str) -> None:
        n = flat.shape[0]
        if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
            raise RankfunnelError(
                f"offsets must be non-decreasing, start at 0 and end at the number of tokens ({n})"
            )
        if not np.isfinite(flat).all():
            row = int(np.argwhere(~np.isfinite(flat))[0, 0])
            doc = int(np.searchsorted(offsets, row, side="right") - 1)
            raise RankfunnelError(f"document {doc} contains NaN or infinity (token row {row})")
        if int8_scale not in ("token", "dim"):
            raise RankfunnelError(f"int8_scale must be 'token' or 'dim', got {int8_scale!r}")
        self.offsets = offsets
        self.dtype = dtype
        self.int8_scale = int8_scale
        self.scale = None
        if dtype == "f32":
            self.tokens = flat
        elif dtype == "f16":
            half = flat.astype(np.float16)
            if not np.isfinite(half).all():
                raise RankfunnelError("token values overflow float16 (|x| > 65504)")
            self.tokens = half.view(np.uint16)
        else:
            axis = 1 if int8_scale == "token" else 0
            peak = np.abs(flat).max(axis=axis) if n else np.zeros(flat.shape[1] if axis == 0 else 0)
            scale = (peak / 127.0).astype(np.float32)
            safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
            q = flat / (safe[:, None] if axis == 1 else safe[None, :])
            self.tokens = np.clip(np.rint(q), -127, 127).astype(np.int8)
            self.scale = np.ascontiguousarray(scale, dtype=np.float32)

    @property
    def dim(self) -> int:
        """Token dimension."""
        return int(self.tokens.shape[1])

    @property
    def n_tokens(self) -> int:
        """Total number of tokens."""
        return int(self.tokens.shape[0])

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """Tokens per document."""
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tokens, offsets and scales."""
        return int(
            self.tokens.nbytes + self.offsets.nbytes + (0 if self.scale is None else self.scale.nbytes)
        )

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def __repr__(self) -> str:
        return (
            f"PackedDocs(n_docs={len(self)}, n_tokens={self.n_tokens}, dim={self.dim}, dtype={self.dtype!r})"
        )

    def doc(self, i: int) -> F32:
        """Document ``i``'s tokens as float32 (decoded from f16 / int8)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for {len(self)} documents")
        i %= len(self)
        return self.decode()[self.offsets[i] : self.offsets[i + 1]]

    def decode(self) -> F32:
        """All tokens as float32 ``(N, d)`` (what the kernel scores)."""
        if self.dtype == "f32":
            return self.tokens
        if self.dtype == "f16":
            out: F32 = self.tokens.view(np.float16).astype(np.float32)
            return out
        assert self.scale is not None
        s = self.scale[:, None] if self.int8_scale == "token" else self.scale[None, :]
        dec: F32 = (self.tokens.astype(np.float32) * s).astype(np.float32)
        return dec


Docs = Union[PackedDocs, Sequence[npt.ArrayLike], npt.NDArray[Any]]


def maxsim(query: Any, docs: Docs, *, threads: Optional[int] = None) -> F32:
    """ColBERT MaxSim: ``sum_i max_j <q_i, d_j>`` of query tokens against each document's tokens.

    Parameters
    ----------
    query : array_like (m, d), or a list of them / an array (nq, m, d)
        Query token vectors (float32; other numeric dtypes are converted). ``m >= 1``.
    docs : PackedDocs, a sequence of array_like (n_i, d), or an array (n_docs, n, d)
        Document token vectors. Lengths may differ (no padding is needed); an empty document
        (``n_i == 0``) scores 0.
    threads : int, optional
        Thread cap for this call; default ``RANKFUNNEL_NUM_THREADS`` or every core. Documents are
        spread over the threads; the GIL is released.

    Returns
    -------
    ndarray of float32
        Shape ``(n_docs,)`` for one query, ``(nq, n_docs)`` for a list of queries.

    Raises
    ------
    RankfunnelError
        On a dimension mismatch, an empty query, NaN or infinity in a query or a document (or
        scores that overflow float32), or a bad ``PackedDocs``.

    Notes
    -----
    The kernel is fused: query tokens are packed in 16-token panels and a register tile of
    query panels x document tokens keeps the running row maxima, so the ``(m, n_i)`` score
    matrix is never written. float32 results match a float64 reference to about 1e-6 relative.
    """
    qs, single = _queries(query)
    t = threads_arg(threads)
    if isinstance(docs, PackedDocs):
        _check_queries(qs, docs.dim)
        per_token = docs.int8_scale == "token"
        out: F32 = _core.maxsim_packed(qs, docs.tokens, docs.offsets, docs.scale, per_token, t)
    else:
        if isinstance(docs, np.ndarray) and docs.ndim == 2 and docs.shape[0] == 0:
            docs = []
        if isinstance(docs, np.ndarray) and docs.ndim != 3:
            raise RankfunnelError(
                f"docs must be a PackedDocs, a list of (n_i, d) arrays or an (n_docs, n, d) array, got {docs.ndim}-D"
            )
        ds = [_tokens(x, f"document {i}") for i, x in enumerate(docs)]
        _check_queries(qs, None)
        dim = qs[0].shape[1]
        for i, x in enumerate(ds):
            if x.shape[1] != dim:
                if x.size == 0:
                    ds[i] = np.zeros((0, dim), dtype=np.float32)
                    continue
                raise RankfunnelError(
                    f"dimension mismatch: document {i} has {x.shape[1]} dimensions, the queries have {dim}"
                )
        out = _core.maxsim_list(qs, ds, t)
    return out[0] if single else out
