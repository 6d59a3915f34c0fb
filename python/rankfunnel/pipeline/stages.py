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
from .fields import TokenField, VectorField

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
        Score per stage: ``"retrieve"``, ``"late"`` (ColBERT), ``"rerank"`` (cross-encoder).
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


class DenseRetriever:
    """Bi-encoder first stage over a :class:`VectorField` (exact merge of main + segments)."""

    def __init__(self, encoder: Any, vectors: VectorField) -> None:
        self.encoder, self.vectors = encoder, vectors

    def encode(self, queries: list[str]) -> Any:
        """Query vectors (``encode_queries`` when the encoder has one, e.g. for prompts)."""
        enc = self.encoder
        return enc.encode_queries(queries) if hasattr(enc, "encode_queries") else enc.encode(queries)

    def retrieve(self, encoded: Any, k: int, allow: Optional[npt.NDArray[np.int64]]) -> list[Candidates]:
        """Top k per query, main index and segments merged."""
        return [
            [(int(i), {"retrieve": float(s)}) for s, i in zip(scores, ids)]
            for scores, ids in self.vectors.search(encoded, k, allow)
        ]


class LateInteraction:
    """ColBERT: retrieves by itself (MaxSim over a :class:`TokenField`) or rescores candidates."""

    def __init__(self, model: Any, tokens: TokenField) -> None:
        self.model, self.tokens = model, tokens

    def encode(self, queries: list[str]) -> Any:
        """Query token arrays."""
        return self.model.encode_queries(queries)

    def retrieve(self, encoded: Any, k: int, allow: Optional[npt.NDArray[np.int64]]) -> list[Candidates]:
        """Top k per query by MaxSim."""
        out = []
        for q in encoded:
            s, i = self.tokens.search(q, k, allow)
            out.append([(int(j), {"retrieve": float(x)}) for x, j in zip(s, i)])
        return out

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
