"""Putting a finished folder in place crash-safely (used by ``rankfunnel export``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["publish_dir"]


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(src: Union[str, os.PathLike[str]], dst: Union[str, os.PathLike[str]]) -> Path:
    """Copy the folder ``src`` to ``dst``, replacing ``dst``, so that a crash at any moment leaves
    either the old ``dst`` or the complete new one.

    The copy is made in a hidden sibling of ``dst`` (same file system), every file and folder is
    fsynced, then an existing ``dst`` is renamed aside, the copy renamed into place, and the old
    one removed. A crash between the two renames leaves the old folder as ``.<name>.old-<pid>``
    beside ``dst``; a crash before them leaves ``dst`` untouched (and a ``.<name>.*.tmp`` folder).

    Parameters
    ----------
    src : str or os.PathLike
        The finished folder.
    dst : str or os.PathLike
        Where it goes.

    Returns
    -------
    Path
        ``dst``.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    old = None
    try:
        shutil.copytree(src, stage, dirs_exist_ok=True)
        for root, dirs, files in os.walk(stage):
            for name in files + dirs:
                _fsync(Path(root) / name)
        _fsync(stage)
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            os.rename(dst, old)
        os.rename(stage, dst)
        _fsync(dst.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None and not dst.exists():
            os.rename(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst
