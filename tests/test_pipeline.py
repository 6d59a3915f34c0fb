"""Pipeline: stages, metadata filters, removal, persistence, crash safety, Cranfield quality."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rankfunnel as rf
from conftest import shared_dir

MODELS = shared_dir() / "models"
CRAN = shared_dir() / "data" / "cranfield"
pytestmark = pytest.mark.skipif(not MODELS.exists(), reason=f"shared models not found at {MODELS}")

DOCS = [
    "the wing produces lift in a slipstream",
    "boundary layer transition at high mach numbers",
    "heat transfer to a blunt body in hypersonic flow",
    "propeller slipstream effects on wing lift",
    "buckling of thin cylindrical shells under pressure",
    "supersonic flow past a cone at incidence",
]
META = [{"year": 2020 + i % 3, "topic": "aero" if i % 2 == 0 else "structures"} for i in range(len(DOCS))]


def tiny(reranker: bool = True, index: str = "flat") -> rf.Pipeline:
    enc = rf.BiEncoder(MODELS / "tiny-bi-encoder-mean")
    ce = rf.CrossEncoder(MODELS / "tiny-cross-encoder") if reranker else None
    return rf.Pipeline(encoder=enc, index=index, reranker=ce, candidates=4)


def test_stages_scores_and_exact_first_stage() -> None:
    p = tiny()
    ids = p.add(DOCS, metadata=META)
    assert ids.tolist() == list(range(6)) and len(p) == 6
    assert p.stages() == ["retrieve", "rerank"]
    hits = p.search("wing lift", k=3)
    assert len(hits) == 3
    for h in hits:
        assert set(h.scores) == {"retrieve", "rerank"} and h.score == h.scores["rerank"]
        assert h.text == DOCS[h.id] and h.metadata == META[h.id]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # The first stage alone is exact cosine search over the encoder's vectors.
    first = p.search("wing lift", k=6, stages=["retrieve"])
    emb = p.encoder.encode(DOCS)
    q = p.encoder.encode(["wing lift"])[0]
    assert [h.id for h in first] == np.argsort(-(emb @ q), kind="stable").tolist()
    # The cross-encoder's scores are the model's own.
    ce_scores = p.reranker.predict([("wing lift", DOCS[h.id]) for h in hits])
    np.testing.assert_allclose([h.scores["rerank"] for h in hits], ce_scores, rtol=1e-5)
    batch = p.search_batch(["wing lift", "shell buckling"], k=2)
    assert [h.id for h in batch[0]] == [h.id for h in hits[:2]]


def test_where_filter_pushes_an_allow_list() -> None:
    p = tiny(reranker=False)
    p.add(DOCS, metadata=META)
    hits = p.search("flow", k=6, where={"topic": "structures"})
    assert {h.id for h in hits} == {1, 3, 5}
    hits = p.search("flow", k=6, where={"year": [2020, 2021], "topic": "aero"})
    assert {h.id for h in hits} == {0, 4}
    assert p.search("flow", where={"year": 1999}) == []
    with pytest.raises(rf.RankfunnelError, match="plain names"):
        p.search("flow", where={"year') OR 1=1 --": 1})


def test_remove_and_bad_input() -> None:
    p = tiny(reranker=False)
    p.add(DOCS)
    assert p.remove([0, 3]) == 2
    assert {h.id for h in p.search("wing", k=10)} == {1, 2, 4, 5}
    with pytest.raises(rf.UnknownIdError):
        p.remove([0])
    with pytest.raises(rf.RankfunnelError, match="strings"):
        p.add(["ok", None])  # type: ignore[list-item]
    with pytest.raises(rf.RankfunnelError, match="id 1 is already in the pipeline"):
        p.add(["again"], ids=[1])
    assert len(p) == 4
    with pytest.raises(rf.RankfunnelError, match="needs an encoder"):
        rf.Pipeline()
    with pytest.raises(rf.RankfunnelError, match="unknown index"):
        rf.Pipeline(encoder=p.encoder, index="annoy")


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_save_load_and_model_checksums(tmp_path: Path, index: str) -> None:
    p = tiny(index=index)
    p.add(DOCS, metadata=META)
    p.save(tmp_path / "p")
    back = rf.Pipeline.load(tmp_path / "p")
    assert len(back) == 6 and back.stages() == p.stages()
    a = [(h.id, h.score) for h in p.search("hypersonic heat", k=3)]
    b = [(h.id, h.score) for h in back.search("hypersonic heat", k=3)]
    assert [x[0] for x in a] == [x[0] for x in b]
    np.testing.assert_allclose([x[1] for x in a], [x[1] for x in b], rtol=1e-5)
    back.add(["a new document about shells"])
    assert len(rf.Pipeline.load(tmp_path / "p")) == 7

    # A pipeline refuses to load when its model changed.
    model = tmp_path / "model"
    shutil.copytree(MODELS / "tiny-bi-encoder-mean", model)
    q = rf.Pipeline(encoder=rf.BiEncoder(model), path=tmp_path / "q")
    q.add(DOCS[:2])
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["added_tokens"] = tok.get("added_tokens", [])
    (model / "tokenizer.json").write_text(json.dumps(tok, indent=1))
    with pytest.raises(rf.RankfunnelError, match="changed since this pipeline was built"):
        rf.Pipeline.load(tmp_path / "q")


CRASH = textwrap.dedent(
    """
    import os, sys
    import rankfunnel as rf
    docs = [f"document number {i} about wings and shells" for i in range(40)]
    p = rf.Pipeline(encoder=rf.BiEncoder(sys.argv[1]), path=sys.argv[2])
    p.add(docs[:20])
    os.environ["RANKFUNNEL_CRASH_AT"] = sys.argv[3]
    p.add(docs[20:])
    """
)


@pytest.mark.parametrize("where", ["add:segment", "add:manifest"])
def test_kill_during_add_loses_nothing_and_keeps_nothing_half_written(tmp_path: Path, where: str) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    out = subprocess.run(
        [sys.executable, str(script), str(MODELS / "tiny-bi-encoder-mean"), str(tmp_path / "p"), where],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == -9, out.stderr
    p = rf.Pipeline.load(tmp_path / "p")
    assert len(p) == 20 and len(p.index) == 20
    hits = p.search("document number 33", k=40)
    assert {h.id for h in hits} == set(range(20))
    p.add(["a fresh document"])
    assert len(rf.Pipeline.load(tmp_path / "p")) == 21
    assert not [f for f in os.listdir(tmp_path / "p") if ".tmp" in f]


@pytest.fixture(scope="module")
def cranfield() -> tuple[list, list, dict, np.ndarray]:
    if not CRAN.exists():
        pytest.skip(f"Cranfield not found at {CRAN}")
    from rankfunnel.corpus import read_corpus, read_queries
    from rankfunnel.eval import match_query_ids, read_qrels

    docs = list(read_corpus(CRAN / "cran.all.1400"))
    qrels = read_qrels(CRAN / "cranqrel", "cranfield")
    queries = match_query_ids(read_queries(CRAN / "cran.qry"), qrels)
    enc = rf.BiEncoder(MODELS / "all-MiniLM-L6-v2")
    return docs, queries, qrels, enc.encode([d.text for d in docs], batch_size=64)


class Cached:
    """A BiEncoder stand-in that returns precomputed document vectors (the model still encodes queries)."""

    def __init__(self, enc: rf.BiEncoder, vectors: np.ndarray) -> None:
        self.enc, self.vectors, self.model_dir = enc, vectors, enc.model_dir

    def encode(self, texts: list[str], **kw: object) -> np.ndarray:
        return self.vectors[: len(texts)]

    def encode_queries(self, texts: list[str], **kw: object) -> np.ndarray:
        return self.enc.encode_queries(texts)


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf"])
def test_cranfield_quality(cranfield: tuple[list, list, dict, np.ndarray], index: str) -> None:
    from rankfunnel.eval import evaluate

    docs, queries, qrels, vectors = cranfield
    enc = Cached(rf.BiEncoder(MODELS / "all-MiniLM-L6-v2"), vectors)
    p = rf.Pipeline(encoder=enc, index=index)
    p.add([d.text for d in docs], doc_ids=[d.id for d in docs])
    row = evaluate(p, queries, qrels)[0]
    if index == "flat":
        assert row["ndcg@10"] == pytest.approx(0.3817, abs=0.002)
        assert row["recall@100"] == pytest.approx(0.7724, abs=0.002)
    elif index == "hnsw":
        assert row["ndcg@10"] == pytest.approx(0.3817, abs=0.005)
    else:
        assert row["ndcg@10"] >= 0.3817 - 0.02


def test_cranfield_hybrid_quality(cranfield: tuple[list, list, dict, np.ndarray]) -> None:
    """Issue #14 targets with the standard defaults (no tuning to Cranfield): BM25 alone within
    0.005 of bm25s's 0.3735 (k1 1.5, b 0.75, English stemmer + stopwords); hybrid RRF(60)
    >= 0.415 (reference 0.4212). Convex 0.7 dense + 0.3 BM25 normalises each side over its 100
    candidates (0.4126 here; the issue's 0.4206 normalised over other depths): above dense."""
    from rankfunnel.eval import evaluate

    docs, queries, qrels, vectors = cranfield
    enc = Cached(rf.BiEncoder(MODELS / "all-MiniLM-L6-v2"), vectors)
    p = rf.Pipeline(encoder=enc, lexical=True)
    p.add([d.text for d in docs], doc_ids=[d.id for d in docs])
    rows = {r["stages"]: r for r in evaluate(p, queries, qrels)}
    assert list(rows) == ["dense", "lexical", "hybrid"]
    assert rows["dense"]["ndcg@10"] == pytest.approx(0.3817, abs=0.002)
    assert rows["lexical"]["ndcg@10"] == pytest.approx(0.3735, abs=0.005)
    assert rows["hybrid"]["ndcg@10"] >= 0.415
    p.fusion = {"method": "convex", "k": 60.0, "dense_weight": 0.7}
    [convex] = evaluate(p, queries, qrels, modes=["hybrid"])
    assert convex["ndcg@10"] >= rows["dense"]["ndcg@10"] + 0.02


def test_colbert_stage_combinations(tmp_path: Path) -> None:
    enc = rf.BiEncoder(MODELS / "tiny-bi-encoder-mean")
    cb = rf.ColBERTEncoder(MODELS / "tiny-colbert")
    ce = rf.CrossEncoder(MODELS / "tiny-cross-encoder")
    docs = DOCS * 5
    # bi-encoder -> ColBERT rerank -> cross-encoder
    p = rf.Pipeline(encoder=enc, late_interaction=cb, reranker=ce, candidates={"retrieve": 20, "late": 8})
    p.add(docs)
    assert p.stages() == ["retrieve", "late", "rerank"]
    hits = p.search("wing lift", k=5)
    assert len(hits) == 5 and all(set(h.scores) == {"retrieve", "late", "rerank"} for h in hits)
    late = p.search("wing lift", k=8, stages=["retrieve", "late"])
    q = cb.encode_queries(["wing lift"])[0]
    exact = rf.maxsim(q, cb.encode_documents([h.text for h in late]))
    np.testing.assert_allclose([h.scores["late"] for h in late], exact, rtol=1e-3, atol=1e-3)
    # ColBERT retrieves on its own, then the cross-encoder reranks; saved and reloaded.
    c = rf.Pipeline(late_interaction=cb, reranker=ce, candidates=10, path=tmp_path / "c")
    c.add(docs)
    hits = c.search("boundary layer", k=3)
    assert len(hits) == 3 and set(hits[0].scores) == {"retrieve", "rerank"}
    back = rf.Pipeline.load(tmp_path / "c")
    assert [h.id for h in back.search("boundary layer", k=3)] == [h.id for h in hits]


def test_cranfield_int8_encoder(cranfield: tuple[list, list, dict, np.ndarray], tmp_path: Path) -> None:
    """quantize='int8' keeps the embeddings and the ranking quality of float32 (issue targets:
    cosine >= 0.99, nDCG@10 within 0.003)."""
    pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    from rankfunnel.eval import evaluate

    docs, queries, qrels, vectors = cranfield
    enc = rf.BiEncoder(MODELS / "all-MiniLM-L6-v2", quantize="int8", cache_dir=tmp_path)
    got = enc.encode([d.text for d in docs], batch_size=64)
    cos = (got * vectors).sum(1)
    nonempty = np.array([bool(d.text.strip()) for d in docs])
    assert cos.mean() >= 0.998 and np.percentile(cos, 1) >= 0.995 and cos[nonempty].min() >= 0.995
    assert cos.min() >= 0.985  # two empty documents: [CLS] [SEP] alone
    p = rf.Pipeline(encoder=Cached(enc, got), index="flat")
    p.add([d.text for d in docs], doc_ids=[d.id for d in docs])
    row = evaluate(p, queries, qrels)[0]
    assert row["ndcg@10"] == pytest.approx(0.3817, abs=0.003)
