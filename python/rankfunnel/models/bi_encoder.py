"""Bi-encoder: sentence-transformers models exported to ONNX, run with onnxruntime + tokenizers."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from .._arrays import positive_int
from ._base import OnnxTextModel
from ._batching import Batch, check_texts, l2_normalize, length_sorted, pad_batch, progress
from ._errors import ModelError
from ._model_dir import read_json
from ._quantize_cache import PARITY_TEXTS
from ._tokenizer import pad_id

__all__ = ["POOLING_MODES", "BiEncoder", "pool"]

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")
"""Pooling modes, in the order sentence-transformers concatenates them when several are on."""

_CONFIG_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
_ALIASES = {
    "mean_tokens": "mean",
    "cls_token": "cls",
    "max_tokens": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
}
_KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")


def pool(
    hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64], modes: Sequence[str]
) -> npt.NDArray[np.float32]:
    """Pool token vectors into one vector per text, as sentence-transformers' ``Pooling`` does.

    Parameters
    ----------
    hidden : ndarray of float32, shape (b, L, d)
        Token vectors of a right-padded batch.
    mask : ndarray, shape (b, L)
        Attention mask (1 on real tokens, 0 on padding and tokens to ignore).
    modes : sequence of str
        Any of :data:`POOLING_MODES`; the results are concatenated in that order.

    Returns
    -------
    ndarray of float32, shape (b, d * len(modes))
    """
    m = mask.astype(np.float32)
    count = m.sum(1, keepdims=True)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[:, 0])
        elif mode == "max":
            out.append(np.where(m[:, :, None] > 0, hidden, np.float32(-1e9)).max(1))
        elif mode in ("mean", "mean_sqrt_len"):
            summed = np.einsum("bld,bl->bd", hidden, m)
            if mode == "mean":
                out.append(summed / np.maximum(count, np.float32(1e-9)))
            else:
                out.append(summed / np.sqrt(count))
        elif mode == "weightedmean":
            w = m * np.arange(1, m.shape[1] + 1, dtype=np.float32)[None, :]
            out.append(
                np.einsum("bld,bl->bd", hidden, w) / np.maximum(w.sum(1, keepdims=True), np.float32(1e-9))
            )
        elif mode == "lasttoken":
            last = np.maximum(mask.sum(1) - 1, 0).astype(np.int64)
            out.append(hidden[np.arange(hidden.shape[0]), last])
        else:
            raise ModelError(f"unknown pooling mode {mode!r}; expected one of {POOLING_MODES}")
    return np.ascontiguousarray(np.concatenate(out, axis=1), dtype=np.float32)


class BiEncoder(OnnxTextModel):
    """Encode texts into fixed-size vectors with a sentence-transformers model exported to ONNX.

    Reads the layout sentence-transformers saves: ``onnx/model.onnx`` (or ``model.onnx``),
    ``tokenizer.json``, ``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``),
    ``1_Pooling/config.json`` (cls / mean / max / mean_sqrt_len / weightedmean / lasttoken),
    ``modules.json`` (``Normalize``) and ``config_sentence_transformers.json`` (prompts).
    The padding and truncation stored in tokenizer.json are ignored: texts are truncated at
    ``max_seq_length`` and padded to the longest text of each batch.

    Parameters
    ----------
    model : str or path-like
        A model directory, or a Hugging Face repo id (needs ``huggingface_hub`` and network, or
        the repo in the local Hugging Face cache).
    threads : int, optional
        ONNX Runtime intra-op threads (default: every core this process may use).
    max_seq_length : int, optional
        Override the truncation length of sentence_bert_config.json.
    quantize : {None, 'int8'}, optional
        ``'int8'``: run a dynamically int8-quantized copy of the graph (made once, into
        ``cache_dir``; needs the ``onnx`` package). Its agreement with float32 is in
        :attr:`quantization_parity`.
    cache_dir : str or path-like, optional
        Where quantized graphs are kept (default ``$RANKFUNNEL_CACHE`` or ``~/.cache/rankfunnel``).
    onnx_file : str or path-like, optional
        A specific ONNX file (relative to the model directory or absolute).
    providers : sequence of str, optional
        ONNX Runtime execution providers (default ``["CPUExecutionProvider"]``).
    local_files_only : bool, default False
        For a repo id: never download, use the Hugging Face cache only.
    revision : str, optional
        For a repo id: the branch, tag or commit.

    Raises
    ------
    ModelFileNotFoundError
        The directory, its ONNX graph or its tokenizer.json does not exist.
    ModelError
        The model is a cross-encoder or a ColBERT model, uses modules this class cannot run,
        or a repo id cannot be fetched.
    MissingDependencyError
        onnxruntime / tokenizers (or, for a repo id, huggingface_hub) is not installed.

    Examples
    --------
    >>> enc = BiEncoder("models/all-MiniLM-L6-v2")          # doctest: +SKIP
    >>> enc.encode(["a sentence", "another one"]).shape      # doctest: +SKIP
    (2, 384)
    """

    _kind = "bi-encoder"

    def __init__(
        self,
        model: Any,
        *,
        threads: Optional[int] = None,
        max_seq_length: Optional[int] = None,
        quantize: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
        onnx_file: Optional[Union[str, os.PathLike[str]]] = None,
        providers: Optional[Sequence[str]] = None,
        local_files_only: bool = False,
        revision: Optional[str] = None,
    ) -> None:
        self._max_len_arg = (
            None if max_seq_length is None else positive_int(max_seq_length, "max_seq_length", ModelError)
        )
        super().__init__(
            model,
            threads=threads,
            quantize=quantize,
            cache_dir=cache_dir,
            onnx_file=onnx_file,
            providers=providers,
            local_files_only=local_files_only,
            revision=revision,
        )

    # -- configuration -------------------------------------------------------------------------

    def _apply_config(self) -> None:
        md = self._md
        if md.is_colbert():
            raise ModelError(
                f"{md.path} is a ColBERT (PyLate) model, not a bi-encoder; use rankfunnel.ColBERTEncoder"
            )
        if md.is_sequence_classifier():
            raise ModelError(
                f"{md.path} is a cross-encoder (config.json architectures: {md.config.get('architectures')}), "
                "not a bi-encoder; use rankfunnel.CrossEncoder"
            )
        sb = md.sbert_config
        if self._max_len_arg is not None:
            self.max_seq_length: int = self._max_len_arg
        elif isinstance(sb.get("max_seq_length"), int):
            self.max_seq_length = positive_int(
                sb["max_seq_length"], "max_seq_length of sentence_bert_config.json", ModelError
            )
        else:
            self.max_seq_length = md.model_max_length() or 512
        self.do_lower_case: bool = bool(sb.get("do_lower_case", False))
        types = md.module_types()
        self.normalize: bool = any(t.endswith("Normalize") for t in types)
        """Whether :meth:`encode` L2-normalizes by default (modules.json has ``Normalize``)."""
        self._unknown_modules = [t for t in types if not t.endswith(_KNOWN_MODULES)]
        prompts = md.st_config.get("prompts") or {}
        self.prompts: dict[str, str] = (
            {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}
        )
        """Named prompts of config_sentence_transformers.json (e.g. ``{"query": "query: "}``)."""
        default = md.st_config.get("default_prompt_name")
        self.default_prompt_name: Optional[str] = default if isinstance(default, str) else None
        pool_dir = md.module_path("Pooling")
        if pool_dir is None and (md.path / "1_Pooling").is_dir():
            pool_dir = md.path / "1_Pooling"
        cfg = read_json(pool_dir / "config.json") if pool_dir is not None else None
        self.pooling: tuple[str, ...] = self._pooling_modes(cfg)
        """Pooling modes (see :data:`POOLING_MODES`); mean when the model has no Pooling config."""
        self._include_prompt = bool(cfg.get("include_prompt", True)) if isinstance(cfg, dict) else True

    @staticmethod
    def _pooling_modes(cfg: Any) -> tuple[str, ...]:
        if not isinstance(cfg, dict):
            return ("mean",)
        mode = cfg.get("pooling_mode")
        if isinstance(mode, str):
            name = _ALIASES.get(mode, mode)
            if name not in POOLING_MODES:
                raise ModelError(f"unsupported pooling_mode {mode!r} in 1_Pooling/config.json")
            return (name,)
        modes = tuple(m for m in POOLING_MODES if cfg.get(_CONFIG_KEYS[m]))
        if not modes:
            raise ModelError("1_Pooling/config.json enables no pooling mode")
        return modes

    def _check_kind(self) -> None:
        onnx = self._onnx
        pooled = onnx.output("sentence_embedding")
        tokens = onnx.output("token_embeddings", "last_hidden_state")
        if tokens is None and pooled is None:
            first = next(iter(onnx.outputs))
            if first == "logits" or onnx.output_rank(first) == 2:
                raise ModelError(
                    f"{onnx.path} outputs {first!r} (one row per text): a cross-encoder / classifier, "
                    "not a bi-encoder; use rankfunnel.CrossEncoder"
                )
            tokens = first
        if tokens is not None and onnx.output_rank(tokens) not in (3, -1):
            raise ModelError(f"{onnx.path} output {tokens!r} is not (batch, tokens, dim)")
        if tokens is not None and self._unknown_modules and pooled is None:
            raise ModelError(
                f"modules.json of {self.model_dir} has modules this class does not run "
                f"({', '.join(self._unknown_modules)}); export them into the ONNX graph with a "
                "'sentence_embedding' output"
            )
        # A graph that already pools (sentence_embedding) is used as is; else pool token vectors.
        self._output = pooled if pooled is not None else str(tokens)
        self._pooled_output = pooled is not None
        self._pad = pad_id(self.tokenizer, self._md)
        self.tokenizer.enable_truncation(self.max_seq_length, strategy="longest_first")
        d = onnx.output_dim(self._output)
        self._dim: Optional[int] = (
            None if d is None else d * (1 if self._pooled_output else len(self.pooling))
        )

    # -- encoding ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Length of the vectors :meth:`encode` returns."""
        if self._dim is None:
            self._dim = int(self.encode(["dim"]).shape[1])
        return self._dim

    def _prompt(self, prompt_name: Optional[str], prompt: Optional[str]) -> str:
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ModelError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ModelError(f"unknown prompt_name {name!r}; this model defines {sorted(self.prompts)}")
        return self.prompts[name]

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        normalize: Optional[bool] = None,
        show_progress: bool = False,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
    ) -> npt.NDArray[np.float32]:
        """Encode texts into one vector each.

        Texts are tokenized once, sorted by token length and batched with texts of similar
        length (little padding); the output keeps the input order. Results do not depend on
        ``batch_size`` or on the other texts of the call (up to float rounding, ~1e-7).

        Parameters
        ----------
        texts : sequence of str
            The texts. An empty sequence gives a ``(0, dim)`` array.
        batch_size : int, default 32
            Texts per ONNX Runtime call at most; long ones go fewer to a call, up to 512 padded tokens
            (``rankfunnel.models._batching.MAX_BATCH_TOKENS``).
        normalize : bool, optional
            L2-normalize the vectors; default: what modules.json says (``Normalize``).
        show_progress : bool, default False
            Report progress on stderr.
        prompt_name : str, optional
            A prompt of config_sentence_transformers.json (e.g. ``"query"``), prepended to each
            text; default: the config's ``default_prompt_name`` if any.
        prompt : str, optional
            A literal prompt to prepend (overrides ``prompt_name``).

        Returns
        -------
        ndarray of float32, shape (len(texts), dim)

        Raises
        ------
        ModelError
            ``texts`` is not a sequence of str, ``batch_size`` is not a positive int, or the
            prompt name is unknown.
        """
        items = check_texts(texts)
        bs = positive_int(batch_size, "batch_size", ModelError)
        if normalize is not None and not isinstance(normalize, (bool, np.bool_)):
            raise ModelError(f"normalize must be None or a bool, got {type(normalize).__name__}")
        norm = self.normalize if normalize is None else bool(normalize)
        pre = self._prompt(prompt_name, prompt)
        # As sentence-transformers: prompt, then strip, then (do_lower_case) lower-case.
        items = [(pre + t).strip() for t in items]
        if self.do_lower_case:
            items = [t.lower() for t in items]
        skip = 0
        if pre and not self._include_prompt:
            skip = len(self.tokenizer.encode(pre.strip()).ids) - 1  # prompt tokens incl. [CLS], not [SEP]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(items)
        out: Optional[npt.NDArray[np.float32]] = None
        for index in progress(length_sorted(encodings, bs), show_progress, "encode"):
            vecs = self._encode_batch(pad_batch(encodings, index, self._pad), skip)
            if out is None:
                out = np.empty((len(items), vecs.shape[1]), dtype=np.float32)
            out[index] = vecs
        assert out is not None
        self._dim = out.shape[1]
        return l2_normalize(out) if norm else out

    def _encode_batch(self, batch: Batch, skip: int) -> npt.NDArray[np.float32]:
        out = self._onnx.run(self._output, batch)
        if self._pooled_output:
            return out
        mask = batch.attention_mask
        if skip:
            mask = mask.copy()
            mask[:, :skip] = 0
        return pool(out, mask, self.pooling)

    def encode_queries(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        normalize: Optional[bool] = None,
        show_progress: bool = False,
    ) -> npt.NDArray[np.float32]:
        """:meth:`encode` with the model's ``"query"`` prompt (none if the config has none)."""
        name = "query" if "query" in self.prompts else None
        return self.encode(
            texts, batch_size, normalize, show_progress, prompt_name=name, prompt=None if name else ""
        )

    def encode_documents(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        normalize: Optional[bool] = None,
        show_progress: bool = False,
    ) -> npt.NDArray[np.float32]:
        """:meth:`encode` with the model's ``"document"`` (or ``"passage"``) prompt, if any."""
        name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(
            texts, batch_size, normalize, show_progress, prompt_name=name, prompt=None if name else ""
        )

    def _parity_vectors(self, texts: Sequence[str] = PARITY_TEXTS) -> npt.NDArray[np.float32]:
        return self.encode(list(texts), normalize=False)
