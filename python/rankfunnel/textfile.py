"""Reading users' text files line by line: gzip by content, UTF-8 (BOM skipped) decoded strictly,
with errors that name the file, the line and the byte offset."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Union

from .errors import RankfunnelError

PathLike = Union[str, "os.PathLike[str]"]

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
_BOM = "\ufeff"


def head_bytes(path: PathLike, n: int = 4) -> bytes:
    """The first ``n`` bytes of a file (fewer when it is shorter)."""
    with open(path, "rb") as f:
        return f.read(n)


def is_gzip(path: PathLike) -> bool:
    """Whether a file is gzip-compressed (by its magic bytes, whatever its name)."""
    return head_bytes(path, 2) == GZIP_MAGIC


def inner_name(path: PathLike) -> str:
    """The file name with a ``.gz`` suffix removed (``corpus.jsonl.gz`` -> ``corpus.jsonl``)."""
    name = Path(path).name
    return name[:-3] if name.lower().endswith(".gz") else name


def open_binary(path: PathLike) -> IO[bytes]:
    """Open a file for reading bytes, decompressing it when it is gzip."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, "no such file", str(p))
    if p.is_dir():
        raise IsADirectoryError(21, "is a folder, expected a file", str(p))
    if is_gzip(p):
        return gzip.GzipFile(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


def lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of each line (1-based; the line ending is kept).

    The file may be gzip-compressed; it must be UTF-8 (a leading byte-order mark is skipped).

    Raises
    ------
    RankfunnelError
        A line that is not UTF-8 (the message names the file, line and byte offset) or a damaged
        gzip stream.
    """
    offset = 0
    with open_binary(path) as f:
        try:
            for n, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RankfunnelError(
                        f"{path}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte offset {offset + e.start}); "
                        "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                    ) from None
                if n == 1 and text.startswith(_BOM):
                    text = text[1:]
                offset += len(raw)
                yield n, text
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise RankfunnelError(
                f"{path}: damaged gzip data after {offset} decompressed bytes: {e}"
            ) from None


def first_line(path: PathLike) -> str:
    """The first non-blank line of a text file ("" when there is none)."""
    for _, text in lines(path):
        if text.strip():
            return text
    return ""
