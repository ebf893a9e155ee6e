use super::decode::*;
use super::prefill::*;
use super::*;
use crate::kv_cache::KvDtype;

#[test]
fn one_key_gives_its_value_and_equal_scores_average() {
    let mut h = HeadCache::new(2, KvDtype::F32);
    h.push(0, &[1.0, 0.0], &[3.0, 4.0]);
    let mut out = vec![0.0; 2];
    attend_one(
        std::slice::from_ref(&h),
        &[5.0, 5.0],
        0,
        None,
        2,
        &mut out,
        None,
    );
    assert_eq!(out, [3.0, 4.0]);
    h.push(1, &[1.0, 0.0], &[5.0, 0.0]);
    let mut probs = Vec::new();
    attend_one(
        std::slice::from_ref(&h),
        &[5.0, 5.0],
        1,
        None,
        2,
        &mut out,
        Some(&mut probs),
    );
    assert_eq!(out, [4.0, 2.0]);
    assert_eq!(probs, vec![vec![0.5, 0.5]]);
}

#[test]
fn a_sliding_window_sees_the_last_window_positions_only() {
    let mut h = HeadCache::new(2, KvDtype::F32);
    for p in [0u32, 3, 4, 6] {
        h.push(p, &[1.0, 0.0], &[p as f32, 1.0]);
    }
    let v = h.view();
    assert_eq!(v.seen_by(6, None), 0..4);
    // Window 3 at position 6: positions 4..=6 (3 is 6 - 3, outside).
    assert_eq!(v.seen_by(6, Some(3)), 2..4);
    assert_eq!(v.seen_by(6, Some(1)), 3..4);
    assert_eq!(v.seen_by(5, Some(2)), 2..3);
    // Nothing inside the window: an empty range at the causal end.
    assert_eq!(v.seen_by(2, Some(2)), 1..1);
    let mut out = vec![0.0; 2];
    let mut probs = Vec::new();
    let heads = std::slice::from_ref(&h);
    attend_one(
        heads,
        &[5.0, 5.0],
        6,
        Some(3),
        2,
        &mut out,
        Some(&mut probs),
    );
    assert_eq!(out, [5.0, 1.0], "the average of the values at 4 and 6");
    assert_eq!(probs, vec![vec![0.5, 0.5]]);
    let mut batch = vec![0.0; 4];
    attend_batch(
        heads,
        &[5.0, 5.0, 5.0, 5.0],
        &[4, 6],
        Some(3),
        1,
        2,
        &mut batch,
    );
    assert_eq!(batch, [3.5, 1.0, 5.0, 1.0]);
}

#[test]
fn batch_is_causal_and_equals_one_at_a_time() {
    // Two KV heads, group of two query heads each, head_dim 2, three tokens.
    let mut heads = vec![
        HeadCache::new(2, KvDtype::F32),
        HeadCache::new(2, KvDtype::F32),
    ];
    let kv = |p: usize, h: usize| [(p + h) as f32 * 0.3, 1.0 - p as f32 * 0.2];
    for p in 0..3 {
        for (h, head) in heads.iter_mut().enumerate() {
            let k = kv(p, h);
            head.push(p as u32, &k, &[k[1], p as f32]);
        }
    }
    let q: Vec<f32> = (0..3 * 8)
        .map(|i| ((i * 7) % 5) as f32 * 0.25 - 0.5)
        .collect();
    let mut batch = vec![0.0; 24];
    attend_batch(&heads, &q, &[0, 1, 2], None, 4, 2, &mut batch);
    for p in 0..3 {
        let mut one = vec![0.0; 8];
        attend_one(
            &heads,
            &q[p * 8..(p + 1) * 8],
            p as u32,
            None,
            2,
            &mut one,
            None,
        );
        for (a, b) in batch[p * 8..(p + 1) * 8].iter().zip(&one) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
    // Token 0 sees only itself: its outputs are its own values.
    assert!((batch[0] - 1.0).abs() < 1e-6 && batch[1].abs() < 1e-6);
}

struct Lcg(u64);
impl Lcg {
    fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Heads of different lengths (as after FastGen eviction), positions with gaps.
fn random_heads(
    rng: &mut Lcg,
    n_kv: usize,
    hd: usize,
    dtype: KvDtype,
    lens: &[usize],
) -> Vec<HeadCache> {
    (0..n_kv)
        .map(|h| {
            let mut head = HeadCache::new(hd, dtype);
            for s in 0..lens[h] {
                let k: Vec<f32> = (0..hd).map(|_| rng.f() * 2.0).collect();
                let v: Vec<f32> = (0..hd).map(|_| rng.f()).collect();
                head.push((2 * s + h) as u32, &k, &v);
            }
            head
        })
        .collect()
}

#[test]
fn fast_decode_matches_reference_with_probs() {
    let mut rng = Lcg(7);
    for (hd, group, dtype) in [
        (64, 3, KvDtype::F16),
        (64, 7, KvDtype::F16),
        (128, 2, KvDtype::F32),
        (32, 5, KvDtype::F16),
        (48, 1, KvDtype::F32),
    ] {
        for (lens, window) in [
            ([1usize, 3], None),
            ([17, 40], None),
            ([700, 2500], None),
            ([700, 2500], Some(1000)),
            ([17, 40], Some(11)),
        ] {
            let heads = random_heads(&mut rng, 2, hd, dtype, &lens);
            let q: Vec<f32> = (0..2 * group * hd).map(|_| rng.f()).collect();
            let pos = 2 * 2500 + 5;
            let mut b = vec![0.0; q.len()];
            let mut pb = Vec::new();
            attend_one_reference(&heads, &q, pos, window, hd, &mut b, Some(&mut pb));
            for (name, kernel) in chunk_kernels(hd) {
                let mut a = vec![0.0; q.len()];
                let mut pa = Vec::new();
                let mut s = DecodeScratch::default();
                let (qq, h) = (&q, &heads);
                let pa_out = Some(&mut pa);
                attend_one_fast(&mut s, kernel, h, qq, pos, window, hd, &mut a, pa_out);
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() < 1e-4,
                        "{name} hd {hd} group {group} lens {lens:?}: {x} vs {y}"
                    );
                }
                for (ph, rh) in pa.iter().zip(&pb) {
                    assert_eq!(ph.len(), rh.len());
                    for (x, y) in ph.iter().zip(rh) {
                        assert!((x - y).abs() < 1e-5, "{name} probs {x} vs {y}");
                    }
                }
                // Without probabilities: the same output.
                let mut c = vec![0.0; q.len()];
                attend_one_fast(&mut s, kernel, h, qq, pos, window, hd, &mut c, None);
                assert_eq!(a, c, "{name}");
            }
        }
    }
}

