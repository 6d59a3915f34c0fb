"""The sharded pipeline folder on disk: its manifest, shard names, the id hash and checksums.

Layout::

    sharded.json            the manifest, written atomically last: the commit of a build
    centroids-<tag>.rfi     IVF only: the one trained (empty) index every shard copies its lists from
    shard-<i>-<tag>/        shard i: a complete pipeline folder (pipeline.json, docs.sqlite, main-G.rfi)

A shard task builds its pipeline in ``.tmp-shard-<i>-<tag>/`` and renames it to
``shard-<i>-<tag>/`` (``tag`` is new per attempt), so a retried or failed task never leaves a
half-written shard: the manifest names exactly one folder per shard, and every other
``shard-*`` / ``.tmp-*`` / ``centroids-*`` entry is garbage of an interrupted build, deleted by
the next build into the folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError, RankfunnelError, UnsupportedVersionError
from ..pipeline.manifest import sha256_file, write_json_atomic

MANIFEST = "sharded.json"
FORMAT = "rankfunnel-sharded"
FORMAT_VERSION = 1
HASH = "blake2b-64"
"""How a document's shard is chosen: the first 8 bytes (little-endian) of BLAKE2b of its UTF-8
id, modulo the number of shards."""


class NotShardedError(RankfunnelError):
    """A folder that holds no sharded pipeline (no ``sharded.json``)."""


def id_hash(doc_id: str) -> int:
    """The stable 64-bit hash of a document id that picks its shard (:data:`HASH`)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def shard_of(doc_id: str, shards: int) -> int:
    """The shard a document goes to: :func:`id_hash` modulo ``shards``."""
    return id_hash(doc_id) % shards


def is_sharded(path: Any) -> bool:
    """Whether ``path`` is a folder holding a sharded pipeline (its manifest exists)."""
    return (Path(path) / MANIFEST).is_file()


def folder_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a closed shard pipeline (``writer.lock`` and SQLite's
    ``-wal``/``-shm`` side files excluded), by name."""
    skip = ("writer.lock",)
    return {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in skip and not p.name.endswith(("-wal", "-shm"))
    }


def verify_shard(folder: Path, files: dict[str, str]) -> None:
    """Check a shard folder against the checksums the manifest recorded.

    Raises
    ------
    CorruptFileError
        Naming the shard and the file that is missing or differs.
    """
    if not folder.is_dir():
        raise CorruptFileError(f"shard {folder} is missing (the sharded manifest names it)")
    for name, sha in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise CorruptFileError(f"shard {folder}: {name} is missing (the sharded manifest names it)")
        if sha256_file(path) != sha:
            raise CorruptFileError(
                f"shard {folder}: checksum mismatch on {name} (its SHA-256 differs from {MANIFEST}'s)"
            )


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write ``sharded.json`` atomically (temporary file, fsync, rename): the build's commit."""
    from ..pipeline.folder import crash_point

    write_json_atomic(
        root / MANIFEST,
        {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest},
        lambda: crash_point("sharded:manifest"),
    )


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and validate ``sharded.json``.

    Raises
    ------
    NotShardedError
        If the folder holds no sharded pipeline (a single pipeline folder says so).
    CorruptFileError
        If the manifest is damaged or incomplete.
    UnsupportedVersionError
        If a newer rankfunnel wrote it.
    """
    path = root / MANIFEST
    if not path.is_file():
        single = (
            " (it holds a single pipeline: open it with rf.Pipeline.load)"
            if (root / "pipeline.json").is_file()
            else ""
        )
        raise NotShardedError(f"{root} is not a sharded pipeline folder: {MANIFEST} is missing{single}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        version = int(cfg["format_version"])
        fmt = cfg["format"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path} is damaged (not a complete sharded manifest: {err})") from None
    if fmt != FORMAT:
        raise CorruptFileError(f"{path} is not a rankfunnel sharded manifest (format {fmt!r})")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(f"{root} was written by a newer rankfunnel (sharded format {version})")
    need = {"shards", "models", "index", "metric", "candidates", "hash", "docs"}
    missing = need - set(cfg)
    if missing:
        raise CorruptFileError(f"{path} is damaged: it lacks {sorted(missing)}")
    if cfg["hash"] != HASH:
        raise CorruptFileError(f"{path} assigns shards by an unknown hash {cfg['hash']!r}")
    return dict(cfg)


def garbage(root: Path, manifest: dict[str, Any]) -> list[Path]:
    """Entries of ``root`` left by interrupted builds: shard folders, temporary folders,
    centroid files that ``manifest`` (``{}`` for none) does not name, and temporary manifests."""
    keep = {s["path"] for s in manifest.get("shards", [])}
    if manifest.get("centroids"):
        keep.add(manifest["centroids"]["file"])
    out = []
    for p in root.iterdir():
        if p.name in keep:
            continue
        if p.name.startswith(("shard-", ".tmp-shard-", "centroids-", ".centroids-", f".{MANIFEST}.tmp-")):
            out.append(p)
    return out


def remove(paths: list[Path]) -> None:
    """Delete files and folders (garbage of interrupted builds)."""
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
