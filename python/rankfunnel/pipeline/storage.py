"""How a pipeline keeps its documents and every stage's data, in memory and in a folder.

A pipeline kept in a folder commits every change (add, update, remove, merge, compaction) as
one new *generation*: the rows go to SQLite tagged with it, what the change adds goes to a
small segment file, and the manifest ``pipeline.json`` naming that generation and its files is
written atomically last: that rename is the commit. Memory follows only once it is on disk.
See folder.py for the layout, policy.py for when segments are merged and folded into the main
index, and fields.py for what each stage keeps per document.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt

from ..docstore import DocStore
from ..errors import CorruptFileError, RankfunnelError
from . import folder as fs
from .fields import Field, LexicalField, TokenField, VectorField
from .manifest import FORMAT_VERSION, MANIFEST, describe_model, read_manifest, write_json_atomic
from .policy import TieredPolicy

PathLike = Union[str, "os.PathLike[str]"]
S = TypeVar("S", bound="PipelineStorage")


class PipelineStorage:
    """The state behind a :class:`Pipeline`: documents, per-stage fields (main index + segment
    delta), the committed generation and, for a folder, the writer lock and the commit protocol.

    Subclasses set the configuration attributes declared here before calling
    :meth:`_reset_state`.
    """

    encoder: Any
    reranker: Any
    late_interaction: Any
    metric: str
    candidates: dict[str, int]
    index_kind: str
    ivf_train_at: int
    lock_timeout: float
    lexical: Optional[dict[str, Any]]
    fusion: dict[str, Any]
    policy: TieredPolicy
    path: Optional[Path]
    read_only: bool
    docs: DocStore
    _mmap: bool
    _lock: Optional[fs.WriterLock]
    _models_desc: Optional[dict[str, Any]]

    def _reset_state(self) -> None:
        """Empty in-memory state: generation 0, no main index, no segments."""
        self.generation = 0
        self._count = 0
        self._next_id = 0
        self._main: dict[str, Any] = {"gen": 0, "rows": 0, "files": {}}
        self._main_dead = 0
        self._segments: list[dict[str, Any]] = []
        self._delta_gen: dict[int, int] = {}
        self._fields: dict[str, Field] = {}
        if self.encoder is not None:
            dim = getattr(self.encoder, "dim", None)
            self._fields["vectors"] = VectorField(
                self.encoder, self.index_kind, self.metric, dim, self.ivf_train_at
            )
        if self.late_interaction is not None:
            self._fields["tokens"] = TokenField(self.late_interaction, int(self.late_interaction.dim))
        if self.lexical is not None:
            self._fields["terms"] = LexicalField(self.lexical)

    @property
    def index(self) -> Any:
        """The main first-stage index (documents still in segments are not in it)."""
        f = self._fields.get("vectors")
        return None if f is None else f.main  # type: ignore[attr-defined]

    @property
    def search_params(self) -> dict[str, int]:
        """Keyword arguments every search of the main first-stage index gets (``ef`` for HNSW,
        ``nprobe`` for IVF); empty means the index's defaults."""
        f = self._fields.get("vectors")
        return {} if f is None else dict(f.search_params)  # type: ignore[attr-defined]

    @search_params.setter
    def search_params(self, params: dict[str, int]) -> None:
        f = self._fields.get("vectors")
        if f is None:
            raise RankfunnelError("the pipeline has no first-stage vector index to tune")
        f.search_params = dict(params)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self._count

    def __enter__(self: S) -> S:
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
            "lexical": self.lexical,
            "fusion": self.fusion,
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
            name = self._main["files"].get(f.key)
            if name:
                f.load_main(self.path / name, self._mmap)
        tombstones = self.docs.superseded()
        # A version folded into the main index and superseded after that fold; versions
        # superseded before it were left out of it (their rows are purged after the fold).
        in_main = np.array(sorted({i for i, g, d in tombstones if g <= main_gen < d}), dtype=np.int64)
        dead = {(i, g) for i, g, _ in tombstones}
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
            if self.path is not None and read_manifest(self.path)["generation"] == gen:
                self._reload()  # the rename happened (a later fsync failed): gen is committed
            else:
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
            main: dict[str, Any] = {"gen": gen, "rows": rows, "files": {}}
            if self.path is not None:
                for f in self._fields.values():
                    if f.main_len():
                        name = f"{f.main_prefix}-{gen}.rfi"
                        f.save_main(self.path / name)
                        fs.crash_point(f"compact:{f.main_prefix}")
                        main["files"][f.key] = name
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
        snap = type(self).__new__(type(self))
        snap.__dict__.update(self.__dict__)
        snap.path, snap._lock, snap._models_desc = dst, None, None
        lock = fs.WriterLock(dst, 0.0)
        try:
            (dst / fs.DOCS).unlink(missing_ok=True)
            self.docs.copy_to(dst / fs.DOCS)
            main: dict[str, Any] = {"gen": self.generation, "rows": 0, "files": {}}
            for f in self._fields.values():
                if f.main_len():
                    name = f"{f.main_prefix}-{self.generation}.rfi"
                    f.save_main(dst / name)
                    main["files"][f.key] = name
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
