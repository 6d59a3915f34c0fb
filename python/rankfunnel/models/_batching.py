"""Texts in, padded model inputs out: text checks, length-sorted batches, padding, progress."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import numpy.typing as npt

from ..progress import track
from ._errors import ModelError

if TYPE_CHECKING:
    from tokenizers import Encoding


def check_text(text: Any, where: str) -> str:
    """Return ``text`` if it is a str the tokenizer can take, else raise :class:`ModelError`.

    The tokenizer needs UTF-8: a lone surrogate (``"a\\ud800"``, e.g. from a bad decode with
    ``errors="surrogateescape"``) is refused here, naming ``where`` (``"texts[3]"``).
    """
    if not isinstance(text, str):
        raise ModelError(f"{where} is {type(text).__name__}, expected str")
    if not text.isascii():  # O(1) in CPython: only non-ASCII texts pay for the check
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ModelError(
                f"{where} cannot be encoded as UTF-8 ({exc.reason} at character {exc.start}: "
                f"{text[exc.start]!r}); fix its decoding, e.g. bytes.decode(errors='replace')"
            ) from None
    return text


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of str, or raise :class:`ModelError` naming the bad entry."""
    if texts is None:
        raise ModelError(f"{name} is None; expected a list of strings")
    if isinstance(texts, str):
        raise ModelError(f"{name} must be a list of strings, not a single str (wrap it: [text])")
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise ModelError(f"{name} must be a list of strings, got {type(texts).__name__}")
    return [check_text(t, f"{name}[{i}]") for i, t in enumerate(texts)]


@dataclass
class Batch:
    """A padded batch of tokenized texts.

    Attributes
    ----------
    index : ndarray of int64, shape (b,)
        The positions of these texts in the caller's list.
    input_ids, attention_mask, token_type_ids : ndarray of int64, shape (b, L)
        Model inputs, right-padded.
    """

    index: npt.NDArray[np.int64]
    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64]


def pad_batch(
    encodings: Sequence[Encoding],
    index: npt.NDArray[np.int64],
    pad: int,
    length: Optional[int] = None,
) -> Batch:
    """Right-pad ``encodings[i] for i in index`` to the longest of them (or to ``length``).

    The padding tokens get attention mask 0 and token type 0. No Python loop over tokens: the
    token ids are concatenated once and scattered through a boolean mask.
    """
    encs = [encodings[int(i)] for i in index]
    lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    width = int(lens.max(initial=0)) if length is None else max(length, int(lens.max(initial=0)))
    width = max(width, 1)
    mask = np.arange(width)[None, :] < lens[:, None]
    total = int(lens.sum())
    ids = np.full((len(encs), width), pad, dtype=np.int64)
    types = np.zeros((len(encs), width), dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=total)
    types[mask] = np.fromiter(
        itertools.chain.from_iterable(e.type_ids for e in encs), dtype=np.int64, count=total
    )
    return Batch(index=index, input_ids=ids, attention_mask=mask.astype(np.int64), token_type_ids=types)


MAX_BATCH_TOKENS = 512
"""Default cap on a batch's padded size (texts x longest length) in tokens.

A transformer layer's activations grow with the tokens of the batch: (tokens, 4 * hidden) float32
values in the feed-forward block, 3 MiB at 1,536 channels and 512 tokens. Past what the CPU
caches hold, every element-wise pass (bias, GELU, LayerNorm, int8 quantization) streams from
memory and the GEMMs lose their cache blocking: on all-MiniLM-L6-v2, 32 Cranfield abstracts
(~6,000 tokens) per call took ~15 % more CPU time in float32 and ~25 % more in int8 than batches
capped at 512 tokens (2 cores, busy machine). Short texts still get ``batch_size`` texts per call.
``RANKFUNNEL_MAX_BATCH_TOKENS`` overrides it (``0``: no cap).
"""


def max_batch_tokens() -> Optional[int]:
    """The padded-token cap of a batch: ``RANKFUNNEL_MAX_BATCH_TOKENS`` if set (``0`` means none),
    else :data:`MAX_BATCH_TOKENS`.

    Raises
    ------
    ModelError
        ``RANKFUNNEL_MAX_BATCH_TOKENS`` is not a non-negative integer.
    """
    env = os.environ.get("RANKFUNNEL_MAX_BATCH_TOKENS", "").strip()
    if not env:
        return MAX_BATCH_TOKENS
    try:
        cap = int(env)
    except ValueError:
        cap = -1
    if cap < 0:
        raise ModelError(f"RANKFUNNEL_MAX_BATCH_TOKENS must be a non-negative integer, got {env!r}")
    return cap or None


def length_sorted(
    encodings: Sequence[Encoding], batch_size: int, max_tokens: Optional[int] = None
) -> list[npt.NDArray[np.int64]]:
    """Split ``range(len(encodings))`` into batches of similar token length, longest first.

    Sorting by length keeps padding (wasted compute) small; the stable sort keeps equal lengths
    in input order, so the result does not depend on anything but the texts. A batch holds at
    most ``batch_size`` texts and, when it has more than one text, at most ``max_tokens`` padded
    tokens (texts x its longest text; default :func:`max_batch_tokens`, 0: no cap), so long texts go in
    smaller batches whose activations stay in the CPU caches.
    """
    cap = max_batch_tokens() if max_tokens is None else max_tokens
    lens = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    order = np.argsort(-lens, kind="stable").astype(np.int64)
    out: list[npt.NDArray[np.int64]] = []
    i = 0
    while i < len(order):
        width = max(int(lens[order[i]]), 1)  # the longest text of the batch: its first
        rows = batch_size if not cap else max(1, min(batch_size, cap // width))
        out.append(order[i : i + rows])
        i += rows
    return out


def progress(batches: list[npt.NDArray[np.int64]], show: bool, what: str) -> Iterator[npt.NDArray[np.int64]]:
    """Yield ``batches``; with ``show``, a progress bar on stderr counts their texts."""
    if not show:
        yield from batches
        return
    yield from track(batches, sum(len(b) for b in batches), what, "text", True, weight=len)


def l2_normalize(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Divide each row (last axis) by its L2 norm, as torch ``F.normalize`` (eps 1e-12)."""
    norm = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    return np.asarray(x / np.maximum(norm, np.float32(1e-12)), dtype=np.float32)
