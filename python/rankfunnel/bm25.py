"""Lexical retrieval: :class:`BM25Index`, BM25 over analyzed texts in the Rust core."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy.typing as npt

from . import _core
from ._arrays import as_ids, positive_int, threads_arg
from ._index import IdIndexBase, Ids, Scores, unbatch
from .errors import RankfunnelError
from .registry import register

StopwordsArg = Union[str, Sequence[str], bool, None]


def _texts(texts: object, name: str) -> tuple[list[str], bool]:
    """Return ``texts`` as a list of str and whether a single str was passed."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
        raise RankfunnelError(f"{name} must be a str or a sequence of str, got {type(texts).__name__}")
    out = list(texts)
    bad = next((t for t in out if not isinstance(t, str)), None)
    if bad is not None:
        raise RankfunnelError(f"{name} must be strings, got a {type(bad).__name__}")
    return out, False


def _stopwords(stopwords: StopwordsArg) -> tuple[str, Optional[list[str]]]:
    if stopwords is None or stopwords is False:
        return "none", None
    if stopwords is True:
        return "english", None
    if isinstance(stopwords, str):
        if stopwords.lower() in ("english", "en"):
            return "english", None
        if stopwords.lower() == "none":
            return "none", None
        raise RankfunnelError(f"unknown stopwords {stopwords!r}: expected 'english', None or a list of words")
    words, _ = _texts(stopwords, "stopwords")
    return "custom", words


