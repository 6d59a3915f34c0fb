"""Document texts and metadata in SQLite (stdlib ``sqlite3``, WAL), one file per pipeline.

Rows are *versions*: ``(id, gen)`` is the version of document ``id`` written by commit ``gen``,
and ``dead`` is the commit that superseded it (a removal or an update), ``NULL`` while it is
current. The store answers every read for one *snapshot* generation: a version is visible when
``gen <= snapshot`` and it was not superseded by then. So rows of a commit that never happened
(a crash before the pipeline's manifest named the generation) are invisible to readers, and
:meth:`DocStore.recover` (run by the next writer only) deletes them and revives the versions
they had superseded.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

from .errors import CorruptFileError, RankfunnelError

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    dead INTEGER,
    ext TEXT,
    text TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, gen)
);
CREATE UNIQUE INDEX IF NOT EXISTS docs_current_id ON docs(id) WHERE dead IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS docs_current_ext ON docs(ext) WHERE dead IS NULL AND ext IS NOT NULL;
CREATE INDEX IF NOT EXISTS docs_gen ON docs(gen);
"""
# No index on dead alone: SQLite would use it for "dead IS NULL", which matches every live row
# (a scan of the corpus per lookup); the partial unique indexes above serve those lookups.

Row = tuple[str, dict[str, Any], Optional[str]]


