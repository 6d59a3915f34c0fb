"""The index kinds: one table from a kind name (``"flat"``, ``"hnsw"``, ...) to its class.

Each kind registers itself, in its own module, with :func:`register`; :func:`rankfunnel.load`
finds the class of a saved file here and :func:`index_factory` builds an index from a short
spec string, faiss-style::

    spec    := kind [number] ("," option)*
    option  := word | key "=" value

``number`` is the kind's main size (``"hnsw32"``: ``m=32``; ``"ivf1024"``: ``nlist=1024``),
a ``word`` is a shorthand the kind defines (``"ivf1024,int8"``: ``storage="int8"``) and
``key=value`` passes any keyword of the constructor (``"hnsw,ef_construction=100"``; values
are read as int, float, ``true``/``false``/``none``, else kept as text). Spaces around the
parts are ignored; kind, words and keys are case-insensitive.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import RankfunnelError

__all__ = ["IndexKind", "index_class", "index_factory", "kinds", "parse_spec", "register", "wrap_core"]

_FIXED = ("dim", "metric")


@dataclass(frozen=True)
class IndexKind:
    """One registered index kind (see :func:`register`)."""

    name: str
    cls: type
    number: Optional[str] = None
    words: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sizing: Optional[Callable[[int], dict[str, Any]]] = None

    def options(self) -> tuple[str, ...]:
        """The constructor keywords a spec may set (``dim`` and ``metric`` come separately,
        deprecated keywords named in the class's ``_DEPRECATED_ARGS`` are left out)."""
        hidden = set(getattr(self.cls, "_DEPRECATED_ARGS", ()))
        return tuple(p for p in self._parameters() if p not in _FIXED and p not in hidden)

    def accepts(self, keyword: str) -> bool:
        """Whether the constructor takes ``keyword``."""
        return keyword in self._parameters()

    def _parameters(self) -> Mapping[str, inspect.Parameter]:
        return inspect.signature(self.cls).parameters


_KINDS: dict[str, IndexKind] = {}
_BY_CORE: dict[type, IndexKind] = {}


def register(
    kind: str,
    cls: type,
    *,
    number: Optional[str] = None,
    words: Optional[Mapping[str, Mapping[str, Any]]] = None,
    sizing: Optional[Callable[[int], dict[str, Any]]] = None,
) -> None:
    """Make an index class known to :func:`rankfunnel.load` and :func:`index_factory`.

    Parameters
    ----------
    kind : str
        The kind's name in specs (lower case letters, digits and ``_``, starting with a letter; a name ending in a digit takes no number).
    cls : type
        The wrapper class (an :class:`~rankfunnel._index.IndexBase` with ``_CORE`` naming its
        compiled class, so that :func:`wrap_core` can find it for a loaded file).
    number : str, optional
        The constructor keyword a number after the kind sets (``"m"`` for ``"hnsw32"``).
    words : mapping, optional
        Shorthand options: a word -> the keywords it sets (``{"int8": {"storage": "int8"}}``).
    sizing : callable, optional
        ``sizing(n)`` -> defaults for about ``n`` vectors, used by ``index_factory(size_hint=n)``
        for keywords the spec leaves unset (IVF's ``nlist``).

    Raises
    ------
    RankfunnelError
        If ``kind`` is malformed or already registered to another class.
    """
    name = kind.lower()
    if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise RankfunnelError(f"index kind {kind!r} must be letters, digits and '_', starting with a letter")
    if name[-1].isdigit() and number is not None:
        raise RankfunnelError(f"index kind {kind!r} ends in a digit, so it cannot take a number")
    old = _KINDS.get(name)
    if old is not None and old.cls is not cls:
        raise RankfunnelError(f"index kind {name!r} is already registered to {old.cls.__name__}")
    entry = IndexKind(name, cls, number, {w.lower(): dict(v) for w, v in (words or {}).items()}, sizing)
    _KINDS[name] = entry
    core = getattr(cls, "_CORE", None)
    if core is not None:
        _BY_CORE.setdefault(core, entry)  # a subclass sharing a compiled class does not take it over


def kinds() -> tuple[str, ...]:
    """The registered kind names, sorted."""
    return tuple(sorted(_KINDS))


def _kind(name: str) -> IndexKind:
    entry = _KINDS.get(name.lower())
    if entry is None:
        raise RankfunnelError(f"unknown index kind {name!r}: expected one of {', '.join(kinds())}")
    return entry


def index_class(kind: str) -> type:
    """The class registered for ``kind``; :class:`RankfunnelError` listing the kinds if none."""
    return _kind(kind).cls


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split an index spec into its kind and constructor keywords (see the module docstring).

    >>> parse_spec("ivf1024,int8")
    ('ivf', {'nlist': 1024, 'storage': 'int8'})

    Raises
    ------
    RankfunnelError
        On an empty spec, an unknown kind, word or keyword (the message lists the valid ones),
        a number for a kind without one, or a keyword set twice.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise RankfunnelError(f"index spec must be a non-empty string, got {spec!r}")
    head, *parts = (p.strip() for p in spec.split(","))
    # A kind whose own name ends in digits ("bm25") is matched whole; others may carry a number.
    stem = head if head in _KINDS else head.rstrip("0123456789")
    digits = head[len(stem) :]
    entry = _kind(stem)
    opts: dict[str, Any] = {}

    def put(key: str, value: Any, where: str) -> None:
        if key in opts:
            raise RankfunnelError(f"index spec {spec!r} sets {key} twice ({where})")
        opts[key] = value

    if digits:
        if entry.number is None:
            raise RankfunnelError(f"index kind {entry.name!r} takes no number (got {head!r} in {spec!r})")
        put(entry.number, int(digits), head)
    valid = entry.options()
    for part in parts:
        key, eq, text = part.partition("=")
        key = key.strip().lower()
        if eq:
            if key not in valid:
                raise RankfunnelError(
                    f"unknown option {key!r} for index kind {entry.name!r} in {spec!r}: "
                    f"expected one of {', '.join(valid)}"
                )
            put(key, _value(text.strip()), part)
        elif key in entry.words:
            for k, v in entry.words[key].items():
                put(k, v, part)
        else:
            words = ", ".join(entry.words) or "none"
            raise RankfunnelError(
                f"unknown option {part!r} for index kind {entry.name!r} in {spec!r}: words are {words}; "
                f"key=value options are {', '.join(valid)}"
            )
    return entry.name, opts


def index_factory(
    spec: str, dim: Optional[int] = None, metric: Optional[str] = None, *, size_hint: Optional[int] = None
) -> Any:
    """Build an empty index from a spec string such as ``"hnsw32"`` or ``"ivf1024,int8"``.

    Parameters
    ----------
    spec : str
        ``kind[number][,option]...`` (see :mod:`rankfunnel.registry`); kinds: ``"flat"``,
        ``"hnsw"`` (number: ``m``; words ``bf16``, ``int8``, ``f32``: the walk codes),
        ``"ivf"`` (number: ``nlist``; words ``f32``, ``int8``),
        ``"multivector"`` (number: ``nbits``), and any kind registered later.
    dim : int, optional
        Vector dimension, passed to kinds whose constructor takes one (all built-in kinds).
    metric : {"cosine", "dot", "l2"}, optional
        Passed to kinds whose constructor takes one; ``None`` keeps the kind's default
        (``"cosine"`` for flat, hnsw and ivf).
    size_hint : int, optional
        About how many vectors the index will hold: kinds with a sizing rule derive unset
        options from it (``"ivf"`` without a number: ``nlist = min(n / 39, 4 sqrt(n))``).

    Returns
    -------
    IndexBase
        A new, empty index of the spec's kind.

    Raises
    ------
    RankfunnelError
        On a bad spec (see :func:`parse_spec`), a ``metric`` for a kind without one, or a
        value the constructor rejects.

    Examples
    --------
    >>> import rankfunnel as rf
    >>> rf.index_factory("hnsw32,ef_construction=100", 64, "l2")
    HNSWIndex(dim=64, metric='l2', m=32, len=0)
    """
    name, opts = parse_spec(spec)
    entry = _KINDS[name]
    if size_hint is not None and entry.sizing is not None:
        for key, value in entry.sizing(int(size_hint)).items():
            opts.setdefault(key, value)
    if dim is not None and entry.accepts("dim"):
        opts["dim"] = dim
    if metric is not None:
        if not entry.accepts("metric"):
            raise RankfunnelError(f"index kind {name!r} takes no metric (got {metric!r})")
        opts["metric"] = metric
    try:
        return entry.cls(**opts)
    except TypeError as exc:
        raise RankfunnelError(f"cannot build index {spec!r}: {exc}") from None


def wrap_core(core: Any) -> Any:
    """The wrapper of a compiled index returned by ``_core.load``, by its registered class."""
    entry = _BY_CORE.get(type(core))
    if entry is None:
        raise RankfunnelError(f"no index kind is registered for {type(core).__name__}")
    return entry.cls._wrap(core)  # type: ignore[attr-defined]
