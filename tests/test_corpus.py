"""Readers of users' files: qrels in every format, corpora and queries. Property tests write random
content in each format (with the whitespace, CRLF, BOM, blank-line and gzip variations people's
files have) and check that reading it back gives exactly what was written, or a clear error."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import shared_dir
from rankfunnel.corpus import _HEADER_IDS, read_corpus, read_queries, read_smart
from rankfunnel.errors import RankfunnelError
from rankfunnel.qrels import detect_format, load_qrels, read_qrels

CRAN = shared_dir() / "data" / "cranfield"
needs_cranfield = pytest.mark.skipif(not CRAN.exists(), reason=f"Cranfield not found at {CRAN}")
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/", min_size=1, max_size=8
)
layout = st.fixed_dictionaries(
    {
        "sep": st.sampled_from(["\t", " ", "   ", " \t", "\t\t"]),
        "lead": st.sampled_from(["", "  ", "\t"]),
        "eol": st.sampled_from(["\n", "\r\n"]),
        "bom": st.booleans(),
        "blank": st.booleans(),
        "final_eol": st.booleans(),
        "gzip": st.booleans(),
    }
)


def write(path: Path, lines: list[str], lay: dict) -> Path:
    """Write lines the way ``lay`` says (separators are already in the lines)."""
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(lay["lead"] + line)
        if lay["blank"] and i % 3 == 0:
            out.append("")
    text = lay["eol"].join(out) + (lay["eol"] if lay["final_eol"] else "")
    data = (("\ufeff" if lay["bom"] else "") + text).encode("utf-8")
    path.write_bytes(gzip.compress(data) if lay["gzip"] else data)
    return path


def grade_text(g: float) -> str:
    return str(int(g)) if g == int(g) and not isinstance(g, float) else repr(g)


judgements = st.dictionaries(
    ids, st.dictionaries(ids, st.just(0), min_size=1, max_size=5), min_size=1, max_size=6
)
grades = st.one_of(st.integers(-2, 5), st.sampled_from([0.5, 1.0, 2.25, 3.0, -1.5]))


@st.composite
def graded(draw: st.DrawFn, values: st.SearchStrategy) -> dict[str, dict[str, object]]:
    pairs = draw(judgements)
    return {q: {d: draw(values) for d in docs} for q, docs in pairs.items()}


def lines_of(qrels: dict[str, dict[str, object]], fmt: str, sep: str, extra: str = "") -> list[str]:
    out = []
    for q, docs in qrels.items():
        for d, g in docs.items():
            if fmt == "trec":
                cols = [q, extra or "0", d, grade_text(g)]  # type: ignore[arg-type]
            elif fmt == "smart":
                cols = [q, d] + (["0", "0.000000"] if extra != "2" else [])
            else:
                cols = [q, d, grade_text(g)]  # type: ignore[arg-type]
            out.append(sep.join(cols))
    return out


def check(path: Path, fmt: str, want: dict[str, dict[str, float]]) -> None:
    """Explicit format: exactly ``want``. Auto: exactly ``want``, or a note saying it was ambiguous,
    or (uniform gains) a reading whose metrics are the same."""
    assert read_qrels(path, fmt) == want
    got = load_qrels(path)
    if got.qrels == want:
        return
    assert got.note is not None or (
        got.qrels.keys() == want.keys()
        and all(got.qrels[q].keys() == want[q].keys() for q in want)
        and len({g for docs in want.values() for g in docs.values()}) == 1
    ), (got.format, got.note)


@PROPERTY
@given(qrels=graded(grades), lay=layout, iteration=st.sampled_from(["0", "Q0"]))
def test_trec_round_trip(tmp_path: Path, qrels: dict, lay: dict, iteration: str) -> None:
    path = write(tmp_path / "q.txt", lines_of(qrels, "trec", lay["sep"], iteration), lay)
    want = {q: {d: float(g) for d, g in docs.items()} for q, docs in qrels.items()}
    check(path, "trec", want)


@PROPERTY
@given(qrels=graded(grades), lay=layout, header=st.booleans())
def test_beir_round_trip(tmp_path: Path, qrels: dict, lay: dict, header: bool) -> None:
    rows = lines_of(qrels, "beir", lay["sep"])
    if header:
        rows = [lay["sep"].join(["query-id", "corpus-id", "score"]), *rows]
    path = write(tmp_path / "q.tsv", rows, lay)
    want = {q: {d: float(g) for d, g in docs.items()} for q, docs in qrels.items()}
    check(path, "beir", want)


@PROPERTY
@given(qrels=judgements, lay=layout, columns=st.sampled_from(["4", "2"]))
def test_smart_round_trip(tmp_path: Path, qrels: dict, lay: dict, columns: str) -> None:
    path = write(tmp_path / "CISI.REL", lines_of(qrels, "smart", lay["sep"], columns), lay)
    want = {q: dict.fromkeys(docs, 1.0) for q, docs in qrels.items()}
    check(path, "smart", want)


@PROPERTY
@given(qrels=graded(st.sampled_from([-1, 1, 2, 3, 4])), lay=layout)
def test_cranfield_round_trip(tmp_path: Path, qrels: dict, lay: dict) -> None:
    path = write(tmp_path / "qrels.txt", lines_of(qrels, "cranfield", lay["sep"]), lay)
    want = {q: {d: 0.0 if g < 0 else 5.0 - g for d, g in docs.items()} for q, docs in qrels.items()}
    check(path, "cranfield", want)


@PROPERTY
@given(lines=st.lists(st.text(alphabet=" \t0123456789abc.-\r", max_size=12), min_size=1, max_size=6))
def test_any_content_reads_or_fails_clearly(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "junk.txt"
    path.write_text("\n".join(lines))
    for fmt in ("auto", "trec", "beir", "smart", "cranfield"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an ambiguous guess warns: not what this test checks
                got = read_qrels(path, fmt)
        except RankfunnelError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
        else:
            assert got and all(docs for docs in got.values())


def test_the_issue_examples(tmp_path: Path) -> None:
    # A SMART .REL file (CISI): query id, document id, two meaningless columns; every pair relevant.
    rel = tmp_path / "CISI.REL"
    rel.write_text("     1     28 \t0\t0.000000\n     1     35 \t0\t0.000000\n     2     29 \t0\t0.000000\n")
    got = load_qrels(rel)
    assert got.format == "smart" and got.note is None
    assert got.qrels == {"1": {"28": 1.0, "35": 1.0}, "2": {"29": 1.0}}
    # A BEIR file whose scores are floats, without a header.
    beir = tmp_path / "test.tsv"
    beir.write_text("q1\td1\t1.0\nq1\td2\t0.0\n")
    assert load_qrels(beir).format == "beir"
    # Grades 1 and 2 only fit both BEIR and Cranfield: BEIR is chosen, and the note says how to override.
    amb = tmp_path / "amb.txt"
    amb.write_text("1 10 1\n1 11 2\n")
    got = load_qrels(amb)
    assert got.format == "beir" and "--qrels-format cranfield" in (got.note or "")
    with pytest.warns(UserWarning, match="--qrels-format cranfield"):
        read_qrels(amb)
    assert read_qrels(amb, "cranfield") == {"1": {"10": 4.0, "11": 3.0}}


@needs_cranfield
def test_cranqrel_renamed_is_still_cranfield(tmp_path: Path) -> None:
    renamed = tmp_path / "qrels.txt"
    shutil.copy(CRAN / "cranqrel", renamed)
    got = load_qrels(renamed)
    assert got.format == "cranfield" and "--qrels-format beir" in (got.note or "")
    assert got.qrels == read_qrels(CRAN / "cranqrel", "cranfield")
    assert got.qrels["1"]["184"] == 3.0 and sum(map(len, got.qrels.values())) == 1837
    assert got.qrels != read_qrels(renamed, "beir")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no judgements"),
        ("\n \n\r\n", "no judgements"),
        ("query-id\tcorpus-id\tscore\n", "no judgements after the header"),
        ("1 2 3 4 5\n", "cannot tell the qrels format from 5 columns"),
        ("q1 0 d1 1\nq1 0 d2\n", ":2: trec qrels need 4 columns, got 3"),
        ("q1 d1 1\nq2 d2 x\n", ":2: beir qrels need a numeric grade, got 'x'"),
        ("query-id corpus-id score\nq1 d1\n", ":2: beir qrels need 3 columns, got 2"),
        ("q1 0 d1 1\nq1 0 d1 2\n", "judges document 'd1' twice"),
        ("q1 0 d1 nan\n", "numeric grade"),
    ],
)
def test_bad_qrels_are_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text(content)
    with pytest.raises(RankfunnelError, match=message.replace("(", r"\(")) as e:
        read_qrels(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cranfield_grades_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "q"
    path.write_text("1 2 5\n")
    with pytest.raises(RankfunnelError, match="grade in -1, 1, 2, 3, 4"):
        read_qrels(path, "cranfield")
    with pytest.raises(RankfunnelError, match="unknown qrels format 'csv'"):
        read_qrels(path, "csv")
    with pytest.raises(FileNotFoundError):
        read_qrels(tmp_path / "missing")


def test_detect_format_needs_rows() -> None:
    with pytest.raises(RankfunnelError, match="no judgements"):
        detect_format([])
    assert detect_format([["q", "d"]]) == ("smart", None)


# -- corpora and queries ---------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=40)
corpus = st.dictionaries(ids, texts, min_size=1, max_size=8)
meta_values = st.one_of(st.integers(-5, 5), st.text(max_size=5), st.booleans(), st.none())


@PROPERTY
@given(docs=corpus, lay=layout, meta=st.dictionaries(st.sampled_from(["year", "lang", "tag"]), meta_values))
def test_jsonl_round_trip(tmp_path: Path, docs: dict, lay: dict, meta: dict) -> None:
    rows = [
        json.dumps({"_id" if i % 2 else "id": d, "text": t, **meta}) for i, (d, t) in enumerate(docs.items())
    ]
    lay = {**lay, "sep": "", "lead": ""}
    path = write(tmp_path / ("c.jsonl.gz" if lay["gzip"] else "c.jsonl"), rows, lay)
    got = list(read_corpus(path))
    assert [(g.id, g.text, g.metadata) for g in got] == [(d, t, meta) for d, t in docs.items()]


@PROPERTY
@given(docs=corpus, lay=layout, delim=st.sampled_from(["\t", ","]), header=st.booleans())
def test_table_round_trip(tmp_path: Path, docs: dict, lay: dict, delim: str, header: bool) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delim, lineterminator=lay["eol"])
    if header:
        w.writerow(["id", "text", "lang"])
    for d, t in docs.items():
        w.writerow([d, t, "en"] if header else [d, t])
    data = ("\ufeff" if lay["bom"] else "") + buf.getvalue()
    name = "c.tsv" if delim == "\t" else "c.csv"
    path = tmp_path / (name + ".gz" if lay["gzip"] else name)
    path.write_bytes(gzip.compress(data.encode()) if lay["gzip"] else data.encode())
    try:
        got = list(read_corpus(path))
    except RankfunnelError as e:  # a header-less first row whose id reads as a header name
        assert not header and next(iter(docs)).lower() in _HEADER_IDS, e
        return
    assert [(g.id, g.text) for g in got] == list(docs.items())
    assert all(g.metadata == ({"lang": "en"} if header else {}) for g in got)


@PROPERTY
@given(
    docs=st.dictionaries(
        ids, st.lists(st.text("abcxyz019 ,;'", min_size=1, max_size=9), min_size=1, max_size=4)
    ),
    lay=layout,
)
def test_smart_round_trip_documents(tmp_path: Path, docs: dict, lay: dict) -> None:
    rows: list[str] = []
    for d, body in docs.items():
        rows += [f".I {d}", ".T", f"title of {d}", ".W", *body]
    path = write(tmp_path / "COLL.ALL", rows, {**lay, "sep": "", "lead": ""})
    if not docs:
        with pytest.raises(RankfunnelError, match="no documents|empty"):
            list(read_corpus(path))
        return
    got = list(read_corpus(path))
    assert [g.id for g in got] == list(docs)
    for g, body in zip(got, docs.values()):
        words = " ".join(line.strip() for line in body if line.strip())  # blank lines carry nothing
        assert g.text == "\n".join(p for p in (f"title of {g.id}", words) if p)
        assert g.metadata["title"] == f"title of {g.id}"


@needs_cranfield
def test_smart_queries_and_beir_folders(tmp_path: Path) -> None:
    queries = read_queries(CRAN / "cran.qry")
    assert (
        len(queries) == 225 and queries[0].id == "001" and queries[0].text.startswith("what similarity laws")
    )
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "wing lift"}\n')
    (beir / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Wings", "text": "lift", "metadata": {"y": 1}}\n'
    )
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert [(q.id, q.text) for q in read_queries(beir)] == [("q1", "wing lift")]
    [doc] = read_corpus(beir)
    assert (doc.id, doc.text, doc.metadata) == ("d1", "Wings\nlift", {"y": 1, "title": "Wings"})
    assert read_qrels(beir) == {"q1": {"d1": 1.0}}


def test_queries_tsv_without_header(tmp_path: Path) -> None:
    path = tmp_path / "queries.tsv"
    path.write_text("1\twhat is a wing\r\n2\thow do shells buckle\r\n")
    assert [(q.id, q.text) for q in read_queries(path)] == [
        ("1", "what is a wing"),
        ("2", "how do shells buckle"),
    ]


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"id": ["a", "b"], "text": ["first", "second"], "year": [2020, 2021]})
    path = tmp_path / "c.parquet"
    pq.write_table(table, path)
    got = list(read_corpus(path))
    assert [(g.id, g.text, g.metadata) for g in got] == [
        ("a", "first", {"year": 2020}),
        ("b", "second", {"year": 2021}),
    ]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(RankfunnelError, match="needs a 'text' column"):
        list(read_corpus(tmp_path / "bad.parquet"))


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = tmp_path / "c.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"rankfunnel\[parquet\]"):
        list(read_corpus(path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "c.jsonl",
            b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
            r"c.jsonl:2: duplicate document id 'a' \(first at line 1\)",
        ),
        (
            "c.jsonl",
            b'{"id": "a", "text": "x", "metadata": [1]}\n',
            "c.jsonl:1: 'metadata' must be a JSON object, got list",
        ),
        (
            "c.jsonl",
            b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n',
            r"c.jsonl:2: not UTF-8 \(byte 0xe9 at byte offset 50\)",
        ),
        ("c.jsonl", b'{"id": "a", "text": 3}\n', "'text' must be a string, got int"),
        ("c.jsonl", b'{"id": {"x": 1}, "text": "t"}\n', "the id must be a string or an integer"),
        ("c.jsonl", b'["a", "b"]\n', "each line must be a JSON object, got list"),
        ("c.jsonl", b'{"id": "a", "text": "x"\n', "c.jsonl:1: invalid JSON"),
        ("c.jsonl", b"\n\n", "no documents"),
        ("c.tsv", b"id\tbody\n1\tx\n", "the header needs a 'text' column"),
        ("c.tsv", b"id\ttext\n1\tx\textra\n", "c.tsv:2: 3 columns where the header has 2"),
        ("c.tsv", b"", "the file is empty"),
        ("c.txt", b"hello world\n", "unknown corpus format"),
        ("c.all", b".I 1\n.W\nx\n.I 1\n.W\ny\n", "c.all:4: duplicate document id '1'"),
        ("c.all", b"stray\n.I 1\n.W\nx\n", "unknown corpus format .* the first line is 'stray'"),
        ("c.jsonl.gz", b"\x1f\x8b\x08\x00garbage", "damaged gzip data"),
    ],
)
def test_bad_corpora_are_one_clear_line(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RankfunnelError, match=message) as e:
        list(read_corpus(path))
    assert "\n" not in str(e.value)


def test_truncated_and_corrupt_gzip(tmp_path: Path) -> None:
    data = gzip.compress(
        "".join(json.dumps({"id": i, "text": f"doc {i}"}) + "\n" for i in range(2000)).encode()
    )
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    bad = bytearray(data)
    bad[30:40] = b"\xff" * 10
    (tmp_path / "bad.jsonl.gz").write_bytes(bytes(bad))
    for name in ("cut.jsonl.gz", "bad.jsonl.gz"):
        with pytest.raises(
            RankfunnelError, match=f"{name}: damaged gzip data after [0-9]+ decompressed bytes"
        ):
            list(read_corpus(tmp_path / name))


def test_smart_text_before_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "c.all"
    path.write_text("stray\n.I 1\n.W\nx\n")
    with pytest.raises(RankfunnelError, match="c.all:1: SMART text before the first '.I' line"):
        list(read_smart(path))


def test_missing_and_folder_inputs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_corpus(tmp_path / "nothing.jsonl")
    with pytest.raises(RankfunnelError, match="without corpus.jsonl"):
        read_corpus(tmp_path)
    with pytest.raises(RankfunnelError, match="no queries"):
        (tmp_path / "q.jsonl").write_text("")
        read_queries(tmp_path / "q.jsonl")
