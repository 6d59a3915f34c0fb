"""Evaluation: retrieval metrics (trec_eval conventions), matching queries to judgements, and
:func:`evaluate` / :func:`sweep` of the stage configurations and search settings of a pipeline.

Metrics follow trec_eval (and so pytrec_eval / ir-measures): linear gains, a log2(rank + 1)
discount, the ideal ranking built from every judged document with a positive gain, and a run
given as scores ranked by score, ties broken by document id in *descending* order. A query with
no results counts as 0 (trec_eval ``-c``).
"""

from __future__ import annotations

import inspect
import itertools
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional, Union

import numpy as np

from .corpus import Document
from .errors import RankfunnelError
from .progress import progress_bar
from .qrels import Qrels, load_qrels, read_qrels
from .registry import index_class, parse_spec

__all__ = [
    "SETTINGS",
    "Qrels",
    "evaluate",
    "judged_queries",
    "load_qrels",
    "match_query_ids",
    "mrr_at_k",
    "ndcg_at_k",
    "rank_run",
    "read_qrels",
    "recall_at_k",
    "sweep",
]

Ranking = Union[Sequence[str], Mapping[str, float]]
"""Document ids best first, or a run ``{doc_id: score}`` (ranked by :func:`rank_run`)."""

SETTINGS = ("ef", "nprobe", "candidates", "candidates.retrieve", "candidates.late")
"""Search settings :func:`evaluate` and :func:`sweep` can vary: ``ef`` (HNSW beam width),
``nprobe`` (IVF lists scanned), ``candidates`` (every stage's candidates) or one stage's."""


