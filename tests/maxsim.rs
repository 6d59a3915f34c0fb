//! cargo tests of MaxSim: every SIMD level against a float64 reference on ragged documents,
//! f16 / int8 tokens, conversions and bad input.
#![allow(clippy::needless_range_loop)]

mod common;

use common::Rng;
use rankfunnel::kernels::maxsim::{self, Docs, Scale, Tokens};
use rankfunnel::Error;
use rankfunnel::{kernels::half, kernels::simd};

/// Tests that force SIMD levels (a process-wide setting) run one at a time.
static LEVELS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LEVELS.lock().unwrap_or_else(|e| e.into_inner())
}

/// float64 MaxSim and the magnitude bound `sum_i max_j |q_i| |d_j|` used for tolerances.
fn reference(q: &[f32], doc: &[f32], d: usize) -> (f64, f64) {
    if doc.is_empty() {
        return (0.0, 0.0);
    }
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let (mut s, mut mag) = (0.0, 0.0);
    for qi in q.chunks_exact(d) {
        let mut best = f64::NEG_INFINITY;
        let mut bm: f64 = 0.0;
        for dj in doc.chunks_exact(d) {
            let v: f64 = qi.iter().zip(dj).map(|(&a, &b)| a as f64 * b as f64).sum();
            best = best.max(v);
            bm = bm.max(norm(qi) * norm(dj));
        }
        s += best;
        mag += bm;
    }
    (s, mag)
}

fn ragged(rng: &mut Rng, nd: usize, d: usize, max_len: usize) -> Vec<Vec<f32>> {
    (0..nd)
        .map(|i| {
            let len = if i == 3 { 0 } else { rng.below(max_len + 1) };
            rng.vec(len * d)
        })
        .collect()
}

#[test]
fn every_level_matches_f64_on_ragged_docs() {
    let _serial = lock();
    let mut rng = Rng(11);
    for &level in simd::available() {
        simd::force_level(level).unwrap();
        for d in [1, 5, 16, 33, 128] {
            for m in [1, 7, 16, 17, 32, 50, 70] {
                let docs = ragged(&mut rng, 23, d, 40);
                let slices: Vec<&[f32]> = docs.iter().map(|x| x.as_slice()).collect();
                let q1 = rng.vec(m * d);
                let q2 = rng.vec((m / 2 + 1) * d);
                let got = maxsim::maxsim(&[&q1, &q2], d, &Docs::List(&slices), 2).unwrap();
                for (qi, q) in [&q1, &q2].iter().enumerate() {
                    for (i, doc) in docs.iter().enumerate() {
                        let (want, mag) = reference(q, doc, d);
                        let g = got[qi * docs.len() + i] as f64;
                        assert!(
                            (g - want).abs() <= 1e-5 * mag.max(1.0),
                            "{level:?} d={d} m={m} q={qi} doc={i}: {g} vs {want}"
                        );
                    }
                }
                // Packed f32 equals the list path.
                let mut flat = Vec::new();
                let mut offsets = vec![0i64];
                for doc in &docs {
                    flat.extend_from_slice(doc);
                    offsets.push((flat.len() / d) as i64);
                }
                let packed = Docs::Packed { tokens: Tokens::F32(&flat), offsets: &offsets };
                let p = maxsim::maxsim(&[&q1, &q2], d, &packed, 1).unwrap();
                assert_eq!(p, got, "{level:?}: packed f32 differs from the list path");
            }
        }
    }
    simd::force_level(simd::detected()).unwrap();
}

