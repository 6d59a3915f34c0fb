"""One ONNX Runtime session per model, with the exact graph rewrites of :mod:`._graph`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import numpy.typing as npt

from .. import _core
from .._arrays import threads_arg
from ._batching import Batch
from ._errors import MissingDependencyError, ModelError
from ._graph import optimized_model_bytes

if TYPE_CHECKING:
    import onnxruntime


def default_threads() -> int:
    """Threads a model uses when none are given: ``RANKFUNNEL_NUM_THREADS``, else every core.

    The same rule as the core's indexes (:func:`rankfunnel.default_threads`).
    """
    return int(_core.default_threads())


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "rankfunnel models need onnxruntime: pip install 'rankfunnel[models]'"
        ) from None
    return onnxruntime


class OnnxModel:
    """One ONNX Runtime session with all graph optimizations, and the names of its inputs.

    Parameters
    ----------
    path : Path
        The ``.onnx`` file.
    threads : int, optional
        Intra-op threads; ``None`` means every core this process may use.
    providers : sequence of str, optional
        ONNX Runtime execution providers; default CPU only.
    optimize : bool, default True
        Run the graph with the exact rewrites of :mod:`rankfunnel.models._graph` (softmax NaN
        guards dropped) when the ``onnx`` package is installed.
    graph : bytes, optional
        A serialized graph to run instead of the file at ``path`` (which then only names it).
    """

    def __init__(
        self,
        path: Path,
        threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
        optimize: bool = True,
        graph: Optional[bytes] = None,
    ) -> None:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads_arg(threads, ModelError) or default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = path
        self.threads: int = opts.intra_op_num_threads
        if graph is None and optimize:
            graph = optimized_model_bytes(path)
        self.optimized = graph is not None
        """Whether the session runs a rewritten graph (see :mod:`rankfunnel.models._graph`)."""
        try:
            self.session: onnxruntime.InferenceSession = ort.InferenceSession(
                graph if graph is not None else str(path),
                sess_options=opts,
                providers=list(providers or ["CPUExecutionProvider"]),
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in self.inputs:
            raise ModelError(
                f"{path} has no input_ids input (inputs: {sorted(self.inputs)}); not a text model"
            )
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.input_dtype = np.int32 if "int32" in str(self.inputs["input_ids"].type) else np.int64

    @property
    def metadata(self) -> dict[str, str]:
        """The graph's custom metadata (ONNX ``metadata_props``)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def output(self, *names: str) -> Optional[str]:
        """The first of ``names`` that the graph outputs (``None`` if none)."""
        for n in names:
            if n in self.outputs:
                return n
        return None

    def output_rank(self, name: str) -> int:
        """The rank of output ``name`` (-1 when unknown)."""
        shape = self.outputs[name].shape
        return len(shape) if isinstance(shape, (list, tuple)) else -1

    def output_dim(self, name: str) -> Optional[int]:
        """The static size of the last axis of output ``name`` (``None`` when symbolic)."""
        shape = self.outputs[name].shape
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[-1], int):
            return int(shape[-1])
        return None

    def run(self, output: str, batch: Batch) -> npt.NDArray[np.float32]:
        """Run the graph on one padded batch and return ``output`` as float32."""
        return self.run_many([output], batch)[0]

    def run_many(self, outputs: Sequence[str], batch: Batch) -> list[npt.NDArray[np.float32]]:
        """Run the graph on one padded batch and return ``outputs`` as float32."""
        feed: dict[str, npt.NDArray[Any]] = {
            "input_ids": batch.input_ids.astype(self.input_dtype, copy=False)
        }
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = batch.attention_mask.astype(self.input_dtype, copy=False)
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = batch.token_type_ids.astype(self.input_dtype, copy=False)
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(list(outputs), feed)]
