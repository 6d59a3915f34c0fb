"""Loading, copying and querying the fast (``tokenizers``) tokenizer of a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import MissingDependencyError, ModelError, ModelFileNotFoundError
from ._model_dir import ModelDir

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """Load ``tokenizer.json`` with padding and truncation switched off (callers set their own)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError(
            "rankfunnel models need the tokenizers package: pip install 'rankfunnel[models]'"
        ) from None
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ModelFileNotFoundError(
            f"no tokenizer.json in {model_dir}; save it with transformers "
            "(AutoTokenizer.from_pretrained(...).save_pretrained(dir), a fast tokenizer)"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the Rust error type is not exported
        raise ModelError(f"cannot read {path}: {exc}") from exc
    # The file may carry the fixed padding/truncation of its export: never trust them.
    tok.no_padding()
    tok.no_truncation()
    return tok


def copy_tokenizer(tok: Tokenizer) -> Tokenizer:
    """An independent copy of ``tok`` (so that two truncation settings can coexist)."""
    from tokenizers import Tokenizer

    out = Tokenizer.from_str(tok.to_str())
    out.no_padding()
    out.no_truncation()
    return out


def token_id(tok: Tokenizer, token: str, what: str) -> int:
    """The id of ``token`` in the vocabulary, or :class:`ModelError` naming ``what`` it is for."""
    i = tok.token_to_id(token)
    if i is None:
        raise ModelError(f"the tokenizer has no {token!r} token ({what})")
    return int(i)


def pad_id(tok: Tokenizer, md: ModelDir) -> int:
    """The id used to pad batches (``pad_token`` of tokenizer_config.json, else [PAD], else 0)."""
    name = md.tokenizer_config.get("pad_token")
    if isinstance(name, dict):
        name = name.get("content")
    for cand in (name, "[PAD]", "<pad>"):
        if isinstance(cand, str):
            i = tok.token_to_id(cand)
            if i is not None:
                return int(i)
    return 0
