"""Readers for the corpora (and query sets) people have: JSONL, CSV/TSV, BEIR folders, SMART
collections and Parquet, each optionally gzip-compressed (except Parquet, compressed inside).

Every reader checks what it reads: text must be UTF-8 (errors name the file, line and byte
offset), each record needs a text, ``metadata`` must be an object, and ids must be unique (the
error names the id and both lines).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import RankfunnelError
from .textfile import PARQUET_MAGIC, PathLike, first_line, head_bytes, inner_name, lines

__all__ = [
    "CORPUS_FORMATS",
    "Document",
    "corpus_format",
    "read_corpus",
    "read_jsonl",
    "read_parquet",
    "read_queries",
    "read_smart",
    "read_table",
]

CORPUS_FORMATS = ("jsonl", "table", "smart", "parquet")
"""Corpus formats :func:`corpus_format` tells apart (``table`` is CSV or TSV)."""

_HEADER_IDS = frozenset({"id", "_id", "qid", "query-id", "query_id", "docid", "doc_id", "pid", "corpus-id"})


@dataclass
class Document:
    """One document (or query): an external id, its text and metadata."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


_Record = tuple[int, Document]  # (line or row number, document)


def _join(*parts: Any) -> str:
    return "\n".join(str(p).strip() for p in parts if p and str(p).strip())


def _with_title(title: Any, text: str) -> str:
    """The text to index: ``text`` as written, after the title on its own line when there is one."""
    return _join(title, text) if title and str(title).strip() else text


def _id(path: PathLike, n: int, value: Any, ordinal: int) -> str:
    if value is None:
        return str(ordinal)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RankfunnelError(f"{path}:{n}: the id must be a string or an integer, got {value!r}")
    return str(value)


def _smart_records(path: PathLike) -> Iterator[_Record]:
    fields: dict[str, list[str]] = {}
    doc_id: Optional[str] = None
    start = 0
    current = None

    def flush() -> Iterator[_Record]:
        if doc_id is not None:
            got = {k: " ".join(v).strip() for k, v in fields.items()}
            meta = {
                name: got[k] for k, name in (("T", "title"), ("A", "author"), ("B", "source")) if got.get(k)
            }
            yield start, Document(doc_id, _join(got.get("T"), got.get("W")), meta)

    for n, text in lines(path):
        m = re.match(r"^\.([A-Z])\b\s*(.*)$", text.rstrip("\r\n"))
        if m and m.group(1) == "I":
            yield from flush()
            doc_id, fields, current, start = m.group(2).strip(), {}, None, n
            if not doc_id:
                raise RankfunnelError(f"{path}:{n}: '.I' without an id")
        elif m:
            current = m.group(1)
            fields.setdefault(current, [])
            if m.group(2).strip():
                fields[current].append(m.group(2).strip())
        elif current is not None:
            if text.strip():
                fields[current].append(text.strip())
        elif text.strip():
            raise RankfunnelError(f"{path}:{n}: SMART text before the first '.I' line: {text.strip()[:60]!r}")
    yield from flush()


