//! cargo tests of the core: every SIMD level against the scalar reference, exact top-k against a
//! naive f64 search, the bfloat16 and u8 kernels.
#![allow(clippy::needless_range_loop)]

mod common;

use common::Rng;

use rankfunnel::kernels::layout::{self, BLOCK};
use rankfunnel::kernels::simd::{self, Level};
use rankfunnel::kernels::topk::{self, TopK};
use rankfunnel::{kernels::half, kernels::pack, Error, Metric};

fn close(a: f32, b: f64, scale: f64) -> bool {
    (a as f64 - b).abs() <= 1e-5 * scale.max(1.0)
}

#[test]
fn pair_kernels_match_f64_at_every_level() {
    let mut rng = Rng(7);
    for &level in simd::available() {
        let k = simd::kernels_for(level);
        for d in [1, 3, 7, 8, 15, 16, 17, 31, 64, 100, 384, 1000] {
            let a = rng.vec(d);
            let b = rng.vec(d);
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let l2: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
            assert!(close((k.dot)(&a, &b), dot, d as f64), "{level:?} dot d={d}");
            assert!(close((k.l2sq)(&a, &b), l2, d as f64), "{level:?} l2 d={d}");
            assert!(close((k.norm_sq)(&a), na, d as f64), "{level:?} norm d={d}");
        }
    }
}

#[test]
fn bf16_pair_kernels_match_f64_at_every_level() {
    let mut rng = Rng(9);
    for &level in simd::available() {
        let k = simd::kernels_for(level);
        for d in [1, 7, 15, 16, 17, 31, 32, 33, 100, 389] {
            let q = rng.vec(d);
            let x: Vec<u16> = rng.vec(d).iter().map(|&v| half::to_bf16(v)).collect();
            let wide: Vec<f64> = x.iter().map(|&h| f32::from_bits((h as u32) << 16) as f64).collect();
            let dot: f64 = q.iter().zip(&wide).map(|(a, b)| *a as f64 * b).sum();
            let l2: f64 = q.iter().zip(&wide).map(|(a, b)| (*a as f64 - b).powi(2)).sum();
            assert!(close((k.pair_bf16[0])(&q, &x), dot, d as f64), "{level:?} dot d={d}");
            assert!(close((k.pair_bf16[1])(&q, &x), l2, d as f64), "{level:?} l2 d={d}");
        }
    }
}

#[test]
fn u8_pair_kernels_match_f64_and_scalar_at_every_level() {
    let mut rng = Rng(13);
    for &level in simd::available() {
        let k = simd::kernels_for(level);
        for d in [1, 7, 8, 15, 16, 17, 31, 32, 33, 48, 100, 384, 389] {
            let q = rng.vec(d);
            let step: Vec<f32> = rng.vec(d).iter().map(|v| 0.001 + v.abs() * 0.01).collect();
            let x: Vec<u8> = (0..d).map(|_| rng.below(256) as u8).collect();
            let l2: f64 = q
                .iter()
                .zip(&step)
                .zip(&x)
                .map(|((a, s), &c)| (*s as f64 * c as f64 - *a as f64).powi(2))
                .sum();
            assert!(close((k.pair_u8_l2)(&q, &step, &x), l2, l2.max(d as f64)), "{level:?} l2 d={d}");
            let scalar = (simd::scalar::KERNELS.pair_u8_l2)(&q, &step, &x);
            let got = (k.pair_u8_l2)(&q, &step, &x);
            assert!((got - scalar).abs() <= 1e-5 * got.abs().max(1.0), "{level:?} vs scalar d={d}");
            // Fixed-point weights at the largest magnitude the bound allows: exact.
            let top = simd::fixed_point_bound(d);
            let w: Vec<i16> = q.iter().map(|a| (a * top as f32).round() as i16).collect();
            let exact: i64 = w.iter().zip(&x).map(|(&a, &c)| a as i64 * c as i64).sum();
            assert_eq!((k.pair_u8_i16)(&w, &x) as i64, exact, "{level:?} i16 d={d}");
            for sign in [1i16, -1] {
                let extreme = vec![sign * top as i16; d];
                let most = sign as i64 * top as i64 * 255 * d as i64;
                assert_eq!((k.pair_u8_i16)(&extreme, &vec![255u8; d]) as i64, most, "{level:?} bound d={d}");
            }
        }
    }
}

