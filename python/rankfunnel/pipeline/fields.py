"""What a stage keeps per document, split into the main index and the segments' delta.

A *field* holds one stage's per-document data: :class:`VectorField` the first-stage vectors,
:class:`TokenField` the ColBERT token vectors. Each keeps

* ``main``: the index loaded from the main file (``main-G.rfi`` / ``late-G.rfi``), rewritten
  only by a fold (compaction);
* a *delta*: the live rows of every segment, in memory in one structure, so a search costs two
  lookups however many segment files there are.

A field is the unit a new stage brings along (a BM25 stage would bring term postings): it says
how to encode texts, how to turn rows into segment arrays and back (:meth:`arrays`,
:meth:`load_segment`), how to fold the delta into its main index, and how to search both parts
and merge them exactly (:func:`merge_topk`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np
import numpy.typing as npt

from .._arrays import as_matrix
from ..errors import CorruptFileError, RankfunnelError
from ..flat import FlatIndex
from ..io import load as load_index
from ..ivf import IVFIndex
from ..registry import index_factory, parse_spec

Ids = npt.NDArray[np.int64]
Arrays = dict[str, npt.NDArray[Any]]


def merge_topk(
    parts: Sequence[tuple[npt.NDArray[np.float32], Ids]], k: int, ascending: bool = False
) -> tuple[npt.NDArray[np.float32], Ids]:
    """Merge per-part top-k lists of one query exactly: best first, ties to the lower id.

    Padding (id -1) is dropped; the result has at most ``k`` entries.
    """
    scores = np.concatenate(
        [np.asarray(s, dtype=np.float32).ravel() for s, _ in parts] or [np.empty(0, np.float32)]
    )
    ids = np.concatenate([np.asarray(i, dtype=np.int64).ravel() for _, i in parts] or [np.empty(0, np.int64)])
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, scores if ascending else -scores))[:k]
    return scores[order], ids[order]


FIRST_STAGE_KINDS = ("flat", "hnsw", "ivf")
"""Index kinds that can hold a pipeline's first-stage vectors."""


def main_kind(spec: str) -> str:
    """The index kind of a spec (``"ivf1024,int8"`` -> ``"ivf"``)."""
    return parse_spec(spec)[0]


def new_index(spec: str, dim: int, n: int, metric: str) -> Any:
    """A new first-stage index of ``spec`` for about ``n`` vectors (the one place indexes are made)."""
    return index_factory(spec, dim, metric, size_hint=n)


class Field(Protocol):
    """What the pipeline asks of a stage's per-document data (see the module notes)."""

    key: str
    """Name of the payload in ``Pipeline._encode`` and of the field (``"vectors"``, ``"tokens"``)."""
    main_prefix: str
    """File prefix of the main index (``main`` -> ``main-G.rfi``)."""

    def __len__(self) -> int:
        """Documents held (main index + delta)."""
        ...

    def __contains__(self, id: object) -> bool:
        """Whether a document is held."""
        ...

    def encode(self, texts: list[str], batch_size: int, show_progress: bool) -> Any:
        """The payload of new documents (their model's output), checked."""
        ...

    def add(self, ids: Ids, payload: Any) -> None:
        """Add new documents' payload to the delta."""
        ...

    def remove(self, ids: Ids) -> None:
        """Drop documents from whichever part holds them (in memory: tombstones)."""
        ...

    def arrays(self, ids: Ids) -> Arrays:
        """Delta rows as segment arrays (for a merge or a snapshot)."""
        ...

    def payload_arrays(self, payload: Any) -> Arrays:
        """A payload not yet added, as segment arrays (for a commit)."""
        ...

    def load_segment(self, ids: Ids, arrays: Arrays, keep: npt.NDArray[np.bool_]) -> None:
        """Add the live rows (``keep``) of a segment file to the delta."""
        ...

    def fold(self) -> None:
        """Move the delta into the main index."""
        ...

    def main_len(self) -> int:
        """Rows in the main index."""
        ...

    def save_main(self, path: Path) -> None:
        """Write the main index atomically."""
        ...

    def load_main(self, path: Path, mmap: bool) -> None:
        """Load the main index file (CorruptFileError naming it when damaged)."""
        ...


