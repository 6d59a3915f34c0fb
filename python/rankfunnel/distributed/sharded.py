"""Search a sharded pipeline folder: one Ray actor per shard, an exact merge in the driver.

The driver encodes each query batch once, scatters it to every shard actor (each holds its
shard's pipeline, index files mapped), gathers each shard's candidates with their scores and
merges them exactly with :func:`~rankfunnel.pipeline.fields.merge_topk` (best first, ties to the
lower id, as a single index). The later stages run once, in the driver, on the merged
candidates: ColBERT scores come from the shards that hold the candidates' tokens (MaxSim of a
document does not depend on the others, so the merge stays exact), the cross-encoder runs on
texts fetched from their shards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union, cast

import numpy as np
import numpy.typing as npt

from .._arrays import positive_int
from ..docstore import DocStore, Row
from ..errors import CorruptFileError, RankfunnelError
from ..pipeline.fields import merge_topk
from ..pipeline.manifest import open_model
from ..pipeline.stages import Candidates, CrossEncoderRescorer, DenseRetriever, Hit, LateInteraction, RowCache
from . import layout
from ._ray import init, surfaced

PathLike = Union[str, "os.PathLike[str]"]
Part = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def _empty() -> Part:
    return np.empty(0, np.float32), np.empty(0, np.int64)


class ShardActor:
    """One shard's pipeline, opened read-only in a Ray actor (``ray.remote`` wraps it).

    Parameters
    ----------
    folder : str
        The shard's pipeline folder.
    files : dict
        The checksums the sharded manifest recorded (checked first when ``verify``).
    verify : bool
        Check every file's SHA-256 before opening.
    mmap : bool
        Map the main index files.
    """

    def __init__(self, folder: str, files: dict[str, str], verify: bool, mmap: bool) -> None:
        from ..pipeline import Pipeline

        # An error opening the shard is kept for size() to raise: an actor whose constructor
        # fails would be restarted over and over, and its error would reach the driver wrapped.
        self.error: Optional[Exception] = None
        try:
            if verify:
                layout.verify_shard(Path(folder), files)
            self.p = Pipeline.load(folder, mmap=mmap, read_only=True)
        except (RankfunnelError, OSError) as err:
            self.error = err

    def size(self) -> int:
        """Documents in the shard (raises the error that opening it met)."""
        if self.error is not None:
            raise self.error
        return len(self.p)

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        return os.getpid()

    def retrieve(
        self, encoded: Any, k: int, where: Optional[dict[str, Any]], rows: bool = False
    ) -> tuple[list[Part], dict[int, Optional[Row]]]:
        """Each query's top ``k`` in this shard (``where``: the metadata filter), as arrays;
        with ``rows``, the rows of those documents too (saves a round trip when no later stage
        runs: the final hits are among them)."""
        nq = len(encoded)
        allow = None
        if where:
            allow = np.asarray(self.p.docs.where(where), dtype=np.int64)
            if len(allow) == 0:
                return [_empty() for _ in range(nq)], {}
        if len(self.p) == 0:
            return [_empty() for _ in range(nq)], {}
        out = []
        for cs in self.p._retriever().retrieve(encoded, k, allow):
            out.append(
                (
                    np.asarray([sc["retrieve"] for _, sc in cs], dtype=np.float32),
                    np.asarray([i for i, _ in cs], dtype=np.int64),
                )
            )
        found: dict[int, Optional[Row]] = {}
        if rows:
            ids = sorted({int(i) for _, part in out for i in part.tolist()})
            found = dict(zip(ids, self.p.docs.get(ids)))
        return out, found

    def late(self, query_tokens: Sequence[Any], ids: Sequence[Sequence[int]], k: int) -> list[Part]:
        """ColBERT MaxSim of each query over its candidates held here; top ``k`` per query."""
        tokens = self.p._fields["tokens"]
        return [
            tokens.rerank(q, list(i), k) if len(i) else _empty()  # type: ignore[attr-defined]
            for q, i in zip(query_tokens, ids)
        ]

    def rows(self, ids: Sequence[int]) -> list[Optional[Row]]:
        """Texts, metadata and doc ids of documents of this shard."""
        return self.p.docs.get(list(ids))

    def set_search_params(self, params: dict[str, int]) -> None:
        """Settings every search of the shard's main index gets (``ef``, ``nprobe``)."""
        self.p.search_params = params


class _ShardRows:
    """Rows fetched from the shards that hold them (the ``DocStore.get`` a RowCache needs)."""

    def __init__(self, actors: list[Any], owner: dict[int, int], ray: Any) -> None:
        self.actors, self.owner, self.ray = actors, owner, ray

    def get(self, ids: Sequence[int]) -> list[Optional[Row]]:
        by_shard: dict[int, list[int]] = {}
        for i in ids:
            by_shard.setdefault(self.owner[int(i)], []).append(int(i))
        shards = sorted(by_shard)
        with surfaced():
            got = self.ray.get([self.actors[s].rows.remote(by_shard[s]) for s in shards])
        found = {i: row for s, rows in zip(shards, got) for i, row in zip(by_shard[s], rows)}
        return [found.get(int(i)) for i in ids]


