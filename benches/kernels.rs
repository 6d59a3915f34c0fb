//! Criterion benches of the kernels at every SIMD level this CPU has: pair kernels (GB/s) and the
//! fused exact top-k scan (GFLOP/s). `make bench-rust` runs them.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rankfunnel::simd;
use rankfunnel::topk;
use rankfunnel::Metric;

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

criterion_group!(benches, pair_kernels, exact_scan);
criterion_main!(benches);
