"""Finding a model's directory: a local path, or a Hugging Face repo id in the cache or online.

Nothing here touches the network unless a repo id is given, ``huggingface_hub`` is installed,
the id is not in the local cache, and neither ``local_files_only=True`` nor ``HF_HUB_OFFLINE=1``
forbids downloading.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Union

from ._errors import MissingDependencyError, ModelError, ModelFileNotFoundError

ModelSource = Union[str, "os.PathLike[str]"]
"""A local model directory or a Hugging Face repo id."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$")
_HUB_PATTERNS = ["*.json", "*.txt", "onnx/model.onnx", "model.onnx", "1_Pooling/*", "1_Dense/config.json"]
_TRUE = {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    return any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model_dir(model: Any, *, local_files_only: bool = False, revision: Optional[str] = None) -> Path:
    """Return the local directory of ``model`` (a directory or a Hugging Face repo id).

    A repo id is looked up in the Hugging Face cache first; it is downloaded only when
    ``huggingface_hub`` is installed and neither ``local_files_only`` nor ``HF_HUB_OFFLINE``
    forbids it.

    Raises
    ------
    ModelFileNotFoundError
        ``model`` looks like a path and does not exist, or is a file.
    MissingDependencyError
        ``model`` is not a local directory and ``huggingface_hub`` is not installed.
    ModelError
        ``model`` is not a local directory and cannot be found or downloaded from the hub.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(
            f"model must be a directory path or a Hugging Face repo id, got {type(model).__name__}"
        )
    text = os.fspath(model)
    if not isinstance(text, str) or not text:
        raise ModelError("model must be a non-empty directory path or Hugging Face repo id")
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelFileNotFoundError(f"{text!r} is a file; expected a model directory (with onnx/model.onnx)")
    if not isinstance(model, str) or not _REPO_ID.match(text) or text.startswith(".") or text.count("/") > 1:
        raise ModelFileNotFoundError(f"model directory {text!r} does not exist")
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependencyError(
            f"{text!r} is not a local directory, and huggingface_hub is not installed to fetch it from the "
            "Hugging Face hub (pip install huggingface_hub, or pass the path of a downloaded model directory)"
        ) from None
    try:
        found = huggingface_hub.snapshot_download(
            text, revision=revision, allow_patterns=_HUB_PATTERNS, local_files_only=True
        )
        return Path(found)
    except Exception:  # noqa: BLE001 - not cached: any error means "try online"
        pass
    if local_files_only or _hub_offline():
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        raise ModelError(
            f"{text!r} is not a local directory and is not in the Hugging Face cache, and the hub is offline "
            f"({why}); pass the path of a downloaded model directory"
        )
    try:
        found = huggingface_hub.snapshot_download(text, revision=revision, allow_patterns=_HUB_PATTERNS)
    except Exception as exc:  # noqa: BLE001 - network, auth, 404: all mean "cannot get it"
        raise ModelError(
            f"{text!r} is not a local directory, and fetching it from the Hugging Face hub failed "
            f"(offline or unknown repo?): {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc
    return Path(found)