class ShardedPipeline:
    """A sharded pipeline folder opened for search on a Ray cluster.

    Parameters
    ----------
    path : str or os.PathLike
        A folder written by :func:`rankfunnel.distributed.build_shards` (every node sees it).
    mmap : bool
        Shard actors map their main index files.
    verify : bool
        Each actor checks its shard's files against the manifest's SHA-256 before opening.
    max_restarts : int
        Restarts of a shard actor that dies (-1: without limit).
    max_task_retries : int
        Retries of a call to a shard actor that died while it ran (the query is not lost).
    num_cpus : float
        CPUs each shard actor reserves (0: placed wherever there is room).
    address : str, optional
        Ray cluster to connect to when Ray is not initialised yet (``ray.init(address)``).
    actor_options : dict, optional
        More ``.options()`` for the shard actors (``resources=``, ``memory=`` ...).

    Raises
    ------
    NotShardedError
        If the folder holds no sharded pipeline.
    CorruptFileError
        If a shard is missing or a checksum differs (named).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        mmap: bool = True,
        verify: bool = True,
        max_restarts: int = 4,
        max_task_retries: int = 4,
        num_cpus: float = 0,
        address: Optional[str] = None,
        actor_options: Optional[dict[str, Any]] = None,
    ) -> None:
        self.path = Path(path)
        cfg = layout.read_manifest(self.path)
        for s in cfg["shards"]:
            folder = self.path / s["path"]
            if not (folder / "pipeline.json").is_file():
                raise CorruptFileError(f"shard {s['shard']} ({folder}) is missing")
        if cfg.get("centroids"):
            layout.verify_shard(self.path, {cfg["centroids"]["file"]: cfg["centroids"]["sha256"]})
        self._ray = init(address)
        models = {k: open_model(v) for k, v in cfg["models"].items()}
        self.encoder = models.get("encoder")
        self.reranker = models.get("reranker")
        self.late_interaction = models.get("late_interaction")
        self.metric: str = cfg["metric"]
        self.index_kind: str = cfg["index"]
        self.candidates: dict[str, int] = dict(cfg["candidates"])
        self.last_timings: dict[str, float] = {}
        self._count = int(cfg["docs"])
        self._params: dict[str, int] = {}
        remote = self._ray.remote(ShardActor).options(
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            num_cpus=num_cpus,
            **(actor_options or {}),
        )
        self.actors = [
            remote.remote(str(self.path / s["path"]), s["files"], verify, mmap) for s in cfg["shards"]
        ]
        # Wait for every shard to open: a damaged one fails here, naming its file.
        try:
            with surfaced():
                sizes = self._ray.get([a.size.remote() for a in self.actors])
        except BaseException:
            self.close()
            raise
        if sum(sizes) != self._count:
            self.close()
            raise CorruptFileError(
                f"{self.path}: the shards hold {sum(sizes)} documents, the manifest counts {self._count}"
            )

    def __len__(self) -> int:
        return self._count

    def _shared(self, value: Any) -> Any:
        """``value`` as an argument of one call per shard: put in the object store once when
        large (every actor reads the one copy), passed inline when small (no extra round trip)."""
        size = sum(int(getattr(v, "nbytes", 0)) for v in (value if isinstance(value, list) else [value]))
        return self._ray.put(value) if size > 100_000 else value

    def _get(self, refs: list[Any]) -> list[Any]:
        """The results of calls to the shard actors (their errors raised as themselves)."""
        with surfaced():
            out: list[Any] = self._ray.get(refs)
        return out

    def __repr__(self) -> str:
        return f"ShardedPipeline(stages={self.stages()}, index={self.index_kind!r}, docs={self._count}, shards={len(self.actors)})"

    def __enter__(self) -> ShardedPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the shard actors."""
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []

    def modes(self) -> list[str]:
        """First-stage modes: ``["dense"]`` (shards keep no BM25 index; see :meth:`search_batch`)."""
        return ["dense"]

    def stages(self) -> list[str]:
        """The stages this pipeline runs, in order."""
        out = ["retrieve"]
        if self.encoder is not None and self.late_interaction is not None:
            out.append("late")
        if self.reranker is not None:
            out.append("rerank")
        return out

    @property
    def search_params(self) -> dict[str, int]:
        """Keyword arguments every shard's main-index search gets (``ef``, ``nprobe``)."""
        return dict(self._params)

    @search_params.setter
    def search_params(self, params: dict[str, int]) -> None:
        if self.encoder is None:
            raise RankfunnelError("the pipeline has no first-stage vector index to tune")
        self._get([a.set_search_params.remote(dict(params)) for a in self.actors])
        self._params = dict(params)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Optional[dict[str, Any]] = None,
        stages: Optional[Sequence[str]] = None,
        mode: Optional[str] = None,
    ) -> list[Hit]:
        """Search one query (see :meth:`rankfunnel.Pipeline.search`: same results, same order)."""
        if not isinstance(query, str):
            raise RankfunnelError(f"query must be a string, got {type(query).__name__}")
        return self.search_batch([query], k, where=where, stages=stages, mode=mode)[0]

    def _merge(self, parts: list[list[Part]], k: int, ascending: bool, owner: dict[int, int]) -> list[Part]:
        """Per query, the shards' lists merged exactly; records which shard holds each id."""
        out = []
        for qi in range(len(parts[0]) if parts else 0):
            for s, per_query in enumerate(parts):
                for i in per_query[qi][1].tolist():
                    owner[int(i)] = s
            out.append(merge_topk([p[qi] for p in parts], k, ascending))
        return out

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        where: Optional[dict[str, Any]] = None,
        stages: Optional[Sequence[str]] = None,
        mode: Optional[str] = None,
    ) -> list[list[Hit]]:
        """Search many queries: one encoding, one call per shard and stage; one list of hits per query.

        ``mode`` may only be ``"dense"`` (or None): shards keep no BM25 index, because BM25
        scores depend on corpus-wide statistics that separate shards would each count apart.

        Raises
        ------
        RankfunnelError
            For ``mode="lexical"`` or ``"hybrid"``, bad queries, k or stages.
        """
        if mode not in (None, "dense"):
            raise RankfunnelError(
                f"mode {mode!r} is not available on a sharded pipeline: shards keep no BM25 index "
                "(its statistics are corpus-wide); lexical and hybrid search need one pipeline"
            )
        queries = list(queries)
        if any(not isinstance(q, str) for q in queries):
            raise RankfunnelError("queries must be strings")
        k = positive_int(k, "k")
        run = self.stages() if stages is None else list(stages)
        if not run or run != self.stages()[: len(run)]:
            raise RankfunnelError(f"stages must be a prefix of {self.stages()}, got {run}")
        if not queries or self._count == 0:
            return [[] for _ in queries]
        ray = self._ray
        last = run[-1]
        depth = {name: k if name == last else max(k, self.candidates.get(name, 100)) for name in run}
        timings: dict[str, float] = {}
        t = time.perf_counter()
        if self.encoder is not None:
            encoded = DenseRetriever(self.encoder, None).encode(queries)  # type: ignore[arg-type]
        else:
            encoded = LateInteraction(self.late_interaction, None).encode(queries)  # type: ignore[arg-type]
        timings["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        owner: dict[int, int] = {}
        ref = self._shared(encoded)
        got = self._get(
            [a.retrieve.remote(ref, depth["retrieve"], where, last == "retrieve") for a in self.actors]
        )
        parts = [p for p, _ in got]
        ascending = self.encoder is not None and self.metric == "l2"
        cands: list[Candidates] = [
            [(int(i), {"retrieve": float(s)}) for s, i in zip(*m)]
            for m in self._merge(parts, depth["retrieve"], ascending, owner)
        ]
        timings["retrieve"] = time.perf_counter() - t
        rows = RowCache(cast(DocStore, _ShardRows(self.actors, owner, ray)))
        for _, found in got:
            rows.rows.update(found)
        if "late" in run:
            t = time.perf_counter()
            cands = self._late(queries, cands, depth["late"], owner)
            timings["late"] = time.perf_counter() - t
        if "rerank" in run:
            t = time.perf_counter()
            cands = CrossEncoderRescorer(self.reranker).rescore(
                "rerank", queries, cands, depth["rerank"], rows
            )
            timings["rerank"] = time.perf_counter() - t
        self.last_timings = timings
        return rows.hits(cands, k, last)

    def _late(
        self, queries: list[str], cands: list[Candidates], k: int, owner: dict[int, int]
    ) -> list[Candidates]:
        """ColBERT rescoring of the merged candidates by the shards holding their tokens."""
        assert self.late_interaction is not None
        qt = self.late_interaction.encode_queries(queries)
        ref = self._shared(qt)
        calls = []
        for s, a in enumerate(self.actors):
            held = [[i for i, _ in cs if owner[i] == s] for cs in cands]
            calls.append(a.late.remote(ref, held, k))
        parts = self._get(calls)
        out = []
        for qi, cs in enumerate(cands):
            prev = dict(cs)
            scores, ids = merge_topk([p[qi] for p in parts], k)
            out.append([(int(j), {**prev[int(j)], "late": float(x)}) for x, j in zip(scores, ids)])
        return out
