"""Cross-encoder: a sequence classifier scoring (query, document) pairs, run with onnxruntime."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from .._arrays import positive_int
from ._base import OnnxTextModel
from ._batching import check_text, check_texts, length_sorted, pad_batch, progress
from ._errors import ModelError
from ._quantize_cache import PARITY_TEXTS
from ._tokenizer import pad_id

__all__ = ["ACTIVATIONS", "CrossEncoder"]

Activation = Union[str, Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]]


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(1.0 / (1.0 + np.exp(-x.astype(np.float64))), dtype=np.float32)


def _softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    z = x.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True), dtype=np.float32)


def _identity(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return x


def _tanh(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.tanh(x).astype(np.float32)


ACTIVATIONS: dict[str, Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]] = {
    "identity": _identity,
    "sigmoid": _sigmoid,
    "softmax": _softmax,
    "tanh": _tanh,
}
"""Activations by name (the last part of a torch class name, lower case, also accepted)."""


def _activation_name(value: Any) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return None
    name = value.rsplit(".", 1)[-1].lower()
    return name if name in ACTIVATIONS else None


class CrossEncoder(OnnxTextModel):
    """Score (query, document) pairs with a cross-encoder (``*ForSequenceClassification``) in ONNX.

    Pairs are encoded as the tokenizer's pair template (``[CLS] query [SEP] document [SEP]``,
    token types 0 / 1), truncated ``longest_first`` to ``max_length``, padded per batch.

    Parameters
    ----------
    model : str or path-like
        A model directory (``onnx/model.onnx`` or ``model.onnx``, ``tokenizer.json``,
        ``config.json``) or a Hugging Face repo id.
    max_length : int, optional
        Truncation length of a pair; default: ``max_seq_length`` of sentence_bert_config.json,
        else ``max_length`` in the ``sentence_transformers`` block of config.json, else
        min(tokenizer ``model_max_length``, ``max_position_embeddings``), else 512.
    activation : str or callable, optional
        Applied to the logits by :meth:`predict`: ``"identity"``, ``"sigmoid"``, ``"softmax"``,
        ``"tanh"`` or a function of an array. Default: what config.json says
        (``sentence_transformers.activation_fn`` or ``sbert_ce_default_activation_function``),
        else identity (raw logits).
    threads, quantize, cache_dir, onnx_file, providers, local_files_only, revision
        As for :class:`~rankfunnel.models.BiEncoder`.

    Raises
    ------
    ModelFileNotFoundError
        The directory, its ONNX graph or its tokenizer.json does not exist.
    ModelError
        The model does not output one row of logits per pair (a bi-encoder or ColBERT model).
    """

    _kind = "cross-encoder"

    def __init__(
        self,
        model: Any,
        *,
        max_length: Optional[int] = None,
        activation: Optional[Activation] = None,
        threads: Optional[int] = None,
        quantize: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
        onnx_file: Optional[Union[str, os.PathLike[str]]] = None,
        providers: Optional[Sequence[str]] = None,
        local_files_only: bool = False,
        revision: Optional[str] = None,
    ) -> None:
        self._max_len_arg = None if max_length is None else positive_int(max_length, "max_length", ModelError)
        self._activation_arg = activation
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

    def _apply_config(self) -> None:
        md = self._md
        if md.is_colbert():
            raise ModelError(
                f"{md.path} is a ColBERT (PyLate) model, not a cross-encoder; use ColBERTEncoder"
            )
        st = md.config.get("sentence_transformers")
        st = st if isinstance(st, dict) else {}
        if self._max_len_arg is not None:
            self.max_length: int = self._max_len_arg
        elif isinstance(md.sbert_config.get("max_seq_length"), int):
            self.max_length = positive_int(md.sbert_config["max_seq_length"], "max_seq_length", ModelError)
        elif isinstance(st.get("max_length"), int):
            self.max_length = positive_int(st["max_length"], "max_length", ModelError)
        else:
            self.max_length = md.model_max_length() or 512
        act = self._activation_arg
        if act is None:
            for raw in (st.get("activation_fn"), md.config.get("sbert_ce_default_activation_function")):
                if raw is not None:
                    act = _activation_name(raw)
                    if act is None:
                        raise ModelError(f"unsupported cross-encoder activation {raw!r} in config.json")
                    break
        self.activation_fn = self._resolve_activation(act)
        """The function :meth:`predict` applies to the logits by default."""

    @staticmethod
    def _resolve_activation(
        act: Optional[Activation],
    ) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
        if act is None:
            return _identity
        if callable(act):
            return act
        name = _activation_name(act)
        if name is None:
            raise ModelError(
                f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)} or a callable"
            )
        return ACTIVATIONS[name]

    def _check_kind(self) -> None:
        onnx = self._onnx
        name = onnx.output("logits") or next(iter(onnx.outputs))
        rank = onnx.output_rank(name)
        if rank == 3 or name in ("last_hidden_state", "token_embeddings", "sentence_embedding"):
            raise ModelError(
                f"{onnx.path} outputs {name!r} (vectors, not pair scores): a bi-encoder, not a cross-encoder; "
                "use rankfunnel.BiEncoder"
            )
        if rank not in (2, -1):
            raise ModelError(f"{onnx.path} output {name!r} is not (batch, labels)")
        self._output = name
        self.num_labels: int = onnx.output_dim(name) or 1
        """Logits per pair (1 for a relevance model)."""
        self._pad = pad_id(self.tokenizer, self._md)
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")

    @staticmethod
    def _check_pairs(pairs: Any) -> list[tuple[str, str]]:
        if pairs is None or isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
            raise ModelError(f"pairs must be a list of (query, document) pairs, got {type(pairs).__name__}")
        out = []
        for i, p in enumerate(pairs):
            if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 2:
                raise ModelError(f"pairs[{i}] must be a (query, document) pair of str, got {p!r:.80}")
            q, d = p[0], p[1]
            if not isinstance(q, str) or not isinstance(d, str):
                raise ModelError(
                    f"pairs[{i}] must hold two str, got ({type(q).__name__}, {type(d).__name__})"
                )
            q, d = check_text(q, f"pairs[{i}][0]"), check_text(d, f"pairs[{i}][1]")
            out.append((q.strip(), d.strip()))  # as sentence-transformers does
        return out

    def predict(
        self,
        pairs: Sequence[tuple[str, str]],
        batch_size: int = 32,
        activation: Optional[Activation] = None,
        show_progress: bool = False,
    ) -> npt.NDArray[np.float32]:
        """Score pairs.

        Parameters
        ----------
        pairs : sequence of (str, str)
            (query, document) pairs. An empty sequence gives an empty array.
        batch_size : int, default 32
            Pairs per ONNX Runtime call at most; long ones go fewer to a call, up to 512 padded tokens
            (``rankfunnel.models._batching.MAX_BATCH_TOKENS``).
        activation : str or callable, optional
            Override the model's activation for this call (``"identity"`` for raw logits).
        show_progress : bool, default False
            Report progress on stderr.

        Returns
        -------
        ndarray of float32
            Shape ``(n,)`` for a one-label model, else ``(n, num_labels)``.

        Raises
        ------
        ModelError
            A pair is not two str, or ``batch_size`` is not a positive int.
        """
        items = self._check_pairs(pairs)
        bs = positive_int(batch_size, "batch_size", ModelError)
        fn = self.activation_fn if activation is None else self._resolve_activation(activation)
        logits = np.zeros((len(items), self.num_labels), dtype=np.float32)
        if items:
            encodings = self.tokenizer.encode_batch(items)
            for index in progress(length_sorted(encodings, bs), show_progress, "predict"):
                logits[index] = self._onnx.run(self._output, pad_batch(encodings, index, self._pad))
        scores = np.asarray(fn(logits), dtype=np.float32)
        return np.ascontiguousarray(scores[:, 0] if self.num_labels == 1 and scores.ndim == 2 else scores)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: Optional[int] = 10,
        batch_size: int = 32,
        return_documents: bool = False,
        activation: Optional[Activation] = None,
    ) -> list[dict[str, Any]]:
        """Re-rank ``documents`` for ``query``, best first.

        Parameters
        ----------
        query : str
            The query.
        documents : sequence of str
            Candidate documents.
        top_k : int or None, default 10
            How many results to return (``None``: all).
        batch_size : int, default 32
            Pairs per ONNX Runtime call at most; long ones go fewer to a call, up to 512 padded tokens
            (``rankfunnel.models._batching.MAX_BATCH_TOKENS``).
        return_documents : bool, default False
            Add each document's text under ``"text"``.
        activation : str or callable, optional
            As for :meth:`predict`.

        Returns
        -------
        list of dict
            ``{"corpus_id": int, "score": float}`` (index into ``documents`` and score), sorted by
            decreasing score; ties keep the documents' order.

        Raises
        ------
        ModelError
            ``query`` is not a str, ``documents`` not a sequence of str, or the model has several labels.
        """
        if not isinstance(query, str):
            raise ModelError(f"query must be a str, got {type(query).__name__}")
        query = check_text(query, "query")
        docs = check_texts(documents, "documents")
        k = len(docs) if top_k is None else positive_int(top_k, "top_k", ModelError)
        if self.num_labels != 1:
            raise ModelError(
                f"rank needs a one-label model; this one has {self.num_labels} labels (use predict)"
            )
        scores = self.predict([(query, d) for d in docs], batch_size=batch_size, activation=activation)
        order = np.argsort(-scores, kind="stable")[:k]
        hits: list[dict[str, Any]] = []
        for i in order:
            hit: dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                hit["text"] = docs[int(i)]
            hits.append(hit)
        return hits

    def _parity_vectors(self, texts: Sequence[str] = PARITY_TEXTS) -> npt.NDArray[np.float32]:
        pairs = [(texts[0], t) for t in texts]
        return self.predict(pairs, activation="identity").reshape(len(pairs), -1)
