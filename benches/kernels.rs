//! Criterion benches of the kernels at every SIMD level this CPU has: pair kernels (GB/s) and the
//! fused exact top-k scan (GFLOP/s), and MaxSim (GFLOP/s): the shipped kernel (query tokens in
//! panels, document values broadcast) against the transposed layout (document tokens in panels,
//! query values broadcast, through the top-k tile kernels). `make bench-rust` runs them.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rankfunnel::kernels::topk;
use rankfunnel::Metric;
use rankfunnel::{kernels::layout, kernels::simd};

fn data(n: usize) -> Vec<f32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn pair_kernels(c: &mut Criterion) {
    let d = 384;
    let a = data(d);
    let b = data(d);
    let mut g = c.benchmark_group("pair_d384");
    g.throughput(Throughput::Bytes((2 * d * 4) as u64));
    for &level in simd::available() {
        let k = simd::kernels_for(level);
        g.bench_with_input(BenchmarkId::new("dot", level.name()), &(), |bch, _| {
            bch.iter(|| (k.dot)(std::hint::black_box(&a), std::hint::black_box(&b)))
        });
        g.bench_with_input(BenchmarkId::new("l2sq", level.name()), &(), |bch, _| {
            bch.iter(|| (k.l2sq)(std::hint::black_box(&a), std::hint::black_box(&b)))
        });
    }
    g.finish();
}

fn exact_scan(c: &mut Criterion) {
    let (n, d, nq, k) = (20_000, 384, 64, 10);
    let x = data(n * d);
    let q = data(nq * d);
    let mut g = c.benchmark_group("topk_20000x384");
    g.sample_size(10);
    g.throughput(Throughput::Elements((2 * n * d * nq) as u64)); // FLOP
    for &level in simd::available() {
        simd::force_level(level).unwrap();
        g.bench_with_input(BenchmarkId::new("batch64_dot_1thread", level.name()), &(), |bch, _| {
            bch.iter(|| topk::topk(&q, &x, d, Metric::Dot, k, 1).unwrap())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("topk_single_20000x384");
    g.throughput(Throughput::Bytes((n * d * 4) as u64));
    for &level in simd::available() {
        simd::force_level(level).unwrap();
        g.bench_with_input(BenchmarkId::new("single_dot_1thread", level.name()), &(), |bch, _| {
            bch.iter(|| topk::topk(&q[..d], &x, d, Metric::Dot, k, 1).unwrap())
        });
    }
    g.finish();
    simd::force_level(simd::detected()).unwrap();
}

/// 1000 documents of 64-300 tokens, d = 128, 32 query tokens, one thread.
fn maxsim_layouts(c: &mut Criterion) {
    use rankfunnel::kernels::maxsim::{self, Docs, Tokens};
    use rankfunnel::kernels::pack;
    let d = 128;
    let lens: Vec<usize> = data(1000).iter().map(|&x| 64 + ((x + 0.5) * 236.99) as usize).collect();
    let total: usize = lens.iter().sum();
    let flat = data(total * d);
    let q = data(32 * d);
    let mut offsets = vec![0i64];
    for &n in &lens {
        offsets.push(offsets.last().unwrap() + n as i64);
    }
    // Transposed layout: each document packed in blocks of 32 tokens (dimension-major panels).
    let blocks: Vec<Vec<f32>> = (0..lens.len())
        .map(|i| {
            let rows = &flat[offsets[i] as usize * d..offsets[i + 1] as usize * d];
            let mut dst = vec![0f32; pack::packed_len(lens[i], d)];
            pack::pack_rows(rows, d, None, &mut dst);
            dst
        })
        .collect();
    let mut g = c.benchmark_group("maxsim_1000docs_d128_m32");
    g.sample_size(10);
    g.throughput(Throughput::Elements((2 * 32 * d * total) as u64)); // FLOP
    for &level in simd::available() {
        simd::force_level(level).unwrap();
        let docs = Docs::Packed { tokens: Tokens::F32(&flat), offsets: &offsets };
        g.bench_with_input(BenchmarkId::new("query_panels_fused", level.name()), &(), |bch, _| {
            bch.iter(|| maxsim::maxsim(&[&q], d, &docs, 1).unwrap())
        });
        let k = simd::kernels_for(level);
        g.bench_with_input(BenchmarkId::new("doc_panels_transposed", level.name()), &(), |bch, _| {
            let mut out = vec![0f32; k.max_rows * layout::BLOCK];
            bch.iter(|| {
                let mut scores = Vec::with_capacity(lens.len());
                for (i, b) in blocks.iter().enumerate() {
                    let mut best = [f32::NEG_INFINITY; 32];
                    for (bi, block) in b.chunks_exact(layout::BLOCK * d).enumerate() {
                        let valid = (lens[i] - bi * layout::BLOCK).min(layout::BLOCK);
                        let mut r0 = 0;
                        while r0 < 32 {
                            let rows = k.max_rows.min(32 - r0);
                            simd::score_block(k, false, rows, &q[r0 * d..], d, block, &mut out);
                            for r in 0..rows {
                                let row = &out[r * layout::BLOCK..r * layout::BLOCK + valid];
                                best[r0 + r] = row.iter().fold(best[r0 + r], |m, &x| m.max(x));
                            }
                            r0 += rows;
                        }
                    }
                    scores.push(best.iter().sum::<f32>());
                }
                scores
            })
        });
    }
    g.finish();
    simd::force_level(simd::detected()).unwrap();
}

criterion_group!(benches, pair_kernels, exact_scan, maxsim_layouts);
criterion_main!(benches);
