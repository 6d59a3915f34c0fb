"""Lexical (BM25) and hybrid pipelines: exact scores over the live corpus whatever the segment
layout, fusion, modes, filters, odd queries, persistence, settings, the CLI flags, bad input.

Kill -9 recovery with lexical on is in test_pipeline_store.py (its crash worker keeps a lexical
index); ``pipeline_worker.assert_lexical_matches`` is the check both use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipeline_worker import assert_lexical_matches
from test_pipeline import DOCS, META

import rankfunnel as rf
from conftest import shared_dir
from rankfunnel.pipeline import TieredPolicy

MODELS = shared_dir() / "models"
needs_models = pytest.mark.skipif(not MODELS.exists(), reason=f"shared models not found at {MODELS}")


def test_lexical_only_pipeline_needs_no_model(tmp_path: Path) -> None:
    p = rf.Pipeline(lexical=True, path=tmp_path / "p")
    assert p.modes() == ["lexical"] and p.stages() == ["retrieve"]
    p.add(DOCS, metadata=META)
    hits = p.search("wing lift", k=3)
    assert [h.id for h in hits][:2] in ([0, 3], [3, 0])
    for h in hits:
        assert set(h.scores) == {"retrieve", "lexical"} and h.score == h.scores["lexical"]
        assert h.text == DOCS[h.id]
    ref = rf.BM25Index()
    ref.add(DOCS)
    s, i = ref.search("wing lift", k=3)
    assert [h.id for h in hits] == i[i >= 0].tolist()
    np.testing.assert_array_equal([h.score for h in hits], s[i >= 0])
    for bad in ("dense", "hybrid"):
        with pytest.raises(rf.RankfunnelError, match="needs a pipeline with an encoder"):
            p.search("wing", mode=bad)
    with pytest.raises(rf.RankfunnelError, match="unknown mode 'sparse'"):
        p.search("wing", mode="sparse")
    with pytest.raises(rf.RankfunnelError, match="embeddings= needs a pipeline with a bi-encoder"):
        p.add(["x"], embeddings=np.ones((1, 4), np.float32))
    p.close()
    back = rf.Pipeline.load(tmp_path / "p")
    assert back.encoder is None and back.modes() == ["lexical"]
    assert [h.id for h in back.search("wing lift", k=3)] == [h.id for h in hits]
    assert_lexical_matches(back)


@needs_models
def test_hybrid_fuses_both_sides_and_later_stages_rerank_the_fused_list() -> None:
    enc = rf.BiEncoder(MODELS / "tiny-bi-encoder-mean")
    ce = rf.CrossEncoder(MODELS / "tiny-cross-encoder")
    p = rf.Pipeline(encoder=enc, reranker=ce, candidates=4, lexical=True)
    p.add(DOCS)
    assert p.modes() == ["dense", "lexical", "hybrid"]
    q = "slipstream"
    dense = p.search(q, k=4, stages=["retrieve"], mode="dense")
    lexical = p.search(q, k=4, stages=["retrieve"], mode="lexical")
    hybrid = p.search(q, k=4, stages=["retrieve"])  # hybrid is the default
    assert {h.id for h in lexical} == {0, 3}  # only two documents hold the term
    assert all(set(h.scores) == {"retrieve", "dense"} for h in dense)
    assert all(set(h.scores) == {"retrieve", "lexical"} for h in lexical)
    fs, fi = rf.reciprocal_rank_fusion(
        ([h.score for h in dense], [h.id for h in dense]),
        ([h.score for h in lexical], [h.id for h in lexical]),
        k=60,
        top=4,
    )
    assert [h.id for h in hybrid] == fi[fi >= 0].tolist()
    np.testing.assert_allclose([h.score for h in hybrid], fs[fi >= 0], rtol=1e-6)
    by_dense = {h.id: h.score for h in dense}
    by_lex = {h.id: h.score for h in lexical}
    for h in hybrid:
        assert h.scores["fused"] == h.scores["retrieve"] == h.score
        # Each side's score is there only when that side found the document.
        assert ("dense" in h.scores) == (h.id in by_dense) and ("lexical" in h.scores) == (h.id in by_lex)
        if h.id in by_dense:
            assert h.scores["dense"] == pytest.approx(by_dense[h.id])
    # k larger than every side's candidates: whatever was found, no padding.
    wide = p.search(q, k=50, stages=["retrieve"])
    assert len(wide) == len(DOCS) and len({h.id for h in wide}) == len(DOCS)
    # The cross-encoder reranks the fused candidates (4), not the dense ones.
    final = p.search(q, k=4)
    assert {h.id for h in final} == {h.id for h in hybrid}
    assert all({"fused", "rerank"} <= set(h.scores) for h in final)
    # Convex fusion: a weighted sum of min-max normalised scores.
    c = rf.Pipeline(encoder=enc, lexical=True, fusion="convex", dense_weight=0.7)
    c.add(DOCS)
    got = c.search(q, k=6, stages=["retrieve"])
    d6 = c.search(q, k=6, mode="dense")
    l6 = c.search(q, k=6, mode="lexical")
    ws, wi = rf.convex_combination(
        ([h.score for h in d6], [h.id for h in d6]),
        ([h.score for h in l6], [h.id for h in l6]),
        weights=(0.7, 0.3),
        top=6,
    )
    assert [h.id for h in got] == wi[wi >= 0].tolist()
    np.testing.assert_allclose([h.score for h in got], ws[wi >= 0], rtol=1e-6)


@needs_models
def test_empty_and_stopword_queries_and_filters() -> None:
    enc = rf.BiEncoder(MODELS / "tiny-bi-encoder-mean")
    p = rf.Pipeline(encoder=enc, lexical=True)
    p.add(DOCS, metadata=META)
    for q in ("", "the of a", "!!! ..."):
        assert p.search(q, k=3, mode="lexical") == []
        dense = p.search(q, k=3, mode="dense")
        hybrid = p.search(q, k=3)
        assert [h.id for h in hybrid] == [h.id for h in dense] and len(hybrid) == 3
        assert all("lexical" not in h.scores for h in hybrid)
    batch = p.search_batch(["the", "wing"], k=2, mode="lexical")
    assert batch[0] == [] and len(batch[1]) == 2
    # where= filters and allow-lists apply in every mode; k matching documents come back.
    aero = {i for i, m in enumerate(META) if m["topic"] == "aero"}
    for mode in ("lexical", "hybrid", "dense"):
        hits = p.search("flow wing lift", k=10, where={"topic": "aero"}, mode=mode)
        assert {h.id for h in hits} <= aero
        assert all(h.metadata["topic"] == "aero" for h in hits)
    assert {h.id for h in p.search("flow", k=10, where={"topic": "aero"}, mode="lexical")} == {2}
    assert len(p.search("flow wing lift", k=3, where={"topic": "aero"}, mode="hybrid")) == 3
    assert p.search("flow", k=3, where={"topic": "none"}, mode="lexical") == []


def test_non_ascii_texts_round_trip_through_segments(tmp_path: Path) -> None:
    texts = [
        "Die Straße über den Fluss führt zur Mühle",
        "Les élèves étudient l'aérodynamique à Paris",
        "日本語のテキスト 翼 揚力",
        "emoji 🚀 rocket launch",
        "plain ascii text about rockets",
    ]
    p = rf.Pipeline(lexical={"language": "german", "stopwords": None}, path=tmp_path / "p")
    p.policy = TieredPolicy(fold_ratio=1000.0)  # keep the segments
    p.add(texts[:3])
    p.add(texts[3:])
    assert p.search("straße", k=1)[0].id == 0
    assert p.search("Mühle", k=1)[0].text == texts[0]
    assert p.search("🚀 rocket", k=5)[0].id in (3, 4)
    back = rf.Pipeline.load(tmp_path / "p", read_only=True)
    assert back.search("élèves", k=1)[0].text == texts[1]
    assert back.search("翼", k=5) == p.search("翼", k=5)
    assert_lexical_matches(back, ["straße mühle", "élèves", "rocket", "翼"])


@needs_models
def test_scores_stay_exact_through_segments_removes_updates_compaction_and_reload(tmp_path: Path) -> None:
    enc = rf.BiEncoder(MODELS / "tiny-bi-encoder-mean")
    folder = tmp_path / "p"
    p = rf.Pipeline(encoder=enc, lexical=True, path=folder)
    p.policy = TieredPolicy(fold_ratio=1000.0, merge_factor=3)
    words = ["wing", "lift", "flow", "shell", "mach", "heat", "cone", "drag", "the", "a"]
    rng = np.random.default_rng(5)

    def text() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(1, 9))))

    p.add([text() for _ in range(40)])
    p.compact()  # a main file
    for _ in range(5):  # segments (some merged)
        p.add([text() for _ in range(7)])
    p.remove([1, 2, 41, 50])  # rows of the main file and of segments
    p.update([3, 45], [text(), text()])
    main_file = folder / json.loads((folder / "pipeline.json").read_text())["main"]["files"]["terms"]
    before = main_file.stat().st_mtime_ns
    p.add([text() for _ in range(3)])  # an add writes a segment, never the main file
    assert main_file.stat().st_mtime_ns == before
    manifest = json.loads((folder / "pipeline.json").read_text())
    assert manifest["segments"] and manifest["lexical"]["k1"] == 1.5  # merged segments + a main file
    p.check()
    assert_lexical_matches(p)
    ro = rf.Pipeline.load(folder, read_only=True)
    assert_lexical_matches(ro)
    assert [h.id for h in ro.search("wing lift", k=20)] == [h.id for h in p.search("wing lift", k=20)]
    # A snapshot of a pipeline whose rows are still in segments.
    p.save(tmp_path / "snap")
    snap = rf.Pipeline.load(tmp_path / "snap")
    snap.check()
    assert_lexical_matches(snap)
    p.compact()
    assert_lexical_matches(p)
    assert_lexical_matches(rf.Pipeline.load(folder, read_only=True))
    assert not [f for f in folder.iterdir() if f.name.startswith(".")]


@needs_models
def test_settings_round_trip_and_old_folders(tmp_path: Path) -> None:
    enc = rf.BiEncoder(MODELS / "tiny-bi-encoder-mean")
    settings = {"k1": 1.2, "b": 0.5, "language": "french", "stopwords": ["le", "la"]}
    p = rf.Pipeline(encoder=enc, lexical=settings, fusion="convex", dense_weight=0.7, path=tmp_path / "p")
    p.add(["le chat mange", "la souris danse", "les chats mangent"])
    p.close()
    back = rf.Pipeline.load(tmp_path / "p")
    assert back.lexical == settings
    assert back.fusion == {"method": "convex", "k": 60.0, "dense_weight": 0.7}
    idx = back._fields["terms"].index  # type: ignore[attr-defined]
    assert (idx.k1, idx.b, idx.language) == (pytest.approx(1.2), 0.5, "french")
    assert idx.analyze("le chats") == ["chat"]
    back.compact()  # the settings live in the main file too
    again = rf.Pipeline.load(tmp_path / "p")
    assert again._fields["terms"].index.stopwords == ["le", "la"]  # type: ignore[attr-defined]
    assert [h.id for h in again.search("chat", k=3, mode="lexical")] == [0, 2]
    # An empty BM25Index brings its settings; stemming off records language None.
    q = rf.Pipeline(lexical=rf.BM25Index(k1=0.9, stemmer=False, stopwords=None))
    assert q.lexical == {"k1": 0.9, "b": 0.75, "language": None, "stopwords": None}
    # A folder written before lexical indexes existed (no keys) loads as dense only.
    d = rf.Pipeline(encoder=enc, path=tmp_path / "old")
    d.add(DOCS)
    d.close()
    m = json.loads((tmp_path / "old" / "pipeline.json").read_text())
    del m["lexical"], m["fusion"]
    (tmp_path / "old" / "pipeline.json").write_text(json.dumps(m))
    old = rf.Pipeline.load(tmp_path / "old")
    assert old.modes() == ["dense"] and old.lexical is None
    assert len(old.search("wing", k=3)) == 3
    assert set(old.search("wing", k=3)[0].scores) == {"retrieve"}
    with pytest.raises(rf.RankfunnelError, match=r"mode='lexical' needs a pipeline with a lexical index"):
        old.search("wing", mode="lexical")
    old.add(["one more"])
    assert "terms" not in json.loads((tmp_path / "old" / "pipeline.json").read_text())["main"]["files"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fusion": "max"}, "unknown fusion 'max'"),
        ({"fusion_k": 0}, "fusion_k must be positive"),
        ({"dense_weight": 1.5}, "dense_weight must be between 0 and 1"),
        ({"lexical": "yes"}, "lexical must be True, False"),
        ({"lexical": {"k2": 1}}, "unknown lexical settings"),
        ({"lexical": {"b": 2.0}}, "b"),
        ({"lexical": {"language": "klingon"}}, "klingon"),
        ({}, "needs an encoder"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(rf.RankfunnelError, match=message):
        rf.Pipeline(**{"lexical": True, **kwargs} if kwargs else {})  # type: ignore[arg-type]


def test_a_non_empty_index_is_refused() -> None:
    idx = rf.BM25Index()
    idx.add(["text"])
    with pytest.raises(rf.RankfunnelError, match="empty BM25Index"):
        rf.Pipeline(lexical=idx)


def rankfunnel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rankfunnel", *args], capture_output=True, text=True, timeout=300
    )


@needs_models
def test_cli_lexical_index_modes_and_eval_rows(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"id": f"d{i}", "text": t, **META[i]}) for i, t in enumerate(DOCS))
    )
    out = rankfunnel("index", str(corpus), "--lexical", "--out", str(tmp_path / "lex"), "--quiet")
    assert out.returncode == 0, out.stderr
    out = rankfunnel("search", str(tmp_path / "lex"), "wing lift", "--json", "-k", "2")
    assert out.returncode == 0, out.stderr
    assert [h["doc_id"] for h in json.loads(out.stdout)] in (["d0", "d3"], ["d3", "d0"])
    out = rankfunnel("search", str(tmp_path / "lex"), "wing", "--mode", "hybrid")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "mode='hybrid' needs a pipeline with an encoder" in out.stderr
    out = rankfunnel("search", str(tmp_path / "lex"), "wing", "--mode", "sparse")
    assert out.returncode == 2 and "invalid choice: 'sparse'" in out.stderr
    out = rankfunnel("index", str(corpus), "--lexical", "--fusion", "max", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "invalid choice: 'max'" in out.stderr

    out = rankfunnel(
        "index", str(corpus), "--model", str(MODELS / "tiny-bi-encoder-mean"), "--lexical",
        "--reranker", str(MODELS / "tiny-cross-encoder"), "--out", str(tmp_path / "p"), "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for mode, keys in (
        ("dense", {"retrieve", "dense", "rerank"}),
        ("lexical", {"retrieve", "lexical", "rerank"}),
        ("hybrid", {"retrieve", "fused", "rerank"}),
    ):
        out = rankfunnel(
            "search", str(tmp_path / "p"), "wing lift", "--mode", mode, "--json", "--where", "topic=aero"
        )
        assert out.returncode == 0, out.stderr
        hits = json.loads(out.stdout)
        assert hits and all(keys <= set(h["scores"]) and h["metadata"]["topic"] == "aero" for h in hits)
    out = rankfunnel("search", str(tmp_path / "p"), "wing lift")
    assert out.returncode == 0 and "dense" in out.stdout.splitlines()[0] and "fused" in out.stdout
    # Resuming with or without --lexical must match the folder.
    out = rankfunnel("index", str(corpus), "--model", str(MODELS / "tiny-bi-encoder-mean"),
                     "--reranker", str(MODELS / "tiny-cross-encoder"), "--out", str(tmp_path / "p"))  # fmt: skip
    assert out.returncode == 1 and "lexical" in out.stderr
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"id": "q1", "text": "wing lift"}) + "\n" + json.dumps({"id": "q2", "text": "shells"})
    )
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\td3\t1\nq2\td4\t1\n")
    out = rankfunnel("eval", str(tmp_path / "p"), "--queries", str(queries), "--qrels", str(qrels), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["stages"] for r in rows] == ["dense", "lexical", "hybrid", "hybrid -> rerank"]
    assert [r["mode"] for r in rows] == ["dense", "lexical", "hybrid", "hybrid"]
    assert all(r["queries"] == 2 for r in rows)
    assert rows[1]["ndcg@10"] == pytest.approx(1.0)  # BM25 ranks both judged documents first
    out = rankfunnel("eval", str(tmp_path / "p"), "--queries", str(queries), "--qrels", str(qrels))
    assert out.returncode == 0 and "hybrid -> rerank" in out.stdout


@needs_models
def test_colbert_without_an_encoder_is_the_dense_side_of_a_hybrid(tmp_path: Path) -> None:
    cb = rf.ColBERTEncoder(MODELS / "tiny-colbert")
    p = rf.Pipeline(late_interaction=cb, lexical=True, candidates=5, path=tmp_path / "p")
    p.add(DOCS)
    assert p.modes() == ["dense", "lexical", "hybrid"] and p.stages() == ["retrieve"]
    dense = p.search("wing lift", k=5, mode="dense")
    hybrid = p.search("wing lift", k=5)
    assert {h.id for h in hybrid} <= {h.id for h in dense} | {0, 3}
    assert all("fused" in h.scores for h in hybrid) and {0, 3} <= {h.id for h in hybrid}
    assert_lexical_matches(rf.Pipeline.load(tmp_path / "p", read_only=True))
