"""Shared helpers of the benchmark scripts (they live in :mod:`rankfunnel.bench` and
:mod:`rankfunnel.synthetic`)."""

from rankfunnel.bench import best_of, latencies, recall, table
from rankfunnel.synthetic import clustered

__all__ = ["best_of", "clustered", "latencies", "recall", "table"]
