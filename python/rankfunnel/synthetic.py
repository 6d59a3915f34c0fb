"""Seeded synthetic embeddings for the tests, the benchmarks and the CLI demo.

Real sentence embeddings crowd around topics; uniform random vectors do not, and make
approximate indexes look better (or worse) than they are. These generators draw points around
random unit centres, reproducibly from one seed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["clustered", "rng", "token_docs", "token_queries", "unit"]

F32 = npt.NDArray[np.float32]


def rng(seed: int = 0) -> np.random.Generator:
    """The seeded generator every synthetic data set draws from (numpy's PCG64)."""
    return np.random.default_rng(seed)


def unit(x: npt.ArrayLike) -> F32:
    """Rows of ``x`` scaled to unit length (float32; zero rows stay zero)."""
    a = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    return np.asarray(a / np.maximum(norm, np.float32(1e-30)), dtype=np.float32)


def clustered(
    n: int,
    d: int,
    *,
    clusters: int = 1000,
    spread: float = 0.35,
    seed: int = 0,
    normalize: bool = True,
    unit_centres: bool = True,
) -> F32:
    """``n`` float32 vectors of dimension ``d`` drawn around ``clusters`` random centres.

    Parameters
    ----------
    n, d : int
        How many vectors, and their dimension.
    clusters : int
        Number of centres; each vector picks one uniformly.
    spread : float
        Noise around a centre, relative to the centres' length: the noise vector is about
        ``spread`` times as long as a centre (Gaussian per coordinate).
    seed : int
        Seed of :func:`rng`; equal arguments give equal data.
    normalize : bool, default True
        Scale every vector to unit length (as sentence embeddings are).
    unit_centres : bool, default True
        Unit-length centres; ``False`` keeps them standard normal (length about ``sqrt(d)``,
        varying from centre to centre), which matters for ``"dot"`` and ``"l2"`` without
        ``normalize``.

    Returns
    -------
    ndarray of float32, shape (n, d)
    """
    g = rng(seed)
    raw = g.standard_normal((clusters, d)).astype(np.float32)
    centres = unit(raw) if unit_centres else raw
    picks = g.integers(0, clusters, n)
    scale = np.float32(spread / np.sqrt(d) if unit_centres else spread)
    x = centres[picks] + scale * g.standard_normal((n, d)).astype(np.float32)
    return unit(x) if normalize else np.asarray(x, dtype=np.float32)


def token_docs(
    n: int,
    d: int,
    *,
    topics: int = 64,
    lengths: tuple[int, int] = (8, 32),
    mix: int = 3,
    spread: float = 0.3,
    seed: int = 0,
) -> tuple[list[F32], F32]:
    """Documents of unit token vectors, as ColBERT makes: each draws its tokens from ``mix`` topics.

    Parameters
    ----------
    n, d : int
        Number of documents and token dimension.
    topics : int
        Number of topic centres (unit vectors).
    lengths : (int, int)
        Smallest and largest number of tokens of a document (uniform, both included).
    mix : int
        Topics a document draws from.
    spread : float
        Token noise around its topic, relative (see :func:`clustered`).
    seed : int
        Seed of :func:`rng`.

    Returns
    -------
    docs : list of ndarray of float32, shapes (n_i, d)
    centres : ndarray of float32, shape (topics, d)
        The topic centres, for :func:`token_queries`.
    """
    g = rng(seed)
    centres = unit(g.standard_normal((topics, d)))
    docs = []
    for length in g.integers(lengths[0], lengths[1] + 1, n):
        mine = g.integers(0, topics, mix)
        c = centres[mine[g.integers(0, mix, int(length))]]
        docs.append(unit(c + spread * g.standard_normal(c.shape).astype(np.float32) / np.sqrt(d)))
    return docs, centres


def token_queries(
    centres: F32, nq: int, m: int, *, mix: int = 2, spread: float = 0.9, seed: int = 1
) -> list[F32]:
    """``nq`` queries of ``m`` unit tokens, each drawn around ``mix`` of the topic ``centres``."""
    g = rng(seed)
    d = centres.shape[1]
    out = []
    for _ in range(nq):
        c = centres[g.integers(0, len(centres), mix)][g.integers(0, mix, m)]
        out.append(unit(c + spread * g.standard_normal(c.shape).astype(np.float32) / np.sqrt(d)))
    return out
