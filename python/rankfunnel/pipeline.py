"""The retrieval funnel: a first stage that retrieves candidates fast, then optional rerankers.

    bi-encoder (or ColBERT) retrieves ``candidates``  ->  ColBERT / cross-encoder rerank  ->  top k

Texts and metadata live in SQLite (``docs.sqlite``), vectors in index files, and
``pipeline.json`` records the configuration, the models (path + SHA-256) and the committed
generation. A pipeline opened on a folder commits every :meth:`Pipeline.add` crash-safely: rows
are written with the next generation, the index files replaced atomically, and only then is the
generation committed; on load, rows and vectors of an uncommitted generation are dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from ._arrays import as_ids, positive_int
from .docstore import DocStore
from .errors import RankfunnelError
from .io import load as load_index
from .ivf import IVFIndex
from .registry import index_factory, parse_spec

PathLike = Union[str, "os.PathLike[str]"]
FORMAT_VERSION = 1
STAGES = ("retrieve", "late", "rerank")


@dataclass
class Hit:
    """One search result.

    Attributes
    ----------
    id : int
        Internal int64 id (the index label).
    doc_id : str
        The document's own id (from the corpus), or ``str(id)``.
    score : float
        Score of the last stage that ran.
    text : str
        Document text.
    metadata : dict
        Document metadata.
    scores : dict
        Score per stage: ``"retrieve"``, ``"late"`` (ColBERT), ``"rerank"`` (cross-encoder).
    """

    id: int
    doc_id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def _sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _describe(model: Any) -> dict[str, Any]:
    """Class, path, options and checksum of a model, as recorded in pipeline.json."""
    from .models._model_dir import find_onnx

    d = Path(model.model_dir)
    files = [find_onnx(d, None)] + [p for p in (d / "tokenizer.json",) if p.exists()]
    return {
        "class": type(model).__name__,
        "path": str(d.resolve()),
        "quantize": getattr(model, "quantize", None),
        "sha256": _sha256(files),
    }


def _open_model(desc: dict[str, Any]) -> Any:
    from . import models

    cls = {
        "BiEncoder": models.BiEncoder,
        "CrossEncoder": models.CrossEncoder,
        "ColBERTEncoder": models.ColBERTEncoder,
    }
    if desc["class"] not in cls:
        raise RankfunnelError(f"pipeline.json names an unknown model class {desc['class']!r}")
    kwargs = {"quantize": desc["quantize"]} if desc.get("quantize") else {}
    model = cls[desc["class"]](desc["path"], **kwargs)
    now = _describe(model)["sha256"]
    if now != desc["sha256"]:
        raise RankfunnelError(
            f"the model at {desc['path']} changed since this pipeline was built (checksum "
            f"{now[:12]} != {desc['sha256'][:12]}); re-index with the new model or restore the old one"
        )
    return model


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Pipeline:
    """Compose retrieval stages into the standard production funnel.

    Parameters
    ----------
    encoder : BiEncoder, optional
        First-stage bi-encoder. Without it, ``late_interaction`` retrieves.
    index : str or an index object
        Where first-stage vectors go: an index spec of :func:`rankfunnel.index_factory`
        (``"flat"``, ``"hnsw"``, ``"ivf"``, ``"hnsw32"``, ``"ivf1024,int8"``, ...). ``"ivf"`` trains its
        k-means on the first :meth:`add` (``nlist = min(n / 39, 4 sqrt(n))`` for its ``n``
        documents), so make that first batch a representative sample (the CLI waits for
        65,536 documents); later adds reuse those lists.
    reranker : CrossEncoder, optional
        Final stage: rescores the candidates of the previous stage with the cross-encoder.
    late_interaction : ColBERTEncoder, optional
        ColBERT: reranks the bi-encoder's candidates by MaxSim, or retrieves by itself
        (through a :class:`MultiVectorIndex`) when there is no ``encoder``.
    candidates : int or dict
        How many candidates each stage passes on: one number for every stage, or
        ``{"retrieve": 100, "late": 30}``.
    metric : {"cosine", "dot", "l2"}
        Metric of the first-stage index.
    path : str or os.PathLike, optional
        Folder to keep the pipeline in; each :meth:`add` is then committed there crash-safely.

    Examples
    --------
    >>> p = rf.Pipeline(encoder=rf.BiEncoder(d), reranker=rf.CrossEncoder(c), candidates=100)  # doctest: +SKIP
    >>> p.add(["first document", "second document"], metadata=[{"year": 2024}, {"year": 2023}])  # doctest: +SKIP
    >>> p.search("a query", k=1, where={"year": 2024})[0].text  # doctest: +SKIP
    'first document'
    """

    def __init__(
        self,
        encoder: Any = None,
        index: Any = "flat",
        reranker: Any = None,
        late_interaction: Any = None,
        candidates: Union[int, dict[str, int]] = 100,
        *,
        metric: str = "cosine",
        path: Optional[PathLike] = None,
    ) -> None:
        if encoder is None and late_interaction is None:
            raise RankfunnelError(
                "a pipeline needs an encoder (bi-encoder) or late_interaction (ColBERT) to retrieve"
            )
        self.encoder = encoder
        self.reranker = reranker
        self.late_interaction = late_interaction
        self.metric = metric
        self.candidates = self._check_candidates(candidates)
        self.index_kind = index if isinstance(index, str) else type(index).__name__
        if isinstance(index, str):
            parse_spec(index)  # an unknown kind or option raises, naming the valid ones
        self.index: Any = None if isinstance(index, str) else index
        self.mv: Any = None
        self.generation = 0
        self.last_timings: dict[str, float] = {}
        self.path: Optional[Path] = None
        self.docs = DocStore(None)
        if path is not None:
            self._attach(Path(path), new=True)

    # -- configuration -------------------------------------------------------------------------

    @staticmethod
    def _check_candidates(c: Union[int, dict[str, int]]) -> dict[str, int]:
        if isinstance(c, dict):
            bad = set(c) - set(STAGES)
            if bad:
                raise RankfunnelError(f"unknown stages in candidates: {sorted(bad)}; stages are {STAGES}")
            return {k: positive_int(v, f"candidates[{k!r}]") for k, v in c.items()}
        n = positive_int(c, "candidates")
        return {"retrieve": n, "late": n}

    def stages(self) -> list[str]:
        """The stages this pipeline runs, in order."""
        out = ["retrieve"]
        if self.encoder is not None and self.late_interaction is not None:
            out.append("late")
        if self.reranker is not None:
            out.append("rerank")
        return out

    def __len__(self) -> int:
        return len(self.docs)

    def __repr__(self) -> str:
        return f"Pipeline(stages={self.stages()}, index={self.index_kind!r}, docs={len(self)})"

    def _new_index(self, dim: int, n: int) -> Any:
        return index_factory(self.index_kind, dim, self.metric, size_hint=n)

    def _new_mv(self) -> Any:
        from .multivector import MultiVectorIndex

        return MultiVectorIndex(dim=int(self.late_interaction.dim), nbits=2)

    # -- persistence ---------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "generation": self.generation,
            "index": self.index_kind,
            "metric": self.metric,
            "candidates": self.candidates,
            "models": {
                name: _describe(m)
                for name, m in (
                    ("encoder", self.encoder),
                    ("reranker", self.reranker),
                    ("late_interaction", self.late_interaction),
                )
                if m is not None
            },
        }

    def _attach(self, path: Path, new: bool) -> None:
        if new:
            if (path / "pipeline.json").exists():
                raise RankfunnelError(f"{path} already holds a pipeline: open it with rf.Pipeline.load")
            path.mkdir(parents=True, exist_ok=True)
            if len(self.docs):
                self.docs.copy_to(path / "docs.sqlite")
        self.docs = DocStore(path / "docs.sqlite")
        self.path = path
        if new:
            self._commit()

    def _commit(self) -> None:
        """Save index files, then commit the generation in pipeline.json (the commit point)."""
        assert self.path is not None
        if self.index is not None:
            self.index.save(self.path / "index.rfi")
        if self.mv is not None:
            self.mv.save(self.path / "late.rfi")
        _write_json_atomic(self.path / "pipeline.json", self._config())

    def save(self, path: PathLike) -> None:
        """Write a snapshot of the pipeline to a folder (``pipeline.json``, ``docs.sqlite``, index files)."""
        dst = Path(path)
        if self.path is not None and dst.resolve() == self.path.resolve():
            self._commit()
            return
        dst.mkdir(parents=True, exist_ok=True)
        self.docs.copy_to(dst / "docs.sqlite")
        if self.index is not None:
            self.index.save(dst / "index.rfi")
        if self.mv is not None:
            self.mv.save(dst / "late.rfi")
        _write_json_atomic(dst / "pipeline.json", self._config())

    @classmethod
    def load(cls, path: PathLike, *, mmap: bool = False) -> Pipeline:
        """Open a pipeline folder; later :meth:`add` calls commit there.

        The models are reopened from the recorded paths and must match their recorded SHA-256.
        Rows and vectors of an ``add`` that was interrupted before it committed are dropped.

        Raises
        ------
        RankfunnelError
            If the folder holds no pipeline, a newer format, or a model changed.
        """
        root = Path(path)
        cfg_path = root / "pipeline.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"no pipeline at {root} (pipeline.json is missing)")
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if cfg.get("format_version", 0) > FORMAT_VERSION:
            raise RankfunnelError(
                f"{root} was written by a newer rankfunnel (format {cfg['format_version']})"
            )
        models = {k: _open_model(v) for k, v in cfg.get("models", {}).items()}
        obj = cls.__new__(cls)
        obj.encoder = models.get("encoder")
        obj.reranker = models.get("reranker")
        obj.late_interaction = models.get("late_interaction")
        obj.metric = cfg["metric"]
        obj.candidates = cfg["candidates"]
        obj.index_kind = cfg["index"]
        obj.generation = int(cfg["generation"])
        obj.last_timings = {}
        obj.index = load_index(root / "index.rfi", mmap=mmap) if (root / "index.rfi").exists() else None
        obj.mv = None
        if (root / "late.rfi").exists():
            from .multivector import MultiVectorIndex

            obj.mv = MultiVectorIndex.load(root / "late.rfi")
        obj.path = root
        obj.docs = DocStore(root / "docs.sqlite")
        orphans = obj.docs.rollback_after(obj.generation)
        for idx in (obj.index, obj.mv):
            if idx is not None and orphans:
                present = [i for i in orphans if i in idx]
                if present:
                    idx.remove(present)
        return obj

    # -- writing -------------------------------------------------------------------------------

    def add(
        self,
        texts: Sequence[str],
        ids: Optional[npt.ArrayLike] = None,
        metadata: Optional[Sequence[Optional[dict[str, Any]]]] = None,
        *,
        doc_ids: Optional[Sequence[str]] = None,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> npt.NDArray[np.int64]:
        """Encode and index documents; returns their int64 ids.

        Parameters
        ----------
        texts : sequence of str
        ids : array_like of int, optional
            Non-negative unique ids; default consecutive after the largest stored id.
        metadata : sequence of dict, optional
            JSON-serialisable metadata per document (filterable with ``where=``).
        doc_ids : sequence of str, optional
            The documents' own ids (e.g. from a corpus file), returned as :attr:`Hit.doc_id`.
        batch_size : int
            Encoder batch size.
        show_progress : bool
            Print a progress bar to stderr.

        Notes
        -----
        All or nothing: on any error (or a crash, for a pipeline kept in a folder) no document
        of this call is stored.
        """
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise RankfunnelError("texts must be strings")
        n = len(texts)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        start = max(self.docs.max_id(), -1) + 1
        id_arr = np.arange(start, start + n, dtype=np.int64) if ids is None else as_ids(ids)
        if len(id_arr) != n:
            raise RankfunnelError(f"got {len(id_arr)} ids for {n} texts")
        meta = [dict(m or {}) for m in metadata] if metadata is not None else [{} for _ in range(n)]
        if len(meta) != n:
            raise RankfunnelError(f"got {len(meta)} metadata entries for {n} texts")
        ext = list(doc_ids) if doc_ids is not None else [None] * n
        if len(ext) != n:
            raise RankfunnelError(f"got {len(ext)} doc_ids for {n} texts")

        # Encode first: nothing is written until every model has succeeded.
        vectors = None
        if self.encoder is not None:
            vectors = self.encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)
        tokens = None
        if self.late_interaction is not None:
            tokens = self.late_interaction.encode_documents(
                texts, batch_size=batch_size, show_progress=show_progress
            )

        gen = self.generation + 1
        self.docs.insert(id_arr.tolist(), texts, meta, ext, gen)
        added: list[Any] = []
        try:
            if vectors is not None:
                if self.index is None:
                    self.index = self._new_index(vectors.shape[1], n)
                if isinstance(self.index, IVFIndex) and not self.index.is_trained:
                    self.index.train(vectors)
                self.index.add(vectors, ids=id_arr)
                added.append(self.index)
            if tokens is not None:
                if self.mv is None:
                    self.mv = self._new_mv()
                self.mv.add(tokens, ids=id_arr)
                added.append(self.mv)
            self.generation = gen
            if self.path is not None:
                self._commit()
        except BaseException:
            for idx in added:
                idx.remove(id_arr)
            self.generation = gen - 1
            self.docs.rollback_after(gen - 1)
            raise
        return id_arr

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove documents by id from every stage; returns how many were removed."""
        id_arr = as_ids(ids)
        known = [i for i, row in zip(id_arr.tolist(), self.docs.get(id_arr.tolist())) if row is not None]
        if len(known) != len(id_arr):
            from .errors import UnknownIdError

            missing = sorted(set(id_arr.tolist()) - set(known))
            raise UnknownIdError(f"unknown id {missing[0]}: the pipeline does not hold it")
        for idx in (self.index, self.mv):
            if idx is not None:
                idx.remove(id_arr)
        self.docs.delete(known)
        self.generation += 1
        if self.path is not None:
            self._commit()
        return len(known)

    # -- searching -----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Optional[dict[str, Any]] = None,
        stages: Optional[Sequence[str]] = None,
    ) -> list[Hit]:
        """Search one query through every stage.

        Parameters
        ----------
        query : str
        k : int
            Results to return.
        where : dict, optional
            Metadata filter ``{"key": value}`` (a list value means any of); pushed into the
            index as an allow-list, so ``k`` matching documents come back when they exist.
        stages : sequence of str, optional
            Run only these stages (a prefix of :meth:`stages`), e.g. ``["retrieve"]``.

        Returns
        -------
        list of Hit
            Best first; per-stage scores in :attr:`Hit.scores`. Timings of this call per stage
            are in :attr:`last_timings`.
        """
        if not isinstance(query, str):
            raise RankfunnelError(f"query must be a string, got {type(query).__name__}")
        return self.search_batch([query], k, where=where, stages=stages)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        where: Optional[dict[str, Any]] = None,
        stages: Optional[Sequence[str]] = None,
    ) -> list[list[Hit]]:
        """Search many queries (batched encoding and index search); one list of hits per query."""
        queries = list(queries)
        if any(not isinstance(q, str) for q in queries):
            raise RankfunnelError("queries must be strings")
        k = positive_int(k, "k")
        run = self.stages() if stages is None else list(stages)
        if not run or run != self.stages()[: len(run)]:
            raise RankfunnelError(f"stages must be a prefix of {self.stages()}, got {run}")
        timings: dict[str, float] = {}
        if not queries or len(self.docs) == 0:
            return [[] for _ in queries]
        allow = None
        if where:
            allow = np.asarray(self.docs.where(where), dtype=np.int64)
            if len(allow) == 0:
                return [[] for _ in queries]
        last = run[-1]
        n_retrieve = k if last == "retrieve" else max(k, self.candidates.get("retrieve", 100))
        n_late = k if last == "late" else max(k, self.candidates.get("late", 100))

        # Stage 1: retrieve.
        t = time.perf_counter()
        per_query: list[list[tuple[int, dict[str, float]]]] = []
        if self.encoder is not None:
            qv = (
                self.encoder.encode_queries(queries)
                if hasattr(self.encoder, "encode_queries")
                else self.encoder.encode(queries)
            )
            timings["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            scores, ids = self.index.search(qv, k=n_retrieve, filter=allow)
            per_query = [
                [(int(i), {"retrieve": float(s)}) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, ids)
            ]
        else:
            qt = self.late_interaction.encode_queries(queries)
            timings["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            for q in qt:
                s, i = self.mv.search(q, k=n_retrieve, filter=allow)
                per_query.append([(int(j), {"retrieve": float(x)}) for x, j in zip(s, i) if j >= 0])
        timings["retrieve"] = time.perf_counter() - t

        # Stage 2: ColBERT MaxSim over the bi-encoder's candidates.
        if "late" in run:
            t = time.perf_counter()
            qt = self.late_interaction.encode_queries(queries)
            for qi, q in enumerate(qt):
                cands = per_query[qi]
                if not cands:
                    continue
                s, i = self.mv.rerank(q, np.array([c for c, _ in cands], dtype=np.int64), k=n_late)
                prev = dict(cands)
                per_query[qi] = [(int(j), {**prev[int(j)], "late": float(x)}) for x, j in zip(s, i) if j >= 0]
            timings["late"] = time.perf_counter() - t

        # Stage 3: cross-encoder over (query, text) pairs of all queries at once.
        texts: dict[int, Any] = {}
        all_ids = sorted({i for cands in per_query for i, _ in cands})
        for i, row in zip(all_ids, self.docs.get(all_ids)):
            texts[i] = row
        if "rerank" in run:
            t = time.perf_counter()
            pairs = [(queries[qi], texts[i][0]) for qi, cands in enumerate(per_query) for i, _ in cands]
            ce = self.reranker.predict(pairs) if pairs else np.empty(0, dtype=np.float32)
            pos = 0
            for qi, cands in enumerate(per_query):
                scored = []
                for i, sc in cands:
                    scored.append((i, {**sc, "rerank": float(ce[pos])}))
                    pos += 1
                scored.sort(key=lambda c: (-c[1]["rerank"], c[0]))
                per_query[qi] = scored
            timings["rerank"] = time.perf_counter() - t
        self.last_timings = timings

        out = []
        for cands in per_query:
            hits = []
            for i, sc in cands[:k]:
                row = texts.get(i)
                if row is None:
                    continue
                text, meta, ext = row
                hits.append(Hit(i, ext if ext is not None else str(i), sc[last], text, meta, sc))
            out.append(hits)
        return out


def progress_note(done: int, total: int, started: float) -> None:
    """Print a one-line progress bar to stderr."""
    width = 30
    frac = done / max(total, 1)
    rate = done / max(time.perf_counter() - started, 1e-9)
    bar = "#" * int(frac * width)
    end = "\n" if done >= total else "\r"
    print(f"\r[{bar:<{width}}] {done}/{total} docs ({rate:,.0f}/s)", end=end, file=sys.stderr, flush=True)
