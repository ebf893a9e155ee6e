//! Decode attention over a full f16 cache the size of SmolLM2's at a given depth (30 layers
//! x 3 KV heads x head_dim 64, 3 query heads per KV head), so the keys and values stream
//! from memory as in real decoding: GB/s of KV read and ns per (slot, query head).
//!
//! `cargo run --release --example attn_bench [-- DEPTH [LAYERS [GROUP]]]`
use fastgen::attention::attend_one;
use fastgen::kv_cache::{HeadCache, KvDtype};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let depth = args.first().copied().unwrap_or(4096);
    let layers = args.get(1).copied().unwrap_or(30);
    let group = args.get(2).copied().unwrap_or(3);
    let (n_kv, hd) = (3, 64);
    let mut s = 1u64;
    let mut rnd = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let cache: Vec<Vec<HeadCache>> = (0..layers)
        .map(|_| {
            (0..n_kv)
                .map(|_| {
                    let mut h = HeadCache::new(hd, KvDtype::F16);
                    for p in 0..depth {
                        let k: Vec<f32> = (0..hd).map(|_| rnd()).collect();
                        let v: Vec<f32> = (0..hd).map(|_| rnd()).collect();
                        h.push(p as u32, &k, &v);
                    }
                    h
                })
                .collect()
        })
        .collect();
    let q: Vec<f32> = (0..n_kv * group * hd).map(|_| rnd()).collect();
    let mut out = vec![0f32; q.len()];
    let mut probs = Vec::new();
    let bytes = (layers * n_kv * depth * hd * 2 * 2) as f64;
    for want_probs in [false, true] {
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = Instant::now();
            for heads in &cache {
                let p = want_probs.then_some(&mut probs);
                attend_one(heads, &q, depth as u32, None, hd, &mut out, p);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "depth {depth}, {layers} layers, group {group}, probs {want_probs}: {:.2} ms per token, {:.1} GB/s, {:.2} ns per (slot, query head)",
            best * 1e3,
            bytes / best / 1e9,
            best * 1e9 / (layers * n_kv * depth * group) as f64
        );
    }
}
