"""The manifest (``pipeline.json``): the single commit point of a pipeline folder.

It records the configuration, the models (path, options and the SHA-256 of every file that
changes their outputs), the committed generation, and the data files of that generation (the
main index files and the segments). A commit writes it atomically (temporary file, fsync,
rename, fsync of the folder); every file it does not name is garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError, RankfunnelError, UnsupportedVersionError

FORMAT_VERSION = 2
MANIFEST = "pipeline.json"

# Files of a model folder that change what the model computes: the graph, the tokenizer and the
# sentence-transformers / PyLate settings, at the top level and in the module folders
# (``1_Pooling``, ``2_Dense`` ...). Test references (refs.*) and docs do not.
_MODEL_SUFFIXES = (".onnx", ".json", ".txt", ".model", ".safetensors")
_MODEL_IGNORED = ("refs.json", "README.md")


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename or an unlink in it is durable."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, before_rename: Any = None) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync of the folder.

    ``before_rename`` (a callable) runs between the fsync and the rename (crash-point hook).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if before_rename is not None:
        before_rename()
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any, before_rename: Any = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    data = json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")
    write_bytes_atomic(path, data, before_rename)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_files(model_dir: Path) -> list[Path]:
    """The files of a model folder that change its outputs, sorted (see the module notes)."""
    out = []
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir)
        if not p.is_file() or p.name in _MODEL_IGNORED or p.name.startswith("."):
            continue
        top = rel.parts[0]
        in_module = len(rel.parts) == 2 and top[:1].isdigit() and "_" in top
        if p.suffix in _MODEL_SUFFIXES and (len(rel.parts) == 1 or in_module or top == "onnx"):
            out.append(p)
    return out


def describe_model(model: Any) -> dict[str, Any]:
    """Class, path, options and per-file checksums of a model, as recorded in the manifest."""
    d = Path(model.model_dir)
    return {
        "class": type(model).__name__,
        "path": str(d.resolve()),
        "quantize": getattr(model, "quantize", None),
        "files": {p.relative_to(d).as_posix(): sha256_file(p) for p in model_files(d)},
    }


def check_model(desc: dict[str, Any]) -> None:
    """Raise if a model folder differs from what the manifest recorded (a file changed, went
    missing, or a new file that changes outputs appeared).

    Raises
    ------
    RankfunnelError
        Naming the first file that differs.
    """
    d = Path(desc["path"])
    if not d.is_dir():
        raise RankfunnelError(f"the model folder {d} recorded in the pipeline is missing")
    recorded: dict[str, str] = desc.get("files", {})
    now = {p.relative_to(d).as_posix(): p for p in model_files(d)}
    for rel in sorted(set(recorded) | set(now)):
        if rel not in now:
            what = "is missing"
        elif rel not in recorded:
            what = "is new"
        elif sha256_file(now[rel]) != recorded[rel]:
            what = "changed"
        else:
            continue
        raise RankfunnelError(
            f"the model at {d} changed since this pipeline was built ({rel} {what}); re-index with "
            "the new model or restore the old one"
        )


def open_model(desc: dict[str, Any]) -> Any:
    """Reopen a model recorded in the manifest, after checking its files."""
    from .. import models

    classes = {
        "BiEncoder": models.BiEncoder,
        "CrossEncoder": models.CrossEncoder,
        "ColBERTEncoder": models.ColBERTEncoder,
    }
    if desc.get("class") not in classes:
        raise RankfunnelError(f"pipeline.json names an unknown model class {desc.get('class')!r}")
    check_model(desc)
    kwargs = {"quantize": desc["quantize"]} if desc.get("quantize") else {}
    return classes[desc["class"]](desc["path"], **kwargs)


def adopt_model(model: Any, desc: dict[str, Any], role: str) -> Any:
    """Use an open model in place of the one recorded as ``desc``, if it is the same model.

    Raises
    ------
    RankfunnelError
        If its class, options or any file that changes outputs differ from the record.
    """
    now = describe_model(model)
    for key in ("class", "quantize", "files"):
        if now[key] != desc.get(key):
            raise RankfunnelError(
                f"the {role} given is not the pipeline's ({key} differs from the recorded {desc['path']})"
            )
    return model


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and validate ``pipeline.json`` of a folder.

    Raises
    ------
    FileNotFoundError
        If the folder holds no pipeline.
    CorruptFileError
        If the manifest is truncated or not a rankfunnel manifest.
    UnsupportedVersionError
        If a newer (or the retired format 1) rankfunnel wrote it.
    """
    path = root / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no pipeline at {root} ({MANIFEST} is missing)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        version = int(cfg["format_version"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path} is damaged (not a complete pipeline manifest: {err})") from None
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(f"{root} was written by a newer rankfunnel (format {version})")
    if version < FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{root} was written in pipeline format {version}, which this rankfunnel no longer "
            "reads; re-index the corpus into a new folder"
        )
    need = {"generation", "index", "metric", "candidates", "models", "main", "segments", "next_id", "docs"}
    missing = need - set(cfg)
    if missing:
        raise CorruptFileError(f"{path} is damaged: it lacks {sorted(missing)}")
    return dict(cfg)
