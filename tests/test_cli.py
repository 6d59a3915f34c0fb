"""The command line, through a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
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


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path) -> None:
    out = rankfunnel("demo", "--vectors", "-n", "100", "-d", "0")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "dim must be at least 1" in out.stderr
    out = rankfunnel("search", str(tmp_path / "nothing"), "query")
    assert out.returncode == 1 and "no pipeline at" in out.stderr and "Traceback" not in out.stderr
    out = rankfunnel("--verbose", "search", str(tmp_path / "nothing"), "query")
    assert out.returncode != 0 and "Traceback" in out.stderr


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
