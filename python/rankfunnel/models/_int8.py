"""Row-wise (per-token) int8 quantization of an ONNX graph (needs the ``onnx`` package).

**Row-wise int8.** ONNX Runtime's ``quantize_dynamic`` quantizes each MatMul input with one scale
for the whole batch, so one outlier token (BERT has them) coarsens every other token: cosine to
float32 0.995 on average, 0.976 at worst on Cranfield. :func:`quantize_int8` instead writes, for
every MatMul with a constant float32 weight ``W`` (K, N):

- ``W`` as int8 with one symmetric scale per output column;
- per token (row) of the activation ``x``: ``s = max|x| / 127``, ``q = round(x / s) + 128`` (uint8,
  zero point 128), so each token uses the full 8-bit range whatever its neighbours hold;
- ``y = MatMulIntegerToFloat(q, W8) * s``: the integer GEMM runs on ONNX Runtime's u8s8 kernels
  (AVX-512 VNNI / AVX-VNNI / NEON dot products) with the column scales in its epilogue; on x86
  without VNNI, whose u8s8 kernel adds product pairs in a saturating int16, the weights are stored
  as uint8 with zero point 128 instead and run on the exact u8u8 kernels (see ``._int8_weights``);
- SmoothQuant (Xiao et al., 2023) on the inputs that come straight from a LayerNormalization,
  whose outliers sit in a few fixed channels: ``x / m`` and ``m * W`` with
  ``m_j = sqrt(max|x_j| / max|W_j|)``, ``max|x_j|`` calibrated on a few sentences.

Attention products (activation x activation) stay in float32.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._batching import Batch
from ._errors import ModelError
from ._graph import drop_nan_guards, onnx_module, prune
from ._int8_weights import INT8_WEIGHTS, METADATA_KEY
from ._session import OnnxModel

__all__ = ["quantize_int8"]

_LAYER_NORMS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization")
_SMOOTH_ALPHA = 0.5
_PREFIX = "rf_q8"


def _weight_matmuls(model: Any) -> list[Any]:
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "MatMul" or n.domain not in ("", "ai.onnx") or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        if w.data_type == 1 and len(w.dims) == 2:  # float32 (K, N)
            out.append(n)
    return out


def _channel_absmax(
    src: Path, model: Any, names: Sequence[str], batches: Sequence[Batch]
) -> dict[str, npt.NDArray[np.float64]]:
    """Per-channel max |value| of the tensors ``names`` of ``model`` (float32) over ``batches``."""
    onnx = onnx_module("quantize='int8'")

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = OnnxModel(src, graph=probe.SerializeToString())
    amax: dict[str, npt.NDArray[np.float64]] = {}
    for b in batches:
        for name, out in zip(names, session.run_many(names, b)):
            v = np.abs(out.astype(np.float64))
            m = v.reshape(-1, v.shape[-1]).max(axis=0) if v.size else np.zeros(v.shape[-1])
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
    return amax


def _constant_folded(src: Path) -> Any:
    """``src`` after ONNX Runtime's basic (standard-op) optimizations, constant folding included."""
    onnx = onnx_module("quantize='int8'")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="rankfunnel-fold-") as tmp:
        out = Path(tmp) / "folded.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
            return onnx.load(str(out))
        except Exception as exc:  # noqa: BLE001 - ORT and onnx raise several types
            raise ModelError(f"cannot constant-fold {src} for int8 quantization: {exc}") from exc