#[test]
fn f16_conversion_is_exact_and_round_trips() {
    for h in 0..=u16::MAX {
        let x = half::f16_to_f32(h);
        if x.is_nan() {
            assert!(half::f32_to_f16(x) & 0x7c00 == 0x7c00);
            continue;
        }
        assert_eq!(half::f32_to_f16(x), h, "round trip of {h:#06x} ({x})");
    }
    assert_eq!(half::f16_to_f32(0x3c00), 1.0);
    assert_eq!(half::f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(half::f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // tie to even
    assert_eq!(half::f32_to_f16(70000.0), 0x7c00);
    for &level in simd::available() {
        let k = maxsim::kernels_for(level);
        let src: Vec<u16> = (0..1000u16).map(|i| i.wrapping_mul(65)).collect();
        let mut a = vec![0f32; src.len()];
        let mut b = vec![0f32; src.len()];
        (k.f16)(&src, &mut a);
        (maxsim::scalar::KERNELS.f16)(&src, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()), "{level:?}");
        }
        let codes: Vec<i8> = (0..77).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let mut c = vec![0f32; codes.len()];
        (k.i8)(&codes, &mut c);
        assert!(codes.iter().zip(&c).all(|(&x, &y)| x as f32 == y), "{level:?} int8");
    }
}

#[test]
fn f16_and_int8_tokens_score_their_decoded_values() {
    let _serial = lock();
    let mut rng = Rng(5);
    let d = 48;
    let docs = ragged(&mut rng, 17, d, 70);
    let mut flat = Vec::new();
    let mut offsets = vec![0i64];
    for doc in &docs {
        flat.extend_from_slice(doc);
        offsets.push((flat.len() / d) as i64);
    }
    let n = flat.len() / d;
    let q = rng.vec(20 * d);
    let half: Vec<u16> = flat.iter().map(|&x| half::f32_to_f16(x)).collect();
    let half_dec: Vec<f32> = half.iter().map(|&h| half::f16_to_f32(h)).collect();
    let tok_scale: Vec<f32> = (0..n).map(|j| 0.01 + 0.001 * (j % 7) as f32).collect();
    let dim_scale: Vec<f32> = (0..d).map(|t| 0.02 + 0.001 * (t % 5) as f32).collect();
    let codes: Vec<i8> = (0..n * d).map(|i| (i * 31 % 255) as i32 - 127).map(|c| c as i8).collect();
    let dec_tok: Vec<f32> = (0..n * d).map(|i| codes[i] as f32 * tok_scale[i / d]).collect();
    let dec_dim: Vec<f32> = (0..n * d).map(|i| codes[i] as f32 * dim_scale[i % d]).collect();
    for &level in simd::available() {
        simd::force_level(level).unwrap();
        let cases: [(Tokens, &[f32]); 3] = [
            (Tokens::F16(&half), &half_dec),
            (Tokens::I8 { codes: &codes, scale: Scale::Token(&tok_scale) }, &dec_tok),
            (Tokens::I8 { codes: &codes, scale: Scale::Dim(&dim_scale) }, &dec_dim),
        ];
        for (c, (tokens, decoded)) in cases.iter().enumerate() {
            let got =
                maxsim::maxsim(&[&q], d, &Docs::Packed { tokens: *tokens, offsets: &offsets }, 2).unwrap();
            for i in 0..docs.len() {
                let doc = &decoded[offsets[i] as usize * d..offsets[i + 1] as usize * d];
                let (want, mag) = reference(&q, doc, d);
                assert!(
                    (got[i] as f64 - want).abs() <= 1e-5 * mag.max(1.0),
                    "{level:?} case {c} doc {i}: {} vs {want}",
                    got[i]
                );
            }
        }
    }
    simd::force_level(simd::detected()).unwrap();
}

