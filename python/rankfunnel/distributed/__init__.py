"""Beyond one machine: encode, index and search a corpus on a Ray cluster (``rankfunnel[ray]``).

* :func:`encode_dataset` adds bi-encoder vectors (or ColBERT token vectors) to a
  ``ray.data.Dataset`` with ``map_batches`` over an actor pool, one ONNX model per actor;
  :func:`read_corpus_dataset` reads any corpus rankfunnel reads into such a dataset.
* :func:`build_shards` writes a sharded pipeline folder: N complete pipelines, documents
  assigned by a stable hash of their id, each shard written by a Ray task, the manifest
  (``sharded.json``) written atomically last.
* :class:`ShardedPipeline` searches it: one actor per shard, queries encoded once, the shards'
  candidates merged exactly, the later stages run once on the merged candidates.

Ray is imported only when one of these runs; without it they raise an :class:`ImportError`
naming ``pip install 'rankfunnel[ray]'``.
"""

from __future__ import annotations

from .build import build_shards
from .encode import encode_dataset, read_corpus_dataset
from .layout import NotShardedError, is_sharded, shard_of
from .sharded import ShardedPipeline

__all__ = [
    "NotShardedError",
    "ShardedPipeline",
    "build_shards",
    "encode_dataset",
    "is_sharded",
    "read_corpus_dataset",
    "shard_of",
]
