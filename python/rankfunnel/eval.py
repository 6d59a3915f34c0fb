"""Evaluation: retrieval metrics (trec_eval conventions: linear gains, log2 discount), qrels
readers, and :func:`evaluate` of every stage configuration of a pipeline."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

Qrels = dict[str, dict[str, float]]


def ndcg_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with linear gains and a log2(rank + 1) discount (as trec_eval ``ndcg_cut``)."""
    dcg = sum(gains.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top k."""
    for i, d in enumerate(ranked[:k]):
        if gains.get(d, 0.0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 100) -> float:
    """Fraction of the relevant documents found in the top k."""
    relevant = {d for d, g in gains.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(ranked[:k])) / len(relevant)


def read_qrels(path: Union[str, os.PathLike[str]], fmt: str = "auto") -> Qrels:
    """Read relevance judgements as ``{query_id: {doc_id: gain}}``.

    Parameters
    ----------
    path : str or os.PathLike
        A file, or a BEIR folder (``qrels/test.tsv`` is used).
    fmt : {"auto", "trec", "beir", "cranfield"}
        ``trec``: ``qid iter docid rel``; ``beir``: TSV with a header ``query-id corpus-id score``;
        ``cranfield``: ``qid docid grade`` with grades 1 (best) .. 4 and -1, mapped to gain
        ``5 - grade`` (-1 -> 0). ``auto`` picks by the number of columns and the header.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "qrels" / "test.tsv"
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if fmt == "auto":
        first = lines[0].split()
        if not first[-1].lstrip("-").isdigit():
            fmt = "beir"
        elif len(first) == 4:
            fmt = "trec"
        elif len(first) == 3:
            fmt = "cranfield" if "cran" in p.name.lower() else "beir"
        else:
            raise ValueError(f"{p}: cannot tell the qrels format from the line {lines[0]!r}")
    qrels: Qrels = {}
    if fmt == "beir":
        rows = csv.reader(lines, delimiter="\t" if "\t" in lines[0] else " ")
        header = next(rows) if not lines[0].split()[-1].lstrip("-").isdigit() else None
        for r in rows:
            r = [c for c in r if c != ""]
            if len(r) >= 3:
                qrels.setdefault(r[0], {})[r[1]] = float(r[2])
        del header
    elif fmt == "trec":
        for ln in lines:
            q, _, d, rel = ln.split()[:4]
            qrels.setdefault(q, {})[d] = float(rel)
    elif fmt == "cranfield":
        for ln in lines:
            q, d, grade = ln.split()[:3]
            g = int(grade)
            qrels.setdefault(q, {})[d] = 0.0 if g < 0 else float(5 - g)
    else:
        raise ValueError(f"unknown qrels format {fmt!r}")
    return qrels


def evaluate(
    pipeline: Any,
    queries: Sequence[Any],
    qrels: Qrels,
    *,
    k: int = 10,
    depth: int = 100,
    configs: Optional[Sequence[Sequence[str]]] = None,
) -> list[dict[str, Any]]:
    """Evaluate each stage configuration of a pipeline on judged queries.

    Parameters
    ----------
    pipeline : Pipeline
    queries : sequence of Document
        Queries with ``id`` and ``text`` (queries without judgements are skipped).
    qrels : dict
        ``{query_id: {doc_id: gain}}`` (see :func:`read_qrels`).
    k : int
        Cut-off of nDCG and MRR.
    depth : int
        Cut-off of recall (the retrieve stage alone is asked for ``depth`` results).
    configs : sequence of stage lists, optional
        Default: every prefix of ``pipeline.stages()``.

    Returns
    -------
    list of dict
        One row per configuration: ``stages``, ``ndcg@k``, ``mrr@k``, ``recall@depth``,
        ``queries`` and per-stage latency ``p50_ms`` / ``p95_ms`` of each stage (and total).
    """
    stages = pipeline.stages()
    configs = [stages[: i + 1] for i in range(len(stages))] if configs is None else [list(c) for c in configs]
    judged = [q for q in queries if q.id in qrels]
    rows = []
    for cfg in configs:
        ndcg, mrr, rec = [], [], []
        times: dict[str, list[float]] = {}
        for q in judged:
            t = time.perf_counter()
            hits = pipeline.search(q.text, k=depth if cfg == ["retrieve"] else max(k, depth), stages=cfg)
            total = time.perf_counter() - t
            for name, v in {**pipeline.last_timings, "total": total}.items():
                times.setdefault(name, []).append(v)
            ranked = [h.doc_id for h in hits]
            gains = qrels[q.id]
            ndcg.append(ndcg_at_k(ranked, gains, k))
            mrr.append(mrr_at_k(ranked, gains, k))
            rec.append(recall_at_k(ranked, gains, depth))
        row: dict[str, Any] = {
            "stages": " -> ".join(cfg),
            "queries": len(judged),
            f"ndcg@{k}": float(np.mean(ndcg)) if ndcg else 0.0,
            f"mrr@{k}": float(np.mean(mrr)) if mrr else 0.0,
            f"recall@{depth}": float(np.mean(rec)) if rec else 0.0,
        }
        for name, v in times.items():
            row[f"{name} p50_ms"] = float(np.percentile(v, 50) * 1e3)
            row[f"{name} p95_ms"] = float(np.percentile(v, 95) * 1e3)
        rows.append(row)
    return rows


def match_query_ids(queries: list[Any], qrels: Qrels) -> list[Any]:
    """Renumber queries 1..N in file order when the qrels use ordinal numbers rather than the
    queries' own ids (Cranfield's ``cranqrel`` does)."""
    own = {q.id for q in queries}
    if own & set(qrels):
        hit_own = len(own & set(qrels))
        ordinal = {str(i + 1) for i in range(len(queries))}
        if hit_own >= len(ordinal & set(qrels)):
            return queries
    return [type(q)(str(i + 1), q.text, q.metadata) for i, q in enumerate(queries)]
