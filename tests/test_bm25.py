"""BM25Index: analysis and scores against a brute-force numpy BM25, bm25s parity, add / remove /
filter / persistence, empty and stopword-only queries, and the Cranfield quality figure."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rankfunnel as rf
from conftest import shared_dir

STOP = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
    "to", "was", "will", "with",
}  # fmt: skip
PATTERN = re.compile(r"(?u)\b\w\w+\b")


def ref_terms(text: str, stopwords: set[str] = STOP) -> list[str]:
    """bm25s's split and stopword removal (no stemming)."""
    return [w for w in PATTERN.findall(text.lower()) if w not in stopwords]


def ref_scores(docs: list[list[str]], query: list[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Brute-force BM25 (lucene idf) of every document, float64."""
    n = len(docs)
    lens = np.array([len(d) for d in docs], dtype=np.float64)
    avgdl = lens.mean() if n else 0.0
    df = Counter(t for d in docs for t in set(d))
    tfs = [Counter(d) for d in docs]
    out = np.zeros(n)
    for t in query:
        if df[t] == 0:
            continue
        idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
        for i, tf in enumerate(tfs):
            if tf[t]:
                out[i] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * lens[i] / avgdl))
    return out


def check_against_reference(idx: rf.BM25Index, docs: list[list[str]], ids: np.ndarray, query: str) -> None:
    ref = ref_scores(docs, idx.analyze(query), idx.k1, idx.b)
    k = len(docs) + 2
    scores, got = idx.search(query, k=k)
    hit = ref > 0
    want = dict(zip(ids[hit].tolist(), ref[hit]))
    assert set(got[got >= 0].tolist()) == set(want)
    for s, i in zip(scores, got):
        if i >= 0:
            assert s == pytest.approx(want[int(i)], rel=1e-5, abs=1e-6)
        else:
            assert s == -np.inf
    real = scores[got >= 0]
    assert (np.diff(real) <= 1e-6 * np.abs(real[:-1]).clip(1)).all()


WORDS = ["cat", "dog", "mouse", "house", "car", "tree", "the", "of", "Über", "straße", "naïve", "日本", "x"]
# Characters assigned in Python's Unicode tables (the core's tables may be newer).
CHARS = st.characters(codec="utf-8", categories=("L", "N", "P", "Z", "M", "S"))
text_st = st.lists(st.sampled_from(WORDS) | st.text(CHARS, min_size=1, max_size=6), max_size=12).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(text_st, min_size=1, max_size=12), st.lists(text_st, min_size=1, max_size=3))
def test_scores_match_brute_force(texts: list[str], queries: list[str]) -> None:
    idx = rf.BM25Index(stemmer=False)
    ids = idx.add(texts)
    docs = [ref_terms(t) for t in texts]
    for t, d in zip(texts, docs):
        assert idx.analyze(t) == d
    for q in queries:
        check_against_reference(idx, docs, ids, q)


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=CHARS, max_size=40))
def test_split_matches_python_re_on_unicode(text: str) -> None:
    idx = rf.BM25Index(stemmer=False, stopwords=None)
    assert idx.analyze(text) == PATTERN.findall(text.lower())


def test_stemming_stopwords_and_options() -> None:
    idx = rf.BM25Index()
    assert idx.analyze("The Running DOGS of Straße, café_42 ok!") == ["run", "dog", "straße", "café_42", "ok"]
    assert rf.BM25Index(stemmer=False).analyze("The Running dogs") == ["running", "dogs"]
    assert rf.BM25Index(stopwords=None).analyze("the cats") == ["the", "cat"]
    assert rf.BM25Index(stopwords=["Cats", "on"]).analyze("the cats on mats") == ["the", "mat"]
    assert rf.BM25Index(language="french").analyze("les chevaux") == ["le", "cheval"]
    assert rf.BM25Index(stopwords=["x"]).stopwords == ["x"]
    assert "the" in rf.BM25Index().stopwords
    assert rf.BM25Index(stemmer=False).language is None
    for bad in ({"k1": -1.0}, {"b": 1.5}, {"language": "klingon"}, {"stopwords": "elvish"}, {"k1": "1"}):
        with pytest.raises(rf.RankfunnelError):
            rf.BM25Index(**bad)  # type: ignore[arg-type]


def test_parameters_change_scores_as_the_formula_says() -> None:
    texts = ["apple apple banana", "apple cherry cherry cherry cherry", "banana"]
    for k1, b in ((0.9, 0.4), (1.2, 1.0), (2.0, 0.0)):
        idx = rf.BM25Index(k1=k1, b=b, stemmer=False)
        ids = idx.add(texts)
        check_against_reference(idx, [ref_terms(t) for t in texts], ids, "apple banana apple")


def test_empty_and_stopword_only_queries_give_padding() -> None:
    idx = rf.BM25Index()
    idx.add(["a cat", "the dog"])
    for q in ("", "the of and", "!!! ?", "zebra"):
        scores, ids = idx.search(q, k=3)
        assert ids.tolist() == [-1, -1, -1] and np.isneginf(scores).all()
    scores, ids = idx.search(["cat", "the"], k=2)
    assert ids.tolist() == [[0, -1], [-1, -1]]
    assert scores.shape == (2, 2) and scores.dtype == np.float32 and ids.dtype == np.int64
    empty = rf.BM25Index()
    assert empty.search("cat", k=2)[1].tolist() == [-1, -1]
    assert empty.search([], k=2)[1].shape == (0, 2)


def test_ties_go_to_the_lower_id() -> None:
    idx = rf.BM25Index()
    idx.add(["red fish", "red fish", "red fish"], ids=[30, 10, 20])
    scores, ids = idx.search("fish", k=3)
    assert ids.tolist() == [10, 20, 30] and scores[0] == scores[2]


def test_add_remove_contains_and_stats() -> None:
    idx = rf.BM25Index(stemmer=False)
    assert idx.add(["alpha beta", "beta gamma"]).tolist() == [0, 1]
    assert idx.add("gamma delta", ids=[7]).tolist() == [7]
    assert idx.add(["delta"]).tolist() == [8]
    assert len(idx) == 4 and 7 in idx and 3 not in idx and "7" not in idx
    assert idx.ids.tolist() == [0, 1, 7, 8]
    assert idx.avgdl == pytest.approx(7 / 4)
    for bad_ids in ([1], [-1], [9, 9]):
        with pytest.raises(rf.RankfunnelError):
            idx.add(["x y"] * len(bad_ids), ids=bad_ids)
    with pytest.raises(rf.RankfunnelError):
        idx.add([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(rf.RankfunnelError):
        idx.add(["one", "two"], ids=[20])
    assert len(idx) == 4
    with pytest.raises(rf.UnknownIdError):
        idx.remove([0, 99])
    assert len(idx) == 4 and 0 in idx
    assert idx.remove([1]) == 1
    texts = {0: "alpha beta", 7: "gamma delta", 8: "delta"}
    docs = [ref_terms(t) for t in texts.values()]
    check_against_reference(idx, docs, np.array(list(texts)), "beta gamma delta")
    assert idx.avgdl == pytest.approx(5 / 3)


def test_many_removals_compact_and_stay_exact() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(0, 9))) for _ in range(300)]
    idx = rf.BM25Index(stemmer=False)
    idx.add(texts)
    keep = np.ones(300, bool)
    for chunk in np.array_split(rng.permutation(300)[:240], 6):
        idx.remove(chunk)
        keep[chunk] = False
        idx.add(["w1 w2 extra"], ids=[1000 + int(chunk[0])])
        live = {i: texts[i] for i in np.flatnonzero(keep)} | {
            int(j): "w1 w2 extra" for j in idx.ids if j >= 1000
        }
        ids = np.array(list(live))
        docs = [ref_terms(t) for t in live.values()]
        for q in ("w1 w3", "w5 w5 w7 extra", "w39"):
            check_against_reference(idx, docs, ids, q)
    assert len(idx) == 60 + 6


def test_filter_restricts_results() -> None:
    idx = rf.BM25Index()
    idx.add([f"doc about topic {i % 3}" for i in range(30)])
    scores, ids = idx.search(["topic", "doc"], k=5, filter=[4, 9, 2, 1000])
    assert set(ids[0][ids[0] >= 0].tolist()) == {2, 4, 9} and ids[0][3:].tolist() == [-1, -1]
    _, none = idx.search("topic", k=3, filter=[])
    assert none.tolist() == [-1, -1, -1]
    full_s, full_i = idx.search("doc topic", k=30)
    sub_s, sub_i = idx.search("doc topic", k=30, filter=full_i[::2])
    assert sorted(sub_i[sub_i >= 0].tolist()) == sorted(full_i[::2].tolist())


def test_threads_give_identical_results() -> None:
    rng = np.random.default_rng(1)
    vocab = [f"t{i}" for i in range(200)]
    idx = rf.BM25Index()
    idx.add([" ".join(rng.choice(vocab, size=8)) for _ in range(2000)], threads=2)
    queries = [" ".join(rng.choice(vocab, size=3)) for _ in range(50)]
    one = idx.search(queries, k=20, threads=1)
    two = idx.search(queries, k=20, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    with pytest.raises(rf.RankfunnelError):
        idx.search("t1", k=0)
    with pytest.raises(rf.RankfunnelError):
        idx.search(5, k=1)  # type: ignore[arg-type]


def test_save_load_roundtrip_and_rf_load(tmp_path: Path) -> None:
    idx = rf.BM25Index(k1=1.2, b=0.6, language="english", stopwords=["zz"])
    idx.add(["first running text", "second text zz", "third"], ids=[5, 6, 9])
    idx.remove([6])
    path = tmp_path / "lex.rfi"
    idx.save(path)
    for loaded in (rf.BM25Index.load(path), rf.load(path), rf.load(str(path), mmap=True)):
        assert isinstance(loaded, rf.BM25Index)
        assert (loaded.k1, loaded.language, loaded.stopwords) == (pytest.approx(1.2), "english", ["zz"])
        assert loaded.ids.tolist() == [5, 9] and len(loaded) == 2
        for q in ["text run", "third zz"]:
            np.testing.assert_array_equal(loaded.search(q, k=3)[1], idx.search(q, k=3)[1])
            np.testing.assert_allclose(loaded.search(q, k=3)[0], idx.search(q, k=3)[0])
        assert loaded.add(["more"]).tolist() == [10]
    plain = rf.BM25Index(stemmer=False, stopwords=None)
    plain.save(path)
    again = rf.load(path)
    assert (
        isinstance(again, rf.BM25Index)
        and again.language is None
        and again.stopwords == []
        and len(again) == 0
    )


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    idx = rf.BM25Index()
    idx.add(["some words here", "more words"])
    path = tmp_path / "lex.rfi"
    idx.save(path)
    data = bytearray(path.read_bytes())
    for pos in (len(data) - 3, 200, 70):
        bad = data.copy()
        bad[pos] ^= 0xFF
        (tmp_path / "bad.rfi").write_bytes(bytes(bad))
        with pytest.raises(rf.CorruptFileError):
            rf.BM25Index.load(tmp_path / "bad.rfi")
    (tmp_path / "short.rfi").write_bytes(bytes(data[:100]))
    with pytest.raises(rf.CorruptFileError):
        rf.load(tmp_path / "short.rfi")
    flat = rf.FlatIndex(dim=2)
    flat.save(tmp_path / "flat.rfi")
    with pytest.raises(rf.CorruptFileError, match="not a BM25Index"):
        rf.BM25Index.load(tmp_path / "flat.rfi")
    with pytest.raises(rf.CorruptFileError, match="not a FlatIndex"):
        rf.FlatIndex.load(path)
    assert rf.BM25Index.load(path).search("words", k=1)[1].tolist() == [1]


def test_memory_bytes_grows_with_content() -> None:
    idx = rf.BM25Index()
    before = idx.memory_bytes()
    idx.add([f"document number {i} about things" for i in range(1000)])
    assert idx.memory_bytes() > before + 1000 * 8
    assert idx.vocab_size == 990 + 4  # 0..9 are one character long: not terms


def test_matches_bm25s_on_a_small_corpus() -> None:
    bm = pytest.importorskip("bm25s", reason="bm25s not installed (pip install bm25s PyStemmer)")
    stemmer_mod = pytest.importorskip("Stemmer", reason="PyStemmer not installed")
    rng = np.random.default_rng(3)
    words = "search engine ranking retrieval documents query running runner runs index indexes lexical "
    words += "dense sparse vectors the of and fusion reciprocal rank scores better worse café naïve"
    vocab = words.split()
    texts = [" ".join(rng.choice(vocab, size=rng.integers(1, 15))) for _ in range(200)]
    queries = [" ".join(rng.choice(vocab, size=rng.integers(1, 5))) for _ in range(40)]
    stemmer = stemmer_mod.Stemmer("english")
    retriever = bm.BM25(k1=1.5, b=0.75)
    retriever.index(
        bm.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
    )
    idx = rf.BM25Index()
    idx.add(texts)
    for q in queries:
        tokens = bm.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)[0]
        assert idx.analyze(q) == tokens
        if not tokens:  # stopwords only: bm25s cannot score it, we return padding
            assert (idx.search(q, k=3)[1] == -1).all()
            continue
        ref = retriever.get_scores(tokens)
        scores, ids = idx.search(q, k=len(texts))
        got = np.zeros(len(texts))
        got[ids[ids >= 0]] = scores[ids >= 0]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


CRANFIELD = shared_dir() / "data" / "cranfield"


@pytest.mark.skipif(not CRANFIELD.exists(), reason=f"Cranfield not found at {CRANFIELD}")
def test_cranfield_ndcg() -> None:
    from rankfunnel.corpus import read_smart
    from rankfunnel.eval import match_query_ids, ndcg_at_k, read_qrels

    docs = list(read_smart(CRANFIELD / "cran.all.1400"))
    qrels = read_qrels(CRANFIELD / "cranqrel", fmt="cranfield")
    queries = match_query_ids(list(read_smart(CRANFIELD / "cran.qry")), qrels)
    idx = rf.BM25Index()
    idx.add([d.text for d in docs])
    _, ids = idx.search([q.text for q in queries], k=10)
    per_query = [
        ndcg_at_k([docs[i].id for i in row if i >= 0], qrels[q.id])
        for q, row in zip(queries, ids)
        if q.id in qrels
    ]
    ndcg = float(np.mean(per_query))
    assert abs(ndcg - 0.3735) <= 0.005, ndcg


def test_search_results_survive_concurrent_adds() -> None:
    import threading

    idx = rf.BM25Index()
    idx.add(["seed words"] * 10)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(50):
                idx.add([f"word{i} seed"])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    for _ in range(50):
        _, ids = idx.search("seed", k=5)
        assert (ids >= 0).all()
    t.join()
    assert not errors and len(idx) == 60


def test_kill_during_save_leaves_a_loadable_file(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "lex.rfi"
    script = f"""
import rankfunnel as rf
idx = rf.BM25Index()
idx.add(["first version"])
idx.save({str(path)!r})
print("saved", flush=True)
idx.add([f"document {{i}} with several words" for i in range(200_000)])
while True:
    idx.save({str(path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "saved"
    time.sleep(1.5)
    proc.kill()
    assert proc.wait() == -9
    loaded = rf.BM25Index.load(path)  # the old file or a complete new one, never a torn one
    assert len(loaded) in (1, 200_001)
    assert not [
        p for p in tmp_path.iterdir() if p.name != "lex.rfi" and not p.name.startswith(".lex.rfi.tmp")
    ]
