//! Decode-shaped matrix-vector products on a matrix larger than the caches (weights streamed
//! from memory), single-threaded: one-row kernel in a loop vs the 4-row `vec_dot_rows`.
//!
//! `cargo run --release --example matvec_bench [-- <MiB per matrix> <cols>]`
use fastgen::quant::{self, kernels, GgmlType};
use std::time::Instant;

/// Nanoseconds this thread has run on a CPU (from the scheduler's own accounting), so
/// that time spent descheduled on a busy machine does not count.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let cols: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let k = kernels();
    println!(
        "kernels {}, {mib} MiB matrices, {cols} columns; GB/s of weights per CPU second",
        k.name
    );
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        if !cols.is_multiple_of(ty.block_len()) {
            continue;
        }
        let rb = ty.row_bytes(cols).unwrap();
        let rows = (mib << 20) / rb / 4 * 4;
        let mut w = vec![0u8; rows * rb];
        let mut s = 12345u64;
        for b in w.iter_mut() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (s >> 56) as u8;
        }
        // Small finite scales: zero the high byte of every f16 scale candidate.
        for blk in w.chunks_exact_mut(ty.block_bytes()) {
            let o = if ty == GgmlType::Q6_K { 208 } else { 0 };
            blk[o + 1] = 0x10;
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q4_K) {
                blk[3] = 0x10;
            }
        }
        let x: Vec<f32> = (0..cols).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut a = vec![0u8; ty.act_row_bytes(cols)];
        quant::quantize_acts(ty, &x, &mut a);
        let mut out = vec![0f32; rows];
        let mut best = [0f64; 2];
        for rep in 0..30 {
            let (t, c) = (Instant::now(), cpu_ns());
            if rep % 2 == 0 {
                for (r, o) in out.iter_mut().enumerate() {
                    *o = quant::vec_dot(ty, cols, &w[r * rb..(r + 1) * rb], &a);
                }
            } else {
                quant::vec_dot_rows(ty, cols, &w, rb, &a, &mut out);
            }
            let wall = t.elapsed().as_secs_f64();
            let cpu = (cpu_ns() - c) as f64 / 1e9;
            let g = w.len() as f64 / if cpu > 0.0 { cpu } else { wall } / 1e9;
            best[rep % 2] = best[rep % 2].max(g);
            std::hint::black_box(&out);
        }
        println!(
            "{:5} one-row {:6.2}  rows {:6.2}",
            ty.name(),
            best[0],
            best[1]
        );
    }
}