class VectorField:
    """First-stage vectors: the main index (flat, HNSW or IVF) plus an exact delta.

    Parameters
    ----------
    encoder : BiEncoder
        Encodes documents (``encode``).
    kind : str
        Index spec of the main index (kind flat, hnsw or ivf). An ivf main index stays an exact :class:`FlatIndex` until
        a fold finds at least ``ivf_train_at`` vectors; then it trains its lists once on all of
        them (``nlist = min(n // 39, 4 sqrt(n))``) and later folds only add.
    metric : str
        Metric of every part.
    dim : int, optional
        Vector dimension; taken from the first vectors when not known.
    ivf_train_at : int
        See ``kind``.

    Attributes
    ----------
    prototype : index or None
        An empty index given by the caller: the first fold that builds the main index (for an
        IVF prototype, the one that trains it) uses it, with its settings, instead of a new one.
    """

    key = "vectors"
    main_prefix = "main"

    def __init__(self, encoder: Any, kind: str, metric: str, dim: Optional[int], ivf_train_at: int) -> None:
        self.encoder = encoder
        self.kind, self.metric, self.dim, self.ivf_train_at = kind, metric, dim, ivf_train_at
        self.main: Any = None
        self.delta: Optional[FlatIndex] = None
        self.prototype: Any = None
        self.search_params: dict[str, int] = {}
        """Keyword arguments every search of the main index gets (``ef``, ``nprobe``)."""

    def __len__(self) -> int:
        return (0 if self.main is None else len(self.main)) + (0 if self.delta is None else len(self.delta))

    def __contains__(self, id: object) -> bool:
        return any(part is not None and id in part for part in (self.delta, self.main))

    def encode(self, texts: list[str], batch_size: int, show_progress: bool) -> npt.NDArray[np.float32]:
        """Document vectors from the encoder, checked."""
        v = self.encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)
        return self.check(v, len(texts))

    def check(self, embeddings: npt.ArrayLike, n: int) -> npt.NDArray[np.float32]:
        """Validate user-given vectors: ``(n, dim)``, finite numbers.

        Raises
        ------
        RankfunnelError
            On a wrong count, dimension or a NaN/inf.
        """
        v, _ = as_matrix(embeddings, "embeddings", dim=self.dim)
        if v.shape[0] != n:
            raise RankfunnelError(f"got {v.shape[0]} embeddings for {n} texts")
        if not np.isfinite(v).all():
            raise RankfunnelError("embeddings hold NaN or infinity")
        return v

    def add(self, ids: Ids, payload: npt.NDArray[np.float32]) -> None:
        """Add vectors of new rows to the delta."""
        if self.dim is None:
            self.dim = int(payload.shape[1])
        if self.delta is None:
            self.delta = FlatIndex(self.dim, self.metric)
        self.delta.add(payload, ids=ids)

    def remove(self, ids: Ids) -> None:
        """Remove rows from whichever part holds them (ids not held are ignored)."""
        for part in (self.delta, self.main):
            if part is not None:
                held = [int(i) for i in ids if int(i) in part]
                if held:
                    part.remove(held)

    def arrays(self, ids: Ids) -> Arrays:
        """The delta rows ``ids`` as segment arrays."""
        assert self.delta is not None
        return {"vectors": self.delta.get(ids)}

    def payload_arrays(self, payload: npt.NDArray[np.float32]) -> Arrays:
        """Segment arrays of vectors not yet added."""
        return {"vectors": np.asarray(payload, dtype=np.float32)}

    def load_segment(self, ids: Ids, arrays: Arrays, keep: npt.NDArray[np.bool_]) -> None:
        """Add the kept rows of a segment file to the delta."""
        if "vectors" not in arrays:
            raise CorruptFileError("a segment lacks its vectors")
        if keep.any():
            self.add(ids[keep], arrays["vectors"][keep])

    def fold(self) -> None:
        """Move the delta into the main index (training an IVF index when it is due)."""
        if self.delta is None or len(self.delta) == 0:
            self.delta = None
            return
        assert self.dim is not None
        ids = self.delta.ids
        vecs = self.delta.get(ids)
        n = len(self)
        if self.main is None or (
            main_kind(self.kind) == "ivf" and isinstance(self.main, FlatIndex) and n >= self.ivf_train_at
        ):
            if self.main is not None and len(self.main):
                old = self.main.ids
                ids = np.concatenate([old, ids])
                vecs = np.concatenate([self.main.get(old), vecs])
            trained = isinstance(self.prototype, IVFIndex) and self.prototype.is_trained
            kind = (
                "flat"
                if main_kind(self.kind) == "ivf" and n < self.ivf_train_at and not trained
                else self.kind
            )
            if self.prototype is not None and kind == self.kind:
                main, self.prototype = self.prototype, None
            else:
                main = new_index(kind, self.dim, n, self.metric)
            if isinstance(main, IVFIndex) and not main.is_trained:
                main.train(vecs)
            main.add(vecs, ids=ids)
            self.main = main
        else:
            self.main.add(vecs, ids=ids)
        self.delta = None

    def main_len(self) -> int:
        """Rows in the main index."""
        return 0 if self.main is None else len(self.main)

    def save_main(self, path: Path) -> None:
        """Write the main index (atomically)."""
        self.main.save(path)

    def load_main(self, path: Path, mmap: bool) -> None:
        """Load the main index file."""
        self.main = _load_checked(path, mmap)
        self.dim = self.main.dim

    def search(
        self, queries: npt.NDArray[np.float32], k: int, allow: Optional[Ids]
    ) -> list[tuple[npt.NDArray[np.float32], Ids]]:
        """Top k of every query over the main index and the delta, merged exactly."""
        parts = []
        if self.main is not None and len(self.main):
            # An IVF pipeline's main index is exact (flat) until it trains: no settings to apply.
            params = {} if isinstance(self.main, FlatIndex) else self.search_params
            parts.append(self.main.search(queries, k=k, filter=allow, **params))
        if self.delta is not None and len(self.delta):
            parts.append(self.delta.search(queries, k=k, filter=allow))
        ascending = self.metric == "l2"
        return [merge_topk([(s[qi], i[qi]) for s, i in parts], k, ascending) for qi in range(len(queries))]


