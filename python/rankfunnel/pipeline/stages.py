"""Search stages: a first stage that retrieves candidates, then rescoring stages, each batched.

A *retriever* turns a batch of queries into candidate lists (``encode`` then ``retrieve``); a
*rescorer* rescores the candidate lists of a batch and keeps the best. Each candidate carries
its score per stage, which become :attr:`Hit.scores`. The pipeline runs ``retriever`` then the
rescorers in order; a new stage implements one of the two protocols and, if it keeps data per
document, brings a field (see fields.py) — nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np
import numpy.typing as npt

from ..docstore import DocStore, Row
from ..errors import RankfunnelError
from ..fusion import convex_combination, reciprocal_rank_fusion
from .fields import LexicalField, TokenField, VectorField

Candidates = list[tuple[int, dict[str, float]]]
"""One query's candidates, best first: ``(id, {stage: score})``."""


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
        Score per stage: ``"retrieve"`` (the first stage's), ``"late"`` (ColBERT), ``"rerank"``
        (cross-encoder). A pipeline with a lexical index also names the first stage's parts:
        ``"dense"`` (bi-encoder, or ColBERT without one) and ``"lexical"`` (BM25) for the side
        that found the document, and ``"fused"`` in hybrid mode (then equal to ``"retrieve"``).
    """

    id: int
    doc_id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


class RowCache:
    """Document rows fetched once per search batch, shared by the stages that need texts."""

    def __init__(self, docs: DocStore) -> None:
        self.docs = docs
        self.rows: dict[int, Optional[Row]] = {}

    def fetch(self, ids: Sequence[int]) -> dict[int, Optional[Row]]:
        """Rows of ``ids`` (``None`` for rows that are gone)."""
        need = sorted({int(i) for i in ids} - set(self.rows))
        self.rows.update(zip(need, self.docs.get(need)))
        return self.rows

    def hits(self, cands: list[Candidates], k: int, last: str) -> list[list[Hit]]:
        """The best ``k`` candidates of each query as hits scored by stage ``last`` (rows gone are skipped)."""
        found = self.fetch([i for cs in cands for i, _ in cs[:k]])
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


class Retriever(Protocol):
    """A first stage: encodes a batch of queries, then returns each query's top candidates."""

    def encode(self, queries: list[str]) -> Any:
        """Query representations of the batch."""
        ...

    def retrieve(self, encoded: Any, k: int, allow: Optional[npt.NDArray[np.int64]]) -> list[Candidates]:
        """The ``k`` best candidates per query (``allow``: an allow-list of ids, or None)."""
        ...


class Rescorer(Protocol):
    """A rescoring stage: scores each query's candidates anew and keeps the best ``k``."""

    def rescore(
        self, name: str, queries: list[str], cands: list[Candidates], k: int, rows: RowCache
    ) -> list[Candidates]:
        """The candidates rescored (score under ``name``), best first, at most ``k`` per query."""
        ...


def _candidates(
    found: Sequence[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]], label: Optional[str]
) -> list[Candidates]:
    """Per-query ``(scores, ids)`` as candidates scored under ``"retrieve"`` (and ``label``)."""
    names = ["retrieve"] if label is None else ["retrieve", label]
    return [[(int(i), dict.fromkeys(names, float(s))) for s, i in zip(sc, ids)] for sc, ids in found]


class DenseRetriever:
    """Bi-encoder first stage over a :class:`VectorField` (exact merge of main + segments).

    ``label``: a second name for its score in :attr:`Hit.scores` (``"dense"`` in a pipeline
    that also has a lexical index).
    """

    def __init__(self, encoder: Any, vectors: VectorField, label: Optional[str] = None) -> None:
        self.encoder, self.vectors, self.label = encoder, vectors, label

    def encode(self, queries: list[str]) -> Any:
        """Query vectors (``encode_queries`` when the encoder has one, e.g. for prompts)."""
        enc = self.encoder
        return enc.encode_queries(queries) if hasattr(enc, "encode_queries") else enc.encode(queries)

    def retrieve(self, encoded: Any, k: int, allow: Optional[npt.NDArray[np.int64]]) -> list[Candidates]:
        """Top k per query, main index and segments merged."""
        return _candidates(self.vectors.search(encoded, k, allow), self.label)


class LexicalRetriever:
    """BM25 first stage over a :class:`LexicalField` (scores ``"retrieve"`` and ``"lexical"``)."""

    def __init__(self, terms: LexicalField) -> None:
        self.terms = terms

    def encode(self, queries: list[str]) -> Any:
        """The queries themselves (BM25 analyses them)."""
        return list(queries)

    def retrieve(self, encoded: Any, k: int, allow: Optional[npt.NDArray[np.int64]]) -> list[Candidates]:
        """BM25 top k per query; a query with no indexed term (empty, only stopwords) finds nothing."""
        return _candidates(self.terms.search(encoded, k, allow), "lexical")


FUSIONS = ("rrf", "convex")
"""Fusion methods of a hybrid first stage."""