#[test]
fn tile_kernels_match_scalar_at_every_level() {
    let mut rng = Rng(11);
    for &level in simd::available() {
        let k = simd::kernels_for(level);
        for d in [1, 5, 16, 33, 384] {
            let rows = rng.vec(BLOCK * d);
            let mut packed = vec![0f32; pack::packed_len(BLOCK, d)];
            pack::pack_rows(&rows, d, None, &mut packed);
            for r in 1..=k.max_rows {
                let q = rng.vec(r * d);
                for l2 in [false, true] {
                    let mut out = vec![0f32; r * BLOCK];
                    simd::score_block(k, l2, r, &q, d, &packed, &mut out);
                    for i in 0..r {
                        for j in 0..BLOCK {
                            let (qa, xb) = (&q[i * d..(i + 1) * d], &rows[j * d..(j + 1) * d]);
                            let want =
                                if l2 { simd::scalar::l2sq(qa, xb) } else { simd::scalar::dot(qa, xb) };
                            let got = out[i * BLOCK + j];
                            assert!(
                                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                                "{level:?} r={r} d={d} l2={l2}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn u8_kernels_are_exact_at_every_level_with_and_without_vnni() {
    let mut rng = Rng(13);
    let mut byte = || (rng.f32() * 128.0 + 128.0).clamp(0.0, 255.0) as u8;
    for &level in simd::available() {
        let k = simd::kernels_for(level);
        let mut variants = vec![("plain", &k.tile_u8)];
        if simd::vnni_available(level) {
            variants.push(("vnni", k.tile_u8_vnni.as_ref().expect("a VNNI table")));
        }
        for d in [1, 3, 4, 5, 8, 12, 33, 384] {
            let dp = pack::quad_dim(d);
            assert!(dp.is_multiple_of(layout::QUAD) && dp >= d && dp < d + layout::QUAD);
            // Two panels of codes, extremes included; row-major originals to check against.
            let rows: Vec<Vec<u8>> = (0..2 * layout::PANEL)
                .map(|j| {
                    (0..d)
                        .map(|t| {
                            if j == 0 {
                                255
                            } else if j == 1 {
                                t as u8 % 2
                            } else {
                                byte()
                            }
                        })
                        .collect()
                })
                .collect();
            let mut codes = vec![0u8; pack::packed_len(2 * layout::PANEL, dp)];
            for (j, v) in rows.iter().enumerate() {
                pack::write_quad(&mut codes, dp, j, v);
                let mut back = vec![0u8; d];
                pack::read_quad(&codes, dp, j, &mut back);
                assert_eq!(&back, v);
            }
            for r in 1..=simd::U8_ROWS {
                let mut w = vec![0i8; r * dp];
                for i in 0..r {
                    for t in 0..d {
                        w[i * dp + t] = match (i + t) % 7 {
                            0 => -128,
                            1 => 127,
                            _ => (byte() as i32 - 128) as i8,
                        };
                    }
                }
                for p in 0..2 {
                    let panel = &codes[p * layout::PANEL * dp..];
                    for (name, table) in &variants {
                        let mut out = vec![i32::MIN; r * 20];
                        (table[r - 1])(&w, dp, panel, &mut out, 20);
                        for i in 0..r {
                            for j in 0..layout::PANEL {
                                let x = &rows[p * layout::PANEL + j];
                                let want: i64 = (0..d).map(|t| w[i * dp + t] as i64 * x[t] as i64).sum();
                                assert_eq!(
                                    out[i * 20 + j] as i64,
                                    want,
                                    "{level:?} {name} d={d} r={r} i={i} j={j}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[cfg(target_arch = "aarch64")]
fn neon_is_covered_on_aarch64() {
    // Every kernel test above runs at each available level: make sure NEON is one of them.
    assert!(simd::available().contains(&Level::Neon), "{:?}", simd::available());
}

#[test]
fn env_level_names_parse() {
    assert_eq!(Level::parse("AVX512").unwrap(), Level::Avx512);
    assert_eq!(Level::parse("scalar").unwrap(), Level::Scalar);
    assert!(Level::parse("sse9").is_err());
}

#[test]
fn topk_heap_keeps_best_and_breaks_ties_by_id() {
    let mut t = TopK::new(3);
    for (s, id) in [(0.5, 9), (0.9, 4), (0.5, 2), (0.1, 1), (0.9, 3), (0.5, 1)] {
        t.push(s, id);
    }
    assert_eq!(t.into_sorted(), vec![(0.9, 3), (0.9, 4), (0.5, 1)]);
}

fn naive(q: &[f32], x: &[f32], d: usize, metric: Metric) -> Vec<(f64, usize)> {
    let n = x.len() / d;
    let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let mut s: Vec<(f64, usize)> = (0..n)
        .map(|j| {
            let xv = &x[j * d..(j + 1) * d];
            let dot: f64 = q.iter().zip(xv).map(|(a, b)| *a as f64 * *b as f64).sum();
            let v = match metric {
                Metric::Dot => dot,
                Metric::Cosine => {
                    let nn = norm(q) * norm(xv);
                    if nn == 0.0 {
                        0.0
                    } else {
                        dot / nn
                    }
                }
                Metric::L2 => -q.iter().zip(xv).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>(),
            };
            (v, j)
        })
        .collect();
    s.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
    s
}

#[test]
fn exact_topk_matches_naive_for_every_metric_level_and_thread_count() {
    let mut rng = Rng(3);
    for &level in simd::available() {
        simd::force_level(level).unwrap();
        for (n, d, nq, k) in
            [(0, 4, 2, 3), (5, 3, 1, 10), (100, 17, 9, 7), (1000, 64, 13, 10), (3001, 8, 3, 50)]
        {
            let x = rng.vec(n * d);
            let q = rng.vec(nq * d);
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                for threads in [1, 2, 3] {
                    let r = topk::topk(&q, &x, d, metric, k, threads).unwrap();
                    for qi in 0..nq {
                        let want = naive(&q[qi * d..(qi + 1) * d], &x, d, metric);
                        for j in 0..k {
                            let (s, id) = (r.scores[qi * k + j], r.ids[qi * k + j]);
                            if j >= n {
                                assert_eq!(id, -1);
                                assert_eq!(s, metric.worst_score());
                                continue;
                            }
                            let w = if metric == Metric::L2 { -want[j].0 } else { want[j].0 };
                            assert!(
                                close(s, w, d as f64),
                                "{level:?} {metric:?} n={n} d={d} rank {j}: {s} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }
    simd::force_level(simd::detected()).unwrap();
}

#[test]
fn non_finite_corpus_is_an_error() {
    let mut x = vec![0.5f32; 64 * 4];
    x[77] = f32::NAN;
    let q = vec![1.0f32; 4];
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        assert!(matches!(topk::topk(&q, &x, 4, metric, 3, 1), Err(Error::InvalidArgument(_))));
    }
}