class DocStore:
    """Texts and JSON metadata keyed by int64 id, with an optional external (string) id.

    Parameters
    ----------
    path : str or os.PathLike or None
        SQLite file; ``None`` keeps everything in memory.
    mode : {"create", "write", "read"}
        ``"create"`` makes a new file, ``"write"`` opens an existing one for writing and
        ``"read"`` opens it read-only (SQLite URI ``mode=ro``): no open ever creates a missing
        file, so a damaged pipeline folder is reported instead of silently emptied.

    Raises
    ------
    CorruptFileError
        If the file is missing (``"write"``/``"read"``), not a SQLite database, or lacks the
        rankfunnel schema.
    """

    def __init__(self, path: Union[str, os.PathLike[str], None] = None, mode: str = "create") -> None:
        self.path = None if path is None else os.fspath(path)
        self.read_only = mode == "read"
        self.snapshot: Optional[int] = None
        self._lock = threading.RLock()
        if self.path is None:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
            return
        if mode != "create" and not os.path.isfile(self.path):
            raise CorruptFileError(f"{self.path} is missing: the pipeline's documents are gone")
        uri_mode = {"create": "rwc", "write": "rw", "read": "ro"}[mode]
        uri = "file:" + self.path.replace("?", "%3f").replace("#", "%23") + f"?mode={uri_mode}"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            if mode == "create":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif mode == "write":
                self._db.execute("PRAGMA journal_mode=WAL")
            if mode != "read":
                self._db.execute("PRAGMA synchronous=FULL")
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(docs)")}
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as err:
            raise CorruptFileError(f"{self.path} is not a readable SQLite database ({err})") from None
        if not {"id", "gen", "dead", "ext", "text", "meta"} <= cols or version != SCHEMA_VERSION:
            self._db.close()
            raise CorruptFileError(
                f"{self.path} does not hold rankfunnel documents (schema {version}, columns "
                f"{sorted(cols)}); expected schema {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- visibility ---------------------------------------------------------------------------

    def _visible(self, alias: str = "") -> tuple[str, list[int]]:
        a = alias + "." if alias else ""
        if self.snapshot is None:
            return f"{a}dead IS NULL", []
        s = self.snapshot
        return f"{a}gen <= ? AND ({a}dead IS NULL OR {a}dead > ?)", [s, s]

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, list(args)).fetchall()
            except sqlite3.DatabaseError as err:
                raise CorruptFileError(f"{self.path or 'the document store'} failed a read: {err}") from None

    def __len__(self) -> int:
        vis, args = self._visible()
        return int(self._query(f"SELECT COUNT(*) FROM docs WHERE {vis}", args)[0][0])

    def max_id(self) -> int:
        """Largest id of any stored version, or -1."""
        v = self._query("SELECT MAX(id) FROM docs")[0][0]
        return -1 if v is None else int(v)

    # -- writing ------------------------------------------------------------------------------

    def _write(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Run ``(sql, rows)`` pairs in one transaction (all or nothing)."""
        if self.read_only:
            raise RankfunnelError(f"{self.path} is open read-only")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def check_new(self, ids: Sequence[int], ext: Sequence[Optional[str]]) -> None:
        """Raise if an id or external id is already current (or repeated in the arguments).

        Raises
        ------
        RankfunnelError
            Naming the first id (or doc_id) that is already stored or given twice.
        """
        seen: set[int] = set()
        for i in ids:
            if i in seen:
                raise RankfunnelError(f"id {i} is given twice")
            seen.add(i)
        seen_ext: set[str] = set()
        for e in ext:
            if e is not None:
                if e in seen_ext:
                    raise RankfunnelError(f"doc_id {e!r} is given twice")
                seen_ext.add(e)
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            hit = self._query(
                f"SELECT MIN(id) FROM docs INDEXED BY docs_current_id WHERE dead IS NULL AND id IN ({marks})",
                chunk,
            )
            if hit[0][0] is not None:
                raise RankfunnelError(
                    f"id {hit[0][0]} is already in the pipeline (use update() to change a document)"
                )
        names = [e for e in ext if e is not None]
        for chunk_e in _chunks(names):
            marks = ",".join("?" * len(chunk_e))
            hit = self._query(
                f"SELECT MIN(ext) FROM docs INDEXED BY docs_current_ext WHERE dead IS NULL AND ext IN ({marks})",
                chunk_e,
            )
            if hit[0][0] is not None:
                raise RankfunnelError(f"doc_id {hit[0][0]!r} is already in the pipeline")

    @staticmethod
    def _rows(
        ids: Sequence[int],
        texts: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        ext: Sequence[Optional[str]],
        gen: int,
    ) -> list[tuple[int, int, Optional[str], str, str]]:
        try:
            return [
                (int(i), gen, e, t, json.dumps(m, sort_keys=True))
                for i, t, m, e in zip(ids, texts, metadata, ext)
            ]
        except (TypeError, ValueError) as err:
            raise RankfunnelError(f"metadata must be JSON-serialisable: {err}") from None

    def insert(
        self,
        ids: Sequence[int],
        texts: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        ext: Sequence[Optional[str]],
        gen: int,
        *,
        replace: bool = False,
    ) -> None:
        """Insert versions of generation ``gen`` in one transaction (all or nothing).

        With ``replace=True`` the current versions of ``ids`` are superseded by the new ones
        (an update); otherwise the ids and external ids must be new.

        Raises
        ------
        RankfunnelError
            If an id or external id already exists, or metadata is not JSON-serialisable.
        """
        rows = self._rows(ids, texts, metadata, ext, gen)
        if not replace:
            self.check_new(ids, ext)
        statements: list[tuple[str, Sequence[Sequence[Any]]]] = []
        if replace:
            statements.append((_SUPERSEDE, [(gen, r[0]) for r in rows]))
        statements.append(("INSERT INTO docs(id, gen, ext, text, meta) VALUES (?, ?, ?, ?, ?)", rows))
        try:
            self._write(statements)
        except sqlite3.IntegrityError as err:
            raise RankfunnelError(f"a document id is already in the pipeline ({err})") from None

    def supersede(self, ids: Iterable[int], gen: int) -> None:
        """Mark the current versions of ``ids`` removed by commit ``gen``."""
        self._write([(_SUPERSEDE, [(gen, int(i)) for i in ids])])

    def recover(self, committed: int) -> int:
        """Undo every change of generations after ``committed``; returns the rows touched."""
        with self._lock:
            n = int(
                self._query("SELECT COUNT(*) FROM docs WHERE gen > ? OR dead > ?", [committed, committed])[0][
                    0
                ]
            )
        if n:
            self._write(
                [
                    ("DELETE FROM docs WHERE gen > ?", [(committed,)]),
                    ("UPDATE docs SET dead = NULL WHERE dead > ?", [(committed,)]),
                ]
            )
        return n

    def purge(self, upto: int) -> None:
        """Delete versions superseded at or before generation ``upto`` (after a compaction)."""
        self._write([("DELETE FROM docs WHERE dead IS NOT NULL AND dead <= ?", [(upto,)])])

    # -- reading ------------------------------------------------------------------------------

    def superseded(self) -> list[tuple[int, int, int]]:
        """``(id, gen, dead)`` of the versions superseded as of the snapshot (the tombstones)."""
        if self.snapshot is None:
            sql, args = "SELECT id, gen, dead FROM docs WHERE dead IS NOT NULL", []
        else:
            sql = "SELECT id, gen, dead FROM docs WHERE dead IS NOT NULL AND dead <= ? AND gen <= ?"
            args = [self.snapshot, self.snapshot]
        return [(int(i), int(g), int(d)) for i, g, d in self._query(sql, args)]

    def versions(self, ids: Sequence[int]) -> list[Optional[int]]:
        """Generation of the visible version of each id (``None`` for unknown ids)."""
        vis, args = self._visible()
        out: dict[int, int] = {}
        for chunk in _chunks([int(i) for i in ids]):
            marks = ",".join("?" * len(chunk))
            for i, g in self._query(
                f"SELECT id, gen FROM docs WHERE {vis} AND id IN ({marks})", args + chunk
            ):
                out[int(i)] = int(g)
        return [out.get(int(i)) for i in ids]

    def get(self, ids: Sequence[int]) -> list[Optional[Row]]:
        """``(text, metadata, external id)`` per id, ``None`` for unknown ids, in the order given."""
        vis, args = self._visible()
        out: dict[int, Row] = {}
        for chunk in _chunks([int(i) for i in ids]):
            marks = ",".join("?" * len(chunk))
            for i, t, m, e in self._query(
                f"SELECT id, text, meta, ext FROM docs WHERE {vis} AND id IN ({marks})", args + chunk
            ):
                out[int(i)] = (t, json.loads(m), e)
        return [out.get(int(i)) for i in ids]

    def ids_for_ext(self, ext: Sequence[str]) -> list[Optional[int]]:
        """Internal ids of external ids (``None`` where unknown)."""
        vis, args = self._visible()
        found: dict[str, int] = {}
        for chunk in _chunks(list(ext)):
            marks = ",".join("?" * len(chunk))
            found.update(
                self._query(f"SELECT ext, id FROM docs WHERE {vis} AND ext IN ({marks})", args + chunk)
            )
        return [None if found.get(e) is None else int(found[e]) for e in ext]

    def where(self, conditions: dict[str, Any]) -> list[int]:
        """Ids whose metadata matches every ``key: value`` (a list or tuple value means "any of").

        Raises
        ------
        RankfunnelError
            On a key that is not a plain identifier.
        """
        clauses: list[str] = []
        args: list[Any] = []
        for key, value in conditions.items():
            if not isinstance(key, str) or not key.replace("_", "").replace("-", "").isalnum():
                raise RankfunnelError(f"metadata filter keys must be plain names, got {key!r}")
            path = f'$."{key}"'
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            ors = []
            for v in values:
                if isinstance(v, bool):
                    ors.append("json_extract(meta, ?) = ?")
                    args += [path, 1 if v else 0]
                elif v is None:
                    ors.append("json_type(meta, ?) = 'null'")
                    args.append(path)
                elif isinstance(v, (int, float, str)):
                    ors.append("json_extract(meta, ?) = ?")
                    args += [path, v]
                else:
                    raise RankfunnelError(
                        f"metadata filter values must be str, number, bool or None, got {v!r}"
                    )
            clauses.append("(" + " OR ".join(ors or ["0"]) + ")")
        vis, vargs = self._visible()
        sql = f"SELECT id FROM docs WHERE {vis}" + ("".join(" AND " + c for c in clauses))
        return [int(r[0]) for r in self._query(sql, vargs + args)]

    def copy_to(self, path: Union[str, os.PathLike[str]]) -> None:
        """Write the visible documents to a new database at ``path`` (SQLite backup API).

        The copy holds only current versions, each with its generation; nothing superseded.
        """
        with self._lock:
            dst = sqlite3.connect(os.fspath(path), isolation_level=None)
            try:
                self._db.backup(dst)
                vis, args = self._visible()
                dst.execute("BEGIN")
                dst.execute(f"DELETE FROM docs WHERE NOT ({vis})", args)
                dst.execute("UPDATE docs SET dead = NULL")
                dst.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                dst.execute("COMMIT")
                dst.execute("PRAGMA journal_mode=WAL")
            finally:
                dst.close()


# Naming the partial unique index keeps each supersede an O(log n) lookup whatever the planner's
# statistics say.
_SUPERSEDE = "UPDATE docs INDEXED BY docs_current_id SET dead = ? WHERE id = ? AND dead IS NULL"


def _chunks(values: list[Any], size: int = 500) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