def rank_run(run: Mapping[str, float]) -> list[str]:
    """Document ids of a run best first, as trec_eval ranks them: by score descending, ties by
    document id descending."""
    return [d for d, _ in sorted(run.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def _ranked(ranking: Ranking) -> Sequence[str]:
    return rank_run(ranking) if isinstance(ranking, Mapping) else ranking


def ndcg_at_k(ranked: Ranking, gains: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with linear gains and a log2(rank + 1) discount (trec_eval ``ndcg_cut``).

    Parameters
    ----------
    ranked : sequence of str, or mapping of str to float
        Document ids best first, or a run ``{doc_id: score}``.
    gains : mapping of str to float
        The query's judgements ``{doc_id: gain}``.
    k : int
        Cut-off.
    """
    dcg = sum(gains.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(_ranked(ranked)[:k]))
    ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Ranking, gains: Mapping[str, float], k: int = 10) -> float:
    """Reciprocal rank of the first relevant (gain > 0) document within the top k (ir-measures
    ``RR@k``); arguments as :func:`ndcg_at_k`."""
    for i, d in enumerate(_ranked(ranked)[:k]):
        if gains.get(d, 0.0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Ranking, gains: Mapping[str, float], k: int = 100) -> float:
    """Fraction of the relevant (gain > 0) documents found in the top k (trec_eval
    ``recall_k``); arguments as :func:`ndcg_at_k`."""
    relevant = {d for d, g in gains.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(_ranked(ranked)[:k])) / len(relevant)


def match_query_ids(queries: list[Document], qrels: Qrels) -> list[Document]:
    """The queries, renumbered when the judgements name them another way.

    Three readings are tried and the one matching the most judged query ids wins (in this order
    on a tie): the queries' own ids; their ids without leading zeros (``001`` -> ``1``); and their
    positions 1..N in file order (Cranfield's ``cranqrel`` numbers its queries so).
    """
    judged = set(qrels)
    own = [q.id for q in queries]
    unpadded = [q.id.lstrip("0") or "0" if q.id.isdigit() else q.id for q in queries]
    ordinal = [str(i + 1) for i in range(len(queries))]
    best = max((own, unpadded, ordinal), key=lambda ids: len(judged.intersection(ids)))
    if best is own:
        return queries
    return [Document(i, q.text, q.metadata) for i, q in zip(best, queries)]


def _sample(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:n])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def judged_queries(queries: Sequence[Document], qrels: Qrels) -> list[Document]:
    """The queries that have judgements.

    Raises
    ------
    RankfunnelError
        When no query id matches a judged query id (the message shows ids from both sides).

    Warns
    -----
    UserWarning
        When some judged query ids have no query (with the counts).
    """
    known = {q.id for q in queries}
    judged = [q for q in queries if q.id in qrels]
    if not judged:
        raise RankfunnelError(
            f"no query id matches a judged query id: the queries have {_sample([q.id for q in queries])}; "
            f"the judgements have {_sample(sorted(qrels))}"
        )
    missing = sorted(set(qrels) - known)
    if missing:
        warnings.warn(
            f"{len(judged)} of {len(qrels)} judged queries found among the {len(queries)} queries; "
            f"{len(missing)} judged query ids have no query (e.g. {_sample(missing, 3)})",
            UserWarning,
            stacklevel=2,
        )
    return judged


def _search_parameters(index: Any) -> set[str]:
    try:
        return set(inspect.signature(index.search).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return set()


def _relevant(name: str, stages: Sequence[str], mode: Optional[str] = None) -> bool:
    """Whether a setting changes the results of a stage configuration (in a first-stage mode)."""
    if name in ("ef", "nprobe"):
        return mode != "lexical"
    if name == "candidates.late":
        return "late" in stages and stages[-1] != "late"
    return len(stages) > 1


def _known(names: Iterable[str]) -> None:
    unknown = set(names) - set(SETTINGS)
    if unknown:
        raise RankfunnelError(f"unknown search settings {sorted(unknown)}: choose from {', '.join(SETTINGS)}")


@contextmanager
def _applied(pipeline: Any, settings: Mapping[str, int]) -> Iterator[None]:
    """Search ``pipeline`` with ``settings`` inside the block; everything is restored after."""
    _known(settings)
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise RankfunnelError(f"setting {name} must be a positive integer, got {value!r}")
    index_params = {n: int(v) for n, v in settings.items() if n in ("ef", "nprobe")}
    if index_params:
        if pipeline.encoder is None:
            raise RankfunnelError(f"{sorted(index_params)}: the pipeline has no vector index to tune")
        # The configured kind decides (an IVF pipeline searches exactly until it trains its lists).
        cls = index_class(parse_spec(pipeline.index_kind)[0])
        accepted = _search_parameters(cls)
        for name in index_params:
            if name not in accepted:
                raise RankfunnelError(
                    f"{name} is not a search setting of {cls.__name__} (ef: HNSW, nprobe: IVF)"
                )
    candidates = dict(pipeline.candidates)
    for name, value in settings.items():
        if name == "candidates":
            pipeline.candidates = {**pipeline.candidates, "retrieve": int(value), "late": int(value)}
        elif name.startswith("candidates."):
            pipeline.candidates = {**pipeline.candidates, name.split(".", 1)[1]: int(value)}
    params: Optional[dict[str, int]] = None
    if index_params:
        params = dict(pipeline.search_params)
        pipeline.search_params = {**params, **index_params}
    try:
        yield
    finally:
        if params is not None:
            pipeline.search_params = params
        pipeline.candidates = candidates


Config = tuple[Optional[str], list[str]]
"""A configuration to evaluate: the first-stage mode (None: the pipeline has only one) and the
stages run."""


def _modes(pipeline: Any) -> list[str]:
    modes = getattr(pipeline, "modes", None)
    return list(modes()) if modes is not None else ["dense"]


def _configs(
    pipeline: Any, configs: Optional[Sequence[Sequence[str]]], modes: Optional[Sequence[str]] = None
) -> list[Config]:
    """The configurations to evaluate.

    A pipeline with one first-stage mode: ``configs``, by default every prefix of its stages.
    With several (dense, lexical, hybrid): the first stage alone in each mode of ``modes``
    (default all), then the longer prefixes in the last of them (its default, hybrid); given
    ``configs`` run in each mode of ``modes`` (default the last).
    """
    have = _modes(pipeline)
    if modes is not None:
        for m in modes:
            if m not in have:
                raise RankfunnelError(f"mode {m!r} is not one of the pipeline's modes {have}")
    if len(have) == 1 and modes is None:
        if configs is not None:
            return [(None, list(c)) for c in configs]
        stages = pipeline.stages()
        return [(None, stages[: i + 1]) for i in range(len(stages))]
    chosen = list(modes) if modes is not None else have
    if configs is not None:
        run = chosen if modes is not None else [have[-1]]
        return [(m, list(c)) for m in run for c in configs]
    stages = pipeline.stages()
    return [(m, stages[:1]) for m in chosen] + [(chosen[-1], stages[: i + 1]) for i in range(1, len(stages))]


def _label(mode: Optional[str], stages: Sequence[str]) -> str:
    """A row's name: the stages, the first named by its mode (``hybrid -> rerank``)."""
    return " -> ".join(([mode] + list(stages[1:])) if mode is not None else list(stages))


def _depth(pipeline: Any, stages: Sequence[str], k: int, depth: int) -> int:
    """Results to ask for: ``depth``, but no more than the candidates a later stage is given, so
    that each stage sees the candidates it sees in use (asking for more would widen them)."""
    n = depth
    if len(stages) > 1:
        n = min(n, pipeline.candidates.get("retrieve", depth))
    if "late" in stages and stages[-1] != "late":
        n = min(n, pipeline.candidates.get("late", depth))
    return max(k, n)


def _run_of(hits: Sequence[Any], lower_is_better: bool) -> dict[str, float]:
    sign = -1.0 if lower_is_better else 1.0
    return {h.doc_id: sign * float(h.score) for h in hits}


def evaluate(
    pipeline: Any,
    queries: Sequence[Document],
    qrels: Qrels,
    *,
    k: int = 10,
    depth: int = 100,
    configs: Optional[Sequence[Sequence[str]]] = None,
    settings: Optional[Mapping[str, int]] = None,
    show_progress: Optional[bool] = False,
    modes: Optional[Sequence[str]] = None,
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
        Cut-off of recall. Each configuration is asked for ``depth`` results, capped at the
        candidates its later stages are given (but at least ``k``): the rerankers see the same
        candidates as in use, and recall@depth of a reranked configuration counts what its
        candidates can hold.
    configs : sequence of stage lists, optional
        Default: every prefix of ``pipeline.stages()``.
    modes : sequence of str, optional
        First-stage modes to evaluate (a pipeline with a lexical index has ``dense``,
        ``lexical`` and ``hybrid``; see ``Pipeline.modes``). By default each mode is one row
        of its first stage alone, and the later stages rerank the default mode's (hybrid)
        candidates: rows ``dense``, ``lexical``, ``hybrid``, ``hybrid -> late``, ...
    settings : mapping, optional
        Search settings for every query (see :data:`SETTINGS`), e.g. ``{"ef": 32}``; each row
        records the ones that apply to its configuration.
    show_progress : bool or None, default False
        Progress bar on stderr; None: when stderr is a terminal.

    Returns
    -------
    list of dict
        One row per configuration: ``stages`` (its name, e.g. ``retrieve -> rerank``, or
        ``hybrid -> rerank`` when the pipeline has modes; then also ``mode``), the settings, ``ndcg@k``, ``mrr@k``,
        ``recall@depth``, ``queries`` and per-stage latency ``p50_ms`` / ``p95_ms`` of each stage
        (and ``total``).

    Raises
    ------
    RankfunnelError
        No judged query among ``queries``, bad ``k`` / ``depth`` or settings.
    """
    for what, value in (("k", k), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RankfunnelError(f"{what} must be a positive integer, got {value!r}")
    settings = dict(settings or {})
    cfgs = _configs(pipeline, configs, modes)
    judged = [q for q in queries if q.id in qrels]
    if not judged:
        raise RankfunnelError("no judged query to evaluate (see judged_queries)")
    rows = []
    bar = progress_bar(total=len(cfgs) * len(judged), desc="eval", unit="query", show=show_progress)
    with bar, _applied(pipeline, settings):
        for mode, cfg in cfgs:
            ndcg, mrr, rec = [], [], []
            times: dict[str, list[float]] = {}
            lower_is_better = (
                cfg[-1] == "retrieve" and mode in (None, "dense") and getattr(pipeline, "metric", "") == "l2"
            )
            how = {} if mode is None else {"mode": mode}
            for q in judged:
                t = time.perf_counter()
                hits = pipeline.search(q.text, k=_depth(pipeline, cfg, k, depth), stages=cfg, **how)
                total = time.perf_counter() - t
                for name, took in {**pipeline.last_timings, "total": total}.items():
                    times.setdefault(name, []).append(took)
                run = _run_of(hits, lower_is_better)
                gains = qrels[q.id]
                ndcg.append(ndcg_at_k(run, gains, k))
                mrr.append(mrr_at_k(run, gains, k))
                rec.append(recall_at_k(run, gains, depth))
                bar.update(1)
            row: dict[str, Any] = {"stages": _label(mode, cfg), **how}
            row.update({n: v for n, v in settings.items() if _relevant(n, cfg, mode)})
            row.update(
                {
                    "queries": len(judged),
                    f"ndcg@{k}": float(np.mean(ndcg)),
                    f"mrr@{k}": float(np.mean(mrr)),
                    f"recall@{depth}": float(np.mean(rec)),
                }
            )
            for name, spent in times.items():
                row[f"{name} p50_ms"] = float(np.percentile(spent, 50) * 1e3)
                row[f"{name} p95_ms"] = float(np.percentile(spent, 95) * 1e3)
            rows.append(row)
    return rows


def sweep(
    pipeline: Any,
    queries: Sequence[Document],
    qrels: Qrels,
    grid: Mapping[str, Sequence[int]],
    *,
    k: int = 10,
    depth: int = 100,
    configs: Optional[Sequence[Sequence[str]]] = None,
    show_progress: Optional[bool] = False,
    modes: Optional[Sequence[str]] = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate` every stage configuration at every combination of search settings.

    Parameters
    ----------
    pipeline, queries, qrels, k, depth, configs, show_progress, modes
        As for :func:`evaluate`.
    grid : mapping of str to sequence of int
        Values of each setting (see :data:`SETTINGS`), e.g. ``{"ef": [16, 32, 64]}``.

    Returns
    -------
    list of dict
        :func:`evaluate`'s rows; a configuration that a setting does not affect (candidates
        for the retrieve stage alone) is evaluated once per value of the settings it depends on.
    """
    cfgs = _configs(pipeline, configs, modes)
    names = list(grid)
    _known(names)
    for name in names:
        if not list(grid[name]):
            raise RankfunnelError(f"setting {name} has no values to sweep")
    jobs: dict[tuple[Any, ...], tuple[Config, dict[str, int]]] = {}
    for values in itertools.product(*(list(grid[n]) for n in names)):
        for mode, cfg in cfgs:
            applied = {n: v for n, v in zip(names, values) if _relevant(n, cfg, mode)}
            jobs.setdefault((mode, tuple(cfg), tuple(sorted(applied.items()))), ((mode, cfg), applied))
    rows: list[dict[str, Any]] = []
    judged = sum(1 for q in queries if q.id in qrels)
    with progress_bar(total=len(jobs) * judged, desc="sweep", unit="query", show=show_progress) as bar:
        for (mode, cfg), applied in jobs.values():
            rows += evaluate(
                pipeline,
                queries,
                qrels,
                k=k,
                depth=depth,
                configs=[cfg],
                settings=applied,
                modes=None if mode is None else [mode],
            )
            bar.update(judged)
    return rows
