"""k-means clustering, the coarse quantizer of the IVF and multi-vector indexes."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._arrays import as_matrix, metric_name, non_negative_int, positive_int, threads_arg
from .errors import RankfunnelError


def kmeans(
    x: npt.ArrayLike,
    k: int,
    iters: int = 20,
    seed: int = 0,
    *,
    metric: str = "l2",
    init: Union[str, npt.ArrayLike] = "k-means++",
    threads: Optional[int] = None,
    return_inertia: bool = False,
) -> (
    tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
    | tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], float]
):
    """Cluster vectors with Lloyd's k-means.

    Parameters
    ----------
    x : array_like, shape (n, d)
        Points (n >= k); converted to float32.
    k : int
        Number of clusters.
    iters : int
        Lloyd iterations after initialisation (0 keeps the initial centroids).
    seed : int
        Seed of the initialisation and of empty-cluster splitting: same seed, same result.
    metric : {"l2", "cosine", "dot"}
        ``"l2"`` minimises squared distances; ``"cosine"`` and ``"dot"`` run spherical k-means
        (unit-length centroids, points assigned by inner product).
    init : {"k-means++", "random"} or array_like of shape (k, d)
        k-means++ seeding on a sample of ``max(2 k, 4096)`` points, ``k`` random points, or
        given centroids.
    threads : int, optional
        Thread cap.
    return_inertia : bool
        Also return the final inertia (sum of squared distances, or of ``1 - cos``).

    Returns
    -------
    centroids : ndarray of float32, shape (k, d)
    assignments : ndarray of int64, shape (n,)
        Index of the nearest centroid of every point.
    inertia : float
        Only with ``return_inertia=True``.
    """
    k = positive_int(k, "k")
    iters = non_negative_int(iters, "iters")
    data, _ = as_matrix(x, "x")
    spherical = metric_name(metric) != "l2"
    init_arg: object
    if isinstance(init, str):
        if init not in ("k-means++", "random"):
            raise RankfunnelError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
        init_arg = init
    else:
        init_arg, _ = as_matrix(init, "init", dim=data.shape[1])
    centroids, assignments, inertia = _core.kmeans(
        data, k, int(iters), int(seed) & (2**64 - 1), init_arg, spherical, threads_arg(threads)
    )
    if return_inertia:
        return centroids, assignments, float(inertia)
    return centroids, assignments
