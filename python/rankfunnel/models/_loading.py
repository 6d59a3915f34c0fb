"""Model directory resolution, config reading, tokenizers and ONNX Runtime sessions.

Everything here is shared by the bi-encoder, cross-encoder and ColBERT wrappers. Nothing in this
module touches the network unless a Hugging Face repo id is given, ``huggingface_hub`` is
installed, the id is not in the local cache, and neither ``local_files_only=True`` nor
``HF_HUB_OFFLINE=1`` forbids downloading.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import numpy.typing as npt

from .. import _core
from ._errors import MissingDependencyError, ModelError, ModelFileNotFoundError

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Encoding, Tokenizer

ModelSource = Union[str, "os.PathLike[str]"]
"""A local model directory or a Hugging Face repo id."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$")
_HUB_PATTERNS = ["*.json", "*.txt", "onnx/model.onnx", "model.onnx", "1_Pooling/*", "1_Dense/config.json"]
_TRUE = {"1", "ON", "YES", "TRUE"}
ONNX_CANDIDATES = ("onnx/model.onnx", "model.onnx")
QUANTIZE_MODES = ("int8",)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an ``int >= 1`` or raise :class:`ModelError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ModelError(f"{name} must be a positive integer, got {type(value).__name__}")
    if int(value) < 1:
        raise ModelError(f"{name} must be at least 1, got {int(value)}")
    return int(value)


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of str, or raise :class:`ModelError` naming the bad entry."""
    if texts is None:
        raise ModelError(f"{name} is None; expected a list of strings")
    if isinstance(texts, str):
        raise ModelError(f"{name} must be a list of strings, not a single str (wrap it: [text])")
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise ModelError(f"{name} must be a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ModelError(f"{name}[{i}] is {type(t).__name__}, expected str")
    return out


def default_threads() -> int:
    """Threads a model uses when none are given: ``RANKFUNNEL_NUM_THREADS``, else every core.

    The same rule as the core's indexes (:func:`rankfunnel.default_threads`).
    """
    return int(_core.default_threads())


# --------------------------------------------------------------------------------------------
# Model directory
# --------------------------------------------------------------------------------------------


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


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """Load ``tokenizer.json`` with padding and truncation switched off (callers set their own)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError(
            "rankfunnel models need the tokenizers package: pip install 'rankfunnel[models]'"
        ) from None
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ModelFileNotFoundError(
            f"no tokenizer.json in {model_dir}; save it with transformers "
            "(AutoTokenizer.from_pretrained(...).save_pretrained(dir), a fast tokenizer)"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the Rust error type is not exported
        raise ModelError(f"cannot read {path}: {exc}") from exc
    # The file may carry the fixed padding/truncation of its export: never trust them.
    tok.no_padding()
    tok.no_truncation()
    return tok


def copy_tokenizer(tok: Tokenizer) -> Tokenizer:
    """An independent copy of ``tok`` (so that two truncation settings can coexist)."""
    from tokenizers import Tokenizer

    out = Tokenizer.from_str(tok.to_str())
    out.no_padding()
    out.no_truncation()
    return out


def token_id(tok: Tokenizer, token: str, what: str) -> int:
    """The id of ``token`` in the vocabulary, or :class:`ModelError` naming ``what`` it is for."""
    i = tok.token_to_id(token)
    if i is None:
        raise ModelError(f"the tokenizer has no {token!r} token ({what})")
    return int(i)


def pad_id(tok: Tokenizer, md: ModelDir) -> int:
    """The id used to pad batches (``pad_token`` of tokenizer_config.json, else [PAD], else 0)."""
    name = md.tokenizer_config.get("pad_token")
    if isinstance(name, dict):
        name = name.get("content")
    for cand in (name, "[PAD]", "<pad>"):
        if isinstance(cand, str):
            i = tok.token_to_id(cand)
            if i is not None:
                return int(i)
    return 0


# --------------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------------


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
        opts.intra_op_num_threads = default_threads() if threads is None else positive_int(threads, "threads")
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = path
        self.threads: int = opts.intra_op_num_threads
        from ._graph import optimized_model_bytes

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


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A padded batch of tokenized texts.

    Attributes
    ----------
    index : ndarray of int64, shape (b,)
        The positions of these texts in the caller's list.
    input_ids, attention_mask, token_type_ids : ndarray of int64, shape (b, L)
        Model inputs, right-padded.
    """

    index: npt.NDArray[np.int64]
    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64]


def pad_batch(
    encodings: Sequence[Encoding],
    index: npt.NDArray[np.int64],
    pad: int,
    length: Optional[int] = None,
) -> Batch:
    """Right-pad ``encodings[i] for i in index`` to the longest of them (or to ``length``).

    The padding tokens get attention mask 0 and token type 0. No Python loop over tokens: the
    token ids are concatenated once and scattered through a boolean mask.
    """
    encs = [encodings[int(i)] for i in index]
    lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    width = int(lens.max(initial=0)) if length is None else max(length, int(lens.max(initial=0)))
    width = max(width, 1)
    mask = np.arange(width)[None, :] < lens[:, None]
    total = int(lens.sum())
    ids = np.full((len(encs), width), pad, dtype=np.int64)
    types = np.zeros((len(encs), width), dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=total)
    types[mask] = np.fromiter(
        itertools.chain.from_iterable(e.type_ids for e in encs), dtype=np.int64, count=total
    )
    return Batch(index=index, input_ids=ids, attention_mask=mask.astype(np.int64), token_type_ids=types)


def length_sorted(encodings: Sequence[Encoding], batch_size: int) -> list[npt.NDArray[np.int64]]:
    """Split ``range(len(encodings))`` into batches of similar token length, longest first.

    Sorting by length keeps padding (wasted compute) small; the stable sort keeps equal lengths
    in input order, so the result does not depend on anything but the texts.
    """
    lens = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    order = np.argsort(-lens, kind="stable").astype(np.int64)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def progress(batches: list[npt.NDArray[np.int64]], show: bool, what: str) -> Iterator[npt.NDArray[np.int64]]:
    """Yield ``batches``; with ``show``, report progress on stderr (tqdm when installed)."""
    if not show:
        yield from batches
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        total = sum(len(b) for b in batches)
        done = 0
        start = time.perf_counter()
        for b in batches:
            yield b
            done += len(b)
            rate = done / max(time.perf_counter() - start, 1e-9)
            print(f"\r{what}: {done}/{total} ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        return
    with tqdm(total=sum(len(b) for b in batches), desc=what, unit="text") as bar:
        for b in batches:
            yield b
            bar.update(len(b))


def l2_normalize(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Divide each row (last axis) by its L2 norm, as torch ``F.normalize`` (eps 1e-12)."""
    norm = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    return np.asarray(x / np.maximum(norm, np.float32(1e-12)), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Dynamic int8 quantization
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$RANKFUNNEL_CACHE``, else ``$XDG_CACHE_HOME/rankfunnel``, else ``~/.cache/rankfunnel``."""
    env = os.environ.get("RANKFUNNEL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rankfunnel"


def quantized_path(src: Path, cache_dir: Optional[Union[str, os.PathLike[str]]], mode: str) -> Path:
    """Where the ``mode``-quantized copy of ``src`` lives in the cache (keyed by path, size, mtime)."""
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{mode}|v4".encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{src.parent.name}-{src.stem}-{key}-{mode}.onnx"


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
