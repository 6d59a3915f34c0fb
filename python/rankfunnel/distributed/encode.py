"""Encode a Ray Dataset with a bi-encoder or ColBERT model, one model per actor.

:func:`encode_dataset` adds an embedding column to a dataset with ``map_batches`` over an actor
pool: each actor opens the ONNX model once (:class:`Encode`) and encodes the batches it is given.
:func:`read_corpus_dataset` turns any corpus rankfunnel reads into a dataset with the columns
the shard builder takes; ``ray.data.read_json`` / ``read_parquet`` read files too large for one
machine (their rows need ``id`` and ``text`` columns).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .._arrays import positive_int
from ..errors import RankfunnelError
from ._ray import ray

PathLike = Union[str, "os.PathLike[str]"]
KINDS = ("bi", "colbert")


def model_spec(
    model: Any, kind: Optional[str] = None, quantize: Optional[str] = None
) -> tuple[str, str, Any]:
    """``(path, kind, quantize)`` of a model given as a folder or an open model object."""
    from ..models import BiEncoder, ColBERTEncoder

    if isinstance(model, (BiEncoder, ColBERTEncoder)):
        found = "colbert" if isinstance(model, ColBERTEncoder) else "bi"
        if kind is not None and kind != found:
            raise RankfunnelError(f"kind={kind!r} but the model is a {type(model).__name__}")
        return str(Path(model.model_dir).resolve()), found, quantize or getattr(model, "quantize", None)
    if not isinstance(model, (str, os.PathLike)):
        raise RankfunnelError(
            f"model must be a model folder or a BiEncoder / ColBERTEncoder, got {type(model).__name__}"
        )
    kind = kind or "bi"
    if kind not in KINDS:
        raise RankfunnelError(f"kind must be one of {KINDS}, got {kind!r}")
    return str(Path(model).resolve()), kind, quantize


def open_encoder(path: str, kind: str, quantize: Optional[str], threads: Optional[int] = None) -> Any:
    """Open the model of :func:`model_spec` (in whichever process runs this)."""
    from ..models import BiEncoder, ColBERTEncoder

    cls = ColBERTEncoder if kind == "colbert" else BiEncoder
    return cls(path, quantize=quantize, threads=threads)


class Encode:
    """The ``map_batches`` callable: opens the model once per actor, then encodes batches.

    Parameters
    ----------
    path, kind, quantize :
        The model (see :func:`model_spec`).
    text_column, column : str
        Input texts and the output column.
    batch_size : int
        The model's own batch size inside a Ray batch.
    threads : int, optional
        ONNX Runtime threads of this actor.
    """

    def __init__(
        self,
        path: str,
        kind: str,
        quantize: Optional[str],
        text_column: str,
        column: str,
        batch_size: int,
        threads: Optional[int],
    ) -> None:
        self.model = open_encoder(path, kind, quantize, threads)
        self.kind, self.text_column, self.column, self.batch_size = kind, text_column, column, batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with the embedding column added (``(n, dim)`` float32, or one
        ``(tokens, dim)`` array per row for ColBERT)."""
        texts = [str(t) for t in batch[self.text_column]]
        out = dict(batch)
        if self.kind == "colbert":
            toks = self.model.encode_documents(texts, batch_size=self.batch_size)
            col = np.empty(len(toks), dtype=object)
            col[:] = toks
            out[self.column] = col
        else:
            out[self.column] = self.model.encode(texts, batch_size=self.batch_size)
        return out


def encode_dataset(
    ds: Any,
    model: Any,
    *,
    kind: Optional[str] = None,
    text_column: str = "text",
    column: str = "embedding",
    quantize: Optional[str] = None,
    batch_size: int = 1024,
    model_batch_size: int = 32,
    concurrency: Union[int, tuple[int, int]] = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    threads: Optional[int] = None,
    **ray_remote_args: Any,
) -> Any:
    """Add an embedding column to a ``ray.data.Dataset`` of texts.

    Parameters
    ----------
    ds : ray.data.Dataset
        Rows with a ``text_column``.
    model : str, os.PathLike, BiEncoder or ColBERTEncoder
        The model folder (every node must see it: a shared path) or an open model (its folder
        and ``quantize`` are used; each actor opens its own copy).
    kind : {"bi", "colbert"}, optional
        For a folder: a bi-encoder (default, one vector per text) or ColBERT (token vectors).
    text_column, column : str
        Input texts and the new column.
    quantize : {None, "int8"}
        Run the model int8 (see :class:`rankfunnel.BiEncoder`).
    batch_size : int
        Rows per Ray batch (``map_batches``). Texts are sorted by length within a batch before
        the ONNX runs, so larger batches pad less: 1,024 kept the in-process throughput in
        ``benches/bench_distributed.py`` where 128 lost 40% of it.
    model_batch_size : int
        Texts per ONNX run inside a Ray batch.
    concurrency : int or (min, max)
        Encoder actors (an autoscaling range as a pair).
    num_cpus, num_gpus : float
        Resources of each actor (``num_gpus`` needs an ONNX Runtime with a GPU provider).
    threads : int, optional
        ONNX Runtime threads per actor (default: ``num_cpus``, at least 1).
    **ray_remote_args
        Passed to ``map_batches`` (``memory=``, ``scheduling_strategy=`` ...).

    Returns
    -------
    ray.data.Dataset
        The rows with ``column`` added (lazy; the rows keep their other columns, so ids travel
        with their vectors; set ``DataContext.get_current().execution_options.preserve_order``
        when the output order must be the input order).
    """
    r = ray()
    path, kind, quantize = model_spec(model, kind, quantize)
    if isinstance(concurrency, tuple):
        lo, hi = (positive_int(c, "concurrency") for c in concurrency)
        compute = r.data.ActorPoolStrategy(min_size=lo, max_size=hi)
    else:
        compute = r.data.ActorPoolStrategy(size=positive_int(concurrency, "concurrency"))
    batch_size = positive_int(batch_size, "batch_size")
    model_batch_size = positive_int(model_batch_size, "model_batch_size")
    if threads is None:
        threads = max(1, int(num_cpus))
    return ds.map_batches(
        Encode,
        fn_constructor_args=(path, kind, quantize, text_column, column, model_batch_size, threads),
        batch_size=batch_size,
        batch_format="numpy",
        compute=compute,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        **ray_remote_args,
    )


def read_corpus_dataset(path: PathLike, **kwargs: Any) -> Any:
    """A corpus in any format rankfunnel reads, as a ``ray.data.Dataset``.

    The driver reads the file (with the usual checks: encoding, JSON, duplicate ids); the rows
    are ``{"row": position, "id": doc id, "text": ..., "metadata": JSON text}``, the columns
    :func:`rankfunnel.distributed.build_shards` takes (``row`` becomes the internal id, as
    ``rankfunnel index`` numbers documents). For files too large for one machine use
    ``ray.data.read_json`` / ``read_parquet``, whose rows need ``id`` and ``text``.

    Parameters
    ----------
    path : str or os.PathLike
        See :func:`rankfunnel.corpus.read_corpus`.
    **kwargs
        Passed to ``ray.data.from_items`` (``override_num_blocks=`` ...).
    """
    from ..corpus import read_corpus

    r = ray()
    items = [
        {"row": i, "id": d.id, "text": d.text, "metadata": json.dumps(d.metadata, sort_keys=True)}
        for i, d in enumerate(read_corpus(path))
    ]
    return r.data.from_items(items, **kwargs)
