"""Document texts and metadata in SQLite (stdlib ``sqlite3``, WAL), one file per pipeline.

Rows carry a *generation*: the pipeline commits a generation number only after the vectors of
an ``add`` are saved, and :meth:`DocStore.rollback_after` drops rows of generations that never
committed, which is how an interrupted ``add`` disappears on reload.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

from .errors import RankfunnelError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY,
    ext TEXT UNIQUE,
    text TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    gen INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS docs_gen ON docs(gen);
"""


class DocStore:
    """Texts and JSON metadata keyed by int64 id, with an optional external (string) id.

    Parameters
    ----------
    path : str or os.PathLike or None
        SQLite file; ``None`` keeps everything in memory.
    """

    def __init__(self, path: Union[str, os.PathLike[str], None] = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path or ":memory:", check_same_thread=False, isolation_level=None)
        if self.path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def max_id(self) -> int:
        """Largest id stored, or -1."""
        with self._lock:
            v = self._db.execute("SELECT MAX(id) FROM docs").fetchone()[0]
            return -1 if v is None else int(v)

    def insert(
        self,
        ids: Sequence[int],
        texts: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        ext: Sequence[Optional[str]],
        gen: int,
    ) -> None:
        """Insert rows in one transaction (all or nothing).

        Raises
        ------
        RankfunnelError
            If an id or external id already exists, or metadata is not JSON-serialisable.
        """
        try:
            rows = [
                (int(i), e, t, json.dumps(m, sort_keys=True), gen)
                for i, t, m, e in zip(ids, texts, metadata, ext)
            ]
        except (TypeError, ValueError) as err:
            raise RankfunnelError(f"metadata must be JSON-serialisable: {err}") from None
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO docs(id, ext, text, meta, gen) VALUES (?, ?, ?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as err:
                self._db.execute("ROLLBACK")
                raise RankfunnelError(f"duplicate document id: {err}") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete(self, ids: Iterable[int]) -> None:
        """Delete rows by id."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM docs WHERE id = ?", [(int(i),) for i in ids])
            self._db.execute("COMMIT")

    def rollback_after(self, gen: int) -> list[int]:
        """Delete rows of generations above ``gen``; returns their ids."""
        with self._lock:
            ids = [int(r[0]) for r in self._db.execute("SELECT id FROM docs WHERE gen > ?", (gen,))]
            if ids:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("DELETE FROM docs WHERE gen > ?", (gen,))
                self._db.execute("COMMIT")
            return ids

    def get(self, ids: Sequence[int]) -> list[Optional[tuple[str, dict[str, Any], Optional[str]]]]:
        """``(text, metadata, external id)`` per id, ``None`` for unknown ids, in the order given."""
        out: dict[int, tuple[str, dict[str, Any], Optional[str]]] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start : start + 500]]
                marks = ",".join("?" * len(chunk))
                for i, t, m, e in self._db.execute(
                    f"SELECT id, text, meta, ext FROM docs WHERE id IN ({marks})", chunk
                ):
                    out[int(i)] = (t, json.loads(m), e)
        return [out.get(int(i)) for i in ids]

    def ids_for_ext(self, ext: Sequence[str]) -> list[Optional[int]]:
        """Internal ids of external ids (``None`` where unknown)."""
        with self._lock:
            found: dict[str, int] = {}
            for start in range(0, len(ext), 500):
                chunk = list(ext[start : start + 500])
                marks = ",".join("?" * len(chunk))
                found.update(
                    self._db.execute(f"SELECT ext, id FROM docs WHERE ext IN ({marks})", chunk).fetchall()
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
        sql = "SELECT id FROM docs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._lock:
            return [int(r[0]) for r in self._db.execute(sql, args)]

    def copy_to(self, path: Union[str, os.PathLike[str]]) -> None:
        """Write a consistent copy of the database to ``path`` (SQLite backup API)."""
        with self._lock:
            dst = sqlite3.connect(os.fspath(path))
            try:
                self._db.backup(dst)
            finally:
                dst.close()
