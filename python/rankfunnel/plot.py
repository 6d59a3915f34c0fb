"""Quality / latency trade-off plots of evaluation rows, drawn as ann-benchmarks draws its curves:
one curve per configuration through its Pareto-optimal points (best quality for the latency),
every measured point marked and labelled with its settings. Needs matplotlib."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Union

from .eval import SETTINGS

__all__ = ["pareto_front", "plot_tradeoff"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (latency, quality) no other point beats on both, by increasing latency."""
    front: list[tuple[float, float]] = []
    for lat, quality in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or quality > front[-1][1]:
            front.append((lat, quality))
    return front


def _matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .models._errors import MissingDependencyError

        raise MissingDependencyError("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def plot_tradeoff(
    rows: Sequence[dict[str, Any]],
    path: Union[str, os.PathLike[str]],
    *,
    metrics: Sequence[str],
    latency: str = "total p50_ms",
) -> None:
    """Write a PNG (or any format matplotlib knows by the suffix) with one panel per metric:
    the metric against query latency, one curve per stage configuration.

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`rankfunnel.eval.evaluate` / :func:`rankfunnel.eval.sweep`.
    path : str or os.PathLike
        Output file.
    metrics : sequence of str
        Row keys to plot, e.g. ``["recall@100", "ndcg@10"]``.
    latency : str
        Row key of the latency (milliseconds).
    """
    plt = _matplotlib()
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        curves.setdefault(str(row["stages"]), []).append(row)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    lats = [float(r[latency]) for r in rows]
    for ax, metric in zip(axes[0], metrics):
        for i, (name, group) in enumerate(curves.items()):
            colour = f"C{i % 10}"
            pts = [(float(r[latency]), float(r[metric])) for r in group]
            ax.scatter(*zip(*pts), color=colour, s=18, alpha=0.5)
            front = pareto_front(pts)
            ax.plot(*zip(*front), color=colour, marker="o", label=name)
            for r, (x, y) in zip(group, pts):
                label = " ".join(f"{s}={r[s]}" for s in SETTINGS if s in r)
                if label:
                    ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if lats and max(lats) > 10 * max(min(lats), 1e-9):
            ax.set_xscale("log")
        ax.set_xlabel(f"query latency, {latency.replace('_ms', '')} (ms)")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{metric} vs latency")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)
