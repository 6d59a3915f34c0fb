"""The retrieval funnel: a first stage that retrieves candidates fast, then optional rescorers.

    bi-encoder (or ColBERT) retrieves ``candidates``  ->  ColBERT / cross-encoder rescore  ->  top k

A pipeline kept in a folder commits every change (add, update, remove, compaction) as one new
*generation*: the rows go to SQLite tagged with it, what the change adds goes to a small
segment file, and the manifest ``pipeline.json`` naming that generation and its files is
written atomically last: that rename is the commit. See folder.py for the layout and policy.py
for when segments are merged and folded into the main index.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from .._arrays import as_ids, positive_int
from ..docstore import DocStore
from ..errors import CorruptFileError, RankfunnelError, UnknownIdError
from . import folder as fs
from .fields import Field, TokenField, VectorField
from .manifest import FORMAT_VERSION, MANIFEST, describe_model, open_model, read_manifest, write_json_atomic
from .policy import TieredPolicy
from .stages import (
    Candidates,
    CrossEncoderRescorer,
    DenseRetriever,
    Hit,
    LateInteraction,
    Rescorer,
    Retriever,
    RowCache,
)

PathLike = Union[str, "os.PathLike[str]"]
STAGES = ("retrieve", "late", "rerank")
IVF_TRAIN_AT = 65_536
"""Vectors an ``index="ivf"`` pipeline holds before its IVF lists are trained (exact until then)."""


class Pipeline:
    """Compose retrieval stages into the standard production funnel.

    Parameters
    ----------
    encoder : BiEncoder, optional
        First-stage bi-encoder. Without it, ``late_interaction`` retrieves.
    index : {"flat", "hnsw", "ivf"}
        Kind of the main first-stage index (exact, graph or inverted file). ``"ivf"`` searches
        exactly until the pipeline holds ``ivf_train_at`` documents; the compaction that
        reaches that many trains the lists once on all of them (``nlist = min(n / 39,
        4 sqrt(n))``), later ones only add.
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
        New folder to keep the pipeline in; every change is then committed there crash-safely,
        and this object holds the folder's writer lock until :meth:`close`.
    ivf_train_at : int
        See ``index``.
    lock_timeout : float
        Seconds to wait for another writer's lock (0: fail at once, naming its process).

    Notes
    -----
    A folder has one writer at a time (an OS lock on ``writer.lock``, released when the writer
    closes or exits, even by a crash). :meth:`load` opens a folder for reading; its first write
    takes the lock, brings the object up to the last commit and recovers from any interrupted
    commit. Readers run beside the writer and see the commit that was last when they loaded.

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
        index: str = "flat",
        reranker: Any = None,
        late_interaction: Any = None,
        candidates: Union[int, dict[str, int]] = 100,
        *,
        metric: str = "cosine",
        path: Optional[PathLike] = None,
        ivf_train_at: int = IVF_TRAIN_AT,
        lock_timeout: float = 0.0,
    ) -> None:
        if encoder is None and late_interaction is None:
            raise RankfunnelError(
                "a pipeline needs an encoder (bi-encoder) or late_interaction (ColBERT) to retrieve"
            )
        if not isinstance(index, str) or index not in ("flat", "hnsw", "ivf"):
            raise RankfunnelError(f"unknown index {index!r}: expected 'flat', 'hnsw' or 'ivf'")
        self.encoder = encoder
        self.reranker = reranker
        self.late_interaction = late_interaction
        self.metric = metric
        self.candidates = self._check_candidates(candidates)
        self.index_kind = index
        self.ivf_train_at = positive_int(ivf_train_at, "ivf_train_at")
        self.lock_timeout = float(lock_timeout)
        self.policy = TieredPolicy()
        self.last_timings: dict[str, float] = {}
        self.path: Optional[Path] = None
        self.read_only = False
        self._mmap = False
        self._lock: Optional[fs.WriterLock] = None
        self._models_desc: Optional[dict[str, Any]] = None
        self._reset_state()
        self.docs = DocStore(None)
        self.docs.snapshot = 0
        if path is not None:
            self._create(Path(path))

    def _reset_state(self) -> None:
        """Empty in-memory state: generation 0, no main index, no segments."""
        self.generation = 0
        self._count = 0
        self._next_id = 0
        self._main: dict[str, Any] = {"gen": 0, "rows": 0, "index": None, "late": None}
        self._main_dead = 0
        self._segments: list[dict[str, Any]] = []
        self._delta_gen: dict[int, int] = {}
        self._fields: dict[str, Field] = {}
        if self.encoder is not None:
            dim = getattr(self.encoder, "dim", None)
            self._fields["vectors"] = VectorField(self.index_kind, self.metric, dim, self.ivf_train_at)
        if self.late_interaction is not None:
            self._fields["tokens"] = TokenField(int(self.late_interaction.dim))

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
        return ["retrieve"] + [name for name, _ in self._rescorers()]

    def _retriever(self) -> Retriever:
        if self.encoder is not None:
            vectors = self._fields["vectors"]
            assert isinstance(vectors, VectorField)
            return DenseRetriever(self.encoder, vectors)
        tokens = self._fields["tokens"]
        assert isinstance(tokens, TokenField)
        return LateInteraction(self.late_interaction, tokens)

    def _rescorers(self) -> list[tuple[str, Rescorer]]:
        out: list[tuple[str, Rescorer]] = []
        if self.encoder is not None and self.late_interaction is not None:
            tokens = self._fields["tokens"]
            assert isinstance(tokens, TokenField)
            out.append(("late", LateInteraction(self.late_interaction, tokens)))
        if self.reranker is not None:
            out.append(("rerank", CrossEncoderRescorer(self.reranker)))
        return out

    @property
    def index(self) -> Any:
        """The main first-stage index (documents still in segments are not in it)."""
        f = self._fields.get("vectors")
        return None if f is None else f.main  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (
            f"Pipeline(stages={self.stages()}, index={self.index_kind!r}, docs={len(self)}, "
            f"segments={len(self._segments)})"
        )

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the writer lock (if held) and close the document store."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self.path is not None:
            self.docs.close()

    # -- the manifest ----------------------------------------------------------------------------

    def _manifest(self, gen: int, count: int, next_id: int) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "generation": gen,
            "index": self.index_kind,
            "metric": self.metric,
            "candidates": self.candidates,
            "ivf_train_at": self.ivf_train_at,
            "docs": count,
            "next_id": next_id,
            "main": dict(self._main),
            "segments": [{k: v for k, v in s.items() if k not in ("ids", "gens")} for s in self._segments],
            "models": self._models(),
        }

    def _models(self) -> dict[str, Any]:
        """The models as recorded in the manifest (their files hashed once per object)."""
        if self._models_desc is None:
            self._models_desc = {
                name: describe_model(m)
                for name, m in (
                    ("encoder", self.encoder),
                    ("reranker", self.reranker),
                    ("late_interaction", self.late_interaction),
                )
                if m is not None
            }
        return self._models_desc

    def _write_manifest(self, op: str, gen: int, count: int, next_id: int) -> None:
        assert self.path is not None
        m = self._manifest(gen, count, next_id)
        write_json_atomic(self.path / MANIFEST, m, lambda: fs.crash_point(f"{op}:manifest"))
        fs.crash_point(f"{op}:committed")

    # -- opening -------------------------------------------------------------------------------

    def _create(self, root: Path) -> None:
        if (root / MANIFEST).exists():
            raise RankfunnelError(f"{root} already holds a pipeline: open it with rf.Pipeline.load")
        root.mkdir(parents=True, exist_ok=True)
        self._lock = fs.WriterLock(root, self.lock_timeout)
        try:
            db = root / fs.DOCS
            if db.exists():
                # An interrupted creation leaves an empty database and no manifest: start over.
                old = DocStore(db, "write")
                n = int(old._query("SELECT COUNT(*) FROM docs")[0][0])
                old.close()
                if n:
                    raise RankfunnelError(
                        f"{root} holds {fs.DOCS} with {n} rows but no {MANIFEST}: not a pipeline this "
                        "call may overwrite; move it away or choose another folder"
                    )
                for suffix in ("", "-wal", "-shm"):
                    (root / (fs.DOCS + suffix)).unlink(missing_ok=True)
            fs.collect_garbage(root, {})
            self.docs = DocStore(db, "create")
            self.docs.snapshot = 0
            self.path = root
            self._models_desc = None
            self._write_manifest("create", 0, 0, 0)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    @classmethod
    def load(
        cls, path: PathLike, *, mmap: bool = False, read_only: bool = False, lock_timeout: float = 0.0
    ) -> Pipeline:
        """Open a pipeline folder at its last commit.

        The models are reopened from the recorded paths and every file of theirs that changes
        outputs must match its recorded SHA-256. Nothing is written: the first
        :meth:`add` / :meth:`update` / :meth:`remove` / :meth:`compact` takes the writer lock
        and recovers from an interrupted commit (``read_only=True`` forbids them).

        Parameters
        ----------
        path : str or os.PathLike
        mmap : bool
            Map the main index files instead of reading them.
        read_only : bool
            Refuse every write.
        lock_timeout : float
            Seconds a write waits for another writer's lock.

        Raises
        ------
        FileNotFoundError
            If the folder holds no pipeline.
        RankfunnelError
            One error naming the file, if a file of the pipeline is missing or damaged
            (:class:`CorruptFileError`), written by a newer format, or a model changed.
        """
        root = Path(path)
        cfg = read_manifest(root)
        models = {k: open_model(v) for k, v in cfg["models"].items()}
        obj = cls.__new__(cls)
        obj.encoder = models.get("encoder")
        obj.reranker = models.get("reranker")
        obj.late_interaction = models.get("late_interaction")
        obj.metric = cfg["metric"]
        obj.candidates = cfg["candidates"]
        obj.index_kind = cfg["index"]
        obj.ivf_train_at = int(cfg.get("ivf_train_at", IVF_TRAIN_AT))
        obj.lock_timeout = float(lock_timeout)
        obj.policy = TieredPolicy()
        obj.last_timings = {}
        obj.path = root
        obj.read_only = bool(read_only)
        obj._mmap = bool(mmap)
        obj._lock = None
        obj._models_desc = cfg["models"]
        obj.docs = DocStore(root / fs.DOCS, "read")
        obj._load_committed(cfg)
        return obj

    def _load_committed(self, cfg: dict[str, Any]) -> None:
        """Build the in-memory state of the commit ``cfg`` names (retrying if a writer moved on)."""
        assert self.path is not None
        for attempt in range(5):
            try:
                self._load_data(cfg)
                return
            except CorruptFileError:
                # A writer may have committed and collected these files meanwhile: reread.
                fresh = read_manifest(self.path)
                if fresh["generation"] == cfg["generation"] or attempt == 4:
                    raise
                cfg = fresh

    def _load_data(self, cfg: dict[str, Any]) -> None:
        assert self.path is not None
        self._reset_state()
        gen = int(cfg["generation"])
        self.generation = gen
        self.docs.snapshot = gen
        self._count = int(cfg["docs"])
        self._next_id = int(cfg["next_id"])
        self._main = dict(cfg["main"])
        main_gen = int(self._main["gen"])
        for f in self._fields.values():
            name = self._main.get("index" if f.key == "vectors" else "late")
            if name:
                f.load_main(self.path / name, self._mmap)
        dead = set(self.docs.superseded())
        in_main = np.array(sorted({i for i, g in dead if g <= main_gen}), dtype=np.int64)
        for f in self._fields.values():
            f.remove(in_main)
        self._main_dead = len(in_main)
        for seg in cfg["segments"]:
            arrays = fs.read_segment(self.path / seg["file"], seg["sha256"])
            ids, gens = arrays["ids"].astype(np.int64), arrays["gens"].astype(np.int64)
            keep = np.array([(int(i), int(g)) not in dead for i, g in zip(ids, gens)], dtype=bool)
            try:
                for f in self._fields.values():
                    f.load_segment(ids, arrays, keep)
            except (CorruptFileError, ValueError) as err:
                raise CorruptFileError(f"{self.path / seg['file']}: {err}") from None
            self._delta_gen.update(zip(ids[keep].tolist(), gens[keep].tolist()))
            self._segments.append({**seg, "ids": ids, "gens": gens})

    def _begin_write(self) -> None:
        """Take the writer lock (once), catch up with the last commit and recover from a crash."""
        if self.read_only:
            raise RankfunnelError(f"{self.path} was opened read-only")
        if self.path is None or self._lock is not None:
            return
        self._lock = fs.WriterLock(self.path, self.lock_timeout)
        try:
            cfg = read_manifest(self.path)
            self.docs.close()
            self.docs = DocStore(self.path / fs.DOCS, "write")
            self.docs.recover(int(cfg["generation"]))
            if cfg["generation"] != self.generation:
                # Another writer committed since this object loaded: catch up.
                self._models_desc = cfg["models"]
                self._load_committed(cfg)
            fs.collect_garbage(self.path, cfg)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    def _reload(self) -> None:
        """Rebuild memory from the folder's last commit (after a failed write)."""
        if self.path is not None:
            self._load_committed(read_manifest(self.path))

    # -- writing -------------------------------------------------------------------------------

    def _resolve(self, ids: Any, what: str) -> npt.NDArray[np.int64]:
        """Internal ids of ``ids`` (ints, or the documents' own string ids); all must be current."""
        if isinstance(ids, (str, int, np.integer)):
            items: list[Any] = [ids]
        else:
            items = list(np.asarray(ids).ravel()) if isinstance(ids, np.ndarray) else list(ids)
        names = [x for x in items if isinstance(x, str)]
        found = dict(zip(names, self.docs.ids_for_ext(names)))
        for e, i in found.items():
            if i is None:
                raise UnknownIdError(f"unknown doc_id {e!r}: the pipeline does not hold it")
        arr = as_ids([found[x] if isinstance(x, str) else x for x in items], what)
        if len(set(arr.tolist())) != len(arr):
            raise RankfunnelError(f"{what} holds an id twice")
        for i, v in zip(arr.tolist(), self.docs.versions(arr.tolist())):
            if v is None:
                raise UnknownIdError(f"unknown id {i}: the pipeline does not hold it")
        return arr

    def _encode(
        self, texts: list[str], embeddings: Optional[npt.ArrayLike], batch_size: int, show_progress: bool
    ) -> dict[str, Any]:
        """Every field's payload for ``texts``: nothing is written until all succeeded."""
        out: dict[str, Any] = {}
        vec = self._fields.get("vectors")
        if embeddings is not None:
            if not isinstance(vec, VectorField):
                raise RankfunnelError("embeddings= needs a pipeline with a bi-encoder (its first stage)")
            if vec.dim is None:
                vec.dim = getattr(self.encoder, "dim", None)
            out["vectors"] = vec.check(embeddings, len(texts))
        elif isinstance(vec, VectorField):
            v = self.encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)
            out["vectors"] = vec.check(v, len(texts))
        if "tokens" in self._fields:
            out["tokens"] = self.late_interaction.encode_documents(
                texts, batch_size=batch_size, show_progress=show_progress
            )
        return out

    @staticmethod
    def _texts(texts: Sequence[str]) -> list[str]:
        out = list(texts)
        if any(not isinstance(t, str) for t in out):
            raise RankfunnelError("texts must be strings")
        return out

    def add(
        self,
        texts: Sequence[str],
        ids: Optional[npt.ArrayLike] = None,
        metadata: Optional[Sequence[Optional[dict[str, Any]]]] = None,
        *,
        doc_ids: Optional[Sequence[str]] = None,
        embeddings: Optional[npt.ArrayLike] = None,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> npt.NDArray[np.int64]:
        """Encode and index documents; returns their int64 ids.

        Parameters
        ----------
        texts : sequence of str
        ids : array_like of int, optional
            Non-negative unique ids; default consecutive after the largest id ever stored.
        metadata : sequence of dict, optional
            JSON-serialisable metadata per document (filterable with ``where=``).
        doc_ids : sequence of str, optional
            The documents' own ids (e.g. from a corpus file), returned as :attr:`Hit.doc_id`.
        embeddings : array_like (n, dim), optional
            First-stage vectors computed elsewhere (with the pipeline's encoder, or an
            equivalent one): the bi-encoder then does not run. Checked: one finite row per
            text, of the encoder's dimension. A ColBERT stage still encodes the texts.
        batch_size : int
            Encoder batch size.
        show_progress : bool
            Print a progress bar to stderr.

        Raises
        ------
        RankfunnelError
            On bad input, an id or doc_id already stored (named), or a failed write.

        Notes
        -----
        All or nothing: on any error (or a crash, for a pipeline kept in a folder) no document
        of this call is stored. In a folder the call writes one segment with just these
        documents; compaction folds segments into the main index by the tiered policy.
        """
        texts = self._texts(texts)
        n = len(texts)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        self._begin_write()
        start = max(self._next_id, self.docs.max_id() + 1)
        id_arr = np.arange(start, start + n, dtype=np.int64) if ids is None else as_ids(ids)
        if len(id_arr) != n:
            raise RankfunnelError(f"got {len(id_arr)} ids for {n} texts")
        if (id_arr < 0).any():
            raise RankfunnelError(f"ids must be non-negative, got {int(id_arr.min())}")
        meta = [dict(m or {}) for m in metadata] if metadata is not None else [{} for _ in range(n)]
        if len(meta) != n:
            raise RankfunnelError(f"got {len(meta)} metadata entries for {n} texts")
        ext = list(doc_ids) if doc_ids is not None else [None] * n
        if len(ext) != n:
            raise RankfunnelError(f"got {len(ext)} doc_ids for {n} texts")
        self.docs.check_new(id_arr.tolist(), ext)
        payload = self._encode(texts, embeddings, batch_size, show_progress)
        gen = self.generation + 1
        self.docs.insert(id_arr.tolist(), texts, meta, ext, gen)
        fs.crash_point("add:rows")
        self._apply(
            "add",
            gen,
            id_arr,
            payload,
            removed=np.empty(0, np.int64),
            count=self._count + n,
            next_id=max(self._next_id, int(id_arr.max()) + 1),
        )
        return id_arr

    def update(
        self,
        ids: Any,
        texts: Sequence[str],
        metadata: Optional[Sequence[Optional[dict[str, Any]]]] = None,
        *,
        embeddings: Optional[npt.ArrayLike] = None,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> int:
        """Replace the text (and metadata) of stored documents, re-embedding them in every stage.

        Parameters
        ----------
        ids : array_like of int, or sequence of str
            Internal ids, or the documents' own ids (``doc_ids`` given to :meth:`add`).
        texts : sequence of str
            The new texts.
        metadata : sequence of dict, optional
            New metadata; default: each document keeps its metadata.
        embeddings : array_like (n, dim), optional
            New first-stage vectors (see :meth:`add`).

        Returns
        -------
        int
            How many documents were updated.

        Raises
        ------
        UnknownIdError
            If a document is not stored (nothing is changed).
        """
        texts = self._texts(texts)
        self._begin_write()
        id_arr = self._resolve(ids, "ids")
        if len(id_arr) != len(texts):
            raise RankfunnelError(f"got {len(id_arr)} ids for {len(texts)} texts")
        if len(id_arr) == 0:
            return 0
        old = self.docs.get(id_arr.tolist())
        meta = [dict(m or {}) for m in metadata] if metadata is not None else [r[1] for r in old if r]
        if len(meta) != len(texts):
            raise RankfunnelError(f"got {len(meta)} metadata entries for {len(texts)} texts")
        payload = self._encode(texts, embeddings, batch_size, show_progress)
        gen = self.generation + 1
        self.docs.insert(id_arr.tolist(), texts, meta, [r[2] for r in old if r], gen, replace=True)
        fs.crash_point("update:rows")
        self._apply("update", gen, id_arr, payload, removed=id_arr, count=self._count, next_id=self._next_id)
        return len(id_arr)

    def remove(self, ids: Any) -> int:
        """Remove documents from every stage; returns how many were removed.

        Parameters
        ----------
        ids : array_like of int, or sequence of str
            Internal ids, or the documents' own ids.

        Raises
        ------
        UnknownIdError
            If a document is not stored (nothing is removed).

        Notes
        -----
        The rows stay in the index files as tombstones until the next compaction.
        """
        self._begin_write()
        id_arr = self._resolve(ids, "ids")
        if len(id_arr) == 0:
            return 0
        gen = self.generation + 1
        self.docs.supersede(id_arr.tolist(), gen)
        fs.crash_point("remove:rows")
        self._apply(
            "remove",
            gen,
            np.empty(0, np.int64),
            None,
            removed=id_arr,
            count=self._count - len(id_arr),
            next_id=self._next_id,
        )
        return len(id_arr)

    def _apply(
        self,
        op: str,
        gen: int,
        added: npt.NDArray[np.int64],
        payload: Optional[dict[str, Any]],
        *,
        removed: npt.NDArray[np.int64],
        count: int,
        next_id: int,
    ) -> None:
        """Commit generation ``gen`` (its rows are written): segment, manifest, then memory."""
        seg = None
        try:
            if self.path is not None and len(added):
                assert payload is not None
                seg = self._write_segment(op, gen, added, np.full(len(added), gen, np.int64), payload)
            main_gen = int(self._main["gen"])
            n_main_dead = (
                sum(1 for i in removed.tolist() if i not in self._delta_gen and self._in_main(i))
                if main_gen
                else 0
            )
            if seg is not None:
                self._segments.append(seg)
            if self.path is not None:
                self._write_manifest(op, gen, count, next_id)
        except BaseException:
            if seg is not None and self._segments and self._segments[-1] is seg:
                self._segments.pop()
            self.docs.recover(self.generation)
            raise
        # Committed: bring memory along (nothing here can fail on valid input).
        self.generation = gen
        self.docs.snapshot = gen
        self._count, self._next_id = count, next_id
        self._main_dead += n_main_dead
        for f in self._fields.values():
            f.remove(removed)
        for i in removed.tolist():
            self._delta_gen.pop(i, None)
        if len(added):
            assert payload is not None
            for key, f in self._fields.items():
                f.add(added, payload[key])
            self._delta_gen.update((i, gen) for i in added.tolist())
        self._maintain()

    def _in_main(self, i: int) -> bool:
        return any(f.main is not None and i in f.main for f in self._fields.values())  # type: ignore[attr-defined]

    def _write_segment(
        self,
        op: str,
        gen: int,
        ids: npt.NDArray[np.int64],
        gens: npt.NDArray[np.int64],
        payload: dict[str, Any],
    ) -> dict[str, Any]:
        assert self.path is not None
        arrays: dict[str, Any] = {"ids": ids, "gens": gens}
        for key, f in self._fields.items():
            arrays.update(f.arrays(ids) if payload is None else f.payload_arrays(payload[key]))
        name = fs.segment_name(gen)
        sha, size = fs.write_segment(self.path / name, arrays)
        fs.crash_point(f"{op}:segment")
        return {
            "file": name,
            "gen": gen,
            "rows": len(ids),
            "sha256": sha,
            "bytes": size,
            "ids": ids,
            "gens": gens,
        }

    # -- compaction ----------------------------------------------------------------------------

    def _maintain(self) -> None:
        """Apply the tiered policy after a commit (see policy.py); in memory, fold at once."""
        if self.path is None:
            if self._delta_gen or self._main_dead:
                self._fold()
            return
        while True:
            plan = self.policy.plan(
                int(self._main["rows"]), self._main_dead, [s["rows"] for s in self._segments]
            )
            if plan is None:
                return
            if plan == "fold":
                self._fold()
                return
            assert isinstance(plan, list)
            self._merge(plan)

    def compact(self) -> None:
        """Fold every segment and tombstone into the main index now (one new commit)."""
        self._begin_write()
        if self._segments or self._main_dead or self._delta_gen:
            self._fold()

    def _fold(self) -> None:
        gen = self.generation + 1
        try:
            for f in self._fields.values():
                f.fold()
            rows = max((f.main_len() for f in self._fields.values()), default=0)
            main: dict[str, Any] = {"gen": gen, "rows": rows, "index": None, "late": None}
            if self.path is not None:
                for f in self._fields.values():
                    if f.main_len():
                        name = f"{f.main_prefix}-{gen}.rfi"
                        f.save_main(self.path / name)
                        fs.crash_point(f"compact:{f.main_prefix}")
                        main["index" if f.key == "vectors" else "late"] = name
            old = (self._main, self._segments)
            self._main, self._segments = main, []
            try:
                if self.path is not None:
                    self._write_manifest("compact", gen, self._count, self._next_id)
            except BaseException:
                self._main, self._segments = old
                raise
        except BaseException:
            self._reload()
            raise
        self.generation = gen
        self.docs.snapshot = gen
        self._main_dead = 0
        self._delta_gen = {}
        if self.path is not None:
            self.docs.purge(gen)
            fs.crash_point("compact:purged")
            fs.collect_garbage(self.path, self._manifest(gen, self._count, self._next_id))
        else:
            self.docs.purge(gen)

    def _merge(self, positions: list[int]) -> None:
        """Merge the segments at ``positions`` into one segment of their live rows (a commit)."""
        assert self.path is not None
        gen = self.generation + 1
        group = [self._segments[p] for p in positions]
        ids = np.concatenate([s["ids"] for s in group])
        gens = np.concatenate([s["gens"] for s in group])
        keep = np.array([self._delta_gen.get(int(i)) == int(g) for i, g in zip(ids, gens)], dtype=bool)
        ids, gens = ids[keep], gens[keep]
        old = self._segments
        try:
            seg = self._write_segment("merge", gen, ids, gens, None)  # type: ignore[arg-type]
            self._segments = [s for p, s in enumerate(old) if p not in positions[1:]]
            self._segments[positions[0]] = seg
            self._write_manifest("merge", gen, self._count, self._next_id)
        except BaseException:
            self._segments = old
            raise
        self.generation = gen
        self.docs.snapshot = gen
        fs.collect_garbage(self.path, self._manifest(gen, self._count, self._next_id))

    # -- whole-folder operations -----------------------------------------------------------------

    def save(self, path: PathLike) -> None:
        """Write a compacted snapshot of the pipeline to a new folder.

        Raises
        ------
        RankfunnelError
            If the folder already holds a pipeline.
        """
        dst = Path(path)
        if self.path is not None and dst.resolve() == self.path.resolve():
            return  # every change is committed there already
        if (dst / MANIFEST).exists():
            raise RankfunnelError(f"{dst} already holds a pipeline")
        dst.mkdir(parents=True, exist_ok=True)
        snap = Pipeline.__new__(Pipeline)
        snap.__dict__.update(self.__dict__)
        snap.path, snap._lock, snap._models_desc = dst, None, None
        lock = fs.WriterLock(dst, 0.0)
        try:
            (dst / fs.DOCS).unlink(missing_ok=True)
            self.docs.copy_to(dst / fs.DOCS)
            main: dict[str, Any] = {"gen": self.generation, "rows": 0, "index": None, "late": None}
            for f in self._fields.values():
                if f.main_len():
                    name = f"{f.main_prefix}-{self.generation}.rfi"
                    f.save_main(dst / name)
                    main["index" if f.key == "vectors" else "late"] = name
                    main["rows"] = f.main_len()
            main["gen"] = int(self._main["gen"])
            snap._main = main
            snap._segments = []
            if self._delta_gen:
                ids = np.fromiter(self._delta_gen, dtype=np.int64, count=len(self._delta_gen))
                gens = np.asarray([self._delta_gen[int(i)] for i in ids], dtype=np.int64)
                snap._segments = [snap._write_segment("save", self.generation, ids, gens, None)]  # type: ignore[arg-type]
            snap._write_manifest("save", self.generation, self._count, self._next_id)
        finally:
            lock.release()

    def check(self) -> None:
        """Verify that the documents and every stage's data agree (same ids, one copy each).

        Raises
        ------
        CorruptFileError
            Naming the first disagreement.
        """
        live = set(self.docs.where({}))
        if len(live) != self._count:
            raise CorruptFileError(
                f"the manifest counts {self._count} documents, docs.sqlite holds {len(live)}"
            )
        for key, f in self._fields.items():
            if len(f) != len(live):
                raise CorruptFileError(f"the {key} hold {len(f)} documents, docs.sqlite {len(live)}")
            for i in live:
                if i not in f:
                    raise CorruptFileError(f"document {i} has no {key}")

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
        if not queries or self._count == 0:
            return [[] for _ in queries]
        allow = None
        if where:
            allow = np.asarray(self.docs.where(where), dtype=np.int64)
            if len(allow) == 0:
                return [[] for _ in queries]
        last = run[-1]
        depth = {name: k if name == last else max(k, self.candidates.get(name, 100)) for name in run}
        timings: dict[str, float] = {}
        retriever = self._retriever()
        t = time.perf_counter()
        encoded = retriever.encode(queries)
        timings["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        cands: list[Candidates] = retriever.retrieve(encoded, depth["retrieve"], allow)
        timings["retrieve"] = time.perf_counter() - t
        rows = RowCache(self.docs)
        for name, stage in self._rescorers():
            if name not in run:
                break
            t = time.perf_counter()
            cands = stage.rescore(name, queries, cands, depth[name], rows)
            timings[name] = time.perf_counter() - t
        self.last_timings = timings
        found = rows.fetch([i for cs in cands for i, _ in cs[:k]])
        out = []
        for cs in cands:
            hits = []
            for i, sc in cs[:k]:
                row = found.get(i)
                if row is not None:
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
