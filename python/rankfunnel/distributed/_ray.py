"""Import Ray lazily, with the install hint when it is missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from ..errors import RankfunnelError

INSTALL_HINT = "pip install 'rankfunnel[ray]'"


def ray() -> Any:
    """The ``ray`` module (Ray Data included).

    Raises
    ------
    ImportError
        Naming ``pip install 'rankfunnel[ray]'`` when Ray (or Ray Data) is not installed.
    """
    try:
        import ray as _ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"rankfunnel.distributed needs Ray with Ray Data ({err}); install it with {INSTALL_HINT}"
        ) from None
    return _ray


def init(address: Any = None) -> Any:
    """Connect to Ray once: ``address`` (``"auto"``, ``"ray://host:10001"``, a head node's
    ``host:port``) or, by default, ``$RAY_ADDRESS`` or a new local cluster. Returns ``ray``."""
    r = ray()
    if not r.is_initialized():
        r.init(address=address, log_to_driver=False, configure_logging=False)
    return r


def cause(err: BaseException) -> Optional[BaseException]:
    """The rankfunnel or OS error that a Ray error wraps (a task's or actor's exception, through
    Ray Data's wrappers), or None."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (RankfunnelError, OSError)) and not isinstance(e, RayError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


@contextmanager
def surfaced() -> Iterator[None]:
    """Re-raise a rankfunnel or OS error that ran in a Ray task or actor as itself (its one-line
    message), instead of Ray's wrapper with the remote traceback."""
    try:
        yield
    except Exception as err:
        found = cause(err)
        if found is None or found is err:
            raise
        raise found from None