#[test]
fn tiled_prefill_matches_one_at_a_time() {
    if !x86::has_avx512() {
        eprintln!("tiled_prefill_matches_one_at_a_time: AVX-512 path skipped (not in use here)");
    }
    let mut rng = Lcg(11);
    for (hd, group) in [(64, 3), (48, 2), (128, 7), (40, 1)] {
        for avx512 in [false, x86::has_avx512()] {
            // Windows whose lower edges fall inside key blocks, one of a single position.
            for window in [None, Some(30), Some(97), Some(1)] {
                check_prefill(&mut rng, hd, group, avx512, window);
            }
        }
    }
}

fn check_prefill(rng: &mut Lcg, hd: usize, group: usize, avx512: bool, window: Option<u32>) {
    let n_kv = 2;
    // Heads already hold 70 earlier tokens; 100 new ones at positions 70..170.
    let mut heads: Vec<HeadCache> = random_heads(rng, n_kv, hd, KvDtype::F16, &[0, 0]);
    let positions: Vec<u32> = (70..170).collect();
    for p in 0..170u32 {
        for head in heads.iter_mut() {
            let k: Vec<f32> = (0..hd).map(|_| rng.f()).collect();
            let v: Vec<f32> = (0..hd).map(|_| rng.f()).collect();
            head.push(p, &k, &v);
        }
    }
    // One head loses some slots, as after eviction.
    let keep: Vec<bool> = (0..170).map(|i| i % 3 != 1 || i >= 150).collect();
    heads[1].retain(&keep);
    let q_dim = n_kv * group * hd;
    let q: Vec<f32> = (0..positions.len() * q_dim).map(|_| rng.f()).collect();
    let mut batch = vec![0.0; q.len()];
    let n_heads = n_kv * group;
    attend_batch_with(
        &heads, &q, &positions, window, n_heads, hd, &mut batch, avx512,
    );
    for (i, &p) in positions.iter().enumerate() {
        let mut one = vec![0.0; q_dim];
        attend_one_reference(
            &heads,
            &q[i * q_dim..(i + 1) * q_dim],
            p,
            window,
            hd,
            &mut one,
            None,
        );
        for (x, y) in batch[i * q_dim..(i + 1) * q_dim].iter().zip(&one) {
            assert!(
                (x - y).abs() < 1e-4,
                "hd {hd} group {group} avx512 {avx512} window {window:?} row {i}: {x} vs {y}"
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn exp16_matches_exp_fast() {
    if !x86::has_avx512() {
        eprintln!("exp16_matches_exp_fast skipped: no AVX-512 in use on this CPU");
        return;
    }
    use std::arch::x86_64::*;
    let xs: Vec<f32> = (0..4096).map(|i| -90.0 + i as f32 * 0.0437).collect();
    for c in xs.chunks_exact(16) {
        let mut out = [0f32; 16];
        // SAFETY: AVX-512 checked above.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), x86::exp16(_mm512_loadu_ps(c.as_ptr()))) };
        for (&x, &y) in c.iter().zip(&out) {
            let want = exp_fast(x);
            assert!((y - want).abs() <= 2e-7 * want, "{x}: {y} vs {want}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn hsum16_sums_each_vector() {
    if !x86::has_avx512() {
        eprintln!("hsum16_sums_each_vector skipped: no AVX-512 in use on this CPU");
        return;
    }
    use std::arch::x86_64::*;
    let vals: Vec<f32> = (0..256).map(|i| (i * 37 % 101) as f32).collect();
    // SAFETY: AVX-512 checked above.
    unsafe {
        let a: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(vals.as_ptr().add(16 * i)));
        let mut out = [0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), x86::hsum16(a));
        for i in 0..16 {
            let want: f32 = vals[16 * i..16 * i + 16].iter().sum();
            assert_eq!(out[i], want);
        }
    }
}
