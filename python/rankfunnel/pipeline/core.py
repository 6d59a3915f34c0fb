"""The retrieval funnel: a first stage that retrieves candidates fast, then optional rescorers.

    bi-encoder (or ColBERT), BM25, or both fused, retrieve ``candidates``
        ->  ColBERT / cross-encoder rescore  ->  top k

:class:`Pipeline` validates what callers pass, encodes, and runs the stages (stages.py); how
documents and vectors are kept and committed is :class:`~.storage.PipelineStorage`'s job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from .._arrays import as_ids, positive_int
from ..bm25 import BM25Index
from ..docstore import DocStore
from ..errors import RankfunnelError, UnknownIdError
from ..flat import FlatIndex
from ..hnsw import HNSWIndex
from ..ivf import IVFIndex
from . import folder as fs
from .fields import (
    FIRST_STAGE_KINDS,
    LexicalField,
    TokenField,
    VectorField,
    lexical_settings,
    main_kind,
    new_lexical,
)
from .manifest import adopt_model, open_model, read_manifest
from .policy import TieredPolicy
from .stages import (
    Candidates,
    CrossEncoderRescorer,
    DenseRetriever,
    FusedRetriever,
    Hit,
    LateInteraction,
    LexicalRetriever,
    Rescorer,
    Retriever,
    RowCache,
    check_fusion,
)
from .storage import PipelineStorage

PathLike = Union[str, "os.PathLike[str]"]
STAGES = ("retrieve", "late", "rerank")
MODES = ("dense", "lexical", "hybrid")
"""First-stage modes: the bi-encoder (or ColBERT) alone, BM25 alone, or both fused."""
IVF_TRAIN_AT = 65_536
"""Vectors an ``index="ivf"`` pipeline holds before its IVF lists are trained (exact until then)."""


class Pipeline(PipelineStorage):
    """Compose retrieval stages into the standard production funnel.

    Parameters
    ----------
    encoder : BiEncoder, optional
        First-stage bi-encoder. Without it, ``late_interaction`` retrieves (or, with neither,
        BM25 alone: a lexical pipeline needs no model).
    index : str or an empty FlatIndex, HNSWIndex or IVFIndex
        An index spec of :func:`rankfunnel.index_factory` of kind flat, hnsw or ivf (``"flat"``,
        ``"hnsw32"``, ``"ivf1024,int8"``, ...): the main first-stage index (exact, graph or
        inverted file); or an empty index object, which brings its settings (and metric) and
        becomes the main index. ``"ivf"`` searches
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
    lexical : bool, dict or an empty BM25Index
        Keep a BM25 index beside the documents (kept consistent with them through every add,
        update, removal, compaction and crash): ``True`` for :class:`~rankfunnel.BM25Index`'s
        defaults (k1 1.5, b 0.75, English Snowball stemmer and stopwords), a dict of its
        settings (``{"k1": 1.2, "b": 0.75, "language": "french", "stopwords": None}``;
        ``language`` None turns stemming off), or an empty index that brings its settings.
    fusion : {"rrf", "convex"}
        How a hybrid search fuses the dense and the lexical candidates: reciprocal rank fusion
        (``sum 1 / (fusion_k + rank)``, ranks only) or a convex combination of per-query
        min-max normalised scores (``dense_weight * dense + (1 - dense_weight) * bm25``).
    fusion_k : float
        RRF's rank offset (60, the usual default).
    dense_weight : float
        The dense side's weight in ``"convex"`` fusion, in [0, 1].

    Attributes
    ----------
    lexical : dict or None
        The BM25 settings (``{"k1", "b", "language", "stopwords"}``), None without a lexical index.
    fusion : dict
        ``{"method", "k", "dense_weight"}`` of hybrid searches (recorded in the folder at the
        next commit; :func:`~rankfunnel.pipeline.stages.check_fusion` validates a new one).

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
        index: Any = "flat",
        reranker: Any = None,
        late_interaction: Any = None,
        candidates: Union[int, dict[str, int]] = 100,
        *,
        metric: str = "cosine",
        path: Optional[PathLike] = None,
        ivf_train_at: int = IVF_TRAIN_AT,
        lock_timeout: float = 0.0,
        lexical: Union[bool, dict[str, Any], BM25Index] = False,
        fusion: str = "rrf",
        fusion_k: float = 60.0,
        dense_weight: float = 0.5,
    ) -> None:
        self.lexical = self._check_lexical(lexical)
        self.fusion = check_fusion(fusion, fusion_k, dense_weight)
        if encoder is None and late_interaction is None and self.lexical is None:
            raise RankfunnelError(
                "a pipeline needs an encoder (bi-encoder), late_interaction (ColBERT) or lexical=True "
                "(BM25) to retrieve"
            )
        prototype = None
        if not isinstance(index, str):
            kinds = {FlatIndex: "flat", HNSWIndex: "hnsw", IVFIndex: "ivf"}
            kind = kinds.get(type(index))
            if kind is None or len(index) or encoder is None:
                raise RankfunnelError(
                    f"index must be 'flat', 'hnsw', 'ivf' or an empty FlatIndex / HNSWIndex / IVFIndex "
                    f"(with an encoder), got {index!r}"
                )
            prototype, index, metric = index, kind, index.metric
        if not isinstance(index, str) or main_kind(index) not in FIRST_STAGE_KINDS:
            raise RankfunnelError(
                f"index {index!r} cannot hold first-stage vectors: expected a spec of kind "
                f"{', '.join(FIRST_STAGE_KINDS)} (e.g. 'flat', 'hnsw32', 'ivf1024,int8')"
            )
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
        if prototype is not None:
            vectors = self._fields["vectors"]
            assert isinstance(vectors, VectorField)
            vectors.prototype, vectors.dim = prototype, prototype.dim
        self.docs = DocStore(None)
        self.docs.snapshot = 0
        if path is not None:
            self._create(Path(path))

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

    @staticmethod
    def _check_lexical(lexical: Any) -> Optional[dict[str, Any]]:
        """The BM25 settings of ``lexical=`` (None: no lexical index)."""
        if lexical is False or lexical is None:
            return None
        if lexical is True:
            return lexical_settings(BM25Index())
        if isinstance(lexical, BM25Index):
            if len(lexical):
                raise RankfunnelError("lexical= takes an empty BM25Index (it brings its settings only)")
            return lexical_settings(lexical)
        if isinstance(lexical, dict):
            return lexical_settings(new_lexical(lexical))
        raise RankfunnelError(
            f"lexical must be True, False, a dict of BM25 settings or an empty BM25Index, got {lexical!r}"
        )

    def stages(self) -> list[str]:
        """The stages this pipeline runs, in order."""
        return ["retrieve"] + [name for name, _ in self._rescorers()]

    def modes(self) -> list[str]:
        """The first-stage modes this pipeline can search in; the default is the last one.

        ``["dense"]`` without a lexical index, ``["lexical"]`` for BM25 alone, and
        ``["dense", "lexical", "hybrid"]`` with both.
        """
        if self.lexical is None:
            return ["dense"]
        return ["dense", "lexical", "hybrid"] if self._has_dense() else ["lexical"]

    def _has_dense(self) -> bool:
        return self.encoder is not None or self.late_interaction is not None

    def _mode(self, mode: Optional[str]) -> str:
        if mode is None:
            return self.modes()[-1]
        if mode not in MODES:
            raise RankfunnelError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        if mode not in self.modes():
            need = "a lexical index (lexical=True)" if self._has_dense() else "an encoder or a ColBERT model"
            raise RankfunnelError(
                f"mode={mode!r} needs a pipeline with {need}; this one can search {self.modes()}"
            )
        return mode

    def _retriever(self, mode: Optional[str] = None) -> Retriever:
        mode = self._mode(mode)
        if mode == "lexical":
            terms = self._fields["terms"]
            assert isinstance(terms, LexicalField)
            return LexicalRetriever(terms)
        label = None if self.lexical is None else "dense"
        dense: Retriever
        if self.encoder is not None:
            vectors = self._fields["vectors"]
            assert isinstance(vectors, VectorField)
            dense = DenseRetriever(self.encoder, vectors, label)
        else:
            tokens = self._fields["tokens"]
            assert isinstance(tokens, TokenField)
            dense = LateInteraction(self.late_interaction, tokens, label)
        if mode == "dense":
            return dense
        lower = self.encoder is not None and self.metric == "l2"
        return FusedRetriever(dense, self._retriever("lexical"), self.fusion, lower)

    def _rescorers(self) -> list[tuple[str, Rescorer]]:
        out: list[tuple[str, Rescorer]] = []
        if self.encoder is not None and self.late_interaction is not None:
            tokens = self._fields["tokens"]
            assert isinstance(tokens, TokenField)
            out.append(("late", LateInteraction(self.late_interaction, tokens)))
        if self.reranker is not None:
            out.append(("rerank", CrossEncoderRescorer(self.reranker)))
        return out

    def __repr__(self) -> str:
        return (
            f"Pipeline(stages={self.stages()}, modes={self.modes()}, index={self.index_kind!r}, "
            f"docs={len(self)}, segments={len(self._segments)})"
        )

    @classmethod
    def load(
        cls,
        path: PathLike,
        *,
        mmap: bool = False,
        read_only: bool = False,
        lock_timeout: float = 0.0,
        models: Optional[dict[str, Any]] = None,
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
        models : dict, optional
            Models already open, to use instead of reopening the recorded ones, by role
            (``{"encoder": ..., "reranker": ..., "late_interaction": ...}``); each must be of
            the recorded class, with the recorded files (checksums) and options.

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
        given = dict(models or {})
        unknown = sorted(set(given) - set(cfg["models"]))
        if unknown:
            raise RankfunnelError(f"the pipeline at {root} has no {unknown[0]!r} model to replace")
        models = {
            k: adopt_model(given[k], v, k) if k in given else open_model(v) for k, v in cfg["models"].items()
        }
        obj = cls.__new__(cls)
        obj.encoder = models.get("encoder")
        obj.reranker = models.get("reranker")
        obj.late_interaction = models.get("late_interaction")
        obj.metric = cfg["metric"]
        obj.candidates = cfg["candidates"]
        obj.index_kind = cfg["index"]
        obj.ivf_train_at = int(cfg.get("ivf_train_at", IVF_TRAIN_AT))
        # Folders written before lexical indexes existed hold neither key: dense only.
        lex = cfg.get("lexical")
        obj.lexical = None if lex is None else lexical_settings(new_lexical(lex))
        fusion = cfg.get("fusion") or {}
        obj.fusion = check_fusion(
            fusion.get("method", "rrf"), fusion.get("k", 60.0), fusion.get("dense_weight", 0.5)
        )
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
        if embeddings is not None:
            vec = self._fields.get("vectors")
            if not isinstance(vec, VectorField):
                raise RankfunnelError("embeddings= needs a pipeline with a bi-encoder (its first stage)")
            out["vectors"] = vec.check(embeddings, len(texts))
        for key, f in self._fields.items():
            if key not in out:
                out[key] = f.encode(texts, batch_size, show_progress)
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

    # -- searching -----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Optional[dict[str, Any]] = None,
        stages: Optional[Sequence[str]] = None,
        mode: Optional[str] = None,
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
        mode : {"dense", "lexical", "hybrid"}, optional
            The first stage (see :meth:`modes`): the bi-encoder (or ColBERT), BM25, or both
            fused (the pipeline's ``fusion``); default hybrid when the pipeline has both, else
            the one it has. Each later stage reranks that stage's candidates. A lexical search
            of a query without any indexed term (empty, only stopwords) finds nothing; a hybrid
            one then returns the dense results.

        Returns
        -------
        list of Hit
            Best first; per-stage scores in :attr:`Hit.scores`. Timings of this call per stage
            are in :attr:`last_timings`.
        """
        if not isinstance(query, str):
            raise RankfunnelError(f"query must be a string, got {type(query).__name__}")
        return self.search_batch([query], k, where=where, stages=stages, mode=mode)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        where: Optional[dict[str, Any]] = None,
        stages: Optional[Sequence[str]] = None,
        mode: Optional[str] = None,
    ) -> list[list[Hit]]:
        """Search many queries (batched encoding and index search); one list of hits per query.

        Arguments as :meth:`search`.
        """
        queries = list(queries)
        if any(not isinstance(q, str) for q in queries):
            raise RankfunnelError("queries must be strings")
        k = positive_int(k, "k")
        retriever = self._retriever(mode)
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
        return rows.hits(cands, k, last)
