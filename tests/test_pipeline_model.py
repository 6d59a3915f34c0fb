"""A hypothesis state machine over add / remove / update / compact / reload of a pipeline folder,
compared after every step with a brute-force model (numpy exact search over the live documents)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pipeline_worker import DIM

import rankfunnel as rf
from conftest import shared_dir
from rankfunnel.pipeline import TieredPolicy

MODELS = shared_dir() / "models"
pytestmark = pytest.mark.skipif(not MODELS.exists(), reason=f"shared models not found at {MODELS}")
QUERIES = ["wings and lift", "shells under pressure"]
ENCODER: list[rf.BiEncoder] = []


def encoder() -> rf.BiEncoder:
    if not ENCODER:
        ENCODER.append(rf.BiEncoder(MODELS / "tiny-bi-encoder-mean"))
    return ENCODER[0]


def unit(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class PipelineVsModel(RuleBasedStateMachine):
    """The pipeline (segments, tombstones, folds, merges, reloads) against a dict of live vectors."""

    @initialize()
    def start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rf-model-"))
        self.p = rf.Pipeline(encoder=encoder(), path=self.dir / "p")
        self.p.policy = TieredPolicy(fold_ratio=1.0, merge_factor=2, floor=2)
        self.model: dict[int, tuple[np.ndarray, str]] = {}
        self.q = encoder().encode_queries(QUERIES)

    @rule(n=st.integers(1, 4), seed=st.integers(0, 2**16))
    def add(self, n: int, seed: int) -> None:
        v = unit(seed, n)
        texts = [f"doc {seed} {j}" for j in range(n)]
        ids = self.p.add(texts, embeddings=v)
        for i, x, t in zip(ids.tolist(), v, texts):
            assert i not in self.model
            self.model[i] = (x, t)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=3, unique=True))
        assert self.p.remove(ids) == len(ids)
        for i in ids:
            del self.model[i]

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), seed=st.integers(0, 2**16))
    def update(self, data: st.DataObject, seed: int) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=2, unique=True))
        v = unit(seed + 1_000_000, len(ids))
        texts = [f"updated {seed} {i}" for i in ids]
        assert self.p.update(ids, texts, embeddings=v) == len(ids)
        for i, x, t in zip(ids, v, texts):
            self.model[i] = (x, t)

    @rule()
    def compact(self) -> None:
        self.p.compact()

    @rule(read_only=st.booleans())
    def reload(self, read_only: bool) -> None:
        self.p.close()
        models = {"encoder": encoder()}  # the open model, checked against the record
        if read_only:
            r = rf.Pipeline.load(self.dir / "p", read_only=True, models=models)
            self.check_against_model(r)
            r.close()
        self.p = rf.Pipeline.load(self.dir / "p", models=models)
        self.p.policy = TieredPolicy(fold_ratio=1.0, merge_factor=2, floor=2)

    def check_against_model(self, p: rf.Pipeline) -> None:
        assert len(p) == len(self.model)
        if not self.model:
            assert p.search(QUERIES[0], k=3) == []
            return
        ids = np.array(sorted(self.model), dtype=np.int64)
        x = np.stack([self.model[int(i)][0] for i in ids])
        k = 5
        for qi, hits in enumerate(p.search_batch(QUERIES, k=k, stages=["retrieve"])):
            s = x @ self.q[qi]
            order = np.lexsort((ids, -s))[:k]
            assert [h.id for h in hits] == ids[order].tolist()
            np.testing.assert_allclose([h.score for h in hits], s[order], rtol=1e-4, atol=1e-5)
            assert [h.text for h in hits] == [self.model[int(i)][1] for i in ids[order]]

    @invariant()
    def same_as_brute_force(self) -> None:
        if hasattr(self, "p"):
            self.check_against_model(self.p)
            self.p.check()

    def teardown(self) -> None:
        if hasattr(self, "p"):
            self.p.close()
            shutil.rmtree(self.dir, ignore_errors=True)


PipelineVsModel.TestCase.settings = settings(
    max_examples=8,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_pipeline_matches_brute_force = PipelineVsModel.TestCase
