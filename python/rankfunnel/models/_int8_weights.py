"""Which int8 weight type suits the CPU that runs a model (``quantize='int8'``).

ONNX Runtime's integer GEMM (MLAS) picks its kernel by the weight type and the CPU:

- int8 weights (``"s8"``, u8 x s8 products): on x86 with AVX512-VNNI or AVX-VNNI, ``vpdpbusd``
  sums four products straight into int32, exactly. Without VNNI (AVX2, or AVX-512 without VNNI),
  ``vpmaddubsw`` adds two u8 x s8 products into a *saturating int16*: 255 * 127 * 2 > 32767, so
  full-range weights overflow (cosine to float32 0.994 instead of 0.999 on all-MiniLM-L6-v2).
  On aarch64 the NEON kernel widens to 16 bits and accumulates in 32 (no dot product), or uses
  ``udot``/``sdot``/``ummla``: exact too.
- uint8 weights with zero point 128 (``"u8"``, u8 x u8 products): MLAS widens both sides to int16
  and uses ``vpmaddwd`` (int32 sums): exact on every x86 CPU, but without VNNI's speed.

Seven-bit weights (ONNX Runtime's ``reduce_range``) also avoid the overflow, at the price of one bit
of precision (cosine 0.9978 instead of 0.9988 on the parity sentences): ``"u8"`` keeps all 8 bits.
"""

from __future__ import annotations

import os
import platform
from typing import Optional

from .. import _core
from ._errors import ModelError

__all__ = ["INT8_WEIGHTS", "METADATA_KEY", "int8_weights", "usable_here"]

INT8_WEIGHTS = ("s8", "u8")
"""The weight types of :func:`rankfunnel.models._int8.quantize_int8`."""

METADATA_KEY = "rankfunnel.int8_weights"
"""The ONNX metadata key under which a quantized graph records its weight type."""

_ENV = "RANKFUNNEL_INT8_WEIGHTS"
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_detected: Optional[bool] = None


def _cpuinfo_flags() -> Optional[set[str]]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def _x86_has_vnni() -> bool:
    """Whether this x86 CPU has AVX512-VNNI or AVX-VNNI (detected once)."""
    global _detected
    if _detected is None:
        flags = _cpuinfo_flags()
        if flags is not None:
            _detected = bool({"avx512_vnni", "avx_vnni"} & flags)
        else:  # not Linux: the core's own detection (same instructions)
            _detected = bool(_core._vnni_in_use())
    return _detected


def int8_weights() -> str:
    """The int8 weight type for this CPU: ``RANKFUNNEL_INT8_WEIGHTS`` (``s8``, ``u8`` or ``auto``),
    else ``"u8"`` on x86 without VNNI and ``"s8"`` everywhere else.

    Returns
    -------
    str
        ``"s8"`` or ``"u8"`` (see the module docstring).

    Raises
    ------
    ModelError
        ``RANKFUNNEL_INT8_WEIGHTS`` holds another value.
    """
    env = os.environ.get(_ENV, "").strip().lower()
    if env in INT8_WEIGHTS:
        return env
    if env not in ("", "auto"):
        raise ModelError(f"{_ENV} must be 's8', 'u8' or 'auto', got {env!r}")
    if platform.machine().lower() in _X86 and not _x86_has_vnni():
        return "u8"
    return "s8"


def usable_here(weights: str, wanted: str) -> bool:
    """Whether a graph quantized with ``weights`` is accurate where ``wanted`` is this CPU's choice
    (``"u8"`` is exact everywhere; ``"s8"`` only where ``"s8"`` is chosen)."""
    return weights == wanted or weights == "u8"
