"""`rankfunnel export` with torch: tiny random checkpoints of each kind, exported and compared.

Needs torch + transformers (``rankfunnel[export]``); skipped without them (CI does not install
torch). The checkpoints are made here from the tokenizers in shared/models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_dir

torch = pytest.importorskip("torch", reason="export needs torch (pip install 'rankfunnel[export]')")
transformers = pytest.importorskip("transformers", reason="export needs transformers")
pytest.importorskip("onnx", reason="export needs onnx")
pytest.importorskip("onnxruntime", reason="rankfunnel models need onnxruntime")

import rankfunnel as rf  # noqa: E402
from rankfunnel.export import export  # noqa: E402
from rankfunnel.models import ModelError  # noqa: E402

MODELS = shared_dir() / "models"
pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason=f"shared models not found in {MODELS}")

TEXTS = [
    "What is the boiling point of water at sea level?",
    "experimental investigation of the aerodynamics of a wing in a slipstream",
    "a",
    "Transformers compute contextual token representations with self-attention, layer after layer.",
]
_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling",
)


def checkpoint(tmp: Path, like: str, cls: str, **cfg: object) -> Path:
    """A random tiny BERT saved with transformers, with the configs/tokenizer of shared model ``like``."""
    src = MODELS / like
    out = tmp / f"ckpt-{like}"
    out.mkdir()
    for name in _FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, out / name)
        elif (src / name).is_file():
            shutil.copy2(src / name, out / name)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(src / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        **cfg,
    )
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config).eval()
    model.save_pretrained(str(out))
    return out


def test_export_bi_encoder_matches_torch(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path, "tiny-bi-encoder-mean", "BertModel")
    result = export(ckpt, tmp_path / "out", kind="bi", quantize="int8")
    assert result["max_abs_diff"] <= 1e-4 and (tmp_path / "out" / "onnx" / "model_int8.onnx").is_file()
    enc = rf.BiEncoder(tmp_path / "out")
    got = enc.encode(TEXTS)
    # torch reference: mean over the attention mask, then L2 normalise (modules.json has Normalize).
    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    model = transformers.AutoModel.from_pretrained(str(ckpt)).eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=enc.max_seq_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    q = rf.BiEncoder(tmp_path / "out", quantize="int8")  # uses the exported model_int8.onnx
    assert q.onnx_path.name == "model_int8.onnx"
    assert (q.encode(TEXTS) * got).sum(1).min() > 0.99
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    st = SentenceTransformer(str(ckpt), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(got, st, atol=1e-5)


def test_export_cross_encoder_matches_torch(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path, "tiny-cross-encoder", "BertForSequenceClassification", num_labels=1)
    export(ckpt, tmp_path / "out", kind="cross")
    ce = rf.CrossEncoder(tmp_path / "out")
    pairs = [(TEXTS[0], t) for t in TEXTS]
    got = ce.predict(pairs, activation="identity")
    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(ckpt)).eval()
    batch = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ModelError, match="sequence classifier"):
        export(ckpt, tmp_path / "again", kind="bi")


def test_export_colbert(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path, "tiny-colbert", "BertModel")
    (ckpt / "1_Dense").mkdir()
    from safetensors.torch import save_file

    torch.manual_seed(1)
    save_file({"linear.weight": torch.randn(8, 16)}, str(ckpt / "1_Dense" / "model.safetensors"))
    (ckpt / "1_Dense" / "config.json").write_text(
        json.dumps({"in_features": 16, "out_features": 8, "bias": False})
    )
    result = export(ckpt, tmp_path / "out", kind="colbert", quantize="int8")
    assert result["max_abs_diff"] <= 1e-4 and result["int8_parity"] is not None
    cb = rf.ColBERTEncoder(tmp_path / "out")
    docs = cb.encode_documents(TEXTS)
    queries = cb.encode_queries(TEXTS)
    assert [d.shape[1] for d in docs] == [8] * len(TEXTS)
    assert all(q.shape == (cb.query_length, 8) for q in queries)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate(docs), axis=1), 1.0, atol=1e-5)
    with pytest.raises(ModelError, match="ColBERT"):
        export(ckpt, tmp_path / "bi", kind="bi")
