"""Progress bars on stderr (tqdm): shown when asked, or by default when stderr is a terminal.

Every long-running part of rankfunnel reports progress through this module, so one switch
governs them all: ``show=True`` forces a bar, ``show=False`` hides it, ``show=None`` shows it only
when stderr is a terminal (never in logs or pipes). Bars show a total and an ETA when the size of
the work is known.

Examples
--------
>>> from rankfunnel.progress import progress_bar, track
>>> for batch in track(range(3), total=3, desc="encode", unit="batch", show=False):
...     pass
>>> with progress_bar(total=10, desc="index", unit="doc", show=False) as bar:
...     bar.update(10)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import Any, Optional, TypeVar

from tqdm import tqdm

__all__ = ["progress_bar", "track", "wanted"]

T = TypeVar("T")


def wanted(show: Optional[bool] = None) -> bool:
    """Whether to draw a bar: ``show`` when given, else whether stderr is a terminal."""
    if show is not None:
        return bool(show)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(
    total: Optional[float] = None,
    desc: Optional[str] = None,
    unit: str = "it",
    show: Optional[bool] = None,
    leave: Optional[bool] = None,
    **kwargs: Any,
) -> tqdm[Any]:
    """A tqdm bar on stderr, to update by hand (``bar.update(n)``; use it as a context manager).

    Parameters
    ----------
    total : float, optional
        Size of the work; with it the bar shows a percentage and an ETA.
    desc : str, optional
        Label in front of the bar.
    unit : str
        What is counted ("doc", "query", ...).
    show : bool, optional
        True: always draw; False: never; None: only when stderr is a terminal.
    leave : bool, optional
        Keep the finished bar on screen; None keeps only a top-level bar (nested bars vanish).
    **kwargs
        Passed to :class:`tqdm.tqdm`.

    Returns
    -------
    tqdm.tqdm
        A disabled bar (whose methods do nothing) when no bar is wanted.
    """
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not wanted(show),
        leave=leave,
        file=sys.stderr,
        dynamic_ncols=True,
        **kwargs,
    )


def track(
    iterable: Iterable[T],
    total: Optional[float] = None,
    desc: Optional[str] = None,
    unit: str = "it",
    show: Optional[bool] = None,
    leave: Optional[bool] = None,
    weight: Optional[Any] = None,
) -> Iterator[T]:
    """Yield the items of ``iterable`` while a bar counts them.

    Parameters
    ----------
    iterable : iterable
    total : float, optional
        Total count (default: ``len(iterable)`` when it has one).
    desc, unit, show, leave
        As for :func:`progress_bar`.
    weight : callable, optional
        Count of one item (e.g. ``len`` for batches, so the bar counts texts); default 1.

    Yields
    ------
    The items of ``iterable``, unchanged.
    """
    if total is None and isinstance(iterable, Sized) and weight is None:
        total = len(iterable)
    with progress_bar(total=total, desc=desc, unit=unit, show=show, leave=leave) as bar:
        for item in iterable:
            yield item
            bar.update(1 if weight is None else weight(item))