#[test]
fn bad_input_is_an_error() {
    let _serial = lock();
    let d = 8;
    let q = vec![0.5f32; 3 * d];
    let doc = vec![0.25f32; 4 * d];
    let docs: [&[f32]; 1] = [&doc];
    let msg = |r: rankfunnel::Result<Vec<f32>>| match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(msg(maxsim::maxsim(&[&q[..0]], d, &Docs::List(&docs), 1)).contains("no tokens"));
    assert!(msg(maxsim::maxsim(&[&q[..5]], d, &Docs::List(&docs), 1)).contains("whole number"));
    let mut nanq = q.clone();
    nanq[3] = f32::NAN;
    assert!(msg(maxsim::maxsim(&[&nanq], d, &Docs::List(&docs), 1)).contains("NaN"));
    for &level in simd::available() {
        simd::force_level(level).unwrap();
        for bad in [f32::NAN, f32::INFINITY] {
            for pos in [0, 13, 4 * d - 1] {
                let mut bd = doc.clone();
                bd[pos] = bad;
                let docs: [&[f32]; 2] = [&doc, &bd];
                let m = msg(maxsim::maxsim(&[&q], d, &Docs::List(&docs), 1));
                assert!(m.contains("document 1"), "{level:?}: {m}");
            }
        }
    }
    simd::force_level(simd::detected()).unwrap();
    let flat = vec![0.1f32; 5 * d];
    for offsets in [vec![0i64, 3], vec![1, 5], vec![0, 4, 3, 5], vec![]] {
        let p = Docs::Packed { tokens: Tokens::F32(&flat), offsets: &offsets };
        assert!(maxsim::maxsim(&[&q], d, &p, 1).is_err(), "{offsets:?}");
    }
    // An empty document scores 0.
    let empty: [&[f32]; 2] = [&[], &doc];
    let s = maxsim::maxsim(&[&q], d, &Docs::List(&empty), 1).unwrap();
    assert_eq!(s[0], 0.0);
    assert!((s[1] - 3.0 * 8.0 * 0.125).abs() < 1e-5);
}

#[test]
fn multivector_index_round_trip() {
    use rankfunnel::index::multivector::{MultiVectorIndex, SearchParams, TokenDocs};
    use rankfunnel::{IdIndex, Index};
    let d = 16;
    let mut rng = Rng(9);
    let docs = ragged(&mut rng, 60, d, 12);
    let mut flat = Vec::new();
    let mut offsets = vec![0i64];
    for doc in &docs {
        flat.extend_from_slice(doc);
        offsets.push((flat.len() / d) as i64);
    }
    let q = rng.vec(5 * d);
    for nbits in [0, 2] {
        let mut mv = MultiVectorIndex::new(d, nbits, 8, 1).unwrap();
        let ids = mv.add(TokenDocs { tokens: &flat, offsets: &offsets }, None, 2).unwrap();
        assert_eq!(ids, (0..60).collect::<Vec<i64>>());
        assert_eq!(mv.n_centroids(), 8);
        // Probing every centroid and keeping every candidate is brute force on the stored tokens.
        let p = SearchParams { candidates: 60, nprobe: 8, refine: 0 };
        let r = mv.search(&[&q], 5, &p, None, 2).unwrap();
        let all: Vec<i64> = (0..60).collect();
        let exact = mv.rerank(&[&q], &all, 5, 1).unwrap();
        // Empty documents are never candidates but score 0; compare the positive part.
        for (a, b) in r.scores.iter().zip(&exact.scores) {
            if *b > 0.0 {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "nbits={nbits}: {a} vs {b}");
            }
        }
        if nbits == 0 {
            for (j, &id) in exact.ids.iter().enumerate() {
                let (want, mag) = reference(&q, &docs[id as usize], d);
                assert!((exact.scores[j] as f64 - want).abs() <= 1e-5 * mag.max(1.0));
            }
        }
        assert_eq!(mv.remove(&[exact.ids[0]]).unwrap(), 1);
        assert!(matches!(mv.remove(&[exact.ids[0]]), Err(Error::UnknownId(_))));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mv.rfi");
        mv.save(&path).unwrap();
        for mmap in [false, true] {
            let back = MultiVectorIndex::load(&path, mmap).unwrap();
            assert_eq!(back.len(), 59);
            assert_eq!(
                back.search(&[&q], 5, &p, None, 1).unwrap(),
                mv.search(&[&q], 5, &p, None, 1).unwrap()
            );
        }
    }
}