def check_fusion(method: Any, k: Any, dense_weight: Any) -> dict[str, Any]:
    """Validated fusion settings ``{"method", "k", "dense_weight"}`` (as the manifest records them).

    Raises
    ------
    RankfunnelError
        On an unknown method, a non-positive RRF ``k`` or a weight outside [0, 1].
    """
    if method not in FUSIONS:
        raise RankfunnelError(f"unknown fusion {method!r}: expected one of {', '.join(FUSIONS)}")
    for name, v in (("fusion_k", k), ("dense_weight", dense_weight)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise RankfunnelError(f"{name} must be a finite number, got {v!r}")
    if k <= 0:
        raise RankfunnelError(f"fusion_k must be positive, got {k!r}")
    if not 0.0 <= dense_weight <= 1.0:
        raise RankfunnelError(f"dense_weight must be between 0 and 1, got {dense_weight!r}")
    return {"method": method, "k": float(k), "dense_weight": float(dense_weight)}


def _result(cands: Candidates, sign: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """One query's candidates as a ``(scores, ids)`` pair for :mod:`rankfunnel.fusion`."""
    scores = np.array([sign * sc["retrieve"] for _, sc in cands], np.float64)
    return scores, np.array([i for i, _ in cands], np.int64)


class FusedRetriever:
    """Hybrid first stage: a dense and a lexical retriever, each asked for ``k``, fused.

    ``fusion`` (see :func:`check_fusion`): ``"rrf"``, reciprocal rank fusion with offset ``k``
    (:func:`rankfunnel.reciprocal_rank_fusion`, equal weights), or ``"convex"``, the weighted sum
    of per-query min-max normalised scores (:func:`rankfunnel.convex_combination`, weights
    ``dense_weight`` and ``1 - dense_weight``). A document found by one side only gets that
    side's contribution; when one side finds nothing (a query of stopwords only), the fused
    list is the other side's, in its order. Scores: ``"dense"``, ``"lexical"`` (of the sides
    that found the document), ``"fused"`` and ``"retrieve"`` (the fused score).
    """

    def __init__(
        self, dense: Retriever, lexical: Retriever, fusion: dict[str, Any], lower_is_better: bool
    ) -> None:
        self.dense, self.lexical, self.fusion = dense, lexical, fusion
        self.lower_is_better = lower_is_better

    def encode(self, queries: list[str]) -> Any:
        """Both sides' query representations."""
        return self.dense.encode(queries), self.lexical.encode(queries)

    def retrieve(self, encoded: Any, k: int, allow: Optional[npt.NDArray[np.int64]]) -> list[Candidates]:
        """Each side's top k, fused; the best k of the fused list."""
        dense = self.dense.retrieve(encoded[0], k, allow)
        lexical = self.lexical.retrieve(encoded[1], k, allow)
        sign = -1.0 if self.lower_is_better else 1.0  # convex needs higher-is-better scores
        out = []
        for d, lx in zip(dense, lexical):
            parts = {
                "dense": {i: sc["retrieve"] for i, sc in d},
                "lexical": {i: sc["retrieve"] for i, sc in lx},
            }
            lists = [_result(d, sign), _result(lx, 1.0)]
            if self.fusion["method"] == "rrf":
                fs, fi = reciprocal_rank_fusion(*lists, k=self.fusion["k"], top=k)
            else:
                w = self.fusion["dense_weight"]
                fs, fi = convex_combination(*lists, weights=(w, 1.0 - w), top=k)
            cands = []
            for s, i in zip(fs.tolist(), fi.tolist()):
                if i < 0:
                    break
                sc = {side: got[i] for side, got in parts.items() if i in got}
                cands.append((int(i), {**sc, "fused": float(s), "retrieve": float(s)}))
            out.append(cands)
        return out


class LateInteraction:
    """ColBERT: retrieves by itself (MaxSim over a :class:`TokenField`) or rescores candidates."""

    def __init__(self, model: Any, tokens: TokenField, label: Optional[str] = None) -> None:
        self.model, self.tokens, self.label = model, tokens, label

    def encode(self, queries: list[str]) -> Any:
        """Query token arrays."""
        return self.model.encode_queries(queries)

    def retrieve(self, encoded: Any, k: int, allow: Optional[npt.NDArray[np.int64]]) -> list[Candidates]:
        """Top k per query by MaxSim."""
        return _candidates([self.tokens.search(q, k, allow) for q in encoded], self.label)

    def rescore(
        self, name: str, queries: list[str], cands: list[Candidates], k: int, rows: RowCache
    ) -> list[Candidates]:
        """MaxSim of each query over its candidates; the best k."""
        qt = self.model.encode_queries(queries)
        out = []
        for q, cs in zip(qt, cands):
            if not cs:
                out.append(cs)
                continue
            prev = dict(cs)
            s, i = self.tokens.rerank(q, [c for c, _ in cs], k)
            out.append([(int(j), {**prev[int(j)], name: float(x)}) for x, j in zip(s, i)])
        return out


class CrossEncoderRescorer:
    """Cross-encoder over the (query, text) pairs of every query of the batch at once."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def rescore(
        self, name: str, queries: list[str], cands: list[Candidates], k: int, rows: RowCache
    ) -> list[Candidates]:
        """Cross-encoder scores; sorted best first (ties to the lower id)."""
        texts = rows.fetch([i for cs in cands for i, _ in cs])
        live = [[(i, sc) for i, sc in cs if texts.get(i) is not None] for cs in cands]
        pairs = [(queries[qi], texts[i][0]) for qi, cs in enumerate(live) for i, _ in cs]  # type: ignore[index]
        ce = self.model.predict(pairs) if pairs else np.empty(0, dtype=np.float32)
        out, pos = [], 0
        for cs in live:
            scored = []
            for i, sc in cs:
                scored.append((i, {**sc, name: float(ce[pos])}))
                pos += 1
            scored.sort(key=lambda c: (-c[1][name], c[0]))
            out.append(scored)
        return out