def quantize_int8(src: Path, dst: Path, calibration: Sequence[Batch], weights: str = "s8") -> None:
    """Write a row-wise int8 copy of the ONNX graph ``src`` to ``dst`` (see the module docstring).

    Parameters
    ----------
    src, dst : Path
        The float32 graph and where the int8 graph goes (written to a temporary name, then renamed).
    calibration : sequence of Batch
        Model inputs on which the per-channel activation ranges for SmoothQuant are measured.
    weights : {"s8", "u8"}
        int8 weights (u8s8 kernels), or uint8 weights with zero point 128 (u8u8 kernels, exact on
        x86 without VNNI); the same values either way. Recorded in the graph's metadata under
        ``rankfunnel.int8_weights``.

    Raises
    ------
    MissingDependencyError
        The ``onnx`` package is not installed.
    ModelError
        The graph cannot be read or rewritten, or has no MatMul with a constant weight.
    """
    onnx = onnx_module("quantize='int8'")
    from onnx import helper, numpy_helper

    if weights not in INT8_WEIGHTS:
        raise ModelError(f"int8 weights must be 's8' or 'u8', got {weights!r}")
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        raise ModelError(f"cannot read {src} for int8 quantization: {exc}") from exc
    drop_nan_guards(model)
    matmuls = _weight_matmuls(model)
    if not matmuls:
        # Weights computed in the graph (e.g. int8 storage: Mul(Cast(w8), scale)): fold them first.
        model = _constant_folded(src)
        drop_nan_guards(model)
        matmuls = _weight_matmuls(model)
    if not matmuls:
        raise ModelError(f"{src} has no MatMul with a constant float32 weight: nothing to quantize to int8")
    producer = {o: n for n in model.graph.node for o in n.output}
    smooth_inputs = sorted(
        {
            n.input[0]
            for n in matmuls
            if n.input[0] in producer and producer[n.input[0]].op_type in _LAYER_NORMS
        }
    )
    amax = _channel_absmax(src, model, smooth_inputs, calibration) if smooth_inputs and calibration else {}
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in matmuls:
        consumers.setdefault(n.input[0], []).append(n)

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    p = _PREFIX
    new_inits = [
        numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), f"{p}_inv127"),
        numpy_helper.from_array(np.array(1e-12, np.float32), f"{p}_eps"),
        numpy_helper.from_array(np.array(1.0, np.float32), f"{p}_one"),
        numpy_helper.from_array(np.array(128, np.uint8), f"{p}_zp128"),
        numpy_helper.from_array(np.array([-1], np.int64), f"{p}_last"),
    ]

    def reduce(op: str, x: str, y: str) -> Any:
        if opset >= 18:
            return helper.make_node(op, [x, f"{p}_last"], [y], keepdims=1)
        return helper.make_node(op, [x], [y], keepdims=1, axes=[-1])

    # Per activation: the nodes that quantize it, inserted before its first consumer.
    prologue: dict[int, list[Any]] = {}
    quantized: dict[str, tuple[str, str]] = {}  # activation -> (uint8 tensor, row scale)
    replace: dict[int, list[Any]] = {}
    index = {id(n): i for i, n in enumerate(model.graph.node)}
    for k, (x, nodes) in enumerate(consumers.items()):
        q = f"{p}_a{k}"
        ws_f = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float64) for n in nodes]
        xin = x
        pre: list[Any] = []
        if x in amax:
            wmax = np.max([np.abs(w).max(axis=1) for w in ws_f], axis=0)
            m = np.sqrt(
                np.maximum(amax[x], 1e-5) ** (2 * _SMOOTH_ALPHA)
                / np.maximum(wmax, 1e-5) ** (2 - 2 * _SMOOTH_ALPHA)
            )
            ws_f = [w * m[:, None] for w in ws_f]
            new_inits.append(numpy_helper.from_array((1.0 / m).astype(np.float32), f"{q}_smooth"))
            pre.append(helper.make_node("Mul", [x, f"{q}_smooth"], [f"{q}_x"]))
            xin = f"{q}_x"
        pre += [
            reduce("ReduceMax", xin, f"{q}_hi"),
            reduce("ReduceMin", xin, f"{q}_lo"),
            helper.make_node("Neg", [f"{q}_lo"], [f"{q}_nlo"]),
            helper.make_node("Max", [f"{q}_hi", f"{q}_nlo", f"{p}_eps"], [f"{q}_amax"]),
            helper.make_node("Mul", [f"{q}_amax", f"{p}_inv127"], [f"{q}_s"]),
            helper.make_node("Div", [xin, f"{q}_s"], [f"{q}_xs"]),
            helper.make_node("QuantizeLinear", [f"{q}_xs", f"{p}_one", f"{p}_zp128"], [f"{q}_u8"]),
        ]
        prologue[min(index[id(n)] for n in nodes)] = pre
        quantized[x] = (f"{q}_u8", f"{q}_s")
        for j, (n, w) in enumerate(zip(nodes, ws_f)):
            scale = np.maximum(np.abs(w).max(axis=0), 1e-30) / 127.0
            w8 = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
            wq, ws = f"{q}_w{j}", f"{q}_ws{j}"
            b_zero = [f"{p}_zp128"] if weights == "u8" else []
            if b_zero:
                w8 = (w8.astype(np.int16) + 128).astype(np.uint8)
            new_inits += [
                numpy_helper.from_array(w8, wq),
                numpy_helper.from_array(scale.astype(np.float32), ws),
            ]
            u8, s = quantized[x]
            replace[id(n)] = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [u8, wq, f"{p}_one", ws, f"{p}_zp128", *b_zero],
                    [f"{q}_y{j}"],
                    domain="com.microsoft",
                ),
                helper.make_node("Mul", [f"{q}_y{j}", s], [n.output[0]]),
            ]
    nodes_out: list[Any] = []
    for i, n in enumerate(model.graph.node):
        nodes_out += prologue.get(i, [])
        nodes_out += replace.get(id(n), [n])
    del model.graph.node[:]
    model.graph.node.extend(nodes_out)
    model.graph.initializer.extend(new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    prune(model)
    entry = next((m for m in model.metadata_props if m.key == METADATA_KEY), None)
    if entry is None:
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
    entry.value = weights

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        # Durable before it is visible: a crash leaves the old file or the whole new one.
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        from ..pipeline.manifest import fsync_dir

        fsync_dir(dst.parent)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot write the int8 graph {dst}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
