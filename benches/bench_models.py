"""Benchmark rankfunnel's ONNX encoders (a script, not a test).

Encodes the Cranfield documents (title + text) with all-MiniLM-L6-v2 and compares:

- ``rankfunnel.BiEncoder`` (length-sorted batches, all graph optimizations),
- a plain onnxruntime loop (input order, batch 32, pad to the batch's longest),
- fastembed loading the same ONNX file as a custom model (if importable here, or in the
  interpreter named by ``$RANKFUNNEL_FASTEMBED_PYTHON``),
- ``BiEncoder(quantize="int8")`` (dynamic int8 weights; needs the ``onnx`` package),

then the tiny cross-encoder's pairs/s. sentence-transformers needs torch and is not run.

Usage::

    python benches/bench_models.py [--threads 2] [--limit 1400] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

PEAK_GFLOPS = 200.0  # this machine's sgemm peak (2 cores), as measured for the project


def shared_dir() -> Path:
    """The shared/ folder beside the repository (or $RANKFUNNEL_SHARED)."""
    env = os.environ.get("RANKFUNNEL_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def read_cranfield(path: Path) -> list[str]:
    """Documents of a SMART-format file as ``title + " " + text`` (whitespace collapsed)."""
    docs: list[str] = []
    fields: dict[str, list[str]] = {}
    cur = ""

    def flush() -> None:
        if fields:
            title = " ".join(" ".join(fields.get("T", [])).split())
            text = " ".join(" ".join(fields.get("W", [])).split())
            docs.append(f"{title} {text}".strip())

    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            flush()
            fields = {}
            cur = ""
        elif len(line) == 2 and line.startswith("."):
            cur = line[1]
            fields.setdefault(cur, [])
        elif cur:
            fields[cur].append(line)
    flush()
    return docs


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def plain_loop(
    model_dir: Path, docs: list[str], threads: int, batch_size: int, max_len: int
) -> npt.NDArray[Any]:
    """What a user writes by hand: input order, pad to each batch's longest, mean pool, normalize."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.enable_padding()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_dir / "onnx/model.onnx"), opts, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(docs), batch_size):
        enc = tok.encode_batch(docs[i : i + batch_size])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        h = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[
            0
        ]
        v = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return np.concatenate(out)


FASTEMBED_SCRIPT = r"""
import json, sys, time
import numpy as np
from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType
model_dir, docs_file, out_file, threads, batch = sys.argv[1:6]
docs = json.load(open(docs_file))
TextEmbedding.add_custom_model(model="local/all-MiniLM-L6-v2-bench", pooling=PoolingType.MEAN, normalization=True,
    sources=ModelSource(hf="local/none"), dim=384, model_file="onnx/model.onnx")
m = TextEmbedding("local/all-MiniLM-L6-v2-bench", specific_model_path=model_dir, threads=int(threads))
list(m.embed(docs[:8], batch_size=8))
best = 1e9
for _ in range(int(sys.argv[6])):
    t = time.perf_counter(); e = np.stack(list(m.embed(docs, batch_size=int(batch)))); best = min(best, time.perf_counter() - t)
np.save(out_file, e.astype(np.float32))
print(json.dumps({"seconds": best}))
"""


