"""Readers for the corpora people have: JSONL, CSV/TSV, BEIR folders and SMART collections."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .errors import RankfunnelError

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Document:
    """One document (or query): an external id, its text and metadata."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _join(*parts: Any) -> str:
    return "\n".join(str(p).strip() for p in parts if p and str(p).strip())


def read_smart(path: PathLike) -> Iterator[Document]:
    """SMART format (Cranfield, CISI, ...): ``.I id``, ``.T`` title, ``.A`` authors, ``.B`` source,
    ``.W`` text; the text indexed is title + text."""
    fields: dict[str, list[str]] = {}
    doc_id = None
    current = None

    def flush() -> Iterator[Document]:
        if doc_id is not None:
            get = lambda k: " ".join(fields.get(k, [])).strip()  # noqa: E731
            meta = {k: v for k, v in (("title", get("T")), ("author", get("A")), ("source", get("B"))) if v}
            yield Document(doc_id, _join(get("T"), get("W")), meta)

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^\.([A-Z])\b\s*(.*)$", line.rstrip("\n"))
            if m and m.group(1) == "I":
                yield from flush()
                doc_id, fields, current = m.group(2).strip(), {}, None
            elif m:
                current = m.group(1)
                fields.setdefault(current, [])
                if m.group(2).strip():
                    fields[current].append(m.group(2).strip())
            elif current is not None:
                fields[current].append(line.strip())
    yield from flush()


def read_jsonl(path: PathLike) -> Iterator[Document]:
    """JSON lines with ``id`` (or ``_id``), ``text`` and optional ``title``; other keys become metadata."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RankfunnelError(f"{path}:{n}: invalid JSON: {e}") from None
            if not isinstance(obj, dict) or "text" not in obj:
                raise RankfunnelError(f"{path}:{n}: each line needs an object with a 'text' field")
            doc_id = obj.pop("_id", obj.pop("id", None))
            text = obj.pop("text")
            title = obj.get("title")
            meta = obj.pop("metadata", None) or {}
            meta.update({k: v for k, v in obj.items()})
            yield Document(str(n - 1) if doc_id is None else str(doc_id), _join(title, text), meta)


def read_table(path: PathLike) -> Iterator[Document]:
    """CSV or TSV with a header holding ``text`` (and optionally ``id``/``_id``, ``title``)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delim = "\t" if str(path).endswith((".tsv", ".tab")) else ","
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter=delim)
        if not rows.fieldnames or "text" not in rows.fieldnames:
            raise RankfunnelError(f"{path}: the header needs a 'text' column, got {rows.fieldnames}")
        for n, row in enumerate(rows):
            doc_id = row.pop("_id", None) or row.pop("id", None)
            text = row.pop("text")
            title = row.get("title")
            yield Document(str(n) if doc_id is None else str(doc_id), _join(title, text), dict(row))


def read_corpus(path: PathLike) -> Iterator[Document]:
    """Read any supported corpus: a BEIR folder (``corpus.jsonl``), ``.jsonl``, ``.csv``/``.tsv``,
    or a SMART collection (detected by a first line starting with ``.I``)."""
    p = Path(path)
    if p.is_dir():
        if (p / "corpus.jsonl").exists():
            return read_jsonl(p / "corpus.jsonl")
        raise RankfunnelError(f"{p} is a folder without corpus.jsonl (BEIR layout expected)")
    if not p.exists():
        raise FileNotFoundError(f"corpus not found: {p}")
    if p.suffix in (".jsonl", ".json"):
        return read_jsonl(p)
    if p.suffix in (".csv", ".tsv", ".tab"):
        return read_table(p)
    with open(p, encoding="utf-8", errors="replace") as f:
        head = f.readline()
    if head.startswith(".I"):
        return read_smart(p)
    raise RankfunnelError(f"{p}: unknown corpus format (expected .jsonl, .csv, .tsv, a BEIR folder or SMART)")


def read_queries(path: PathLike) -> list[Document]:
    """Queries in any corpus format; a BEIR folder reads ``queries.jsonl``."""
    p = Path(path)
    if p.is_dir():
        p = p / "queries.jsonl"
    return list(read_corpus(p))
