"""Metrics against trec_eval (pytrec_eval) on Cranfield, query matching, evaluate / sweep and the plot."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import rankfunnel as rf
from conftest import shared_dir
from rankfunnel.corpus import Document, read_corpus, read_queries
from rankfunnel.errors import RankfunnelError
from rankfunnel.eval import (
    evaluate,
    judged_queries,
    match_query_ids,
    mrr_at_k,
    ndcg_at_k,
    rank_run,
    read_qrels,
    recall_at_k,
    sweep,
)

CRAN = shared_dir() / "data" / "cranfield"
needs_cranfield = pytest.mark.skipif(not CRAN.exists(), reason=f"Cranfield not found at {CRAN}")


def tfidf_runs(decimals: int) -> dict[str, dict[str, float]]:
    """A real run on Cranfield: tf-idf cosine of every query against every document, the top 200
    kept, scores rounded to ``decimals`` (coarse rounding makes many ties)."""
    docs = list(read_corpus(CRAN / "cran.all.1400"))
    queries = read_queries(CRAN / "cran.qry")
    tok = re.compile(r"[a-z0-9]+")
    vocab: dict[str, int] = {}
    for d in docs:
        for w in tok.findall(d.text.lower()):
            vocab.setdefault(w, len(vocab))

    def counts(texts: list[str]) -> np.ndarray:
        m = np.zeros((len(texts), len(vocab)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in tok.findall(t.lower()):
                if w in vocab:
                    m[i, vocab[w]] += 1
        return m

    dm = counts([d.text for d in docs])
    idf = np.log(len(docs) / (1 + (dm > 0).sum(0))).astype(np.float32)
    dm = np.log1p(dm) * idf
    qm = np.log1p(counts([q.text for q in queries])) * idf
    dm /= np.maximum(np.linalg.norm(dm, axis=1, keepdims=True), 1e-9)
    qm /= np.maximum(np.linalg.norm(qm, axis=1, keepdims=True), 1e-9)
    scores = np.round(qm @ dm.T, decimals)
    runs = {}
    for qi in range(len(queries)):
        top = np.argsort(-scores[qi], kind="stable")[:200]
        runs[str(qi + 1)] = {docs[j].id: float(scores[qi, j]) for j in top}
    return runs


@needs_cranfield
@pytest.mark.parametrize("decimals", [6, 2, 1])
def test_metrics_match_trec_eval_on_cranfield(decimals: int) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = read_qrels(CRAN / "cranqrel", "cranfield")
    runs = tfidf_runs(decimals)
    ties = sum(len(r) - len(set(r.values())) for r in runs.values())
    if decimals <= 2:
        assert ties > 1000  # the run really has ties for the tie rule to matter
    judged = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    want = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut_10", "recall_100", "recip_rank"}).evaluate(runs)
    assert set(want) == set(qrels)
    for q, gains in qrels.items():
        run = runs[q]
        assert ndcg_at_k(run, gains, 10) == pytest.approx(want[q]["ndcg_cut_10"], abs=1e-12)
        assert recall_at_k(run, gains, 100) == pytest.approx(want[q]["recall_100"], abs=1e-12)
        rr = want[q]["recip_rank"]
        assert mrr_at_k(run, gains, 10) == pytest.approx(rr if rr >= 0.1 else 0.0, abs=1e-12)
        # A ranked list gives the same as the run it was ranked from.
        assert ndcg_at_k(rank_run(run), gains, 10) == ndcg_at_k(run, gains, 10)
    mean = np.mean([ndcg_at_k(runs[q], g, 10) for q, g in qrels.items()])
    assert mean == pytest.approx(np.mean([w["ndcg_cut_10"] for w in want.values()]), abs=1e-12)


def test_metrics_with_random_tied_runs() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(7)
    qrels = {
        f"q{i}": {f"d{j}": int(rng.integers(0, 4)) for j in rng.choice(60, 12, replace=False)}
        for i in range(40)
    }
    runs = {q: {f"d{j}": float(rng.integers(0, 3)) for j in rng.choice(60, 50, replace=False)} for q in qrels}
    want = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_20", "recip_rank"}).evaluate(runs)
    for q, docs in qrels.items():
        gains = {d: float(g) for d, g in docs.items()}
        assert ndcg_at_k(runs[q], gains, 10) == pytest.approx(want[q]["ndcg_cut_10"], abs=1e-12)
        assert recall_at_k(runs[q], gains, 20) == pytest.approx(want[q]["recall_20"], abs=1e-12)
        rr = want[q]["recip_rank"]
        assert mrr_at_k(runs[q], gains, 10) == pytest.approx(rr if rr >= 0.1 else 0.0, abs=1e-12)


def test_rank_run_breaks_ties_by_descending_doc_id() -> None:
    assert rank_run({"a": 1.0, "c": 1.0, "b": 2.0, "d": 0.5}) == ["b", "c", "a", "d"]
    gains = {"a": 1.0}
    assert mrr_at_k({"a": 1.0, "c": 1.0}, gains) == 0.5
    assert mrr_at_k(["a", "c"], gains) == 1.0  # a ranked list is taken as given
    assert ndcg_at_k([], gains) == recall_at_k([], gains) == 0.0
    assert ndcg_at_k(["x"], {}) == recall_at_k(["x"], {"x": 0.0}) == 0.0


@needs_cranfield
def test_cranfield_queries_match_by_position() -> None:
    qrels = read_qrels(CRAN / "cranqrel", "cranfield")
    queries = match_query_ids(read_queries(CRAN / "cran.qry"), qrels)
    assert [q.id for q in queries[:3]] == ["1", "2", "3"]
    assert len(judged_queries(queries, qrels)) == 225


def test_query_ids_match_as_written_or_without_leading_zeros() -> None:
    queries = [Document("1", "a"), Document("2", "b"), Document("9", "c")]
    assert match_query_ids(queries, {"1": {"d": 1.0}, "9": {"d": 1.0}}) is queries
    padded = [Document("001", "a"), Document("009", "c")]
    assert [q.id for q in match_query_ids(padded, {"1": {}, "9": {}})] == ["1", "9"]


def test_no_judged_query_is_an_error_showing_both_sides() -> None:
    queries = [Document(f"Q{i}", "t") for i in range(10)]
    with pytest.raises(RankfunnelError) as e:
        judged_queries(queries, {"x1": {"d": 1.0}, "x2": {"d": 1.0}})
    msg = str(e.value)
    assert "'Q0', 'Q1'" in msg and "(10 in all)" in msg and "'x1', 'x2'" in msg


def test_some_judged_queries_missing_is_a_warning_with_counts() -> None:
    queries = [Document("a", "t"), Document("b", "t")]
    with pytest.warns(
        UserWarning, match="1 of 3 judged queries found among the 2 queries; 2 judged query ids"
    ):
        got = judged_queries(queries, {"a": {"d": 1.0}, "x": {"d": 1.0}, "y": {"d": 1.0}})
    assert [q.id for q in got] == ["a"]


class Words:
    """A bag-of-words encoder (hashed to 64 dimensions): a deterministic stand-in for a model."""

    def encode(self, texts: list[str], **kw: object) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w)) % 64] += 1
        return out


DOCS = [f"document {i} about {w}" for i, w in enumerate(["wings", "shells", "flow", "heat", "lift"] * 40)]


def small_pipeline(index: str) -> rf.Pipeline:
    p = rf.Pipeline(encoder=Words(), index=index, ivf_train_at=len(DOCS))  # ivf: trained lists
    p.add(DOCS, doc_ids=[f"d{i}" for i in range(len(DOCS))])
    return p


def test_evaluate_and_sweep_settings() -> None:
    qrels = {"q1": {"d0": 1.0, "d5": 1.0}, "q2": {"d2": 2.0}}
    queries = [Document("q1", "wings"), Document("q2", "flow"), Document("q3", "unjudged")]
    p = small_pipeline("hnsw")
    [row] = evaluate(p, queries, qrels, k=5, depth=50, settings={"ef": 50})
    assert row["ef"] == 50 and row["queries"] == 2 and 0 < row["recall@50"] <= 1
    assert {"total p50_ms", "retrieve p50_ms", "ndcg@5", "mrr@5"} <= set(row)
    rows = sweep(p, queries, qrels, {"ef": [8, 64]}, k=5, depth=50)
    assert [r["ef"] for r in rows] == [8, 64]
    assert type(p.index).__name__ == "HNSWIndex"  # restored after the sweep
    with pytest.raises(RankfunnelError, match="nprobe is not a search setting of HNSWIndex"):
        evaluate(p, queries, qrels, settings={"nprobe": 4})
    with pytest.raises(RankfunnelError, match="unknown search settings"):
        sweep(p, queries, qrels, {"beam": [1]})
    with pytest.raises(RankfunnelError, match="no judged query"):
        evaluate(p, queries[2:], qrels)
    ivf = small_pipeline("ivf")
    rows = sweep(ivf, queries, qrels, {"nprobe": [1, 4], "candidates": [10, 20]}, k=5, depth=50)
    # Candidates do not change what the retrieve stage alone returns: one row per nprobe.
    assert [(r["nprobe"], "candidates" in r) for r in rows] == [(1, False), (4, False)]
    assert ivf.candidates == {"retrieve": 100, "late": 100}


def test_plot_draws_one_curve_per_configuration(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from rankfunnel.plot import pareto_front, plot_tradeoff

    assert pareto_front([(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (0.5, 0.1)]) == [
        (0.5, 0.1),
        (1.0, 0.5),
        (3.0, 0.9),
    ]
    rows = [
        {"stages": s, "ef": ef, "recall@10": r, "ndcg@10": r / 2, "total p50_ms": ms}
        for s, base in (("retrieve", 0.5), ("retrieve -> rerank", 0.6))
        for ef, r, ms in ((16, base, 1.0), (64, base + 0.2, 2.5))
    ]
    out = tmp_path / "plot.png"
    plot_tradeoff(rows, out, metrics=["recall@10", "ndcg@10"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_without_matplotlib_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rankfunnel.plot import plot_tradeoff

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_tradeoff([], tmp_path / "x.png", metrics=["recall@10"])


class CountingReranker:
    """A reranker stand-in that records how many candidates each query brings (shorter text first)."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def predict(self, pairs: list[tuple[str, str]], **kw: object) -> np.ndarray:
        self.seen.append(len(pairs))
        return np.array([-len(text) for _, text in pairs], dtype=np.float32)


def test_rerankers_see_their_configured_candidates() -> None:
    ce = CountingReranker()
    p = rf.Pipeline(encoder=Words(), reranker=ce, index="flat", candidates=30)
    p.add(DOCS, doc_ids=[f"d{i}" for i in range(len(DOCS))])
    qrels = {"q1": {"d0": 1.0}}
    queries = [Document("q1", "wings")]
    rows = sweep(p, queries, qrels, {"candidates": [10, 40]}, k=5, depth=100)
    assert ce.seen == [10, 40]  # not depth=100: the reranker sees what it sees in use
    assert [(r["stages"], r.get("candidates")) for r in rows] == [
        ("retrieve", None),
        ("retrieve -> rerank", 10),
        ("retrieve -> rerank", 40),
    ]
    assert p.candidates == {"retrieve": 30, "late": 30}
    ce.seen.clear()
    evaluate(p, queries, qrels, k=5, depth=100, configs=[["retrieve", "rerank"]])
    assert ce.seen == [30]
