"""Export a transformers / sentence-transformers / PyLate checkpoint to the ONNX layout rankfunnel reads.

Needs torch and transformers (``pip install 'rankfunnel[export]'``); running the exported model
needs neither. The ONNX graph is checked against torch on a few sentences before anything is
written.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .models._batching import pad_batch
from .models._errors import MissingDependencyError, ModelError
from .models._hub import resolve_model_dir
from .models._int8 import quantize_int8
from .models._int8_weights import int8_weights
from .models._model_dir import ModelDir
from .models._quantize_cache import resolve_quantize, write_parity
from .models._session import OnnxModel
from .models._tokenizer import load_tokenizer
from .progress import progress_bar
from .publish import publish_dir

__all__ = ["KINDS", "export"]

KINDS = ("bi", "cross", "colbert")
"""Model kinds :func:`export` writes: bi-encoder, cross-encoder, ColBERT."""

_OUTPUT = {"bi": "last_hidden_state", "cross": "logits", "colbert": "token_embeddings"}
_CONFIG_FILES = (
    "config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "1_Dense/config.json",
    "README.md",
    "LICENSE",
)
_CHECK_TEXTS = [
    "What is the boiling point of water at sea level?",
    "experimental investigation of the aerodynamics of a wing in a slipstream .",
    "a",
    "",
    "Ünïcödé, accents — and emoji 🙂 survive tokenization?",
]


def _import_torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"rankfunnel export needs torch and transformers ({exc.name or 'torch'} is not installed): "
            "pip install 'rankfunnel[export]' (or pip install torch transformers)"
        ) from None
    return torch, transformers


def _dense_weights(torch: Any, folder: Path) -> tuple[Any, Optional[Any]]:
    """Weight and bias of a sentence-transformers / PyLate ``Dense`` module folder."""
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        state = load_file(str(st))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise ModelError(f"no weights (model.safetensors / pytorch_model.bin) in {folder}")
    weight = state.get("linear.weight")
    if weight is None:
        raise ModelError(f"{folder} has no linear.weight (keys: {sorted(state)})")
    return weight.float(), state.get("linear.bias")


def _check_kind(md: ModelDir, kind: str) -> None:
    """Refuse a checkpoint of another kind than ``kind`` (before loading any weights)."""
    if kind == "colbert" and not md.is_colbert():
        raise ModelError(
            f"{md.path} is not a PyLate ColBERT model (no model_type 'ColBERT'); use --kind bi or cross"
        )
    if kind != "colbert" and md.is_colbert():
        raise ModelError(f"{md.path} is a PyLate ColBERT model; use --kind colbert")
    if kind == "cross" and not md.is_sequence_classifier():
        raise ModelError(f"{md.path} is not a *ForSequenceClassification checkpoint; use --kind bi")
    if kind == "bi" and md.is_sequence_classifier():
        raise ModelError(f"{md.path} is a sequence classifier (cross-encoder); use --kind cross")


def _build(torch: Any, transformers: Any, src: Path, kind: str, md: ModelDir) -> Any:
    """The torch module to export: (input_ids, attention_mask, token_type_ids) -> one output."""
    nn = torch.nn
    if kind == "cross":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(src))
    else:
        model = transformers.AutoModel.from_pretrained(str(src))
    model.eval()
    dense: Optional[Any] = None
    if kind == "colbert":
        folder = md.module_path("Dense")
        if folder is None:
            raise ModelError(f"{src} has no Dense module in modules.json; is it a PyLate ColBERT model?")
        w, b = _dense_weights(torch, folder)
        dense = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        with torch.no_grad():
            dense.weight.copy_(w)
            if b is not None:
                dense.bias.copy_(b.float())
    elif kind == "bi":
        extra = [t for t in md.module_types() if not t.endswith(("Transformer", "Pooling", "Normalize"))]
        if extra:
            raise ModelError(f"cannot export modules {extra} of {src}: only Transformer, Pooling, Normalize")

    class Wrapped(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.dense = dense

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if getattr(model.config, "type_vocab_size", 0):
                kwargs["token_type_ids"] = token_type_ids
            out = self.model(**kwargs)
            if kind == "cross":
                return out.logits
            hidden = out.last_hidden_state
            return hidden if self.dense is None else self.dense(hidden)

    return Wrapped().eval()


def export(
    src: Union[str, os.PathLike[str]],
    out: Union[str, os.PathLike[str]],
    kind: str,
    quantize: Optional[str] = None,
    *,
    opset: int = 17,
    atol: float = 1e-4,
    overwrite: bool = False,
    show_progress: Optional[bool] = False,
) -> dict[str, Any]:
    """Export a checkpoint to ``out/onnx/model.onnx`` plus its tokenizer.json and configs.

    Parameters
    ----------
    src : str or path-like
        A local checkpoint directory (transformers / sentence-transformers / PyLate layout) or a
        Hugging Face repo id.
    out : str or path-like
        The directory to write; it must not exist (or be empty) unless ``overwrite``.
    kind : {'bi', 'cross', 'colbert'}
        Bi-encoder (graph outputs ``last_hidden_state``; pooling stays in rankfunnel),
        cross-encoder (``logits``) or PyLate ColBERT (``token_embeddings``, Dense layer folded in).
    quantize : {None, 'int8'}, optional
        Also write ``onnx/model_int8.onnx`` (row-wise int8, see ``models._int8``, with the weight
        type this CPU needs, see ``models._int8_weights``), which ``quantize='int8'`` of the model
        classes then uses (on a CPU that needs other weights, they quantize their own copy).
    opset : int, default 17
        ONNX opset.
    atol : float, default 1e-4
        Largest absolute difference allowed between ONNX Runtime and torch outputs.
    overwrite : bool, default False
        Replace an existing ``out``.
    show_progress : bool or None, default False
        A bar of the export steps on stderr; None: when stderr is a terminal.

    Returns
    -------
    dict
        ``{"out": Path, "max_abs_diff": float, "int8_parity": dict or None}``.

    Raises
    ------
    MissingDependencyError
        torch or transformers (``pip install 'rankfunnel[export]'``), or ``onnx`` for int8, is missing.
    ModelError
        Bad ``kind`` / ``quantize``, ``out`` not empty, an unsupported checkpoint, or ONNX outputs
        that differ from torch by more than ``atol`` (nothing is written then).
    """
    if kind not in KINDS:
        raise ModelError(f"kind must be one of {KINDS}, got {kind!r}")
    mode = resolve_quantize(quantize)
    dst = Path(out).expanduser()
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise ModelError(f"{dst} exists and is not empty (pass overwrite=True)")
    src_dir = resolve_model_dir(src)
    md = ModelDir.read(src_dir)
    _check_kind(md, kind)
    torch, transformers = _import_torch()
    steps = 5 if mode == "int8" else 4
    with progress_bar(total=steps, desc="export: load", unit="step", show=show_progress) as bar:
        return _export(torch, transformers, src, src_dir, dst, kind, md, mode, opset, atol, bar)


def _export(
    torch: Any,
    transformers: Any,
    src: Union[str, os.PathLike[str]],
    src_dir: Path,
    dst: Path,
    kind: str,
    md: ModelDir,
    mode: Optional[str],
    opset: int,
    atol: float,
    bar: Any,
) -> dict[str, Any]:
    """The steps of :func:`export` once its arguments are checked, reported on ``bar``."""

    def step(next_desc: str) -> None:
        bar.update(1)
        bar.set_description(f"export: {next_desc}")

    module = _build(torch, transformers, src_dir, kind, md)
    step("convert to ONNX")
    with tempfile.TemporaryDirectory(prefix="rankfunnel-export-") as tmp_name:
        tmp = Path(tmp_name) / "model"
        (tmp / "onnx").mkdir(parents=True)
        tok = transformers.AutoTokenizer.from_pretrained(str(src_dir))
        if not getattr(tok, "is_fast", False):
            raise ModelError(f"{src} has no fast tokenizer; rankfunnel needs tokenizer.json")
        tok.save_pretrained(str(tmp))
        for name in _CONFIG_FILES:
            if (src_dir / name).is_file() and not (tmp / name).exists():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src_dir / name, tmp / name)

        tokenizer = load_tokenizer(tmp)
        tokenizer.enable_truncation(64)
        if kind == "cross":
            encs = tokenizer.encode_batch([(_CHECK_TEXTS[0], t) for t in _CHECK_TEXTS])
        else:
            encs = tokenizer.encode_batch(_CHECK_TEXTS)
        batch = pad_batch(encs, np.arange(len(encs), dtype=np.int64), 0)
        inputs = tuple(
            torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids)
        )
        path = tmp / "onnx" / "model.onnx"
        output = _OUTPUT[kind]
        axes = {
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "token_type_ids": {0: "batch", 1: "seq"},
            output: {0: "batch"},
        }
        if kind != "cross":
            axes[output][1] = "seq"
        kwargs: dict[str, Any] = {}
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False  # the TorchScript exporter: dynamic axes, plain opset graphs
        with torch.no_grad():
            torch.onnx.export(
                module,
                inputs,
                str(path),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=[output],
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                **kwargs,
            )
            want = module(*inputs).float().numpy()
        step("check against torch")
        got = OnnxModel(path, threads=None).run(output, batch)
        mask = batch.attention_mask.astype(bool)
        diff = np.abs(got - want)
        err = float((diff[mask] if kind != "cross" else diff).max(initial=0.0))
        if not err <= atol:
            raise ModelError(f"ONNX output differs from torch by {err:.3g} > atol {atol:g}; nothing written")

        parity: Optional[dict[str, float]] = None
        if mode == "int8":
            step("int8 quantize")
            qpath = tmp / "onnx" / "model_int8.onnx"
            quantize_int8(path, qpath, [batch], int8_weights())
            qgot = OnnxModel(qpath, optimize=False).run(output, batch)
            g = qgot.reshape(-1, qgot.shape[-1]).astype(np.float64)
            w = got.reshape(-1, got.shape[-1]).astype(np.float64)
            keep = mask.reshape(-1) if kind != "cross" else np.ones(len(g), bool)
            g, w = g[keep], w[keep]
            parity = {"max_abs_diff": float(np.abs(g - w).max(initial=0.0))}
            if g.shape[1] > 1:
                cos = (g * w).sum(1) / np.maximum(
                    np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1), 1e-30
                )
                parity["cosine_min"] = float(cos.min())
                parity["cosine_mean"] = float(cos.mean())
            write_parity(qpath, parity)

        step("write")
        publish_dir(tmp, dst)
    bar.update(1)
    return {"out": dst, "max_abs_diff": err, "int8_parity": parity}
