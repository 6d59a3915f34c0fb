"""Relevance judgements (qrels) in the formats collections ship, recognised by their content.

Formats (fields separated by tabs or runs of spaces; CRLF, a byte-order mark, blank lines and
gzip are accepted):

- ``trec``: ``qid iteration docid grade`` (the iteration column is ignored); gain = grade.
- ``beir``: ``query-id corpus-id score``, with or without that header line; gain = score.
- ``smart``: ``qid docid`` followed by up to two meaningless columns (``1 28 0 0.000000``, as the
  SMART ``.REL`` files of CISI, MED, CACM ...): every listed pair is relevant, gain 1.
- ``cranfield``: Cranfield's ``cranqrel``, ``qid docid grade`` with grade 1 (most relevant) .. 4
  and -1 (not relevant): gain ``5 - grade``, -1 -> 0. Its query numbers are positions in
  ``cran.qry`` (see :func:`rankfunnel.eval.match_query_ids`).

Grades may be integers or floats. The file name plays no part in detection.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import RankfunnelError
from .textfile import PathLike, lines

__all__ = ["FORMATS", "Qrels", "QrelsFile", "detect_format", "load_qrels", "read_qrels"]

FORMATS = ("trec", "beir", "smart", "cranfield")
"""Qrels formats :func:`read_qrels` reads (besides ``"auto"``)."""

Qrels = dict[str, dict[str, float]]
"""``{query_id: {doc_id: gain}}``."""

_CRANFIELD_GRADES = frozenset({-1, 1, 2, 3, 4})
_COLUMNS = {"trec": (4, 4), "beir": (3, 3), "smart": (2, 4), "cranfield": (3, 3)}
_Row = tuple[int, list[str]]


@dataclass
class QrelsFile:
    """Judgements read from a file, with the format used.

    Attributes
    ----------
    qrels : dict
        ``{query_id: {doc_id: gain}}``.
    format : str
        One of :data:`FORMATS`.
    note : str or None
        Set when the content fitted more than one format: which one was chosen, and how to
        choose another.
    path : Path
        The file read.
    """

    qrels: Qrels
    format: str
    note: Optional[str]
    path: Path


def _number(text: str) -> Optional[float]:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _is_header(fields: Sequence[str]) -> bool:
    return len(fields) == 3 and _number(fields[2]) is None


def detect_format(rows: Sequence[Sequence[str]]) -> tuple[str, Optional[str]]:
    """Tell the qrels format from split lines (a BEIR header may come first).

    Parameters
    ----------
    rows : sequence of sequence of str
        The fields of each non-blank line.

    Returns
    -------
    format, note : str, str or None
        The format, and a note when the content also fits another format.

    Raises
    ------
    RankfunnelError
        No rows, or a column count no format has.
    """
    if not rows:
        raise RankfunnelError("no judgements")
    if _is_header(rows[0]):
        return "beir", None
    width = len(rows[0])
    if width == 2:
        return "smart", None
    if width == 4:
        second = {r[1] for r in rows if len(r) == 4}
        third = {r[2] for r in rows if len(r) == 4}
        fourth = [r[3] for r in rows if len(r) == 4]
        if len(second) == 1 and len(third) > 1:
            return "trec", None
        if len(second) > 1 and len(third) == 1 and len(set(fourth)) == 1:
            return "smart", None
        guess = "smart" if len(second) > 1 or all("." in v for v in fourth) else "trec"
        other = "trec" if guess == "smart" else "smart"
        return guess, (
            f"4 columns that fit both TREC (qid iteration docid grade) and SMART (qid docid, every pair "
            f"relevant); read as {guess.upper()}: pass --qrels-format {other} (qrels format={other!r}) otherwise"
        )
    if width == 3:
        grades = [_number(r[2]) for r in rows if len(r) == 3]
        if any(g is None for g in grades):
            return "beir", None
        values = {float(g) for g in grades if g is not None}
        if any(not v.is_integer() for v in values):
            return "beir", None
        ints = {int(v) for v in values}
        if -1 in ints and ints <= _CRANFIELD_GRADES:
            return "cranfield", (
                f"grades {sorted(ints)} read as Cranfield grades (1 = most relevant, -1 = not relevant; "
                "gain 5 - grade); pass --qrels-format beir (qrels format='beir') if higher means more relevant"
            )
        if 0 in ints or not ints <= _CRANFIELD_GRADES or len(ints) == 1:
            return "beir", None
        return "beir", (
            f"grades {sorted(ints)} without 0 or -1 fit both BEIR scores (higher = more relevant) and "
            "Cranfield grades (1 = most relevant); read as BEIR: pass --qrels-format cranfield "
            "(qrels format='cranfield') if 1 means most relevant"
        )
    raise RankfunnelError(
        f"cannot tell the qrels format from {width} columns (expected 3: BEIR 'query-id corpus-id score' "
        "or Cranfield 'qid docid grade'; 4: TREC 'qid 0 docid grade' or SMART 'qid docid 0 0.0')"
    )


def _gain(fmt: str, fields: list[str]) -> Optional[float]:
    """The gain a row gives, or None when its grade is not valid for the format."""
    if fmt == "smart":
        return 1.0
    grade = _number(fields[-1])
    if grade is None:
        return None
    if fmt == "cranfield":
        if not grade.is_integer() or int(grade) not in _CRANFIELD_GRADES:
            return None
        return 0.0 if grade < 0 else 5.0 - grade
    return grade


def _parse(path: Path, rows: list[_Row], fmt: str) -> Qrels:
    lo, hi = _COLUMNS[fmt]
    doc_field = 2 if fmt == "trec" else 1
    qrels: Qrels = {}
    for n, fields in rows:
        if not lo <= len(fields) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise RankfunnelError(
                f"{path}:{n}: {fmt} qrels need {want} columns, got {len(fields)}: {' '.join(fields)!r}"
            )
        gain = _gain(fmt, fields)
        if gain is None:
            what = "a grade in -1, 1, 2, 3, 4" if fmt == "cranfield" else "a numeric grade"
            raise RankfunnelError(f"{path}:{n}: {fmt} qrels need {what}, got {fields[-1]!r}")
        q, d = fields[0], fields[doc_field]
        judged = qrels.setdefault(q, {})
        if d in judged and judged[d] != gain:
            raise RankfunnelError(
                f"{path}:{n}: query {q!r} judges document {d!r} twice, with gains {judged[d]:g} and {gain:g}"
            )
        judged[d] = gain
    return qrels


def load_qrels(path: PathLike, fmt: str = "auto") -> QrelsFile:
    """Read relevance judgements and report the format used.

    Parameters
    ----------
    path : str or os.PathLike
        A file (plain or gzip), or a BEIR folder (``qrels/test.tsv`` is read).
    fmt : {"auto", "trec", "beir", "smart", "cranfield"}
        ``"auto"`` tells the format from the content (see :func:`detect_format`).

    Returns
    -------
    QrelsFile

    Raises
    ------
    RankfunnelError
        An unknown format, an empty file, a line that does not fit the format (the message names
        the file and line), or a pair judged twice with different grades.
    FileNotFoundError
        No such file.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise RankfunnelError(f"unknown qrels format {fmt!r}: expected 'auto' or one of {', '.join(FORMATS)}")
    p = Path(path)
    if p.is_dir():
        p = p / "qrels" / "test.tsv"
    rows: list[_Row] = [(n, text.split()) for n, text in lines(p) if text.strip()]
    if not rows:
        raise RankfunnelError(f"{p}: no judgements (the file is empty)")
    note = None
    if fmt == "auto":
        try:
            fmt, note = detect_format([r for _, r in rows])
        except RankfunnelError as e:
            raise RankfunnelError(f"{p}: {e}") from None
    if fmt == "beir" and _is_header(rows[0][1]):
        rows = rows[1:]
        if not rows:
            raise RankfunnelError(f"{p}: no judgements after the header line")
    return QrelsFile(_parse(p, rows, fmt), fmt, note, p)


def read_qrels(path: PathLike, fmt: str = "auto") -> Qrels:
    """Read relevance judgements as ``{query_id: {doc_id: gain}}``.

    Parameters
    ----------
    path : str or os.PathLike
        A file (plain or gzip), or a BEIR folder (``qrels/test.tsv`` is read).
    fmt : {"auto", "trec", "beir", "smart", "cranfield"}
        See the module docstring; ``"auto"`` tells the format from the content and warns
        (``UserWarning``) when the content fits more than one.

    Returns
    -------
    dict
    """
    got = load_qrels(path, fmt)
    if got.note:
        warnings.warn(f"{got.path}: {got.note}", UserWarning, stacklevel=2)
    return got.qrels
