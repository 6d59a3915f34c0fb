"""Sharded pipelines on Ray (rankfunnel.distributed): encoding, shard builds, exact merged search,
filters, faults, crash safety, the CLI. One local Ray session serves every test."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rankfunnel as rf
from conftest import shared_dir

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rankfunnel[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'rankfunnel[ray]')")

from rankfunnel import cli  # noqa: E402
from rankfunnel.distributed import (  # noqa: E402
    NotShardedError,
    ShardedPipeline,
    build_shards,
    encode_dataset,
    shard_of,
)

MODELS = shared_dir() / "models"
CRAN = shared_dir() / "data" / "cranfield"
BI = MODELS / "tiny-bi-encoder-mean"
CE = MODELS / "tiny-cross-encoder"
COLBERT = MODELS / "tiny-colbert"
needs_models = pytest.mark.skipif(not BI.exists(), reason=f"shared models not found at {MODELS}")

WORDS = "wing lift flow shell buckling heat transfer mach boundary layer cone slipstream pressure".split()
N = 120
TEXTS = [" ".join(WORDS[(i * j + i) % len(WORDS)] for j in range(1, 2 + i % 6)) + f" {i}" for i in range(N)]
META = [{"year": 2020 + i % 3, "topic": "aero" if i % 2 == 0 else "structures"} for i in range(N)]
DOC_IDS = [f"doc-{i}" for i in range(N)]
QUERIES = ["wing lift", "shell buckling under pressure", "heat transfer", "mach 3 cone", "layer"]
FILTERS: list[Any] = [None, {"topic": "structures"}, {"year": [2020, 2022], "topic": "aero"}, {"year": 1999}]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """One small local Ray cluster for the whole test session (starting Ray costs seconds)."""
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=96 * 2**20,
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=False,
        )
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def flat_shards(
    ray_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, tuple[Path, dict[str, Any]]]:
    """Sharded flat pipelines (1-4 shards, with the cross-encoder) of the given vectors, built
    once: {shards: (folder, manifest)}. Tests that damage one work on a copy."""
    base = tmp_path_factory.mktemp("flat-shards")
    out = {}
    for shards in (1, 2, 3, 4):
        folder = base / f"s{shards}"
        out[shards] = (
            folder,
            build_shards(dataset(vectors()), folder, shards=shards, encoder=BI, reranker=CE, candidates=8),
        )
    return out


def vectors() -> np.ndarray:
    """Given embeddings (the tiny model's 16 dimensions), with duplicates so that scores tie."""
    v = rf.synthetic.rng(5).standard_normal((N, 16)).astype(np.float32)
    v[1::7] = v[0]  # ties across shards: the merge must break them by the lower id
    return v


def dataset(emb: Any = None) -> Any:
    rows = [
        {"row": i, "id": DOC_IDS[i], "text": TEXTS[i], "metadata": json.dumps(META[i])}
        | ({} if emb is None else {"embedding": emb[i]})
        for i in range(N)
    ]
    return ray.data.from_items(rows, override_num_blocks=3)


def single(index: str = "flat", emb: Any = None, reranker: bool = True) -> rf.Pipeline:
    p = rf.Pipeline(
        encoder=rf.BiEncoder(BI),
        index=index,
        reranker=rf.CrossEncoder(CE) if reranker else None,
        candidates=8,
    )
    p.add(TEXTS, metadata=META, doc_ids=DOC_IDS, embeddings=emb)
    return p


def results(p: Any, stages: Any = None, where: Any = None, k: int = 10) -> list[list[tuple[Any, ...]]]:
    return [
        [(h.id, h.doc_id, h.score, tuple(sorted(h.scores.items())), h.text, h.metadata) for h in hits]
        for hits in p.search_batch(QUERIES, k=k, where=where, stages=stages)
    ]


@needs_models
def test_encode_dataset_matches_the_bi_encoder_in_input_order(ray_session: Any) -> None:
    ds = ray.data.from_items([{"id": str(i), "text": t} for i, t in enumerate(TEXTS)], override_num_blocks=4)
    # Two actor pools in one run: float32 over two actors, then int8 into another column.
    ds = encode_dataset(ds, BI, batch_size=16, concurrency=2)
    out = encode_dataset(ds, BI, batch_size=16, quantize="int8", column="int8").take_all()
    assert [r["id"] for r in out] == [str(i) for i in range(N)]
    for column, quantize in (("embedding", None), ("int8", "int8")):
        got = np.stack([r[column] for r in out])
        want = rf.BiEncoder(BI, quantize=quantize).encode(TEXTS)
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= 0.99999


@needs_models
def test_encode_dataset_colbert_token_vectors(ray_session: Any) -> None:
    ds = ray.data.from_items([{"text": t} for t in TEXTS[:20]])
    out = encode_dataset(ds, COLBERT, kind="colbert", batch_size=8, column="tokens").take_all()
    want = rf.ColBERTEncoder(COLBERT).encode_documents(TEXTS[:20])
    for r, w in zip(out, want):
        np.testing.assert_allclose(np.asarray(r["tokens"]), w, atol=1e-6)


@needs_models
def test_sharded_flat_equals_one_pipeline_for_any_shard_count(flat_shards: Any) -> None:
    """Same ids, doc ids, scores (every stage), texts and metadata as one pipeline, with and
    without filters, for 1-4 shards; the duplicated vectors tie across shards."""
    one = single(emb=vectors())
    want = {(str(w), str(st)): results(one, st, w) for w in FILTERS for st in (["retrieve"], None)}
    for shards, (folder, m) in flat_shards.items():
        assert [s["shard"] for s in m["shards"]] == list(range(shards)) and m["docs"] == N
        with ShardedPipeline(folder) as sp:
            assert len(sp) == N and sp.stages() == one.stages()
            for (w, st), expected in want.items():
                got = results(sp, eval(st), eval(w))
                assert got == expected, (shards, w, st)
            # k larger than the corpus: every document once.
            hits = sp.search("wing", k=N + 5, stages=["retrieve"])
            assert sorted(h.id for h in hits) == list(range(N))
    # Each document sits in the shard its id hashes to, once.
    held = []
    folder, m = flat_shards[4]
    for s in m["shards"]:
        with rf.Pipeline.load(folder / s["path"], read_only=True) as p:
            ids = [h.doc_id for h in p.search("wing", k=N, stages=["retrieve"])]
        assert all(shard_of(d, 4) == s["shard"] for d in ids)
        held += ids
    assert sorted(held) == sorted(DOC_IDS)


@needs_models
def test_sharded_hnsw_and_ivf_recall(ray_session: Any, tmp_path: Path) -> None:
    """HNSW and IVF shards keep recall against the exact single pipeline; IVF shards share one
    set of centroids (trained once on a sample)."""
    emb = rf.BiEncoder(BI).encode(TEXTS)
    one = single(reranker=False, emb=emb)
    exact = [[h.id for h in hits] for hits in one.search_batch(QUERIES + TEXTS[:15], k=10)]
    for spec in ("hnsw8", "ivf4"):
        m = build_shards(dataset(emb), tmp_path / spec, shards=2, encoder=BI, index=spec)
        with ShardedPipeline(tmp_path / spec) as sp:
            got = [[h.id for h in hits] for hits in sp.search_batch(QUERIES + TEXTS[:15], k=10)]
        recall = np.mean([len(set(g) & set(e)) / len(e) for g, e in zip(got, exact)])
        assert recall >= 0.9, (spec, recall)
        if spec.startswith("ivf"):
            assert m["centroids"] is not None
            cents = [
                rf.load(next((tmp_path / spec / s["path"]).glob("main-*.rfi"))).centroids for s in m["shards"]
            ]
            for c in cents[1:]:
                np.testing.assert_array_equal(c, cents[0])


@needs_models
def test_sharded_colbert_rescoring_runs_once_on_the_merged_candidates(
    ray_session: Any, tmp_path: Path
) -> None:
    """Bi-encoder + ColBERT: the shards encode the tokens, the first stage merges exactly, and
    the ColBERT scores of the merged candidates are MaxSim over each shard's (compressed)
    tokens: close to exact MaxSim, best first, ties to the lower id."""
    emb = vectors()
    one = rf.Pipeline(encoder=rf.BiEncoder(BI), late_interaction=rf.ColBERTEncoder(COLBERT), candidates=12)
    one.add(TEXTS, metadata=META, doc_ids=DOC_IDS, embeddings=emb)
    build_shards(dataset(emb), tmp_path / "s", shards=2, encoder=BI, late_interaction=COLBERT, candidates=12)
    col = rf.ColBERTEncoder(COLBERT)
    docs = col.encode_documents(TEXTS)
    with ShardedPipeline(tmp_path / "s") as sp:
        assert sp.stages() == ["retrieve", "late"]
        assert results(sp, ["retrieve"], {"topic": "aero"}) == results(one, ["retrieve"], {"topic": "aero"})
        for q, hits, ref in zip(
            QUERIES, sp.search_batch(QUERIES, k=5), one.search_batch(QUERIES, k=12, stages=["retrieve"])
        ):
            assert len(hits) == 5
            assert {h.id for h in hits} <= {h.id for h in ref}  # rescored from the merged candidates
            qt = col.encode_queries([q])[0]
            for h in hits:
                exact = float((qt @ docs[h.id].T).max(1).sum())
                assert h.scores["late"] == pytest.approx(exact, abs=0.15 * len(qt))
            keys = [(-h.scores["late"], h.id) for h in hits]
            assert keys == sorted(keys)


@needs_models
def test_shard_actor_killed_during_a_stream_of_queries(flat_shards: Any) -> None:
    with ShardedPipeline(flat_shards[2][0], max_restarts=3, max_task_retries=3) as sp:
        stream = [QUERIES[i % len(QUERIES)] for i in range(40)]
        want = {q: [(h.id, h.score) for h in sp.search(q, k=5)] for q in QUERIES}
        before = ray.get(sp.actors[0].pid.remote())
        killer = threading.Timer(0.3, lambda: ray.kill(sp.actors[0], no_restart=False))
        killer.start()
        answers = []
        for q in stream:
            answers.append((q, [(h.id, h.score) for h in sp.search(q, k=5)]))
            time.sleep(0.02)
        killer.join()
        assert ray.get(sp.actors[0].pid.remote()) != before  # it died and was restarted
        for q, got in answers:
            assert got == want[q]


@needs_models
def test_errors_name_the_problem(flat_shards: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotShardedError, match="not a sharded pipeline"):
        ShardedPipeline(tmp_path)
    single(reranker=False).save(tmp_path / "one")
    with pytest.raises(NotShardedError, match="single pipeline"):
        ShardedPipeline(tmp_path / "one")
    with pytest.raises(rf.RankfunnelError, match="single pipeline"):
        build_shards(dataset(), tmp_path / "one", shards=2, encoder=BI)
    shutil.copytree(flat_shards[2][0], tmp_path / "s")
    m = flat_shards[2][1]
    with pytest.raises(rf.RankfunnelError, match="already holds a sharded pipeline"):
        build_shards(dataset(), tmp_path / "s", shards=2, encoder=BI)
    with pytest.raises(rf.RankfunnelError, match="shards"):
        build_shards(dataset(), tmp_path / "t", shards=0, encoder=BI)
    with ShardedPipeline(tmp_path / "s") as sp:
        with pytest.raises(rf.RankfunnelError, match="plain names"):
            sp.search("flow", where={"year') OR 1=1 --": 1})
        assert sp.modes() == ["dense"]
        assert [h.id for h in sp.search("flow", mode="dense")] == [h.id for h in sp.search("flow")]
        for mode in ("lexical", "hybrid"):
            with pytest.raises(rf.RankfunnelError, match=f"mode '{mode}' is not available on a sharded"):
                sp.search_batch(["flow"], mode=mode)
    shard = tmp_path / "s" / m["shards"][1]["path"]
    with open(shard / "docs.sqlite", "r+b") as f:
        f.seek(200)
        f.write(b"\x00garbage")
    with pytest.raises(rf.CorruptFileError, match="checksum mismatch on docs.sqlite"):
        ShardedPipeline(tmp_path / "s")
    shutil.rmtree(shard)
    with pytest.raises(rf.CorruptFileError, match="shard 1 .* is missing"):
        ShardedPipeline(tmp_path / "s")
    # A failed build (a document with bad metadata) commits nothing.
    rows = [{"id": "a", "text": "x", "metadata": "[1]", "embedding": np.ones(16, np.float32)}]
    with pytest.raises(rf.RankfunnelError, match="metadata must be a JSON object"):
        build_shards(ray.data.from_items(rows), tmp_path / "bad", shards=2, encoder=BI)
    assert not (tmp_path / "bad" / "sharded.json").exists()
    with pytest.raises(NotShardedError):
        ShardedPipeline(tmp_path / "bad")
    from rankfunnel.distributed import _ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'rankfunnel\[ray\]'"):
        _ray.ray()


@needs_models
@pytest.mark.parametrize("point", ["add:manifest", "sharded:manifest"])
def test_build_killed_leaves_nothing(ray_session: Any, tmp_path: Path, point: str) -> None:
    """kill -9 of a shard task in its pipeline's commit, or of the driver at the manifest's
    rename: no sharded pipeline is visible, and the next build into the folder deletes what
    was left and commits normally. (The build's steps run here without Ray, in the order
    build_shards runs them: shard tasks, then the manifest.)"""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from rankfunnel.distributed import build, layout
        root = Path({str(tmp_path / "s")!r}); root.mkdir()
        cfg = dict(root=str(root), shards=3, index="flat", metric="cosine", candidates=8,
                   column="embedding", batch_size=32, centroids=None,
                   encoder=({str(BI)!r}, "bi", None), reranker=None, late_interaction=None)
        docs = [f"d{{i}}" for i in range(30)]
        entries = []
        for shard in range(3):
            mine = [d for d in docs if layout.shard_of(d, 3) == shard]
            rows = dict(id=mine, text=mine, embedding=np.ones((len(mine), 16), np.float32))
            entries.append(build.write_shard(shard, rows, cfg))
        layout.write_manifest(root, dict(shards=entries, docs=30, index="flat", metric="cosine",
                              candidates={{}}, models={{}}, hash=layout.HASH))
        """
    )
    env = {**os.environ, "RANKFUNNEL_CRASH_AT": point}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert "sharded.json" not in left
    if point == "add:manifest":
        assert left and all(n.startswith(".tmp-shard-0-") for n in left)  # the half-written shard
    else:
        assert sum(n.startswith("shard-") for n in left) == 3 and any(
            n.startswith(".sharded.json.tmp") for n in left
        )
    with pytest.raises(NotShardedError):
        ShardedPipeline(tmp_path / "s")
    m = build_shards(dataset(vectors()), tmp_path / "s", shards=3, encoder=BI)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(
        ["sharded.json"] + [s["path"] for s in m["shards"]]
    )
    assert m["docs"] == N


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@needs_models
def test_cli_index_search_eval_sharded(
    ray_session: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": d, "text": t, **m}) + "\n" for d, t, m in zip(DOC_IDS, TEXTS, META))
    )
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES)))
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(
        "".join(f"q{i} 0 doc-{(7 * i + j) % N} {1 + j % 2}\n" for i in range(5) for j in range(6))
    )
    common = ["--model", str(BI), "--reranker", str(CE), "--candidates", "8"]
    rc, out, err = _cli(capsys, "index", str(corpus), *common, "--out", str(tmp_path / "one"), "--quiet")
    assert rc == 0, err
    rc, out, err = _cli(
        capsys, "index", str(corpus), *common, "--out", str(tmp_path / "sh"), "--ray", "--shards", "2"
    )
    assert rc == 0, err
    assert f"{N} documents indexed" in out and "2 shards" in out
    # The corpus reader numbers documents as `rankfunnel index` does: the same internal ids.
    rc, one, err = _cli(
        capsys, "search", str(tmp_path / "one"), "wing lift", "--json", "--where", "topic=aero"
    )
    rc2, sharded, err2 = _cli(
        capsys, "search", str(tmp_path / "sh"), "wing lift", "--json", "--where", "topic=aero"
    )
    assert rc == rc2 == 0, err + err2
    assert json.loads(sharded) == json.loads(one) != []
    ev = ["--queries", str(queries), "--qrels", str(qrels), "--qrels-format", "trec", "--json"]
    rc, one, err = _cli(capsys, "eval", str(tmp_path / "one"), *ev)
    rc2, sharded, err2 = _cli(capsys, "eval", str(tmp_path / "sh"), *ev)
    assert rc == rc2 == 0, err + err2
    strip = [{k: v for k, v in row.items() if "_ms" not in k} for row in json.loads(one)]
    assert [{k: v for k, v in row.items() if "_ms" not in k} for row in json.loads(sharded)] == strip
    # Errors: one line.
    rc, out, err = _cli(
        capsys, "index", str(corpus), "--model", str(BI), "--out", str(tmp_path / "x"), "--ray"
    )
    assert rc == 1 and "--shards" in err and err.count("\n") == 1
    rc, out, err = _cli(
        capsys,
        "index",
        str(corpus),
        *common,
        "--out",
        str(tmp_path / "y"),
        "--ray",
        "--shards",
        "2",
        "--lexical",
    )
    assert rc == 1 and "--lexical is not available with --shards" in err and err.count("\n") == 1
    assert not (tmp_path / "y").exists()
    rc, out, err = _cli(capsys, "search", str(tmp_path / "sh"), "wing lift", "--mode", "hybrid")
    assert rc == 1 and "not available on a sharded pipeline" in err and err.count("\n") == 1


@pytest.mark.skipif(
    not (MODELS / "all-MiniLM-L6-v2").exists() or not CRAN.exists(), reason="MiniLM/Cranfield not found"
)
@pytest.mark.skipif(
    not os.environ.get("RANKFUNNEL_SLOW_TESTS"),
    reason="encodes Cranfield with all-MiniLM-L6-v2 through Ray (minutes on 2 cores); set "
    "RANKFUNNEL_SLOW_TESTS=1. The always-on tests prove the same equality on a small corpus",
)
def test_cranfield_sharded_eval_gives_the_single_machine_ndcg(
    ray_session: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _cli(capsys, "index", str(CRAN / "cran.all.1400"), "--model", str(MODELS / "all-MiniLM-L6-v2"),
                        "--out", str(tmp_path / "sh"), "--ray", "--shards", "3", "--batch-size", "64")  # fmt: skip
    assert rc == 0, err
    rc, out, err = _cli(capsys, "eval", str(tmp_path / "sh"), "--queries", str(CRAN / "cran.qry"),
                        "--qrels", str(CRAN / "cranqrel"), "--json")  # fmt: skip
    assert rc == 0, err
    [row] = json.loads(out)
    assert row["queries"] == 225
    assert row["ndcg@10"] == pytest.approx(0.3817, abs=0.002)