def _jsonl_records(path: PathLike) -> Iterator[_Record]:
    ordinal = 0
    for n, line in lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RankfunnelError(f"{path}:{n}: invalid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise RankfunnelError(f"{path}:{n}: each line must be a JSON object, got {type(obj).__name__}")
        if "text" not in obj:
            raise RankfunnelError(f"{path}:{n}: the object has no 'text' field (keys: {sorted(obj)})")
        text = obj.pop("text")
        if not isinstance(text, str):
            raise RankfunnelError(f"{path}:{n}: 'text' must be a string, got {type(text).__name__}")
        doc_id = _id(path, n, obj.pop("_id", obj.pop("id", None)), ordinal)
        title = obj.get("title")
        if title is not None and not isinstance(title, str):
            raise RankfunnelError(f"{path}:{n}: 'title' must be a string, got {type(title).__name__}")
        meta = obj.pop("metadata", None)
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise RankfunnelError(f"{path}:{n}: 'metadata' must be a JSON object, got {type(meta).__name__}")
        meta.update(obj)
        ordinal += 1
        yield n, Document(doc_id, _with_title(title, text), meta)


def _table_records(path: PathLike) -> Iterator[_Record]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    name = inner_name(path).lower()
    if name.endswith((".tsv", ".tab")):
        delim = "\t"
    elif name.endswith(".csv"):
        delim = ","
    else:
        delim = "\t" if "\t" in first_line(path) else ","
    source = (text for _, text in lines(path))
    rows = csv.reader(source, delimiter=delim)
    ordinal = 0
    try:
        header: Optional[list[str]] = None
        for row in rows:
            n = rows.line_num
            if not row or not any(c.strip() for c in row):
                continue
            if header is None:
                names = [c.strip() for c in row]
                if "text" in names:
                    header = names
                    continue
                if len(row) == 2 and names[0].lower() not in _HEADER_IDS:
                    header = []  # no header: id, text
                else:
                    raise RankfunnelError(
                        f"{path}:{n}: the header needs a 'text' column (got {names}); a file without "
                        "a header must have two columns, id and text"
                    )
            if not header:
                if len(row) != 2:
                    raise RankfunnelError(f"{path}:{n}: expected 2 columns (id, text), got {len(row)}")
                yield n, Document(row[0], row[1], {})
                continue
            if len(row) != len(header):
                raise RankfunnelError(f"{path}:{n}: {len(row)} columns where the header has {len(header)}")
            rec = dict(zip(header, row))
            doc_id = rec.pop("_id", None) or rec.pop("id", None)
            text = rec.pop("text")
            yield (
                n,
                Document(
                    str(ordinal) if doc_id is None else doc_id, _with_title(rec.get("title"), text), rec
                ),
            )
            ordinal += 1
    except csv.Error as e:
        raise RankfunnelError(
            f"{path}:{rows.line_num}: malformed {'TSV' if delim == chr(9) else 'CSV'}: {e}"
        ) from None


def _plain(value: Any) -> Any:
    """A Parquet value as JSON-able Python (dates and other types become their text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from .models._errors import MissingDependencyError

        raise MissingDependencyError(
            "reading Parquet needs pyarrow: pip install 'rankfunnel[parquet]' (or pip install pyarrow)"
        ) from None
    return pq


def _parquet_records(path: PathLike) -> Iterator[_Record]:
    pq = _pyarrow_parquet()
    try:
        f = pq.ParquetFile(str(path))
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise RankfunnelError(f"{path}: not a readable Parquet file: {e}") from None
    names = list(f.schema_arrow.names)
    if "text" not in names:
        raise RankfunnelError(f"{path}: the Parquet file needs a 'text' column, got {names}")
    n = 0
    for batch in f.iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            n += 1
            text = rec.pop("text")
            if not isinstance(text, str):
                raise RankfunnelError(f"{path}: row {n}: 'text' must be a string, got {text!r}")
            doc_id = _id(path, n, rec.pop("_id", rec.pop("id", None)), n - 1)
            meta = rec.pop("metadata", None)
            if meta is not None and not isinstance(meta, dict):
                raise RankfunnelError(f"{path}: row {n}: 'metadata' must be a struct/map, got {meta!r}")
            meta = {**(meta or {}), **rec}
            yield n, Document(doc_id, _with_title(rec.get("title"), text), _plain(meta))


def _documents(path: PathLike, records: Iterable[_Record], what: str = "document") -> Iterator[Document]:
    """Documents of ``records``, refusing duplicate ids and an empty file."""
    seen: dict[str, int] = {}
    for n, doc in records:
        first = seen.setdefault(doc.id, n)
        if first != n:
            raise RankfunnelError(f"{path}:{n}: duplicate {what} id {doc.id!r} (first at line {first})")
        yield doc
    if not seen:
        plural = "queries" if what == "query" else f"{what}s"
        raise RankfunnelError(f"{path}: no {plural} (the file is empty)")


def read_smart(path: PathLike) -> Iterator[Document]:
    """SMART format (Cranfield, CISI, ...): ``.I id``, ``.T`` title, ``.A`` authors, ``.B`` source,
    ``.W`` text; the text indexed is title + text."""
    return _documents(path, _smart_records(path))


def read_jsonl(path: PathLike) -> Iterator[Document]:
    """JSON lines with ``id`` (or ``_id``), ``text`` and optional ``title``; a ``metadata`` object
    and every other key become metadata."""
    return _documents(path, _jsonl_records(path))


def read_table(path: PathLike) -> Iterator[Document]:
    """CSV or TSV with a header holding ``text`` (and optionally ``id``/``_id``, ``title``; other
    columns become metadata), or two columns ``id, text`` without a header (MS MARCO style)."""
    return _documents(path, _table_records(path))


def read_parquet(path: PathLike) -> Iterator[Document]:
    """Parquet with a ``text`` column (and optionally ``id``/``_id``, ``title``, ``metadata``;
    other columns become metadata). Needs pyarrow (``pip install 'rankfunnel[parquet]'``)."""
    return _documents(path, _parquet_records(path))


_READERS: dict[str, Callable[[PathLike], Iterator[_Record]]] = {
    "jsonl": _jsonl_records,
    "table": _table_records,
    "smart": _smart_records,
    "parquet": _parquet_records,
}


def _resolve(path: PathLike, folder_file: str) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in (folder_file, folder_file + ".gz"):
            if (p / name).is_file():
                return p / name
        raise RankfunnelError(f"{p} is a folder without {folder_file} (BEIR layout expected)")
    if not p.exists():
        raise FileNotFoundError(2, "no such file", str(p))
    return p


def corpus_format(path: PathLike) -> str:
    """The format of a corpus file, one of :data:`CORPUS_FORMATS`: by its name
    (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``, each maybe ``.gz``), else by its content."""
    p = Path(path)
    if head_bytes(p, 4) == PARQUET_MAGIC:
        return "parquet"
    name = inner_name(p).lower()
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv", ".tab")):
        return "table"
    head = first_line(p).lstrip()
    if head.startswith("{"):
        return "jsonl"
    if head.startswith(".I"):
        return "smart"
    if "\t" in head or "," in head:
        return "table"
    if not head:
        raise RankfunnelError(f"{p}: the file is empty")
    raise RankfunnelError(
        f"{p}: unknown corpus format (expected JSONL, CSV/TSV, Parquet, SMART or a BEIR folder; "
        f"the first line is {head.strip()[:60]!r})"
    )


def read_corpus(path: PathLike, *, what: str = "document") -> Iterator[Document]:
    """Read any supported corpus.

    Parameters
    ----------
    path : str or os.PathLike
        A BEIR folder (``corpus.jsonl``), a ``.jsonl``, ``.csv``/``.tsv`` or ``.parquet`` file, or a
        SMART collection; gzip-compressed files are read as their content (any name).
    what : str
        What a record is, for error messages ("document", "query"); a BEIR folder is read
        from ``queries.jsonl`` when ``what="query"``.

    Returns
    -------
    iterator of Document

    Raises
    ------
    RankfunnelError
        Unknown format, undecodable or malformed content, a duplicate id, or no records (raised
        while iterating; the message names the file and line).
    FileNotFoundError
        No such file.
    """
    p = _resolve(path, "queries.jsonl" if what == "query" else "corpus.jsonl")
    return _documents(p, _READERS[corpus_format(p)](p), what)


def read_queries(path: PathLike) -> list[Document]:
    """Queries in any corpus format (JSONL, BEIR ``queries.jsonl``, TSV/CSV, SMART ``.QRY``); a
    BEIR folder reads ``queries.jsonl``."""
    return list(read_corpus(path, what="query"))
