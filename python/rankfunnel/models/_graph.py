"""ONNX graph rewrites that keep results exact: drop the softmax NaN guards.

Needs the ``onnx`` package (part of ``rankfunnel[models]``); without it the float32 graph runs
as exported.

**NaN guards.** ``torch.onnx`` exports of ``scaled_dot_product_attention`` wrap every attention
softmax in ``Where(IsNaN(p), 0, p)``: two extra passes over the (batch, heads, L, L) probabilities
that only matter for a query row with every key masked. The wrappers never feed such a row (every
text keeps at least its ``[CLS]`` token), so the guard is dropped. On all-MiniLM-L6-v2 this is
~15 % of the float32 time and ~25 % of the int8 time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from ._errors import MissingDependencyError

__all__ = ["drop_nan_guards", "onnx_module", "optimized_model_bytes", "prune"]

_MAX_INLINE = 1_800_000_000  # protobuf's 2 GiB limit, with room: bigger graphs run from their file


def onnx_module(feature: str) -> Any:
    """The ``onnx`` module, or :class:`MissingDependencyError` naming the ``feature`` that needs it."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(
            f"{feature} needs the onnx package: pip install onnx (or pip install 'rankfunnel[models]')"
        ) from None
    return onnx


def _has_external_data(model: Any) -> bool:
    return any(t.data_location == 1 for t in model.graph.initializer)  # TensorProto.EXTERNAL


def _constant(model: Any, name: str) -> Optional[npt.NDArray[Any]]:
    """The value of ``name`` if it is an initializer or a Constant node's output."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return np.asarray(numpy_helper.to_array(t))
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return np.asarray(numpy_helper.to_array(a.t))
    return None


def prune(model: Any) -> None:
    """Remove nodes whose outputs nobody reads, then unread initializers."""
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        keep = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(keep) == len(model.graph.node):
            break
        del model.graph.node[:]
        model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input} | graph_outputs
    inits = [t for t in model.graph.initializer if t.name in used]
    if len(inits) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(inits)


def drop_nan_guards(model: Any) -> int:
    """Replace ``Where(IsNaN(p), 0, p)`` after a Softmax ``p`` by ``p``; returns how many.

    Exact for every row that attends to at least one key (the guard only turns the NaNs of a row
    with every key masked into zeros).
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    rename: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type != "Where" or len(n.input) != 3:
            continue
        cond, zero, p = n.input
        isnan = producer.get(cond)
        soft = producer.get(p)
        if isnan is None or isnan.op_type != "IsNaN" or isnan.input[0] != p:
            continue
        if soft is None or soft.op_type != "Softmax":
            continue
        z = _constant(model, zero)
        if z is None or z.size != 1 or float(z.reshape(-1)[0]) != 0.0:
            continue
        rename[n.output[0]] = p
    if not rename:
        return 0
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    if any(o.name in rename for o in model.graph.output):
        return 0  # pragma: no cover - a guard that is itself a graph output: leave the graph alone
    prune(model)
    return len(rename)


def optimized_model_bytes(path: Path) -> Optional[bytes]:
    """The graph at ``path`` with :func:`drop_nan_guards` applied, serialized; ``None`` when there is
    nothing to change, the ``onnx`` package is missing, or the graph is too big to pass inline."""
    try:
        import onnx
    except ImportError:
        return None
    if path.stat().st_size > _MAX_INLINE:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - ORT gives the clear error when it loads the file itself
        return None
    if _has_external_data(model) or not drop_nan_guards(model):
        return None
    data: bytes = model.SerializeToString()
    return data