class TokenField:
    """ColBERT token vectors: the main :class:`MultiVectorIndex` plus exact float32 tokens.

    Documents still in segments are scored by exact MaxSim over their float32 tokens; a fold
    compresses them into the main index (2-bit residuals), whose scores are those of the
    compressed tokens, as before segments existed.
    """

    key = "tokens"
    main_prefix = "late"

    def __init__(self, model: Any, dim: int) -> None:
        self.model, self.dim = model, dim
        self.main: Any = None
        self.delta: dict[int, npt.NDArray[np.float32]] = {}

    def encode(self, texts: list[str], batch_size: int, show_progress: bool) -> list[npt.NDArray[np.float32]]:
        """Document token arrays from the ColBERT model."""
        out: list[npt.NDArray[np.float32]] = self.model.encode_documents(
            texts, batch_size=batch_size, show_progress=show_progress
        )
        return out

    def __len__(self) -> int:
        return (0 if self.main is None else len(self.main)) + len(self.delta)

    def __contains__(self, id: object) -> bool:
        return id in self.delta or (self.main is not None and id in self.main)

    def add(self, ids: Ids, payload: Sequence[npt.NDArray[np.float32]]) -> None:
        """Add the token arrays of new rows to the delta."""
        for i, t in zip(ids.tolist(), payload):
            self.delta[i] = np.ascontiguousarray(t, dtype=np.float32).reshape(-1, self.dim)

    def remove(self, ids: Ids) -> None:
        """Remove rows from whichever part holds them (ids not held are ignored)."""
        held = [
            int(i) for i in ids if self.main is not None and int(i) in self.main and int(i) not in self.delta
        ]
        for i in ids.tolist():
            self.delta.pop(i, None)
        if held:
            self.main.remove(held)

    def arrays(self, ids: Ids) -> Arrays:
        """The delta rows ``ids`` as segment arrays (tokens back to back plus offsets)."""
        return self.payload_arrays([self.delta[i] for i in ids.tolist()])

    def payload_arrays(self, toks: Sequence[npt.NDArray[np.float32]]) -> Arrays:
        """Segment arrays of token arrays not yet added."""
        toks = [np.asarray(t, dtype=np.float32).reshape(-1, self.dim) for t in toks]
        offsets = np.zeros(len(toks) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in toks], out=offsets[1:])
        flat = np.concatenate(toks) if toks else np.zeros((0, self.dim), np.float32)
        return {"tokens": flat, "token_offsets": offsets}

    def load_segment(self, ids: Ids, arrays: Arrays, keep: npt.NDArray[np.bool_]) -> None:
        """Add the kept rows of a segment file to the delta."""
        if "tokens" not in arrays or "token_offsets" not in arrays:
            raise CorruptFileError("a segment lacks its ColBERT tokens")
        toks, off = arrays["tokens"], arrays["token_offsets"]
        for j in np.flatnonzero(keep).tolist():
            self.delta[int(ids[j])] = toks[off[j] : off[j + 1]]

    def fold(self) -> None:
        """Compress the delta into the main index."""
        if not self.delta:
            return
        if self.main is None:
            from ..multivector import MultiVectorIndex

            self.main = MultiVectorIndex(dim=self.dim, nbits=2)
        ids = np.fromiter(self.delta, dtype=np.int64, count=len(self.delta))
        self.main.add([self.delta[int(i)] for i in ids], ids=ids)
        self.delta = {}

    def main_len(self) -> int:
        """Rows in the main index."""
        return 0 if self.main is None else len(self.main)

    def save_main(self, path: Path) -> None:
        """Write the main index (atomically)."""
        self.main.save(path)

    def load_main(self, path: Path, mmap: bool) -> None:
        """Load the main index file."""
        self.main = _load_checked(path, mmap)

    def _delta_maxsim(self, q: npt.NDArray[np.float32], ids: Sequence[int]) -> npt.NDArray[np.float32]:
        from ..maxsim import maxsim

        if not ids:
            return np.empty(0, np.float32)
        return np.asarray(maxsim(q, [self.delta[i] for i in ids]), dtype=np.float32)

    def search(
        self, q: npt.NDArray[np.float32], k: int, allow: Optional[Ids]
    ) -> tuple[npt.NDArray[np.float32], Ids]:
        """Top k documents by MaxSim over the main index (PLAID) and the delta (exact)."""
        parts = []
        if self.main is not None and len(self.main):
            parts.append(self.main.search(q, k=k, filter=allow))
        cand = list(self.delta) if allow is None else [int(i) for i in allow if int(i) in self.delta]
        if cand:
            parts.append((self._delta_maxsim(q, cand), np.asarray(cand, dtype=np.int64)))
        return merge_topk(parts, k)

    def rerank(
        self, q: npt.NDArray[np.float32], ids: Sequence[int], k: int
    ) -> tuple[npt.NDArray[np.float32], Ids]:
        """MaxSim of the query over ``ids`` only (each in the main index or the delta); top k."""
        in_delta = [i for i in ids if i in self.delta]
        in_main = [i for i in ids if i not in self.delta]
        parts = []
        if in_main:
            parts.append(self.main.rerank(q, np.asarray(in_main, dtype=np.int64), k=k))
        if in_delta:
            parts.append((self._delta_maxsim(q, in_delta), np.asarray(in_delta, dtype=np.int64)))
        return merge_topk(parts, k)


def _load_checked(path: Path, mmap: bool) -> Any:
    if not path.is_file():
        raise CorruptFileError(f"{path} is missing (the pipeline manifest names it)")
    try:
        return load_index(path, mmap=mmap)
    except CorruptFileError as err:
        raise CorruptFileError(f"{path}: {err}") from None
