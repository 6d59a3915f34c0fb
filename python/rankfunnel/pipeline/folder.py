"""The pipeline folder on disk: file names, the writer lock, segment files, garbage, crash points.

Layout (``G`` = the generation of the commit that wrote a file)::

    pipeline.json        the manifest: the single commit point (see manifest.py)
    docs.sqlite          texts + metadata, one row per document version (see docstore.py)
    writer.lock          flock()ed by the one writer; holds its pid
    main-G.rfi           the main first-stage index (written by the compaction of commit G)
    late-G.rfi           the main ColBERT index (same compaction)
    bm25-G.rfi           the BM25 postings of a lexical pipeline (same compaction)
    seg-G.npz            a segment: what commit G added (or a merge of segments, written at G):
                         ids, gens and each stage's per-document data (vectors, tokens, texts)

Files that the committed manifest does not name are garbage of an interrupted commit; only the
writer deletes them (:func:`collect_garbage`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import signal
import time
from pathlib import Path
from typing import Optional

import numpy as np
import numpy.typing as npt

from ..errors import CorruptFileError, RankfunnelError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]
from .manifest import MANIFEST, sha256_file, write_bytes_atomic

DOCS = "docs.sqlite"
LOCK = "writer.lock"
_DATA_FILE = re.compile(r"^((main|late|bm25)-\d+\.rfi|seg-\d+\.npz|\..*\.tmp-\d+(-\d+)?)$")

CRASH_ENV = "RANKFUNNEL_CRASH_AT"
"""Test hook: ``RANKFUNNEL_CRASH_AT=<point>`` kills the process (SIGKILL) at that crash point,
``RANKFUNNEL_CRASH_AT=<point>#<n>`` at its n-th passage (1-based)."""

_passages: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``$RANKFUNNEL_CRASH_AT`` names this point (tests only)."""
    want = os.environ.get(CRASH_ENV)
    if not want:
        return
    point, _, nth = want.partition("#")
    if point != name:
        return
    _passages[name] = _passages.get(name, 0) + 1
    if _passages[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class WriterLock:
    """The one-writer lock of a folder: ``flock(LOCK_EX)`` on ``writer.lock``, holding the pid.

    Readers take no lock. A second writer waits up to ``timeout`` seconds, then fails with a
    :class:`RankfunnelError` naming the process that holds the lock. The OS drops the lock when
    the holder exits, however it exits, so a crash never leaves a stale lock.
    """

    def __init__(self, root: Path, timeout: float = 0.0) -> None:
        self.fd: Optional[int] = None
        if fcntl is None:  # pragma: no cover
            raise RankfunnelError("writing a pipeline folder needs POSIX file locks (fcntl)")
        path = root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, float(timeout))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                    os.close(fd)
                    raise RankfunnelError(
                        f"{root} is open for writing by process {holder} (it holds {path}); close that "
                        f"pipeline first, or pass lock_timeout= to wait for it"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self.fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()


def segment_name(gen: int) -> str:
    """File name of the segment written by commit ``gen``."""
    return f"seg-{gen}.npz"


def write_segment(path: Path, arrays: dict[str, npt.NDArray[np.generic]]) -> tuple[str, int]:
    """Write a segment file atomically; returns its SHA-256 and size in bytes."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    write_bytes_atomic(path, data, lambda: crash_point("segment:before-rename"))
    return hashlib.sha256(data).hexdigest(), len(data)


def read_segment(path: Path, sha256: str) -> dict[str, npt.NDArray[np.generic]]:
    """Read a segment file, checking its recorded SHA-256.

    Raises
    ------
    CorruptFileError
        Naming the file when it is missing, damaged or not the file the manifest recorded.
    """
    if not path.is_file():
        raise CorruptFileError(f"{path} is missing (the pipeline manifest names it)")
    if sha256_file(path) != sha256:
        raise CorruptFileError(f"{path} is damaged (its SHA-256 differs from the manifest's)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{path} is not a readable segment ({err})") from None


def referenced(manifest: dict[str, object]) -> set[str]:
    """The data files a manifest names."""
    main = manifest.get("main") or {}
    assert isinstance(main, dict)
    names = {v for v in (main.get("files") or {}).values() if isinstance(v, str)}
    segs = manifest.get("segments") or []
    assert isinstance(segs, list)
    return names | {s["file"] for s in segs}


def collect_garbage(root: Path, manifest: dict[str, object]) -> list[str]:
    """Delete the data files (and temporary files) that the committed manifest does not name.

    Only the writer calls this; returns the names deleted.
    """
    keep = referenced(manifest) | {MANIFEST, DOCS, LOCK}
    gone = []
    for p in root.iterdir():
        if p.name not in keep and _DATA_FILE.match(p.name):
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone
