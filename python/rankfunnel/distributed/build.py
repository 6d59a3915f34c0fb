"""Build a sharded pipeline folder with Ray tasks: one complete pipeline per shard.

Documents go to shard ``hash(id) % N`` (:func:`~.layout.shard_of`); a Ray Data ``groupby`` on
that shard number hands each shard's rows to one task, which builds the shard's pipeline in a
temporary folder (the usual crash-safe commits) and renames it into place. The driver writes
``sharded.json`` last, atomically: until then no shard is visible to readers, and whatever an
interrupted or retried task left behind is garbage the next build deletes (see layout.py).
IVF shards share one set of centroids, trained once on a sample of the vectors, so their scores
are comparable; flat and HNSW shards are independent.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .._arrays import positive_int
from ..errors import RankfunnelError
from ..pipeline.fields import FIRST_STAGE_KINDS, main_kind
from ..pipeline.manifest import MANIFEST as PIPELINE_MANIFEST
from ..pipeline.manifest import describe_model, fsync_dir, sha256_file
from ..registry import index_factory
from . import layout
from ._ray import ray, surfaced
from .encode import encode_dataset, model_spec, open_encoder

PathLike = Union[str, "os.PathLike[str]"]
SHARD_COLUMN = "_rankfunnel_shard"
HASH_SHUFFLES = ("hash_shuffle", "shuffle_v2", "gpu_shuffle")
IVF_SAMPLE_PER_LIST = 39
"""Training vectors per IVF list drawn for the shared centroids (faiss's minimum is 39)."""


def _model_path(model: Any, kind: str, quantize: Optional[str]) -> Optional[tuple[str, str, Any]]:
    if model is None:
        return None
    if kind == "cross":
        from ..models import CrossEncoder

        if isinstance(model, CrossEncoder):
            return str(Path(model.model_dir).resolve()), kind, quantize or model.quantize
        return str(Path(model).resolve()), kind, quantize
    return model_spec(model, kind, quantize)


def _open(spec: Optional[tuple[str, str, Any]]) -> Any:
    if spec is None:
        return None
    path, kind, quantize = spec
    if kind == "cross":
        from ..models import CrossEncoder

        return CrossEncoder(path, quantize=quantize, threads=1)
    return open_encoder(path, kind, quantize, threads=1)


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, (str, bytes)):
        value = json.loads(value) if value else {}
    if not isinstance(value, dict):
        raise RankfunnelError(f"metadata must be a JSON object, got {value!r}")
    return dict(value)


def write_shard(shard: int, rows: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Build shard ``shard`` from its rows (runs in a Ray task); returns its manifest entry.

    The pipeline is built in ``.tmp-shard-<i>-<tag>/`` and renamed to ``shard-<i>-<tag>/``
    once closed; the entry records the folder, its document count and its files' SHA-256.
    """
    from ..pipeline import Pipeline

    root = Path(cfg["root"])
    tag = uuid.uuid4().hex[:12]
    tmp = root / f".tmp-shard-{shard}-{tag}"
    final = root / f"shard-{shard}-{tag}"
    doc_ids = [str(x) for x in rows.get("id", [])]
    n = len(doc_ids)
    if n and any(layout.shard_of(d, cfg["shards"]) != shard for d in doc_ids):
        raise RankfunnelError(f"shard {shard} was given a document of another shard")
    index: Any = cfg["index"]
    if cfg.get("centroids"):
        from ..io import load

        index = load(root / cfg["centroids"])
    p = Pipeline(
        encoder=_open(cfg["encoder"]),
        index=index,
        reranker=_open(cfg["reranker"]),
        late_interaction=_open(cfg["late_interaction"]),
        candidates=cfg["candidates"],
        metric=cfg["metric"],
        path=tmp,
    )
    try:
        if n:
            if "row" in rows:
                ids = np.asarray(rows["row"], dtype=np.int64)
            else:
                ids = np.asarray([layout.id_hash(d) >> 1 for d in doc_ids], dtype=np.int64)
            order = np.argsort(ids, kind="stable")
            metas = rows.get("metadata")
            emb = None
            if cfg["encoder"] is not None:
                emb = np.stack([np.asarray(v, dtype=np.float32) for v in rows[cfg["column"]]])[order]
            p.add(
                [str(rows["text"][i]) for i in order],
                ids=ids[order],
                metadata=[_metadata(None if metas is None else metas[i]) for i in order],
                doc_ids=[doc_ids[i] for i in order],
                embeddings=emb,
                batch_size=cfg["batch_size"],
            )
    finally:
        p.close()
    files = layout.folder_checksums(tmp)
    os.rename(tmp, final)
    fsync_dir(root)
    return {"shard": shard, "path": final.name, "docs": n, "files": files}


def _group_writer(batch: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """``map_groups`` function: one shard's rows in, its manifest entry (one row) out."""
    shard = int(np.asarray(batch[SHARD_COLUMN])[0])
    entry = write_shard(shard, batch, cfg)
    return {"entry": np.asarray([json.dumps(entry)], dtype=object)}


def _assign(batch: dict[str, Any], shards: int) -> dict[str, Any]:
    out = dict(batch)
    out[SHARD_COLUMN] = np.asarray([layout.shard_of(str(d), shards) for d in batch["id"]], dtype=np.int64)
    return out


def _train_centroids(ds: Any, root: Path, cfg: dict[str, Any], dim_hint: Optional[int]) -> Optional[str]:
    """Train the shared IVF centroids on a sample of the vectors; returns their file name."""
    n = ds.count()
    if n == 0:
        return None
    probe = index_factory(cfg["index"], dim_hint or 1, cfg["metric"], size_hint=n)
    want = min(n, max(probe.nlist * IVF_SAMPLE_PER_LIST, 10_000))
    sample = ds.random_sample(min(1.0, 1.2 * want / n), seed=0) if want < n else ds
    rows = sample.select_columns([cfg["column"]]).take_batch(batch_size=want, batch_format="numpy")
    vecs = np.stack([np.asarray(v, dtype=np.float32) for v in rows[cfg["column"]]])
    trained = index_factory(cfg["index"], int(vecs.shape[1]), cfg["metric"], size_hint=n)
    trained.train(vecs)
    name = f"centroids-{uuid.uuid4().hex[:12]}.rfi"
    trained.save(root / name)
    return name


def build_shards(
    ds: Any,
    out: PathLike,
    *,
    shards: int,
    encoder: Any = None,
    index: str = "flat",
    reranker: Any = None,
    late_interaction: Any = None,
    metric: str = "cosine",
    candidates: Union[int, dict[str, int]] = 100,
    quantize: Optional[str] = None,
    column: str = "embedding",
    batch_size: int = 32,
    num_cpus: float = 1,
    max_retries: int = 3,
    encode_options: Optional[dict[str, Any]] = None,
    shuffle: Optional[str] = "sort_shuffle_pull_based",
) -> dict[str, Any]:
    """Write a sharded pipeline folder from a ``ray.data.Dataset`` of documents.

    Parameters
    ----------
    ds : ray.data.Dataset
        Rows with ``id`` (the document id, str), ``text``, optionally ``metadata`` (a JSON
        object or its text), ``row`` (the int64 internal id; default: 63 bits of the id's
        hash) and ``column`` (the bi-encoder vectors; computed with :func:`encode_dataset` when
        the column is absent). :func:`read_corpus_dataset` makes such rows from a corpus file.
    out : str or os.PathLike
        New folder (local, or a path every node of the cluster shares).
    shards : int
        Number of shards N; a document goes to ``blake2b64(id) % N``.
    encoder, reranker, late_interaction : model folder or open model, optional
        The pipeline's models, as for :class:`rankfunnel.Pipeline` (folders every node sees).
    index : str
        First-stage index spec (kind flat, hnsw or ivf). IVF shards share one set of centroids
        trained here once on a sample (``nlist`` from the spec, or sized for the whole corpus).
    metric, candidates :
        As for :class:`rankfunnel.Pipeline`.
    quantize : {None, "int8"}
        Run the models int8.
    column : str
        The embedding column.
    batch_size : int
        Encoder batch size inside shard tasks (ColBERT tokens are encoded there).
    num_cpus : float
        CPUs of each shard task.
    max_retries : int
        Retries of a shard task that fails (a lost node ...).
    encode_options : dict, optional
        Keyword arguments of :func:`encode_dataset` when the vectors are computed here
        (default ``concurrency``: from 1 up to one one-CPU actor per CPU of the cluster).
    shuffle : str, optional
        The Ray Data shuffle strategy that groups rows by shard (a ``ShuffleStrategy`` value).
        The default, a sort-based pull shuffle, runs in plain tasks; ``"hash_shuffle"`` starts
        aggregator actors (seconds of start-up, worth it for very large corpora); ``None``
        keeps the dataset's own setting.

    Returns
    -------
    dict
        The manifest written (``sharded.json``).

    Raises
    ------
    RankfunnelError
        On bad settings, a folder that already holds a pipeline, a document the shard tasks
        refuse (bad metadata, a duplicate id ...): nothing is committed then.
    ImportError
        Without Ray (``pip install 'rankfunnel[ray]'``).
    """
    r = ray()
    shards = positive_int(shards, "shards")
    root = Path(out)
    if layout.is_sharded(root):
        raise RankfunnelError(f"{root} already holds a sharded pipeline; choose another folder or delete it")
    if (root / PIPELINE_MANIFEST).exists():
        raise RankfunnelError(f"{root} holds a single pipeline; choose another folder")
    if encoder is None and late_interaction is None:
        raise RankfunnelError(
            "a sharded pipeline needs an encoder (bi-encoder) or late_interaction (ColBERT)"
        )
    if main_kind(index) not in FIRST_STAGE_KINDS:
        raise RankfunnelError(f"index {index!r}: expected a spec of kind {', '.join(FIRST_STAGE_KINDS)}")
    specs = {
        "encoder": _model_path(encoder, "bi", quantize),
        "reranker": _model_path(reranker, "cross", quantize),
        "late_interaction": _model_path(late_interaction, "colbert", quantize),
    }
    # Open each model once here: a bad folder fails before any task runs, and the manifest
    # records the models (paths, options, checksums) as a single pipeline does.
    opened = {k: _open(v) for k, v in specs.items() if v is not None}
    models = {k: describe_model(m) for k, m in opened.items()}
    dim = getattr(opened.get("encoder"), "dim", None)
    root.mkdir(parents=True, exist_ok=True)
    layout.remove(layout.garbage(root, {}))
    cfg: dict[str, Any] = {
        "root": str(root.resolve()),
        "shards": shards,
        "index": index,
        "metric": metric,
        "candidates": candidates,
        "column": column,
        "batch_size": positive_int(batch_size, "batch_size"),
        "centroids": None,
        **specs,
    }
    started = time.perf_counter()
    if specs["encoder"] is not None and column not in (ds.columns() or []):
        options = dict(encode_options or {})
        # By default an autoscaling pool of one-CPU encoders, up to one per CPU of the cluster.
        options.setdefault("concurrency", (1, max(1, int(r.cluster_resources().get("CPU", 1)))))
        ds = encode_dataset(ds, specs["encoder"][0], quantize=quantize, column=column, **options)
    if specs["encoder"] is not None and main_kind(index) == "ivf":
        ds = ds.materialize()  # two passes: the centroids' sample, then the shards
        cfg["centroids"] = _train_centroids(ds, root, cfg, dim)
    assigned = ds.map_batches(_assign, fn_kwargs={"shards": shards}, batch_format="numpy")
    if shuffle is not None:
        assigned.context.shuffle_strategy = r.data.context.ShuffleStrategy(shuffle)
    if assigned.context.shuffle_strategy not in HASH_SHUFFLES:
        # A sort shuffle runs a task per input block and yields as many blocks: regroup into
        # one block per shard first (a split/merge, no shuffle), not hundreds of small ones.
        assigned = assigned.repartition(shards)
    with surfaced():
        written = (
            assigned.groupby(SHARD_COLUMN, num_partitions=shards)
            .map_groups(
                _group_writer,
                fn_kwargs={"cfg": cfg},
                batch_format="numpy",
                num_cpus=num_cpus,
                max_retries=max_retries,
            )
            .take_all()
        )
    entries: dict[int, dict[str, Any]] = {}
    for row in written:
        e = json.loads(row["entry"])
        entries[int(e["shard"])] = e
    missing = [i for i in range(shards) if i not in entries]
    if missing:
        # No document hashed to these shards: each still gets an (empty) complete pipeline.
        task = r.remote(write_shard).options(num_cpus=num_cpus, max_retries=max_retries)
        with surfaced():
            done = r.get([task.remote(i, {}, cfg) for i in missing])
        for e in done:
            entries[int(e["shard"])] = e
    manifest: dict[str, Any] = {
        "shards": [entries[i] for i in range(shards)],
        "docs": sum(int(e["docs"]) for e in entries.values()),
        "index": index,
        "metric": metric,
        "candidates": candidates
        if isinstance(candidates, dict)
        else {"retrieve": candidates, "late": candidates},
        "models": models,
        "hash": layout.HASH,
        "centroids": None,
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    if cfg["centroids"]:
        name = cfg["centroids"]
        manifest["centroids"] = {"file": name, "sha256": sha256_file(root / name)}
    layout.write_manifest(root, manifest)
    layout.remove(layout.garbage(root, manifest))
    return manifest
