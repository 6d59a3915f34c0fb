"""Shared helpers of the benchmark scripts (they live in :mod:`rankfunnel.bench`)."""

from rankfunnel.bench import best_of, clustered, latencies, recall, table

__all__ = ["best_of", "clustered", "latencies", "recall", "table"]
