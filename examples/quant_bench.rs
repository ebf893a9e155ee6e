//! Micro-benchmark of the dot-product kernels: GB/s of weight bytes streamed through
//! `vec_dot_rows` (decode: one activation row) and `dot_tile` (prefill: several activation
//! rows) for every kernel set this CPU supports, on a 576 x 1536 matrix (the down projection
//! of a SmolLM-135M-sized model; fits in L2, so this measures the kernels, not DRAM).
//!
//! The last column runs the best set's one-row kernel in a loop, for comparison with the
//! multi-row kernels behind `vec_dot_rows` and `dot_tile`.
//!
//! `cargo run --release --example quant_bench [-- <seconds per measurement>]`

use std::time::{Duration, Instant};

use fastgen::quant::{blocks, supported_kernels, GgmlType, Kernels};

const ROWS: usize = 576;
const COLS: usize = 1536;
const TILE_ACTS: usize = 8;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn f(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 - 1.0
    }
}

/// Random quants with finite f16 scales at each type's scale offsets.
fn random_weights(rng: &mut Lcg, ty: GgmlType, n: usize) -> Vec<u8> {
    let bytes = ty.row_bytes(n).unwrap();
    let mut w: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    let scale_offsets: &[usize] = match ty {
        GgmlType::F32 => {
            for c in w.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.f().to_le_bytes());
            }
            &[]
        }
        GgmlType::F16 => &[0],
        GgmlType::Q4_1 | GgmlType::Q4_K => &[0, 2],
        GgmlType::Q6_K => &[blocks::Q6_K_OFF_D],
        GgmlType::Q2_K => &[blocks::Q2_K_OFF_D, blocks::Q2_K_OFF_DMIN],
        GgmlType::Q3_K => &[blocks::Q3_K_OFF_D],
        _ => &[0],
    };
    for blk in w.chunks_exact_mut(ty.block_bytes()) {
        for &o in scale_offsets {
            blocks::write_f16(blk, o, rng.f() / 16.0);
        }
    }
    w
}

/// Best-of-3 throughput of `f` processing `bytes` per call, each run lasting `secs`.
fn gbps(bytes: usize, secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = 0f64;
    for _ in 0..3 {
        let (start, mut iters) = (Instant::now(), 0u64);
        while start.elapsed() < Duration::from_secs_f64(secs) {
            f();
            iters += 1;
        }
        best = best.max(bytes as f64 * iters as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    best
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.2);
    let sets: Vec<&Kernels> = supported_kernels();
    let mut rng = Lcg(42);
    println!(
        "matrix {ROWS} x {COLS}; GB/s of weight bytes (tile: {TILE_ACTS} activation rows, \
         weight bytes counted once per activation row)"
    );
    print!("{:6} {:>8}", "type", "MiB");
    for k in &sets {
        print!(" {:>12}", format!("{} rows", k.name));
    }
    for k in &sets {
        print!(" {:>12}", format!("{} tile", k.name));
    }
    let best = sets[sets.len() - 1];
    print!(" {:>12}", format!("{} 1-by-1", best.name));
    println!();
    for ty in GgmlType::ALL {
        let rb = ty.row_bytes(COLS).unwrap();
        let w = random_weights(&mut rng, ty, COLS * ROWS);
        let arb = ty.act_row_bytes(COLS);
        let mut acts = vec![0u8; arb * TILE_ACTS];
        for a in acts.chunks_exact_mut(arb) {
            let x: Vec<f32> = (0..COLS).map(|_| rng.f()).collect();
            fastgen::quant::quantize_acts(ty, &x, a);
        }
        let mut out = vec![0f32; ROWS * TILE_ACTS];
        print!("{:6} {:>8.2}", ty.name(), w.len() as f64 / (1 << 20) as f64);
        for k in &sets {
            let g = gbps(w.len(), secs, || {
                k.vec_dot_rows(ty, COLS, &w, rb, &acts[..arb], &mut out[..ROWS]);
                std::hint::black_box(&out);
            });
            print!(" {g:>12.2}");
        }
        for k in &sets {
            let g = gbps(w.len() * TILE_ACTS, secs, || {
                k.dot_tile(
                    ty, COLS, &w, rb, ROWS, &acts, arb, TILE_ACTS, &mut out, ROWS,
                );
                std::hint::black_box(&out);
            });
            print!(" {g:>12.2}");
        }
        // The best set's single-row kernel in a loop: what the multi-row kernels gain.
        let g = gbps(w.len(), secs, || {
            for (r, o) in out[..ROWS].iter_mut().enumerate() {
                *o = best.vec_dot(ty, COLS, &w[r * rb..][..rb], &acts[..arb]);
            }
            std::hint::black_box(&out);
        });
        println!(" {g:>12.2}");
    }
    // Activation quantisation: GB/s of f32 input.
    print!("{:6} {:>8}", "quant", "");
    let x: Vec<f32> = (0..COLS).map(|_| rng.f()).collect();
    println!();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q4_K] {
        let mut a = vec![0u8; ty.act_row_bytes(COLS)];
        print!("  acts for {:5}", ty.name());
        for k in &sets {
            let g = gbps(4 * COLS, secs / 4.0, || {
                k.quantize_acts(ty, &x, &mut a);
                std::hint::black_box(&a);
            });
            print!("  {}: {g:.2}", k.name);
        }
        println!(" GB/s of f32 input");
    }
}
