"""Exact search benchmark: rankfunnel vs numpy and faiss IndexFlatIP on the same data, same run.

100k x 384 clustered float32, 1000 queries, k=10, 2 threads. Prints batch QPS, single-query
latency (median and p95 over 200 queries), recall against numpy, and ratios.
Run with ``make bench-python`` (which unsets OPENBLAS_CORETYPE for a fair numpy).
"""

from rankfunnel.bench import flat

if __name__ == "__main__":
    flat()
