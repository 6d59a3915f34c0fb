"""What a stage keeps per document, split into the main index and the segments' delta.

A *field* holds one stage's per-document data: :class:`VectorField` the first-stage vectors,
:class:`TokenField` the ColBERT token vectors, :class:`LexicalField` the BM25 postings. Each keeps

* ``main``: the index loaded from the main file (``main-G.rfi`` / ``late-G.rfi``), rewritten
  only by a fold (compaction);
* a *delta*: the live rows of every segment, in memory in one structure, so a search costs two
  lookups however many segment files there are.

A field is the unit a new stage brings along (the BM25 stage brings term postings): it says
how to encode texts, how to turn rows into segment arrays and back (:meth:`arrays`,
:meth:`load_segment`), how to fold the delta into its main index, and how to search both parts
and merge them exactly (:func:`merge_topk`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np
import numpy.typing as npt

from .._arrays import as_matrix
from ..bm25 import BM25Index
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


def lexical_settings(index: BM25Index) -> dict[str, Any]:
    """The analysis and scoring settings of a BM25 index, as the manifest records them.

    ``{"k1": 1.5, "b": 0.75, "language": "english", "stopwords": "english"}``; ``language``
    is None when stemming is off, ``stopwords`` is ``"english"``, None or the list of words.
    """
    words = index.stopwords
    stop: Any = words or None
    if words and words == _english_stopwords():
        stop = "english"
    # The core keeps k1 and b in float32: record them as written (1.2, not 1.2000000476837158).
    k1, b = (float(str(np.float32(v))) for v in (index.k1, index.b))
    return {"k1": k1, "b": b, "language": index.language, "stopwords": stop}


def _english_stopwords() -> list[str]:
    return BM25Index().stopwords


def new_lexical(settings: dict[str, Any]) -> BM25Index:
    """An empty BM25 index with the recorded ``settings`` (see :func:`lexical_settings`).

    Raises
    ------
    RankfunnelError
        If the settings are not valid BM25 settings (named).
    """
    if not isinstance(settings, dict):
        raise RankfunnelError(f"lexical settings must be a dict, got {type(settings).__name__}")
    unknown = set(settings) - {"k1", "b", "language", "stopwords"}
    if unknown:
        raise RankfunnelError(
            f"unknown lexical settings {sorted(unknown)}: expected k1, b, language, stopwords"
        )
    lang = settings.get("language", "english")
    return BM25Index(
        settings.get("k1", 1.5),
        settings.get("b", 0.75),
        language=lang if lang is not None else "english",
        stemmer=lang is not None,
        stopwords=settings.get("stopwords", "english"),
    )


class LexicalField:
    """BM25 postings: one in-memory :class:`BM25Index` over every live document, exact.

    BM25 scores depend on corpus-wide statistics (``N``, ``df``, ``avgdl``), so the main file
    and the segments are not searched apart and merged: the main file (``bm25-G.rfi``) is
    loaded and every segment's live rows are appended to the same index (appends cost what
    they add). Scores are then those of a single BM25 over the live corpus, whatever the
    segment layout. Segments keep the texts of their rows (UTF-8 bytes and offsets), so they
    stay self-contained; a fold writes the whole index as the new main file.

    Parameters
    ----------
    settings : dict
        BM25 settings (see :func:`lexical_settings`).
    """

    key = "terms"
    main_prefix = "bm25"

    def __init__(self, settings: dict[str, Any]) -> None:
        self.index = new_lexical(settings)
        self.delta: dict[int, str] = {}
        """Texts of the rows still in segments (not in the main file)."""

    @property
    def main(self) -> BM25Index:
        """The index of every live row (main file and segments alike)."""
        return self.index

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, id: object) -> bool:
        return id in self.index

    def encode(self, texts: list[str], batch_size: int, show_progress: bool) -> list[str]:
        """The texts themselves (BM25 analyses them when they are added)."""
        return list(texts)

    def add(self, ids: Ids, payload: Sequence[str]) -> None:
        """Append new rows' postings (cost proportional to the rows added)."""
        texts = list(payload)
        self.index.add(texts, ids)
        self.delta.update(zip(ids.tolist(), texts))

    def remove(self, ids: Ids) -> None:
        """Remove rows (ids not held are ignored)."""
        held = [int(i) for i in ids if int(i) in self.index]
        if held:
            self.index.remove(held)
        for i in held:
            self.delta.pop(i, None)

    def arrays(self, ids: Ids) -> Arrays:
        """The delta rows ``ids`` as segment arrays (their texts)."""
        return self.payload_arrays([self.delta[int(i)] for i in ids])

    def payload_arrays(self, payload: Sequence[str]) -> Arrays:
        """Texts as segment arrays: UTF-8 bytes back to back plus offsets."""
        encoded = [t.encode("utf-8") for t in payload]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return {"lexical_text": data, "lexical_offsets": offsets}

    def load_segment(self, ids: Ids, arrays: Arrays, keep: npt.NDArray[np.bool_]) -> None:
        """Append the kept rows of a segment file."""
        if "lexical_text" not in arrays or "lexical_offsets" not in arrays:
            raise CorruptFileError("a segment lacks its lexical texts")
        data, off = arrays["lexical_text"].tobytes(), arrays["lexical_offsets"]
        if len(off) != len(ids) + 1:
            raise CorruptFileError("a segment's lexical offsets do not match its rows")
        rows = np.flatnonzero(keep).tolist()
        if rows:
            texts = [data[off[j] : off[j + 1]].decode("utf-8") for j in rows]
            self.add(ids[rows], texts)

    def fold(self) -> None:
        """Every row now belongs to the main file (written by :meth:`save_main`)."""
        self.delta = {}

    def main_len(self) -> int:
        """Rows of the main file."""
        return len(self.index) - len(self.delta)

    def save_main(self, path: Path) -> None:
        """Write the main file's rows atomically (all rows, once folded)."""
        if not self.delta:
            self.index.save(path)
            return
        # A snapshot with rows still in segments: the main file leaves them out.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            self.index.save(tmp)
            copy = BM25Index.load(tmp)
            copy.remove(list(self.delta))
            copy.save(path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_main(self, path: Path, mmap: bool) -> None:
        """Load the main file (read into memory: the delta is appended to it)."""
        index = _load_checked(path, False)
        if not isinstance(index, BM25Index):
            raise CorruptFileError(f"{path} is not a BM25 index")
        self.index = index

    def search(
        self, queries: list[str], k: int, allow: Optional[Ids]
    ) -> list[tuple[npt.NDArray[np.float32], Ids]]:
        """BM25 top k of every query (no padding; a query without indexed terms finds nothing)."""
        if not len(self.index):
            return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in queries]
        scores, ids = self.index.search(queries, k=k, filter=allow)
        return [(s[i >= 0], i[i >= 0]) for s, i in zip(scores, ids)]


def _load_checked(path: Path, mmap: bool) -> Any:
    if not path.is_file():
        raise CorruptFileError(f"{path} is missing (the pipeline manifest names it)")
    try:
        return load_index(path, mmap=mmap)
    except CorruptFileError as err:
        raise CorruptFileError(f"{path}: {err}") from None
