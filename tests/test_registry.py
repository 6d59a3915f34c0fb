"""The index registry (kinds, specs, index_factory, load) and what every index shares (IndexBase)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rankfunnel as rf
from rankfunnel import registry
from rankfunnel._index import IndexBase
from rankfunnel.synthetic import clustered, token_docs


def test_builtin_kinds_are_registered() -> None:
    assert {"flat", "hnsw", "ivf", "multivector"} <= set(registry.kinds())
    assert registry.index_class("flat") is rf.FlatIndex
    assert registry.index_class("HNSW") is rf.HNSWIndex
    for kind in ("flat", "hnsw", "ivf", "multivector"):
        assert issubclass(registry.index_class(kind), IndexBase)


@pytest.mark.parametrize(
    ("spec", "kind", "opts"),
    [
        ("flat", "flat", {}),
        ("hnsw", "hnsw", {}),
        ("hnsw32", "hnsw", {"m": 32}),
        ("ivf1024", "ivf", {"nlist": 1024}),
        ("ivf1024,int8", "ivf", {"nlist": 1024, "storage": "int8"}),
        ("IVF64, F32", "ivf", {"nlist": 64, "storage": "f32"}),
        ("hnsw,ef_construction=100", "hnsw", {"ef_construction": 100}),
        ("hnsw8,seed=3,bf16_copy=false", "hnsw", {"m": 8, "seed": 3, "bf16_copy": False}),
        ("flat,bf16_copy=true", "flat", {"bf16_copy": True}),
        ("multivector4,refine_dtype=f16", "multivector", {"nbits": 4, "refine_dtype": "f16"}),
        ("multivector,n_centroids=none", "multivector", {"n_centroids": None}),
    ],
)
def test_parse_spec(spec: str, kind: str, opts: dict[str, Any]) -> None:
    assert registry.parse_spec(spec) == (kind, opts)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "non-empty"),
        ("lsh", r"unknown index kind 'lsh': expected one of bm25, flat, hnsw, ivf, multivector"),
        ("flat32", "takes no number"),
        ("hnsw,efc=3", r"unknown option 'efc' for index kind 'hnsw'.*ef_construction"),
        ("ivf,pq8", r"unknown option 'pq8'.*words are f32, int8"),
        ("flat,int8", r"unknown option 'int8'.*words are none"),
        ("hnsw16,m=8", "sets m twice"),
        ("ivf,int8,f32", "sets storage twice"),
        ("flat,prefilter=false", "unknown option 'prefilter'"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, match: str) -> None:
    with pytest.raises(rf.RankfunnelError, match=match):
        registry.parse_spec(spec)
    with pytest.raises(rf.RankfunnelError, match=match):
        rf.index_factory(spec, 8)


def test_index_factory_builds_each_kind() -> None:
    f = rf.index_factory("flat", 8, "l2")
    assert isinstance(f, rf.FlatIndex) and (f.dim, f.metric, f.bf16_copy) == (8, "l2", True)
    h = rf.index_factory("hnsw32,ef_construction=100", 16)
    assert isinstance(h, rf.HNSWIndex) and (h.m, h.ef_construction, h.metric) == (32, 100, "cosine")
    assert repr(h) == "HNSWIndex(dim=16, metric='cosine', m=32, len=0)"
    i = rf.index_factory("ivf16,int8", 8, metric="dot")
    assert isinstance(i, rf.IVFIndex) and (i.nlist, i.storage, i.metric) == (16, "int8", "dot")
    mv = rf.index_factory("multivector0", 8)
    assert isinstance(mv, rf.MultiVectorIndex) and mv.nbits == 0 and mv.metric == "dot"
    with pytest.raises(rf.RankfunnelError, match="'multivector' takes no metric"):
        rf.index_factory("multivector", 8, "cosine")
    # Values the constructor rejects keep its message.
    with pytest.raises(rf.RankfunnelError, match="unknown storage"):
        rf.index_factory("ivf,storage=f16", 8)
    with pytest.raises(rf.RankfunnelError, match="m must be at least 1"):
        rf.index_factory("hnsw0", 8)


def test_size_hint_sizes_ivf_unless_the_spec_does() -> None:
    assert rf.index_factory("ivf", 8, size_hint=10_000).nlist == 256  # min(10000 / 39, 4 * 100)
    assert rf.index_factory("ivf", 8, size_hint=10).nlist == 1
    assert rf.index_factory("ivf32", 8, size_hint=10_000).nlist == 32
    assert rf.index_factory("ivf", 8).nlist == 1024  # the constructor's default
    assert rf.index_factory("hnsw", 8, size_hint=10_000).m == 16  # no sizing rule


def test_load_finds_every_kind(tmp_path: Path) -> None:
    x = clustered(300, 8, clusters=10, seed=1)
    docs, _ = token_docs(20, 8, topics=4, seed=2)
    built: list[IndexBase] = [
        rf.FlatIndex(8),
        rf.HNSWIndex(8, m=8),
        rf.IVFIndex(8, nlist=4),
        rf.MultiVectorIndex(8, 0),
    ]
    built[2].train(x)  # type: ignore[attr-defined]
    for idx in built:
        idx.add(docs if isinstance(idx, rf.MultiVectorIndex) else x)  # type: ignore[attr-defined]
        path = tmp_path / f"{type(idx).__name__}.rfi"
        idx.save(path)
        for mmap in (False, True):
            got = rf.load(path, mmap=mmap)
            assert type(got) is type(idx) and len(got) == len(idx) and repr(got) == repr(idx)
            again = type(idx).load(path, mmap=mmap)
            assert type(again) is type(idx) and len(again) == len(idx)
    with pytest.raises(rf.CorruptFileError):
        rf.FlatIndex.load(tmp_path / "HNSWIndex.rfi")


class _Doubled(rf.FlatIndex):
    """A kind defined outside the package: a flat index that stores every vector twice as long."""

    def __init__(self, dim: int, metric: str = "cosine", *, factor: float = 2.0) -> None:
        super().__init__(dim, metric)
        self.factor = factor


def test_a_new_kind_needs_only_a_register_call() -> None:
    registry.register("doubled", _Doubled, words={"triple": {"factor": 3.0}})
    try:
        assert "doubled" in registry.kinds()
        d = rf.index_factory("doubled,triple", 4, "dot")
        assert isinstance(d, _Doubled) and d.factor == 3.0 and d.metric == "dot"
        assert rf.index_factory("doubled,factor=1.5", 4).factor == 1.5
        with pytest.raises(rf.RankfunnelError, match="takes no number"):
            registry.parse_spec("doubled2")
        with pytest.raises(rf.RankfunnelError, match="already registered to _Doubled"):
            registry.register("doubled", rf.HNSWIndex)
        with pytest.raises(rf.RankfunnelError, match="ends in a digit, so it cannot take a number"):
            registry.register("kind2", _Doubled, number="factor")
        with pytest.raises(rf.RankfunnelError, match="starting with a letter"):
            registry.register("2kind", _Doubled)
        # A kind named with digits at the end is matched whole: "bm25" is BM25Index, not "bm" 25.
        assert registry.parse_spec("bm25,k1=1.2") == ("bm25", {"k1": 1.2})
        assert isinstance(rf.index_factory("bm25"), rf.BM25Index)
        # A subclass sharing FlatIndex's compiled class does not take over loading flat files.
        assert registry.wrap_core(rf.FlatIndex(4)._index).__class__ is rf.FlatIndex
    finally:
        registry._KINDS.pop("doubled", None)


# -- IndexBase: shared methods -------------------------------------------------------------------


def _filled(kind: str) -> IndexBase:
    x = clustered(200, 8, clusters=8, seed=3)
    if kind == "multivector":
        mv = rf.MultiVectorIndex(8, 0)
        mv.add(token_docs(10, 8, topics=4, seed=4)[0])
        return mv
    idx: Any = rf.index_factory({"ivf": "ivf4"}.get(kind, kind), 8, "l2")
    if kind == "ivf":
        idx.train(x)
    idx.add(x)
    return idx


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "multivector"])
def test_shared_methods(kind: str) -> None:
    idx = _filled(kind)
    n = len(idx)
    assert idx.dim == 8 and idx.metric == ("dot" if kind == "multivector" else "l2")
    assert 0 in idx and n not in idx and "0" not in idx
    assert idx.memory_bytes() > 0
    assert repr(idx).startswith(f"{type(idx).__name__}(dim=8, ") and f"len={n}" in repr(idx)
    assert idx.remove([0, 1]) == 2 and len(idx) == n - 2 and 0 not in idx
    with pytest.raises(rf.UnknownIdError):
        idx.remove([0])
    assert len(idx) == n - 2
    assert sorted(idx.ids.tolist()) == list(range(2, n)) and not idx.is_mapped
    if kind in ("flat", "hnsw", "ivf"):
        np.testing.assert_allclose(
            idx.get([2, 3]), clustered(200, 8, clusters=8, seed=3)[[2, 3]], rtol=1e-6, atol=1e-6
        )


def test_repr_fields() -> None:
    assert repr(rf.FlatIndex(4, "dot")) == "FlatIndex(dim=4, metric='dot', len=0)"
    assert repr(rf.IVFIndex(4, nlist=2)) == (
        "IVFIndex(dim=4, nlist=2, metric='cosine', storage='f32', len=0, trained=False)"
    )
    assert repr(rf.MultiVectorIndex(8, 2)) == (
        "MultiVectorIndex(dim=8, nbits=2, n_centroids=0, len=0, tokens=0, refine_dtype=None)"
    )


# -- bf16_copy (formerly prefilter) ----------------------------------------------------------------


@pytest.mark.parametrize("cls", [rf.FlatIndex, rf.HNSWIndex])
def test_bf16_copy_and_its_deprecated_name(cls: type, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        # HNSW walks int8 codes by default (see test_hnsw_codes.py).
        assert cls(4).bf16_copy is (cls is rf.FlatIndex)
        assert cls(4, bf16_copy=True).bf16_copy is True
        without = cls(4, bf16_copy=False)
        assert without.bf16_copy is False
    with pytest.warns(DeprecationWarning, match=r"prefilter=\.\.\.\) is deprecated; use bf16_copy"):
        old = cls(4, prefilter=False)
    assert old.bf16_copy is False
    with pytest.warns(DeprecationWarning, match=r"\.prefilter is deprecated; use \.bf16_copy"):
        assert old.prefilter is False
    with pytest.warns(DeprecationWarning):
        assert cls(4, bf16_copy=False, prefilter=True).bf16_copy is True  # the old keyword, when given, wins
    # The copy is a memory/speed trade only: results are the same.
    x = clustered(300, 4, clusters=5, seed=5)
    a, b = cls(4, bf16_copy=True), cls(4, bf16_copy=False)
    a.add(x)
    b.add(x)
    assert a.memory_bytes() > b.memory_bytes()
    np.testing.assert_array_equal(a.search(x[:3], k=5)[1], b.search(x[:3], k=5)[1])
    b.save(tmp_path / "b.rfi")
    assert cls.load(tmp_path / "b.rfi").bf16_copy is False


def test_one_integer_check_for_every_count_argument() -> None:
    x = clustered(50, 4, clusters=3, seed=6)
    ivf = rf.IVFIndex(4, nlist=2)
    cases: list[tuple[Any, str]] = [
        (lambda: rf.HNSWIndex(4, seed=-1), "seed must be a non-negative integer, got -1"),
        (lambda: rf.HNSWIndex(4, seed=True), "seed must be an integer, got a bool"),
        (lambda: ivf.train(x, iters=-2), "iters must be a non-negative integer, got -2"),
        (lambda: rf.kmeans(x, 2, iters=1.5), "iters must be an integer, got float"),
        (lambda: rf.MultiVectorIndex(4, nbits=2.5), "nbits must be an integer, got float"),
        (lambda: rf.MultiVectorIndex(4, nbits=-1), "nbits must be a non-negative integer"),
        (lambda: rf.FlatIndex(4).search(x[0], k=0), "k must be at least 1, got 0"),
        (lambda: rf.FlatIndex(4).search(x[0], threads=0), "threads must be at least 1"),
    ]
    for call, match in cases:
        with pytest.raises(rf.RankfunnelError, match=match):
            call()
    ivf.train(x)
    ivf.add(x)
    with pytest.raises(rf.RankfunnelError, match="refine must be a non-negative integer, got -1"):
        ivf.search(x[0], refine=-1)
    mv = rf.MultiVectorIndex(4, 0)
    mv.add([x[:3]])
    with pytest.raises(rf.RankfunnelError, match="refine must be an integer, got a bool"):
        mv.search(x[:2], refine=True)


def test_pipeline_takes_index_specs() -> None:
    from rankfunnel.pipeline.fields import new_index

    with pytest.raises(
        rf.RankfunnelError, match="unknown index kind 'lsh': expected one of bm25, flat, hnsw"
    ):
        rf.Pipeline(encoder=object(), index="lsh")
    with pytest.raises(rf.RankfunnelError, match="unknown option 'efc'"):
        rf.Pipeline(encoder=object(), index="hnsw,efc=3")
    for spec in ("bm25", "multivector2"):
        with pytest.raises(rf.RankfunnelError, match="cannot hold first-stage vectors"):
            rf.Pipeline(encoder=object(), index=spec)
    p = rf.Pipeline(encoder=object(), index="ivf", metric="dot")
    ivf = new_index(p.index_kind, 8, 10_000, p.metric)
    assert isinstance(ivf, rf.IVFIndex) and (ivf.nlist, ivf.metric) == (256, "dot")  # sized for n
    h = new_index("hnsw8,ef_construction=50", 8, 10, "cosine")
    assert isinstance(h, rf.HNSWIndex) and (h.m, h.ef_construction, h.metric) == (8, 50, "cosine")
    assert isinstance(new_index(rf.Pipeline(encoder=object()).index_kind, 8, 10, "cosine"), rf.FlatIndex)
