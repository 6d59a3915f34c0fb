"""IVF benchmark: rankfunnel IVFIndex (f32, int8 + refine) vs faiss IndexIVFFlat and
IndexIVFScalarQuantizer (SQ8) on the same data, same run, sweeping nprobe.

100k x 384 clustered float32, 1000 queries, k=10, nlist=1264, 2 threads. Prints train + add
time, memory, and recall@10 / QPS per nprobe, then QPS ratios at recall@10 = 0.90.
"""

from rankfunnel.bench import ivf

if __name__ == "__main__":
    ivf()
