"""The files of a model directory: its JSON configs, modules.json and the ONNX graph."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ._errors import ModelError, ModelFileNotFoundError

ONNX_CANDIDATES = ("onnx/model.onnx", "model.onnx")
MODULE_FILES = {"Pooling": ("config.json",), "Dense": ("config.json",)}
"""Files a modules.json entry needs in its folder, by the end of its ``type``."""


def check_module_files(path: Path, modules: list[dict[str, Any]]) -> None:
    """Refuse a model whose modules.json lists a module whose files (:data:`MODULE_FILES`) are missing.

    Without this, a model folder missing ``1_Pooling/config.json`` would silently pool by mean.
    Modules without files of their own (``Normalize``) may lack their folder, as on the hub.

    Raises
    ------
    ModelFileNotFoundError
        Naming the module and the missing file.
    """
    for i, m in enumerate(modules):
        kind = str(m.get("type", ""))
        sub = m.get("path", "")
        if not isinstance(sub, str):
            raise ModelError(f"{path / 'modules.json'} entry {i} ({kind}) has a non-string path {sub!r}")
        needed = next((files for suffix, files in MODULE_FILES.items() if kind.endswith(suffix)), ())
        for name in needed:
            if not (path / sub / name).is_file():
                raise ModelFileNotFoundError(
                    f"{path / 'modules.json'} lists a {kind.rsplit('.', 1)[-1]} module in {sub!r}, "
                    f"but its {Path(sub) / name} is missing"
                )


def read_json(path: Path) -> Any:
    """Parse a JSON file; ``None`` when it does not exist. Malformed JSON raises :class:`ModelError`."""
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


@dataclass
class ModelDir:
    """The files of one model directory, read once.

    Attributes
    ----------
    path : Path
        The directory.
    config : dict
        ``config.json`` (the transformers config), ``{}`` when absent.
    st_config : dict
        ``config_sentence_transformers.json`` (prompts, PyLate ColBERT settings), ``{}`` when absent.
    sbert_config : dict
        ``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``), ``{}`` when absent.
    modules : list of dict
        ``modules.json`` (the sentence-transformers pipeline), ``[]`` when absent.
    tokenizer_config : dict
        ``tokenizer_config.json``, ``{}`` when absent.
    """

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    st_config: dict[str, Any] = field(default_factory=dict)
    sbert_config: dict[str, Any] = field(default_factory=dict)
    modules: list[dict[str, Any]] = field(default_factory=list)
    tokenizer_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ModelDir:
        """Read the JSON configs of ``path``."""

        def obj(name: str) -> dict[str, Any]:
            v = read_json(path / name)
            if v is None:
                return {}
            if not isinstance(v, dict):
                raise ModelError(f"{path / name} must hold a JSON object")
            return v

        modules = read_json(path / "modules.json") or []
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ModelError(f"{path / 'modules.json'} must hold a JSON list of objects")
        check_module_files(path, modules)
        return cls(
            path=path,
            config=obj("config.json"),
            st_config=obj("config_sentence_transformers.json"),
            sbert_config=obj("sentence_bert_config.json"),
            modules=modules,
            tokenizer_config=obj("tokenizer_config.json"),
        )

    def module_types(self) -> list[str]:
        """The ``type`` of every entry of modules.json, in order."""
        return [str(m.get("type", "")) for m in self.modules]

    def module_path(self, suffix: str) -> Optional[Path]:
        """The folder of the first module whose type ends with ``suffix`` (``None`` if none)."""
        for m in self.modules:
            if str(m.get("type", "")).endswith(suffix):
                return self.path / str(m.get("path", ""))
        return None

    def is_colbert(self) -> bool:
        """Whether this is a PyLate ColBERT model."""
        return self.st_config.get("model_type") == "ColBERT" or any(
            t.startswith("pylate.") for t in self.module_types()
        )

    def is_sequence_classifier(self) -> bool:
        """Whether config.json declares a ``*ForSequenceClassification`` architecture."""
        archs = self.config.get("architectures") or []
        return any(str(a).endswith("ForSequenceClassification") for a in archs)

    def model_max_length(self) -> Optional[int]:
        """min(tokenizer model_max_length, max_position_embeddings), ignoring absent/huge values."""
        vals = [self.tokenizer_config.get("model_max_length"), self.config.get("max_position_embeddings")]
        ok = [int(v) for v in vals if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1_000_000]
        return min(ok) if ok else None


def find_onnx(model_dir: Path, onnx_file: Optional[Union[str, os.PathLike[str]]] = None) -> Path:
    """Return the ONNX graph of a model directory (``onnx/model.onnx`` or ``model.onnx``).

    Raises
    ------
    ModelFileNotFoundError
        No graph is found.
    """
    if onnx_file is not None:
        p = Path(onnx_file).expanduser()
        p = p if p.is_absolute() else model_dir / p
        if not p.is_file():
            raise ModelFileNotFoundError(f"ONNX file {p} does not exist")
        return p
    for c in ONNX_CANDIDATES:
        if (model_dir / c).is_file():
            return model_dir / c
    raise ModelFileNotFoundError(
        f"no ONNX graph in {model_dir} (looked for {', '.join(ONNX_CANDIDATES)}); export a checkpoint with "
        "`rankfunnel export SRC OUT --kind bi|cross|colbert`"
    )
