"""ColBERT (late interaction) encoder for PyLate models exported to ONNX."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from .._arrays import positive_int
from ._base import OnnxTextModel
from ._batching import check_texts, l2_normalize, length_sorted, pad_batch, progress
from ._errors import ModelError
from ._quantize_cache import PARITY_TEXTS
from ._tokenizer import copy_tokenizer, pad_id, token_id

__all__ = ["ColBERTEncoder"]


class ColBERTEncoder(OnnxTextModel):
    """Encode queries and documents into per-token vectors with a PyLate ColBERT model in ONNX.

    The ONNX graph must output the projected token vectors (the Dense layer folded in, as
    ``rankfunnel export --kind colbert`` writes it). Settings come from PyLate's
    ``config_sentence_transformers.json``: ``query_prefix`` / ``document_prefix``,
    ``query_length`` / ``document_length``, ``do_query_expansion``,
    ``attend_to_expansion_tokens`` and ``skiplist_words``.

    - Query: ``[CLS] [Q] tokens… [SEP]`` truncated to ``query_length``, then (query expansion)
      padded with ``[MASK]`` up to ``query_length``; the mask tokens get attention 0 unless
      ``attend_to_expansion_tokens``, and their vectors are kept. Every query gives exactly
      ``query_length`` vectors.
    - Document: ``[CLS] [D] tokens… [SEP]`` truncated to ``document_length``; vectors of
      skiplist tokens (punctuation) are dropped.
    - Every vector is L2-normalized.

    Parameters
    ----------
    model : str or path-like
        A model directory or a Hugging Face repo id.
    query_length, document_length : int, optional
        Override the config's lengths.
    threads, quantize, cache_dir, onnx_file, providers, local_files_only, revision
        As for :class:`~rankfunnel.models.BiEncoder`.

    Raises
    ------
    ModelFileNotFoundError
        The directory, its ONNX graph or its tokenizer.json does not exist.
    ModelError
        The directory holds no PyLate ColBERT config (a bi- or cross-encoder), or the graph does
        not output token vectors.
    """

    _kind = "ColBERT"

    def __init__(
        self,
        model: Any,
        *,
        query_length: Optional[int] = None,
        document_length: Optional[int] = None,
        threads: Optional[int] = None,
        quantize: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
        onnx_file: Optional[Union[str, os.PathLike[str]]] = None,
        providers: Optional[Sequence[str]] = None,
        local_files_only: bool = False,
        revision: Optional[str] = None,
    ) -> None:
        self._qlen_arg = (
            None if query_length is None else positive_int(query_length, "query_length", ModelError)
        )
        self._dlen_arg = (
            None if document_length is None else positive_int(document_length, "document_length", ModelError)
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

    def _apply_config(self) -> None:
        md = self._md
        cfg = md.st_config
        if not md.is_colbert():
            what = "a cross-encoder" if md.is_sequence_classifier() else "probably a bi-encoder"
            raise ModelError(
                f"{md.path} is not a PyLate ColBERT model (config_sentence_transformers.json has no "
                f"model_type 'ColBERT'); it is {what}: use rankfunnel.BiEncoder or rankfunnel.CrossEncoder"
            )

        def length(arg: Optional[int], key: str, default: int) -> int:
            if arg is not None:
                return arg
            v = cfg.get(key, default)
            return positive_int(v, f"{key} of config_sentence_transformers.json", ModelError)

        self.query_length: int = length(self._qlen_arg, "query_length", 32)
        self.document_length: int = length(self._dlen_arg, "document_length", 180)
        self.query_prefix: str = str(cfg.get("query_prefix", "[Q] "))
        self.document_prefix: str = str(cfg.get("document_prefix", "[D] "))
        self.do_query_expansion: bool = bool(cfg.get("do_query_expansion", True))
        self.attend_to_expansion_tokens: bool = bool(cfg.get("attend_to_expansion_tokens", False))
        words = cfg.get("skiplist_words") or []
        self.skiplist_words: list[str] = [str(w) for w in words] if isinstance(words, list) else []

    def _check_kind(self) -> None:
        onnx = self._onnx
        name = onnx.output("token_embeddings", "last_hidden_state") or next(iter(onnx.outputs))
        if onnx.output_rank(name) not in (3, -1):
            raise ModelError(f"{onnx.path} output {name!r} is not per-token vectors (batch, tokens, dim)")
        self._output = name
        tok = self.tokenizer
        self._mask_id = token_id(tok, "[MASK]", "query expansion") if self.do_query_expansion else None
        self._pad = pad_id(tok, self._md)
        # Like PyLate (tokenizer.convert_tokens_to_ids): a word missing from the vocabulary maps to
        # the unknown token, which is then skipped too.
        unk = tok.token_to_id(str(self._md.tokenizer_config.get("unk_token", "[UNK]")))
        ids = {tok.token_to_id(w) for w in self.skiplist_words}
        if None in ids:
            ids.discard(None)
            if unk is not None:
                ids.add(unk)
        self._skip_ids = np.array(sorted(int(i) for i in ids if i is not None), dtype=np.int64)
        self._qtok = copy_tokenizer(tok)
        self._qtok.enable_truncation(self.query_length, strategy="longest_first")
        self._dtok = copy_tokenizer(tok)
        self._dtok.enable_truncation(self.document_length, strategy="longest_first")
        self.dim: Optional[int] = onnx.output_dim(name)
        """Length of each token vector (``None`` until known when the graph does not say)."""

    def encode_queries(
        self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False
    ) -> list[npt.NDArray[np.float32]]:
        """Encode queries into ``query_length`` token vectors each (with query expansion).

        Parameters
        ----------
        texts : sequence of str
            The queries; an empty sequence gives ``[]``.
        batch_size : int, default 32
            Queries per ONNX Runtime call at most; long ones go fewer to a call, up to 512 padded tokens
            (``rankfunnel.models._batching.MAX_BATCH_TOKENS``).
        show_progress : bool, default False
            Report progress on stderr.

        Returns
        -------
        list of ndarray of float32, shape (query_length, dim)
            In input order. Without query expansion (``do_query_expansion`` false) each query
            has as many vectors as tokens.
        """
        items = check_texts(texts)
        bs = positive_int(batch_size, "batch_size", ModelError)
        if not items:
            return []
        encodings = self._qtok.encode_batch([self.query_prefix + t for t in items])
        out: list[npt.NDArray[np.float32]] = [np.empty(0, np.float32)] * len(items)
        for index in progress(length_sorted(encodings, bs), show_progress, "encode_queries"):
            if self._mask_id is not None:
                batch = pad_batch(encodings, index, self._mask_id, length=self.query_length)
                real = batch.attention_mask
                if self.attend_to_expansion_tokens:
                    batch.attention_mask = np.ones_like(real)
                vecs = l2_normalize(self._onnx.run(self._output, batch))
                for row, i in enumerate(index):
                    out[int(i)] = np.ascontiguousarray(vecs[row])
            else:
                batch = pad_batch(encodings, index, self._pad)
                vecs = l2_normalize(self._onnx.run(self._output, batch))
                keep = batch.attention_mask.astype(bool)
                for row, i in enumerate(index):
                    out[int(i)] = np.ascontiguousarray(vecs[row][keep[row]])
        return out

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False
    ) -> list[npt.NDArray[np.float32]]:
        """Encode documents into one vector per kept token.

        Parameters
        ----------
        texts : sequence of str
            The documents; an empty sequence gives ``[]``.
        batch_size : int, default 32
            Documents per ONNX Runtime call at most; long ones go fewer to a call, up to 512 padded tokens
            (``rankfunnel.models._batching.MAX_BATCH_TOKENS``).
        show_progress : bool, default False
            Report progress on stderr.

        Returns
        -------
        list of ndarray of float32, shape (n_i, dim)
            In input order; padding and skiplist tokens are dropped.
        """
        items = check_texts(texts)
        bs = positive_int(batch_size, "batch_size", ModelError)
        if not items:
            return []
        encodings = self._dtok.encode_batch([self.document_prefix + t for t in items])
        out: list[npt.NDArray[np.float32]] = [np.empty(0, np.float32)] * len(items)
        for index in progress(length_sorted(encodings, bs), show_progress, "encode_documents"):
            batch = pad_batch(encodings, index, self._pad)
            vecs = l2_normalize(self._onnx.run(self._output, batch))
            keep = batch.attention_mask.astype(bool) & ~np.isin(batch.input_ids, self._skip_ids)
            counts = keep.sum(1)
            flat = vecs[keep]  # one gather for the batch, then views per document
            for row, part in enumerate(np.split(flat, np.cumsum(counts)[:-1])):
                out[int(index[row])] = part
            if self.dim is None:
                self.dim = int(vecs.shape[2])
        return out

    def _parity_vectors(self, texts: Sequence[str] = PARITY_TEXTS) -> npt.NDArray[np.float32]:
        return np.concatenate(self.encode_documents(list(texts)), axis=0)