class BM25Index(IdIndexBase):
    """Lexical index: BM25 top-k over texts, with ids, removal, filters and persistence.

    Analysis (the same for documents and queries): the text is lowercased, split into
    maximal runs of at least two word characters (letters, digits, ``_``; the
    ``(?u)\\b\\w\\w+\\b`` pattern of bm25s and scikit-learn), stopwords are dropped, and the
    remaining words are stemmed with the Snowball stemmer of ``language``. :meth:`analyze`
    shows the terms of a text.

    Scoring (bm25s's default "lucene" variant), with ``N`` documents, ``df(t)`` of them holding
    term ``t``, ``tf`` its count in a document of ``dl`` terms and ``avgdl`` the mean length::

        idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
        score(q, d) = sum over the query's terms t (repeats counted) of
                      idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    ``N``, ``df`` and ``avgdl`` always describe the current contents (adds and removals
    included). Adds append postings (cost proportional to the batch, not the index); removals
    are tombstones, compacted once a quarter of the slots are dead.

    Parameters
    ----------
    k1 : float, default 1.5
        Term-frequency saturation (>= 0).
    b : float, default 0.75
        Length normalisation, between 0 and 1.
    language : str, default "english"
        Snowball stemmer language ("english", "french", "german", "spanish", ... 18 in all).
    stemmer : bool, default True
        Stem words; ``False`` keeps the lowercased words as they are.
    stopwords : "english", None or list of str, default "english"
        Words dropped before stemming: bm25s's English list (33 words; also ``True``), none
        (also ``False``), or your own list (compared with the lowercased words).

    Examples
    --------
    >>> import rankfunnel as rf
    >>> idx = rf.BM25Index()
    >>> idx.add(["the cat sat on the mat", "dogs chase cats", "a stock market report"])
    array([0, 1, 2])
    >>> scores, ids = idx.search("cat", k=2)
    >>> ids.tolist()
    [0, 1]
    >>> idx.analyze("The Running Dogs")
    ['run', 'dog']
    """

    _CORE = _core.BM25Index
    _REPR = ("k1", "b", "language", "len")

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        *,
        language: str = "english",
        stemmer: bool = True,
        stopwords: StopwordsArg = "english",
    ) -> None:
        for name, value in (("k1", k1), ("b", b)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RankfunnelError(f"{name} must be a number, got {type(value).__name__}")
        if not isinstance(language, str):
            raise RankfunnelError(f"language must be a string, got {type(language).__name__}")
        mode, words = _stopwords(stopwords)
        lang = language if stemmer else None
        self._index = _core.BM25Index(float(k1), float(b), lang, mode, words)

    @property
    def k1(self) -> float:
        """Term-frequency saturation parameter."""
        return float(self._index.k1)

    @property
    def b(self) -> float:
        """Length-normalisation parameter."""
        return float(self._index.b)

    @property
    def language(self) -> Optional[str]:
        """Stemmer language, or ``None`` when stemming is off."""
        lang: Optional[str] = self._index.language
        return lang

    @property
    def stopwords(self) -> list[str]:
        """The stopwords removed (empty when none)."""
        return list(self._index.stopwords[1])

    @property
    def vocab_size(self) -> int:
        """Distinct terms held (terms of removed documents count until the next compaction)."""
        return int(self._index.vocab_len)

    @property
    def avgdl(self) -> float:
        """Mean document length in terms (0.0 when empty)."""
        return float(self._index.avgdl)

    @property
    def ids(self) -> Ids:
        """Stored ids in insertion order."""
        out: Ids = self._index.ids()
        return out

    def analyze(self, text: str) -> list[str]:
        """The terms ``text`` is indexed and searched as (lowercased, split, stopwords dropped,
        stemmed)."""
        if not isinstance(text, str):
            raise RankfunnelError(f"text must be a str, got {type(text).__name__}")
        return list(self._index.analyze(text))

    def add(
        self,
        texts: Union[str, Sequence[str]],
        ids: Optional[npt.ArrayLike] = None,
        *,
        threads: Optional[int] = None,
    ) -> Ids:
        """Add documents.

        Parameters
        ----------
        texts : str or sequence of str
            Document texts. A text with no terms (empty, or only stopwords) is stored and counts
            in ``N`` and ``avgdl`` but never matches.
        ids : array_like of int, optional
            Non-negative, unique labels not already stored. Default: consecutive ids after the
            largest id ever given.
        threads : int, optional
            Threads analyzing the texts.

        Returns
        -------
        ndarray of int64
            The ids of the added documents.

        Raises
        ------
        RankfunnelError
            On non-string texts or bad/duplicate ids; the index is then unchanged.

        Notes
        -----
        Searches from other threads keep running during the call: the texts are analyzed first, then
        the batch is stored in chunks, searches running between them. A concurrent search may see
        part of the batch, each document either absent or whole, never partly written; the call
        returns once all of them are in. A batch that fails validation fails before any of it is
        stored. Adds, removes and saves of one index run one at a time.
        """
        docs, _ = _texts(texts, "texts")
        out: Ids = self._index.add(docs, None if ids is None else as_ids(ids), threads_arg(threads))
        return out

    def search(
        self,
        queries: Union[str, Sequence[str]],
        k: int = 10,
        *,
        filter: Optional[npt.ArrayLike] = None,
        threads: Optional[int] = None,
    ) -> tuple[Scores, Ids]:
        """Exact BM25 top-k.

        Parameters
        ----------
        queries : str or sequence of str
            One query (1-D results) or several (2-D results, one row each).
        k : int
            Results per query, padded with id -1 and score -inf when fewer documents match. A
            query with no indexed term (empty, or only stopwords) gets an all-padding row.
        filter : array_like of int, optional
            Allow-list: only these ids can be returned (unknown ids are ignored).
        threads : int, optional
            Thread cap for this call (queries run in parallel).

        Returns
        -------
        scores : ndarray of float32, shape (nq, k) or (k,)
        ids : ndarray of int64, shape (nq, k) or (k,)
            Best first; ties go to the lower id.
        """
        k = positive_int(k, "k")
        qs, single = _texts(queries, "queries")
        allow = None if filter is None else as_ids(filter, "filter")
        return unbatch(single, *self._index.search(qs, k, threads_arg(threads), allow))


register("bm25", BM25Index)
