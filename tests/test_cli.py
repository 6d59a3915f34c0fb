"""The command line, through a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rankfunnel as rf
from conftest import shared_dir

MODELS = shared_dir() / "models"
needs_models = pytest.mark.skipif(not MODELS.exists(), reason=f"shared models not found at {MODELS}")


def rankfunnel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rankfunnel", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_vector_demo_prints_results_and_timings() -> None:
    out = rankfunnel("demo", "--vectors", "-n", "5000", "-d", "32")
    assert out.returncode == 0, out.stderr
    assert "query 0:" in out.stdout and "QPS" in out.stdout and "single query" in out.stdout


def one_line_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A failed run: non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    assert out.returncode != 0, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and "error" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path) -> None:
    out = rankfunnel("demo", "--vectors", "-n", "100", "-d", "0")
    assert out.returncode == 1
    one_line_error(out, "dim must be at least 1")
    out = rankfunnel("search", str(tmp_path / "nothing"), "query")
    assert out.returncode == 1
    one_line_error(out, "no pipeline at")
    out = rankfunnel("--verbose", "search", str(tmp_path / "nothing"), "query")
    assert out.returncode != 0 and "Traceback" in out.stderr
    out = rankfunnel("search", str(tmp_path / "nothing"), "query", "--verbose")
    assert out.returncode != 0 and "Traceback" in out.stderr


BROKEN: dict[str, bytes] = {
    "missing.jsonl": b"",  # not written
    "empty.jsonl": b"",
    "blank.jsonl": b"\n\n  \n",
    "malformed.jsonl": b'{"id": "a", "text": "x"\n',
    "latin1.jsonl": b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n',
    "meta.jsonl": b'{"id": "a", "text": "x", "metadata": "not an object"}\n',
    "notext.tsv": b"id\tbody\n1\tx\n",
    "ragged.tsv": b"id\ttext\n1\tx\ty\n",
    "unknown.txt": b"just some words\n",
    "damaged.jsonl.gz": b"\x1f\x8b\x08\x00garbage",
    "dup.jsonl": b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
}


def broken(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    if name != "missing.jsonl":
        path.write_bytes(BROKEN[name])
    return str(path)


CORPUS_ERRORS = [
    ("missing.jsonl", "no such file"),
    ("empty.jsonl", "the file is empty"),
    ("blank.jsonl", "no documents"),
    ("malformed.jsonl", "malformed.jsonl:1: invalid JSON"),
    ("latin1.jsonl", "latin1.jsonl:2: not UTF-8 (byte 0xe9 at byte offset 50)"),
    ("meta.jsonl", "meta.jsonl:1: 'metadata' must be a JSON object, got str"),
    ("notext.tsv", "the header needs a 'text' column"),
    ("ragged.tsv", "ragged.tsv:2: 3 columns where the header has 2"),
    ("unknown.txt", "unknown corpus format"),
    ("damaged.jsonl.gz", "damaged gzip data"),
]


@pytest.mark.parametrize(("name", "message"), CORPUS_ERRORS)
def test_index_broken_corpus(tmp_path: Path, name: str, message: str) -> None:
    out = rankfunnel(
        "index", broken(tmp_path, name), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "p")
    )
    one_line_error(out, message)
    assert not (tmp_path / "p").exists()  # nothing created for a corpus that cannot be read


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "annoy"], "argument --index: unknown index kind 'annoy'"),
        (["--index", "ivf,coarse=kd"], 'argument --index: unknown coarse quantizer "kd"'),
        (["--index", "ivf,storage=int4"], "argument --index: unknown storage 'int4'"),
        (["--index", "hnsw,m=1"], "argument --index: m must be between 2 and 2048, got 1"),
        (["--index", "ivf0"], "argument --index: nlist must be at least 1, got 0"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
        (["--candidates", "many"], "argument --candidates: expected a positive integer, got 'many'"),
        (["--model", "/no/such/model"], "/no/such/model"),
        ([], "a pipeline needs an encoder"),
    ],
)
def test_index_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n')
    one_line_error(rankfunnel("index", str(corpus), "--out", str(tmp_path / "p"), *args), message)


@needs_models
def test_index_duplicate_id_names_it(tmp_path: Path) -> None:
    out = rankfunnel("index", broken(tmp_path, "dup.jsonl"), "--model", str(MODELS / "tiny-bi-encoder-mean"),
                     "--out", str(tmp_path / "p"))  # fmt: skip
    one_line_error(out, "dup.jsonl:2: duplicate document id 'a' (first at line 1)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["q", "--where", "year"], "--where expects key=value, got 'year'"),
        (["q", "--where", "=1"], "--where expects key=value"),
        (["q", "-k", "0"], "argument -k: expected a positive integer, got 0"),
        (["q", "-k", "ten"], "argument -k"),
        (["q"], "no pipeline at"),
        ([], "the following arguments are required: query"),
    ],
)
def test_search_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    one_line_error(rankfunnel("search", str(tmp_path / "p"), *args), message)


def test_search_damaged_pipeline(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pipeline.json").write_text("{not json")
    out = rankfunnel("search", str(tmp_path / "p"), "q")
    one_line_error(out)
    out = rankfunnel("search", str(tmp_path / "p"), "q", "--verbose")
    assert out.returncode != 0 and "Traceback" in out.stderr


def eval_files(tmp_path: Path, queries: bytes, qrels: bytes) -> list[str]:
    (tmp_path / "q.jsonl").write_bytes(queries)
    (tmp_path / "qrels.txt").write_bytes(qrels)
    return [
        "eval",
        str(tmp_path / "p"),
        "--queries",
        str(tmp_path / "q.jsonl"),
        "--qrels",
        str(tmp_path / "qrels.txt"),
    ]


GOOD_QUERIES = b'{"id": "q1", "text": "wing"}\n{"id": "q2", "text": "shell"}\n'
GOOD_QRELS = b"q1 0 d1 1\nq2 0 d2 1\n"


@pytest.mark.parametrize(
    ("queries", "qrels", "extra", "message"),
    [
        (GOOD_QUERIES, b"", [], "qrels.txt: no judgements (the file is empty)"),
        (GOOD_QUERIES, b"q1 d1\tx y z\n", [], "cannot tell the qrels format from 5 columns"),
        (GOOD_QUERIES, b"q1 0 d1 1\nq1 0 d2\n", [], "qrels.txt:2: trec qrels need 4 columns, got 3"),
        (GOOD_QUERIES, b"q1 0 d1 \xff\n", [], "qrels.txt:1: not UTF-8"),
        (GOOD_QUERIES, GOOD_QRELS, ["--qrels-format", "cranfield"], "cranfield qrels need 3 columns"),
        (
            GOOD_QUERIES,
            GOOD_QRELS,
            ["--qrels-format", "csv"],
            "argument --qrels-format: invalid choice: 'csv'",
        ),
        (b"", GOOD_QRELS, [], "q.jsonl: no queries (the file is empty)"),
        (b"\n\n", GOOD_QRELS, [], "q.jsonl: no queries"),
        (b"[1, 2]\n", GOOD_QRELS, [], "q.jsonl:1: each line must be a JSON object"),
        (
            b'{"id": "x9", "text": "t"}\n',
            GOOD_QRELS,
            [],
            "no query id matches a judged query id: the queries have 'x9'",
        ),
        (GOOD_QUERIES, GOOD_QRELS, ["--sweep", "ef"], "--sweep expects NAME=V1,V2"),
        (GOOD_QUERIES, GOOD_QRELS, ["--sweep", "ef=a,b"], "--sweep ef: values must be integers"),
        (GOOD_QUERIES, GOOD_QRELS, ["--sweep", "beam=1"], "--sweep expects NAME=V1,V2"),
        (GOOD_QUERIES, GOOD_QRELS, ["--depth", "-3"], "argument --depth: expected a positive integer"),
        (GOOD_QUERIES, GOOD_QRELS, [], "no pipeline at"),
    ],
)
def test_eval_bad_input(tmp_path: Path, queries: bytes, qrels: bytes, extra: list[str], message: str) -> None:
    one_line_error(rankfunnel(*eval_files(tmp_path, queries, qrels), *extra), message)


def test_eval_missing_files(tmp_path: Path) -> None:
    args = eval_files(tmp_path, GOOD_QUERIES, GOOD_QRELS)
    one_line_error(rankfunnel(*args[:-1], str(tmp_path / "none.txt")), "no such file", "none.txt")
    args[3] = str(tmp_path / "none.jsonl")
    one_line_error(rankfunnel(*args), "no such file", "none.jsonl")


def test_bench_demo_export_bad_input(tmp_path: Path) -> None:
    one_line_error(rankfunnel("bench", "nope"), "unknown benchmark suite 'nope'")
    one_line_error(rankfunnel("bench", "flat", "--args", "--n", "x"), "argument --n: invalid int value: 'x'")
    one_line_error(rankfunnel("demo", "--model", str(tmp_path / "none")), "does not exist")
    one_line_error(rankfunnel("demo", "--vectors", "-n", "0"), "argument -n: expected a positive integer")
    one_line_error(
        rankfunnel("export", str(tmp_path / "none"), str(tmp_path / "out"), "--kind", "bi"), "does not exist"
    )
    one_line_error(rankfunnel("export", "src", "out", "--kind", "tfidf"), "argument --kind: invalid choice")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("users' data")
    out = rankfunnel("export", str(tmp_path / "none"), str(tmp_path / "full"), "--kind", "bi")
    one_line_error(out, "exists and is not empty")
    assert (tmp_path / "full" / "keep.txt").read_text() == "users' data"
    one_line_error(rankfunnel(), "the following arguments are required: command")


@needs_models
def test_smart_collection_eval_end_to_end(tmp_path: Path) -> None:
    """The issue's SMART collection: .ALL documents, .QRY queries, .REL judgements whose lines are
    'qid docid 0 0.000000' (every pair relevant). Before, eval read .REL as BEIR, matched no query,
    and crashed without --json."""
    topics = ["wing lift", "shell buckling", "heat transfer", "boundary layer", "shock waves"]
    docs = "".join(
        f".I {i}\n.T\n{topics[i % 5]} study {i}\n.A\nauthor\n.W\nnotes on {topics[i % 5]}\n"
        for i in range(1, 41)
    )
    (tmp_path / "COLL.ALL").write_text(docs)
    (tmp_path / "COLL.QRY").write_text("".join(f".I {q}\n.W\n{t}\n" for q, t in enumerate(topics, 1)))
    rel = "".join(
        f"{q:6d}{d:6d} \t0\t0.000000\n" for q in range(1, 6) for d in range(1, 41) if d % 5 == q - 1
    )
    (tmp_path / "COLL.REL").write_text(rel)
    out = rankfunnel("index", str(tmp_path / "COLL.ALL"), "--model", str(MODELS / "tiny-bi-encoder-mean"),
                     "--reranker", str(MODELS / "tiny-cross-encoder"), "--out", str(tmp_path / "p"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no progress bar when stderr is not a terminal
    args = [
        "eval",
        str(tmp_path / "p"),
        "--queries",
        str(tmp_path / "COLL.QRY"),
        "--qrels",
        str(tmp_path / "COLL.REL"),
    ]
    out = rankfunnel(*args, "-k", "5", "--depth", "10")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "recall@10" in out.stdout and "retrieve -> rerank" in out.stdout
    out = rankfunnel(*args, "--json", "--depth", "10", "--progress")
    rows = json.loads(out.stdout)
    assert all(r["queries"] == 5 and r["recall@10"] > 0 for r in rows)
    assert "eval" in out.stderr and "100%" in out.stderr  # --progress draws the bar even into a pipe
    # A sweep of the candidates the reranker sees, and its plot.
    pytest.importorskip("matplotlib")
    out = rankfunnel(*args, "--json", "--sweep", "candidates=5,20", "--plot", str(tmp_path / "plot.png"))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["stages"], r.get("candidates")) for r in rows] == [
        ("retrieve", None), ("retrieve -> rerank", 5), ("retrieve -> rerank", 20)
    ]  # fmt: skip
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    # Some judged queries have no query: a warning with the counts, then the results.
    (tmp_path / "more.rel").write_text(rel + "     9     1 \t0\t0.000000\n")
    out = rankfunnel(*args[:-1], str(tmp_path / "more.rel"), "--json")
    assert out.returncode == 0
    assert "warning: 5 of 6 judged queries found among the 5 queries" in out.stderr


CRAN = shared_dir() / "data" / "cranfield"


@needs_models
@pytest.mark.skipif(not CRAN.exists(), reason="Cranfield not found")
@pytest.mark.skipif(
    not os.environ.get("RANKFUNNEL_SLOW_TESTS"),
    reason="encodes Cranfield through the CLI (minutes on 2 cores); set RANKFUNNEL_SLOW_TESTS=1. "
    "test_corpus checks the renamed file reads as cranqrel, test_pipeline the 0.3817 from cranqrel",
)
def test_cranfield_qrels_renamed_gives_the_same_ndcg(tmp_path: Path) -> None:
    """cranqrel renamed to qrels.txt is still read as Cranfield grades (the format is told by the
    content): nDCG@10 0.3817 with all-MiniLM-L6-v2, as with the original name. Indexed with
    --lexical, eval reports each mode: BM25 0.3735 +- 0.005 (bm25s's figure), hybrid RRF(60)
    >= 0.415 (issue #14)."""
    shutil.copy(CRAN / "cranqrel", tmp_path / "qrels.txt")
    out = rankfunnel("index", str(CRAN / "cran.all.1400"), "--model", str(MODELS / "all-MiniLM-L6-v2"),
                     "--lexical", "--out", str(tmp_path / "p"), "--batch-size", "64")  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = rankfunnel("eval", str(tmp_path / "p"), "--queries", str(CRAN / "cran.qry"), "--qrels",
                     str(tmp_path / "qrels.txt"), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "note:" in out.stderr and "--qrels-format beir" in out.stderr
    rows = {r["stages"]: r for r in json.loads(out.stdout)}
    assert list(rows) == ["dense", "lexical", "hybrid"]
    assert all(r["queries"] == 225 for r in rows.values())
    assert rows["dense"]["ndcg@10"] == pytest.approx(0.3817, abs=0.002)
    assert rows["lexical"]["ndcg@10"] == pytest.approx(0.3735, abs=0.005)
    assert rows["hybrid"]["ndcg@10"] >= 0.415


def test_demo_without_a_default_model_says_what_to_install(tmp_path: Path) -> None:
    out = rankfunnel("demo", env={"RANKFUNNEL_CACHE": str(tmp_path), "PYTHONNOUSERSITE": "1"})
    if out.returncode == 0:
        pytest.skip("a default model is installed here")
    assert "pip install" in out.stderr and out.stderr.strip().count("\n") == 0


@needs_models
def test_index_search_eval_round_trip(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    docs = [
        {"id": "d1", "text": "lift of a wing in a propeller slipstream", "year": 2020},
        {"id": "d2", "text": "buckling of thin shells under external pressure", "year": 2021},
        {"id": "d3", "text": "heat transfer in hypersonic flow over blunt bodies", "year": 2021},
    ]
    corpus.write_text("\n".join(json.dumps(d) for d in docs))
    out = rankfunnel(
        "index", str(corpus), "--model", str(MODELS / "tiny-bi-encoder-mean"),
        "--reranker", str(MODELS / "tiny-cross-encoder"), "--out", str(tmp_path / "p"), "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "3 documents indexed" in out.stdout
    out = rankfunnel("search", str(tmp_path / "p"), "wing lift", "-k", "2", "--json", "--where", "year=2021")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 2 and {h["doc_id"] for h in hits} == {"d2", "d3"}
    assert set(hits[0]["scores"]) == {"retrieve", "rerank"}
    out = rankfunnel("search", str(tmp_path / "p"), "wing lift")
    assert out.returncode == 0 and "rerank" in out.stdout and "d1" in out.stdout
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "q1", "text": "shell buckling"}))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    out = rankfunnel("eval", str(tmp_path / "p"), "--queries", str(tmp_path / "q.jsonl"), "--qrels",
                     str(tmp_path / "qrels.tsv"), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["stages"] for r in rows] == ["retrieve", "retrieve -> rerank"]
    assert all(r["recall@100"] == 1.0 for r in rows)


@needs_models
def test_index_with_int8_models(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="--quantize int8 needs the onnx package")
    corpus = tmp_path / "corpus.jsonl"
    texts = ["lift of a wing in a slipstream", "buckling of thin shells", "hypersonic heat transfer"]
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)))
    env = {"RANKFUNNEL_CACHE": str(tmp_path / "cache")}
    out = rankfunnel(
        "index", str(corpus), "--model", str(MODELS / "tiny-bi-encoder-mean"), "--reranker",
        str(MODELS / "tiny-cross-encoder"), "--out", str(tmp_path / "p"), "--quantize", "int8", "--quiet",
        env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cfg = json.loads((tmp_path / "p" / "pipeline.json").read_text())
    assert "int8" in json.dumps(cfg)
    assert any(f.suffix == ".onnx" for f in (tmp_path / "cache").iterdir())
    out = rankfunnel("search", str(tmp_path / "p"), "wing lift", "-k", "3", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert {h["doc_id"] for h in json.loads(out.stdout)} == {"d0", "d1", "d2"}


@needs_models
def test_index_commits_segments_and_a_rerun_resumes(tmp_path: Path) -> None:
    corpus = tmp_path / "c.tsv"
    lines = [f"{i}\tdocument {i} about flow\n" for i in range(200)]
    corpus.write_text("id\ttext\n" + "".join(lines[:120]))
    model = str(MODELS / "tiny-bi-encoder-mean")
    args = [
        "index",
        str(corpus),
        "--model",
        model,
        "--out",
        str(tmp_path / "p"),
        "--commit-every",
        "2",
        "--quiet",
    ]
    out = rankfunnel(*args)
    assert out.returncode == 0, out.stderr
    cfg = json.loads((tmp_path / "p" / "pipeline.json").read_text())
    # One commit (a small segment) per 2 documents, plus the policy's merges and folds.
    assert cfg["docs"] == 120 and cfg["generation"] >= 60
    assert sum(s["rows"] for s in cfg["segments"]) <= 0.1 * cfg["main"]["rows"]
    # The corpus grew (or the first run failed halfway): the rerun adds only what is missing.
    corpus.write_text("id\ttext\n" + "".join(lines))
    out = rankfunnel(*args)
    assert out.returncode == 0, out.stderr
    assert "80 documents indexed" in out.stdout and "120 already there" in out.stdout
    assert json.loads((tmp_path / "p" / "pipeline.json").read_text())["docs"] == 200
    out = rankfunnel("index", str(corpus), "--model", model, "--out", str(tmp_path / "p"), "--index", "hnsw")
    assert out.returncode == 1 and "already holds a different pipeline" in out.stderr
    # IVF: exact search until the pipeline holds enough documents to train the lists.
    out = rankfunnel("index", str(corpus), "--model", model, "--out", str(tmp_path / "ivf"), "--index", "ivf",
                     "--commit-every", "50", "--quiet")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert isinstance(rf.Pipeline.load(tmp_path / "ivf").index, rf.FlatIndex)


@needs_models
def test_kill_during_index_then_reload(tmp_path: Path) -> None:
    corpus = tmp_path / "c.tsv"
    corpus.write_text(
        "id\ttext\n" + "".join(f"{i}\tdocument {i} about flow and wings\n" for i in range(3000))
    )
    cmd = [sys.executable, "-m", "rankfunnel", "index", str(corpus), "--model", str(MODELS / "tiny-bi-encoder-mean"),
           "--out", str(tmp_path / "p"), "--commit-every", "500", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    import time

    import rankfunnel as rf

    deadline = time.time() + 120
    while time.time() < deadline:  # wait for at least one commit, then kill -9 mid-run
        cfg = tmp_path / "p" / "pipeline.json"
        if cfg.exists() and json.loads(cfg.read_text())["generation"] >= 2:
            break
        time.sleep(0.05)
    proc.kill()
    assert proc.wait() == -9, "the indexer finished before it could be killed"  # killed mid-run
    p = rf.Pipeline.load(tmp_path / "p")
    n = len(p)
    assert n % 500 == 0 and n >= 500, n
    assert len(p.index) == n
    hits = p.search("document about flow", k=n + 10, stages=["retrieve"])
    assert len(hits) == n
