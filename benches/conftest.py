"""pytest-benchmark suite: rankfunnel and the anchors as parametrized contenders, one group per
workload, on the same data in the same run.

Run ``make bench`` (or ``pytest benches/ --benchmark-only``); compare runs with
``--benchmark-autosave`` / ``--benchmark-compare``. Sizes are options (``--bench-n``,
``--bench-d``, ``--bench-nq``, ``--bench-threads``) so a smoke run stays small. Anchors that are
not installed are skipped with the reason. Speed is measured here, never asserted; what *is*
asserted is that every dense and MaxSim contender answers correctly (recall or scores), so a
fast wrong answer never wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("rankfunnel benchmarks")
    g.addoption("--bench-n", type=int, default=100_000, help="vectors in the corpus (default 100k)")
    g.addoption("--bench-d", type=int, default=384, help="dimension (default 384)")
    g.addoption("--bench-nq", type=int, default=1000, help="queries per batch (default 1000)")
    g.addoption("--bench-threads", type=int, default=2, help="threads for every engine (default 2)")
    g.addoption("--bench-texts", type=int, default=300_000, help="PyPI summaries for the lexical suite")


@dataclass(frozen=True)
class Setup:
    """The sizes every workload uses (from the command line)."""

    n: int
    d: int
    nq: int
    threads: int
    texts: int


@pytest.fixture(scope="session")
def setup(request: pytest.FixtureRequest) -> Setup:
    """Sizes of this run; caps every thread pool (BLAS, OpenMP, rayon) at ``--bench-threads``."""
    o = request.config.getoption
    s = Setup(o("--bench-n"), o("--bench-d"), o("--bench-nq"), o("--bench-threads"), o("--bench-texts"))
    os.environ["RAYON_NUM_THREADS"] = str(s.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(s.threads)
    except ImportError:
        pass
    return s


@dataclass(frozen=True)
class Vectors:
    """A clustered unit-norm corpus, its queries and the exact top-10 (inner product)."""

    x: np.ndarray
    q: np.ndarray
    truth: np.ndarray
    k: int = 10


@pytest.fixture(scope="session")
def vectors(setup: Setup) -> Vectors:
    """The shared dense workload: ``--bench-n`` x ``--bench-d`` clustered vectors (seeded)."""
    import rankfunnel as rf
    from rankfunnel.synthetic import clustered

    x = clustered(setup.n, setup.d, seed=1)
    q = clustered(setup.nq, setup.d, seed=2)
    _, truth = rf.topk(q, x, 10, "dot", threads=setup.threads)
    return Vectors(x, q, truth)


def anchor(module: str) -> Any:
    """Import an anchor library or skip the contender, naming what to install."""
    return pytest.importorskip(
        module, reason=f"{module} not installed (pip install -r requirements-bench.txt)"
    )


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found (``found`` may hold more columns)."""
    from rankfunnel.bench import recall as _recall

    return _recall(np.asarray(found), truth)
