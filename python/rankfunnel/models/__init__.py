"""ONNX text models: bi-encoders, cross-encoders and ColBERT encoders.

Pure Python over ``onnxruntime`` and Hugging Face ``tokenizers`` (``pip install
'rankfunnel[models]'``). Models are read from the directory layouts sentence-transformers and
PyLate save (plus an ONNX graph, see ``rankfunnel export``); a Hugging Face repo id also works
when ``huggingface_hub`` is installed and the hub reachable (or the repo cached).

Examples
--------
>>> import rankfunnel as rf                                   # doctest: +SKIP
>>> enc = rf.BiEncoder("models/all-MiniLM-L6-v2")              # doctest: +SKIP
>>> emb = enc.encode(["first text", "second text"])            # doctest: +SKIP
>>> ce = rf.CrossEncoder("models/ms-marco-MiniLM-L-6-v2")      # doctest: +SKIP
>>> ce.rank("a query", ["doc one", "doc two"], top_k=1)        # doctest: +SKIP
[{'corpus_id': 1, 'score': 3.2}]
"""

from __future__ import annotations

from ._errors import MissingDependencyError, ModelError, ModelFileNotFoundError
from .bi_encoder import POOLING_MODES, BiEncoder, pool
from .colbert import ColBERTEncoder
from .cross_encoder import ACTIVATIONS, CrossEncoder

__all__ = [
    "ACTIVATIONS",
    "POOLING_MODES",
    "BiEncoder",
    "ColBERTEncoder",
    "CrossEncoder",
    "MissingDependencyError",
    "ModelError",
    "ModelFileNotFoundError",
    "pool",
]