def run_fastembed(
    model_dir: Path, docs: list[str], threads: int, batch_size: int, repeat: int
) -> tuple[float, npt.NDArray[Any]] | str:
    """(seconds, embeddings) from fastembed in a subprocess, or the reason it was not run."""
    python = os.environ.get("RANKFUNNEL_FASTEMBED_PYTHON", sys.executable)
    if subprocess.run([python, "-c", "import fastembed"], capture_output=True).returncode != 0:
        return f"fastembed is not importable by {python} (set RANKFUNNEL_FASTEMBED_PYTHON to an interpreter that has it)"
    with tempfile.TemporaryDirectory() as tmp:
        docs_file = Path(tmp) / "docs.json"
        docs_file.write_text(json.dumps(docs))
        out_file = Path(tmp) / "emb.npy"
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        args = [str(model_dir), str(docs_file), str(out_file), str(threads), str(batch_size), str(repeat)]
        res = subprocess.run([python, "-c", FASTEMBED_SCRIPT, *args], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            return (
                "fastembed failed: " + res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"
            )
        return float(json.loads(res.stdout.strip().splitlines()[-1])["seconds"]), np.load(out_file)


def cosine(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Row-wise cosine similarity."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def main() -> int:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=1400, help="number of Cranfield documents")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender (best is reported)")
    ap.add_argument("--skip", default="", help="comma list of contenders to skip: plain,fastembed,int8,cross")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import rankfunnel.models as rm

    shared = shared_dir()
    model_dir = shared / "models" / "all-MiniLM-L6-v2"
    cran = shared / "data" / "cranfield" / "cran.all.1400"
    if not model_dir.is_dir() or not cran.is_file():
        print(f"shared models/data not found under {shared}; set RANKFUNNEL_SHARED")
        return 1
    docs = read_cranfield(cran)[: args.limit]
    enc = rm.BiEncoder(model_dir, threads=args.threads)
    lens = np.array([len(e.ids) for e in enc.tokenizer.encode_batch(docs)])
    # Matmul FLOPs of BERT (hidden h, L layers, n tokens): L * (24 n h^2 + 4 n^2 h).
    h, layers = 384, 6
    gflop = float(np.sum(layers * (24 * lens * h * h + 4 * lens.astype(np.float64) ** 2 * h))) / 1e9
    print(
        f"{len(docs)} Cranfield docs, mean {lens.mean():.0f} tokens (max_seq_length {enc.max_seq_length}), "
        f"{gflop / len(docs):.2f} GFLOP/doc; {args.threads} threads, batch {args.batch_size}"
    )
    rows: list[tuple[str, float, str]] = []

    enc.encode(docs[:8])  # warm-up
    t_ours, ours = timed(lambda: enc.encode(docs, batch_size=args.batch_size), args.repeat)
    rows.append(("rankfunnel BiEncoder fp32", t_ours, "reference"))

    if "plain" not in skip:
        t, plain = timed(
            lambda: plain_loop(model_dir, docs, args.threads, args.batch_size, enc.max_seq_length),
            args.repeat,
        )
        rows.append(("plain onnxruntime loop (unsorted)", t, f"cos min {cosine(ours, plain).min():.6f}"))

    if "fastembed" not in skip:
        fe = run_fastembed(model_dir, docs, args.threads, args.batch_size, args.repeat)
        if isinstance(fe, str):
            print(f"fastembed: not run ({fe})")
        else:
            rows.append(
                ("fastembed custom model (same ONNX)", fe[0], f"cos min {cosine(ours, fe[1]).min():.6f}")
            )

    if "int8" not in skip:
        with tempfile.TemporaryDirectory() as cache:
            try:
                t0 = time.perf_counter()
                q = rm.BiEncoder(model_dir, threads=args.threads, quantize="int8", cache_dir=cache)
                t_make = time.perf_counter() - t0
                q.encode(docs[:8])
                t, emb = timed(lambda: q.encode(docs, batch_size=args.batch_size), args.repeat)
                c = cosine(ours, emb)
                rows.append(
                    (
                        "rankfunnel BiEncoder int8",
                        t,
                        f"cos vs fp32 min {c.min():.4f} mean {c.mean():.5f} (quantized in {t_make:.1f}s)",
                    )
                )
            except rm.MissingDependencyError as exc:
                print(f"int8: not run ({exc})")

    print("sentence-transformers: not run (needs torch, several GB; not installed)")
    print(f"\n{'contender':40s} {'docs/s':>8s} {'vs ours':>8s} {'%peak':>6s}  notes")
    for name, t, note in rows:
        rate = len(docs) / t
        frac = gflop / t / PEAK_GFLOPS
        print(f"{name:40s} {rate:8.1f} {t_ours / t:7.2f}x {100 * frac:5.1f}%  {note}")

    if "cross" not in skip:
        ce = rm.CrossEncoder(shared / "models" / "tiny-cross-encoder", threads=args.threads)
        pairs = [(docs[i % 50][:80], d) for i, d in enumerate(docs)]
        ce.predict(pairs[:8])
        t, _ = timed(lambda: ce.predict(pairs, batch_size=args.batch_size), args.repeat)
        print(
            f"\ntiny cross-encoder: {len(pairs) / t:.0f} pairs/s ({len(pairs)} pairs, max_length {ce.max_length})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
