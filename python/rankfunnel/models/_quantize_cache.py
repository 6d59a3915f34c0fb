"""Where quantized copies of a model are cached, which texts calibrate and check them, and
their parity reports."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Union

from ._errors import ModelError
from ._model_dir import read_json

QUANTIZE_MODES = ("int8",)


def default_cache_dir() -> Path:
    """``$RANKFUNNEL_CACHE``, else ``$XDG_CACHE_HOME/rankfunnel``, else ``~/.cache/rankfunnel``."""
    env = os.environ.get("RANKFUNNEL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rankfunnel"


def quantized_path(
    src: Path, cache_dir: Optional[Union[str, os.PathLike[str]]], mode: str, weights: str
) -> Path:
    """Where the ``mode``-quantized copy of ``src`` with ``weights`` (the int8 weight type, chosen by
    the CPU: see :mod:`._int8_weights`) lives in the cache (keyed by path, size, mtime, weights)."""
    st = src.stat()
    ident = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{mode}|{weights}|v5"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{src.parent.name}-{src.stem}-{key}-{mode}-{weights}.onnx"


CALIBRATION_TEXTS = (
    "The committee will review all applications and announce the results next month.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "In 1969, Apollo 11 landed the first humans on the Moon.",
    "best pizza near me open late",
    "Symptoms of vitamin D deficiency include fatigue, bone pain and muscle weakness.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "The stock market fell sharply on Monday after the central bank raised interest rates.",
    "She walked along the beach at sunset, listening to the waves and thinking about home.",
    "What are the side effects of ibuprofen?",
    "The boundary layer on a flat plate becomes turbulent at high Reynolds numbers; transition "
    "depends on free-stream turbulence, surface roughness and the pressure gradient.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Error: connection refused (errno 111) while contacting 10.0.0.12:5432",
    "Q: How many legs does a spider have? A: Eight.",
    "Machine learning models learn patterns from data and make predictions on new examples, "
    "but they can fail silently when the data they see in production drifts away from training.",
    "1984 is a dystopian novel by George Orwell published in 1949.",
    "x",
)
"""Sentences on which ``quantize='int8'`` calibrates activation ranges (not the parity sentences)."""

PARITY_TEXTS = (
    "What is the boiling point of water at sea level?",
    "The quick brown fox jumps over the lazy dog.",
    "experimental investigation of the aerodynamics of a wing in a slipstream",
    "Transformers compute contextual token representations with self-attention.",
    "how do I reset my password",
    "Paris is the capital and most populous city of France.",
    "a",
    "Retrieval funnels combine a fast first stage with an accurate re-ranker.",
)
"""Sentences on which a quantized model is compared with its float32 original."""


def resolve_quantize(quantize: Optional[str]) -> Optional[str]:
    """Validate a ``quantize=`` argument."""
    if quantize is None:
        return None
    if not isinstance(quantize, str) or quantize.lower() not in QUANTIZE_MODES:
        raise ModelError(f"quantize must be None or 'int8', got {quantize!r}")
    return quantize.lower()


def write_parity(path: Path, report: dict[str, float]) -> None:
    """Store a parity report beside a quantized model (best effort)."""
    try:
        path.with_suffix(".parity.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    except OSError:  # pragma: no cover - read-only cache: the report is only informative
        pass


def read_parity(path: Path) -> Optional[dict[str, float]]:
    """The parity report stored beside a quantized model, if any."""
    try:
        v = read_json(path.with_suffix(".parity.json"))
    except ModelError:
        return None
    return {str(k): float(x) for k, x in v.items()} if isinstance(v, dict) else None
