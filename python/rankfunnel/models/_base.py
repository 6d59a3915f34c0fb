"""What the three model wrappers share: loading, kind checks, the ONNX session, quantization."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from ._batching import Batch
from ._errors import ModelError
from ._hub import resolve_model_dir
from ._int8 import quantize_int8
from ._int8_weights import METADATA_KEY, int8_weights, usable_here
from ._model_dir import ModelDir, find_onnx
from ._quantize_cache import (
    CALIBRATION_TEXTS,
    PARITY_TEXTS,
    quantized_path,
    read_parity,
    resolve_quantize,
    write_parity,
)
from ._session import OnnxModel
from ._tokenizer import load_tokenizer


class OnnxTextModel:
    """Base class: a model directory, its tokenizer and one ONNX Runtime session.

    Subclasses implement :meth:`_apply_config` (read their settings from the configs),
    :meth:`_check_kind` (raise :class:`ModelError` for a model of another kind)
    and :meth:`_parity_vectors` (outputs on a few sentences, to compare a quantized model with its
    float32 original).
    """

    _kind = "model"

    def __init__(
        self,
        model: Any,
        *,
        threads: Optional[int] = None,
        quantize: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
        onnx_file: Optional[Union[str, os.PathLike[str]]] = None,
        providers: Optional[Sequence[str]] = None,
        local_files_only: bool = False,
        revision: Optional[str] = None,
    ) -> None:
        self.model_dir: Path = resolve_model_dir(model, local_files_only=local_files_only, revision=revision)
        self._md = ModelDir.read(self.model_dir)
        self._apply_config()
        mode = resolve_quantize(quantize)
        src = find_onnx(self.model_dir, onnx_file)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.quantize: Optional[str] = mode
        self.quantization_parity: Optional[dict[str, float]] = None
        """For ``quantize='int8'``: agreement with the float32 model on a few sentences
        (``cosine_min``, ``cosine_mean``, ``max_abs_diff``), measured when the quantized copy was made."""
        self.int8_weights: Optional[str] = None
        """For ``quantize='int8'``: ``"s8"`` (int8 weights, u8s8 kernels) or ``"u8"`` (uint8
        weights, the exact u8u8 kernels that x86 CPUs without VNNI get; ``RANKFUNNEL_INT8_WEIGHTS``
        overrides the choice), see :mod:`rankfunnel.models._int8_weights`."""
        self.onnx_path: Path = src
        """The ONNX file the session runs."""
        dst: Optional[Path] = None
        if mode is not None:
            wanted = int8_weights()
            prebuilt = src.parent / f"model_{mode}.onnx"  # written by `rankfunnel export --quantize`
            if onnx_file is None and prebuilt.is_file():
                session = OnnxModel(prebuilt, threads, providers, optimize=False)
                # A copy exported on a VNNI machine ("s8"; older exports record nothing) overflows
                # the int16 sums of x86 kernels without VNNI: quantize a copy for this CPU instead.
                if usable_here(session.metadata.get(METADATA_KEY, "s8"), wanted):
                    self._use_quantized(session)
                    return
            dst = quantized_path(src, cache_dir, mode, wanted)
            if dst.is_file():
                # The quantized copy exists: the float32 graph is not loaded at all. A copy that
                # does not load (a disk that lost it, a file truncated by hand) is only a cache:
                # it is made again below.
                try:
                    cached = OnnxModel(dst, threads, providers, optimize=False)
                except ModelError as exc:
                    warnings.warn(
                        f"the cached int8 copy {dst} does not load; quantizing the model again ({exc})",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                else:
                    self._use_quantized(cached)
                    return
        self._onnx = OnnxModel(src, threads, providers)
        self._check_kind()
        if dst is not None:
            quantize_int8(src, dst, self._calibration_batches(), wanted)
            fp32 = self._onnx
            self._onnx = OnnxModel(dst, fp32.threads, providers, optimize=False)
            self.onnx_path = dst
            self.int8_weights = wanted
            self.quantization_parity = self._measure_parity(fp32)
            write_parity(dst, self.quantization_parity)

    def _use_quantized(self, session: OnnxModel) -> None:
        """Run the quantized copy ``session`` (the float32 graph is not loaded at all)."""
        self._onnx = session
        self.onnx_path = session.path
        self._check_kind()
        self.int8_weights = session.metadata.get(METADATA_KEY, "s8")
        self.quantization_parity = read_parity(session.path)

    @property
    def threads(self) -> int:
        """ONNX Runtime intra-op threads of the session."""
        return self._onnx.threads

    def _apply_config(self) -> None:
        """Set this model's settings (lengths, pooling, prompts, ...) from its config files, and
        reject a model of another kind from them alone (before the graph is loaded)."""

    def _check_kind(self) -> None:
        """Reject a model of another kind once the ONNX graph is known."""

    def _parity_vectors(self, texts: Sequence[str] = PARITY_TEXTS) -> npt.NDArray[np.float32]:
        """Outputs on ``texts`` as rows of a 2-D array."""
        raise NotImplementedError

    def _calibration_batches(self) -> list[Batch]:
        """The padded batches this model feeds its graph for :data:`CALIBRATION_TEXTS`."""
        fp32 = self._onnx
        recorder = _Recorder(fp32)
        self._onnx = recorder  # type: ignore[assignment]
        try:
            self._parity_vectors(CALIBRATION_TEXTS)
        finally:
            self._onnx = fp32
        return recorder.batches

    def _measure_parity(self, fp32: OnnxModel) -> dict[str, float]:
        quant = self._onnx
        got = self._parity_vectors()
        self._onnx = fp32
        try:
            want = self._parity_vectors()
        finally:
            self._onnx = quant
        g = got.astype(np.float64)
        w = want.astype(np.float64)
        report = {"max_abs_diff": float(np.abs(g - w).max(initial=0.0)), "texts": float(len(PARITY_TEXTS))}
        if g.ndim == 2 and g.shape[1] > 1:
            num = (g * w).sum(1)
            den = np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1), 1e-30)
            cos = num / den
            report["cosine_min"] = float(cos.min(initial=1.0))
            report["cosine_mean"] = float(cos.mean()) if len(cos) else 1.0
        return report

    def __repr__(self) -> str:
        q = f", quantize={self.quantize!r}" if self.quantize else ""
        return f"{type(self).__name__}({str(self.model_dir)!r}, threads={self.threads}{q})"


class _Recorder:
    """Stands in for an :class:`OnnxModel` and keeps every batch it runs."""

    def __init__(self, inner: OnnxModel) -> None:
        self.inner = inner
        self.batches: list[Batch] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, output: str, batch: Batch) -> npt.NDArray[np.float32]:
        self.batches.append(batch)
        return self.inner.run(output, batch)
