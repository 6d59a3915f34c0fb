"""Pipeline storage: segments, crash points (kill -9), random kills, one writer, damaged folders."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_worker import DIM, assert_lexical_matches, texts, vectors

import rankfunnel as rf
from conftest import shared_dir
from rankfunnel.pipeline import TieredPolicy
from rankfunnel.pipeline.folder import referenced

MODELS = shared_dir() / "models"
WORKER = Path(__file__).with_name("pipeline_worker.py")
pytestmark = pytest.mark.skipif(not MODELS.exists(), reason=f"shared models not found at {MODELS}")


@functools.cache
def opened() -> dict[str, object]:
    """The tiny models, opened once and handed to every load (``models=``)."""
    return {
        "encoder": rf.BiEncoder(MODELS / "tiny-bi-encoder-mean"),
        "late_interaction": rf.ColBERTEncoder(MODELS / "tiny-colbert"),
    }


def open_folder(folder: Path, **kw: object) -> rf.Pipeline:
    """Pipeline.load with the already-open models the folder records."""
    recorded = json.loads((folder / "pipeline.json").read_text())["models"]
    return rf.Pipeline.load(folder, models={k: v for k, v in opened().items() if k in recorded}, **kw)  # type: ignore[arg-type]


def run_worker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), args[0], str(MODELS), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file but SQLite's shared-memory index (readers touch it)."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.iterdir()
        if not p.name.endswith("-shm")
    }


def assert_no_garbage(folder: Path) -> None:
    manifest = json.loads((folder / "pipeline.json").read_text())
    allowed = referenced(manifest) | {
        "pipeline.json",
        "writer.lock",
        "docs.sqlite",
        "docs.sqlite-wal",
        "docs.sqlite-shm",
    }
    assert set(os.listdir(folder)) <= allowed


def verify(folder: Path, expect: dict[int, str]) -> None:
    """A read-only open sees exactly ``expect`` and changes nothing; a writing open recovers and adds."""
    before = files(folder)
    r = open_folder(folder, read_only=True)
    assert len(r) == len(expect)
    r.check()
    first = r.search("wings", k=100, stages=["retrieve"])
    assert {h.id: h.text for h in first} == expect
    late = r.search("wings", k=100, stages=["retrieve", "late"])  # every document has its tokens
    assert {h.id for h in late} == set(expect)
    assert {h.id: h.text for h in r.search("wings", k=100, stages=["retrieve"], mode="dense")} == expect
    assert_lexical_matches(r)  # lexical and dense hold the same live ids; BM25 scores are exact
    with pytest.raises(rf.RankfunnelError, match="read-only"):
        r.add(["not allowed"])
    r.close()
    assert files(folder) == before, "a read-only open changed the folder"

    w = open_folder(folder)
    new = w.add(["a fresh document about wings"], embeddings=vectors([99], salt=7))
    assert int(new[0]) not in expect and len(w) == len(expect) + 1
    w.check()
    assert_lexical_matches(w)
    assert_no_garbage(folder)
    hits = w.search("wings", k=100, stages=["retrieve", "late"])
    assert {h.id: h.text for h in hits} == {**expect, int(new[0]): "a fresh document about wings"}
    w.close()


BASE = dict(zip(range(25), texts(list(range(25)))))
ADDED = {**BASE, **dict(zip(range(25, 30), texts(list(range(25, 30)))))}
REMOVED = {i: t for i, t in BASE.items() if i not in (3, 22)}
UPDATED = {**BASE, 4: "updated text 4", 21: "updated text 21"}

# (operation, crash point, documents a reader must then see). Points before the manifest's
# rename leave the previous commit; points after it, the new one. Merges and compactions
# change no document.
CASES = [
    ("add", "add:rows", BASE),
    ("add", "segment:before-rename", BASE),
    ("add", "add:segment", BASE),
    ("add", "add:manifest", BASE),
    ("add", "add:committed", ADDED),
    ("add", "segment:before-rename#2", ADDED),
    ("add", "merge:segment", ADDED),
    ("add", "merge:manifest", ADDED),
    ("add", "merge:committed", ADDED),
    ("remove", "remove:rows", BASE),
    ("remove", "remove:manifest", BASE),
    ("remove", "remove:committed", REMOVED),
    ("update", "update:rows", BASE),
    ("update", "update:segment", BASE),
    ("update", "update:manifest", BASE),
    ("update", "update:committed", UPDATED),
    ("compact", "compact:main", REMOVED),
    ("compact", "compact:late", REMOVED),
    ("compact", "compact:bm25", REMOVED),
    ("compact", "compact:manifest", REMOVED),
    ("compact", "compact:committed", REMOVED),
    ("compact", "compact:purged", REMOVED),
    # Folded versions whose old versions' rows are not purged yet must not be taken for tombstones.
    ("update-compact", "compact:committed", UPDATED),
]


@pytest.mark.parametrize(("op", "point", "expect"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_kill_at_every_crash_point(tmp_path: Path, op: str, point: str, expect: dict[int, str]) -> None:
    folder = tmp_path / "p"
    out = run_worker("crash", str(folder), op, point)
    assert out.returncode == -signal.SIGKILL, f"{point} never fired: {out.stdout} {out.stderr}"
    verify(folder, expect)


def test_orphan_vectors_after_a_kill_do_not_block_adds(tmp_path: Path) -> None:
    """The issue's bug: killed after the vectors were written but before the commit, then one
    read-only open (``rankfunnel search``), then adds with default ids."""
    folder = tmp_path / "p"
    out = run_worker("crash", str(folder), "add", "add:segment")
    assert out.returncode == -signal.SIGKILL
    from rankfunnel.cli import main

    assert main(["search", str(folder), "wings", "-k", "3"]) == 0
    w = rf.Pipeline.load(folder)
    ids = w.add(texts([0, 1]), embeddings=vectors([50, 51]))
    assert ids.tolist() == [25, 26]
    assert len(w.search("wings", k=100, stages=["retrieve"])) == 27
    w.check()


def test_random_kills_keep_every_commit_whole(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    rf.Pipeline(encoder=opened()["encoder"], path=folder, lexical=True).close()
    rng = np.random.default_rng(0)
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "churn", str(MODELS), str(folder), str(round_)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.3, 1.5)))
        proc.send_signal(signal.SIGKILL)
        log = proc.stdout.read().splitlines()
        assert proc.wait() == -signal.SIGKILL
        added = {int(line.split()[1]) for line in log if line.startswith("add ")}
        removed = {int(line.split()[1]) for line in log if line.startswith("remove ")}
        r = open_folder(folder, read_only=True)
        r.check()
        names = [row[2] for row in r.docs.get(r.docs.where({})) if row]
        per_op: dict[int, set[str]] = {}
        for name in names:
            assert name is not None
            op, j = name.split("op")[1].split("-")
            if name.startswith(f"r{round_}op"):
                per_op.setdefault(int(op), set()).add(j)
        last = max(added, default=-1)
        in_flight_removal = last - 1 if last % 4 == 3 and last - 1 not in removed else None
        for i in added:  # every commit that returned is there, whole
            if i == in_flight_removal:
                assert per_op.get(i) in ({"1", "2"}, {"0", "1", "2"})
            else:
                assert per_op.get(i) == ({"1", "2"} if i in removed else {"0", "1", "2"})
        for i, members in per_op.items():  # the op in flight is whole or absent
            assert i in added or (i == last + 1 and members == {"0", "1", "2"})
        assert len(r.search("op", k=10_000, stages=["retrieve"], mode="dense")) == len(r)
        assert_lexical_matches(r, ["op", "doc 1", "op 3 doc"])
        r.close()
        w = open_folder(folder)
        new = w.add(["after the kill"], embeddings=vectors([0]))
        w.check()
        assert w.remove(new) == 1  # adds and removals work after recovery
        w.close()


def test_two_process_writers_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    rf.Pipeline(encoder=opened()["encoder"], path=folder).close()
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), "writer", str(MODELS), str(folder), tag, "250"])
        for tag in ("alpha", "beta")
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    r = open_folder(folder, read_only=True)
    assert len(r) == 500
    r.check()
    got = {row[0] for row in r.docs.get(r.docs.where({})) if row}
    assert got == {f"{t} {i}" for t in ("alpha", "beta") for i in range(250)}


def test_second_writer_gets_an_error_naming_the_holder(tmp_path: Path) -> None:
    enc = opened()["encoder"]
    p = rf.Pipeline(encoder=enc, path=tmp_path / "p")
    p.add(texts([0, 1]), embeddings=vectors([0, 1]))
    other = open_folder(tmp_path / "p")
    assert len(other.search("wings", k=5)) == 2  # readers run beside the writer
    with pytest.raises(rf.RankfunnelError, match=f"open for writing by process {os.getpid()}"):
        other.add(["blocked"], embeddings=vectors([2]))
    assert len(other) == 2
    p.add(texts([2]), embeddings=vectors([2]))
    assert len(other) == 2  # a reader keeps the commit it loaded
    p.close()
    other.add(["now allowed"], embeddings=vectors([3]))  # catches up with the last commit first
    assert len(other) == 4
    other.check()
    with pytest.raises(rf.RankfunnelError, match="already holds a pipeline"):
        rf.Pipeline(encoder=enc, path=tmp_path / "p")


def small(folder: Path, **kw: object) -> rf.Pipeline:
    return rf.Pipeline(encoder=opened()["encoder"], path=folder, **kw)  # type: ignore[arg-type]


def test_segments_merge_exactly_and_adds_write_only_what_they_add(tmp_path: Path) -> None:
    p = small(tmp_path / "p")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, DIM)).astype(np.float32)
    p.add([f"doc {i}" for i in range(300)], embeddings=x[:300])
    main = p.index
    assert len(main) == 300
    for start in range(300, 400, 20):  # 5 commits of 20 rows: segments (20 * 5 < 10% of 300? no: 100 > 30)
        p.add([f"doc {i}" for i in range(start, start + 20)], embeddings=x[start : start + 20])
    manifest = json.loads((tmp_path / "p" / "pipeline.json").read_text())
    assert manifest["docs"] == 400
    seg_bytes = [s["bytes"] for s in manifest["segments"]]
    assert all(b < 20 * DIM * 4 * 3 for b in seg_bytes)  # a segment holds its rows, not the corpus
    q = p.encoder.encode_queries(["doc 7", "doc 350"])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for qi, hits in enumerate(p.search_batch(["doc 7", "doc 350"], k=10, stages=["retrieve"])):
        s = unit @ q[qi]
        order = np.lexsort((np.arange(400), -s))[:10]
        assert [h.id for h in hits] == order.tolist()
        np.testing.assert_allclose([h.score for h in hits], s[order], rtol=1e-5, atol=1e-6)


def test_policy_rule() -> None:
    pol = TieredPolicy()
    assert pol.plan(0, 0, [5]) == "fold"  # an empty main index folds at once
    assert pol.plan(200_000, 0, [1000]) is None
    assert pol.plan(200_000, 0, [100] * 10) == list(range(10))
    assert pol.plan(200_000, 0, [100] * 9 + [5000]) is None
    assert pol.plan(200_000, 0, [15_000, 6_000]) == "fold"
    assert pol.plan(200_000, 20_001, []) == "fold"
    assert [pol.tier(n) for n in (1, 1000, 1001, 10_000, 10_001)] == [0, 0, 1, 1, 2]


def test_remove_update_by_doc_id_persist(tmp_path: Path) -> None:
    cb = opened()["late_interaction"]
    p = rf.Pipeline(encoder=opened()["encoder"], late_interaction=cb, path=tmp_path / "p")
    p.add(texts([0, 1, 2, 3]), doc_ids=["a", "b", "c", "d"], metadata=[{"n": i} for i in range(4)])
    p.add(texts([4, 5]), doc_ids=["e", "f"])
    assert p.remove(["b"]) == 1
    assert p.update(["e", 0], ["fresh wings text", "another text"]) == 2
    with pytest.raises(rf.UnknownIdError, match="'b'"):
        p.remove(["b"])
    with pytest.raises(rf.UnknownIdError):
        p.update([1], ["x"])
    with pytest.raises(rf.RankfunnelError, match="id 2 is already in the pipeline"):
        p.add(["dup"], ids=[2])
    with pytest.raises(rf.RankfunnelError, match="doc_id 'c' is already in the pipeline"):
        p.add(["dup"], doc_ids=["c"])
    p.close()
    back = rf.Pipeline.load(tmp_path / "p")
    assert len(back) == 5
    back.check()
    rows = dict(zip(back.docs.ids_for_ext(["a", "e"]), back.docs.get(back.docs.ids_for_ext(["a", "e"]))))
    assert rows[0] == ("another text", {"n": 0}, "a")
    assert rows[4] is not None and rows[4][0] == "fresh wings text"
    hits = back.search("fresh wings text", k=5, stages=["retrieve", "late"])
    assert {h.doc_id for h in hits} == {"a", "c", "d", "e", "f"}
    # Dense and ColBERT data of the update are the new text's.
    e = back.search("fresh wings text", k=5, stages=["retrieve"])
    q = back.encoder.encode_queries(["fresh wings text"])[0]
    v = back.encoder.encode(["fresh wings text"])[0]
    assert [h.score for h in e if h.doc_id == "e"][0] == pytest.approx(float(q @ v), rel=1e-4)
    back.compact()
    back.check()
    assert len(open_folder(tmp_path / "p", read_only=True)) == 5


def test_embeddings_are_checked(tmp_path: Path) -> None:
    p = small(tmp_path / "p")
    with pytest.raises(rf.RankfunnelError, match="dimension"):
        p.add(["a", "b"], embeddings=np.ones((2, DIM + 1), np.float32))
    with pytest.raises(rf.RankfunnelError, match="2 embeddings for 3 texts"):
        p.add(["a", "b", "c"], embeddings=np.ones((2, DIM), np.float32))
    bad = np.ones((2, DIM), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(rf.RankfunnelError, match="NaN"):
        p.add(["a", "b"], embeddings=bad)
    with pytest.raises(rf.RankfunnelError, match="non-negative"):
        p.add(["a"], ids=[-1], embeddings=np.ones((1, DIM), np.float32))
    assert len(p) == 0 and p.docs.max_id() == -1
    cb = rf.Pipeline(late_interaction=rf.ColBERTEncoder(MODELS / "tiny-colbert"))
    with pytest.raises(rf.RankfunnelError, match="bi-encoder"):
        cb.add(["a"], embeddings=np.ones((1, DIM), np.float32))


def test_ivf_searches_exactly_until_trained(tmp_path: Path) -> None:
    p = small(tmp_path / "p", index="ivf", ivf_train_at=400)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, DIM)).astype(np.float32)
    p.add([f"d{i}" for i in range(300)], embeddings=x[:300])
    assert isinstance(p.index, rf.FlatIndex)  # too few to train: exact
    p.add([f"d{i}" for i in range(300, 450)], embeddings=x[300:450])
    p.compact()
    assert isinstance(p.index, rf.IVFIndex) and p.index.is_trained and len(p.index) == 450
    centroids = p.index.centroids.copy()
    p.add([f"d{i}" for i in range(450, 600)], embeddings=x[450:])
    p.compact()
    np.testing.assert_array_equal(p.index.centroids, centroids)  # trained once, then only adds
    p.close()
    back = open_folder(tmp_path / "p", read_only=True)
    assert isinstance(back.index, rf.IVFIndex) and len(back) == 600
    assert len(back.search("d1", k=10)) == 10


DAMAGE = {
    "truncated manifest": ("pipeline.json", lambda p: p.write_text(p.read_text()[:40])),
    "missing index": ("main-", lambda p: p.unlink()),
    "garbage index": ("main-", lambda p: p.write_bytes(b"\0" * 64)),
    "missing segment": ("seg-", lambda p: p.unlink()),
    "damaged segment": ("seg-", lambda p: p.write_bytes(p.read_bytes()[:-10] + b"0123456789")),
    "garbage docs": ("docs.sqlite", lambda p: p.write_bytes(b"not a database" * 100)),
    "missing docs": ("docs.sqlite", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_folder_gives_one_error_naming_the_file(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "p"
    p = small(folder)
    p.add(texts(list(range(40))), embeddings=vectors(list(range(40))))
    p.add(texts([40, 41]), embeddings=vectors([40, 41]))
    p.close()
    for suffix in ("-wal", "-shm"):
        (folder / f"docs.sqlite{suffix}").unlink(missing_ok=True)
    prefix, damage = DAMAGE[case]
    target = next(f for f in sorted(folder.iterdir()) if f.name.startswith(prefix) and f.name.count("-") <= 1)
    damage(target)
    with pytest.raises(rf.RankfunnelError, match=target.name.replace(".", r"\.")):
        rf.Pipeline.load(folder, models={"encoder": opened()["encoder"]})
    assert (folder / "docs.sqlite").exists() == (case != "missing docs")  # never created on the fly


def test_model_files_are_all_checksummed(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(MODELS / "tiny-bi-encoder-mean", model)
    p = rf.Pipeline(encoder=rf.BiEncoder(model), path=tmp_path / "p")
    p.add(texts([0]))
    p.close()
    pooling = model / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**cfg, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    with pytest.raises(rf.RankfunnelError, match="1_Pooling/config.json changed"):
        rf.Pipeline.load(tmp_path / "p")
    with pytest.raises(rf.RankfunnelError, match="files differs"):  # an open model is checked too
        rf.Pipeline.load(tmp_path / "p", models={"encoder": rf.BiEncoder(model)})
    with pytest.raises(rf.RankfunnelError, match="class differs"):
        rf.Pipeline.load(tmp_path / "p", models={"encoder": opened()["late_interaction"]})
    with pytest.raises(rf.RankfunnelError, match="no 'reranker' model"):
        rf.Pipeline.load(tmp_path / "p", models={"reranker": opened()["encoder"]})
    pooling.unlink()
    with pytest.raises(rf.RankfunnelError, match="1_Pooling/config.json is missing"):
        rf.Pipeline.load(tmp_path / "p")


def test_interrupted_creation_does_not_block_a_rerun(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    env = {**os.environ, "RANKFUNNEL_CRASH_AT": "create:manifest"}
    code = "import sys, rankfunnel as rf; rf.Pipeline(encoder=rf.BiEncoder(sys.argv[1]), path=sys.argv[2])"
    out = subprocess.run(
        [sys.executable, "-c", code, str(MODELS / "tiny-bi-encoder-mean"), str(folder)], env=env, timeout=120
    )
    assert out.returncode == -signal.SIGKILL and (folder / "docs.sqlite").exists()
    with pytest.raises(FileNotFoundError, match="pipeline.json"):
        rf.Pipeline.load(folder)
    p = small(folder)
    p.add(texts([0]), embeddings=vectors([0]))
    assert len(open_folder(folder, read_only=True)) == 1


def test_an_index_object_becomes_the_main_index(tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((300, DIM)).astype(np.float32)
    hnsw = rf.HNSWIndex(DIM, m=8, metric="dot")
    p = rf.Pipeline(encoder=opened()["encoder"], index=hnsw, path=tmp_path / "h")
    p.add([f"d{i}" for i in range(300)], embeddings=x)
    assert p.index is hnsw and p.index.m == 8 and p.metric == "dot" and len(hnsw) == 300
    ivf = rf.IVFIndex(DIM, nlist=4, metric="cosine")
    ivf.train(x)
    q = rf.Pipeline(encoder=opened()["encoder"], index=ivf)
    q.add([f"d{i}" for i in range(10)], embeddings=x[:10])  # trained already: no waiting
    assert q.index is ivf and len(ivf) == 10
    with pytest.raises(rf.RankfunnelError, match="empty"):
        rf.Pipeline(encoder=opened()["encoder"], index=ivf)
