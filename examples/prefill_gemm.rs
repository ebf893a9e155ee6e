//! Prefill products two ways, on one layer of a real model: fastgen's integer tile kernels
//! over Q8-quantised activations (what the engine uses), against the weights dequantised to
//! f32 and multiplied by the `gemm` crate (the other design the speed issue asked to measure).
//! The f32 path is timed with its weights dequantised in advance (its best case: 4 to 8 times
//! the memory) and with the dequantisation counted in each call.
//!
//! `cargo run --release --features gemm-compare --example prefill_gemm [-- MODEL [TOKENS]]`

use fastgen::model::matmul::{matmul, Acts, MatmulScratch};
use fastgen::model::weights::Matrix;
use fastgen::model::Model;
use fastgen::quant::dequantize_row;
use std::time::Instant;

/// Median seconds of `reps` runs of `f` after one warm-up.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn dequantize(model: &Model, m: &Matrix) -> Vec<f32> {
    let bytes = model.gguf().tensor_bytes(&m.tensor);
    let mut w = vec![0f32; m.rows * m.cols];
    for (r, row) in w.chunks_exact_mut(m.cols).enumerate() {
        dequantize_row(m.ty, &bytes[r * m.row_bytes..(r + 1) * m.row_bytes], row);
    }
    w
}

/// `y[n, rows] = x[n, cols] w[rows, cols]^T` with the `gemm` crate on `threads` threads.
fn gemm_f32(
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    threads: usize,
) {
    // SAFETY: the strides describe x as [n, cols], w^T as [cols, rows] (w row-major) and
    // y as [n, rows], all inside their slices.
    unsafe {
        gemm::gemm(
            n,
            rows,
            cols,
            y.as_mut_ptr(),
            1,
            rows as isize,
            false,
            x.as_ptr(),
            1,
            cols as isize,
            w.as_ptr(),
            cols as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

fn main() -> fastgen::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("smollm2", String::as_str);
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(512);
    let model = Model::load(&fastgen::fetch::ensure_model(name)?)?;
    let threads = fastgen::pool::global().threads();
    let l = &model.weights.layers[model.cfg.n_layers / 2];
    let mats = [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down];
    println!(
        "{name}: layer {}, {n} tokens, {threads} threads",
        model.cfg.n_layers / 2
    );
    println!(
        "| matrix | type | ours GFLOP/s | gemm f32 (pre-dequantised) | gemm f32 + dequantise |"
    );
    println!("|---|---|---|---|---|");
    let (mut t_ours, mut t_gemm, mut t_deq) = (0.0, 0.0, 0.0);
    for m in mats {
        let x: Vec<f32> = (0..n * m.cols)
            .map(|i| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut y = vec![0f32; n * m.rows];
        let bytes = model.gguf().tensor_bytes(&m.tensor);
        let (mut acts, mut scratch) = (Acts::default(), MatmulScratch::default());
        let ours = median_secs(5, || {
            acts.reset(n, m.cols);
            matmul(m, bytes, &x, &mut acts, &mut y, &mut scratch);
        });
        let w = dequantize(&model, m);
        let pre = median_secs(5, || gemm_f32(&w, m.rows, m.cols, &x, n, &mut y, threads));
        let deq = median_secs(5, || {
            let w = dequantize(&model, m);
            gemm_f32(&w, m.rows, m.cols, &x, n, &mut y, threads);
        });
        let flop = 2.0 * (n * m.rows * m.cols) as f64;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} |",
            m.name,
            m.ty.name(),
            flop / ours / 1e9,
            flop / pre / 1e9,
            flop / deq / 1e9
        );
        (t_ours, t_gemm, t_deq) = (t_ours + ours, t_gemm + pre, t_deq + deq);
    }
    println!(
        "layer total: ours {:.2} ms, gemm f32 {:.2} ms ({:.2}x ours), gemm f32 + dequantise {:.2} ms ({:.2}x ours)",
        t_ours * 1e3,
        t_gemm * 1e3,
        t_gemm / t_ours,
        t_deq * 1e3,
        t_deq / t_ours
    );
    Ok(())
}
