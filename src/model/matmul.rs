//! Matrix products `Y = X W^T` of f32 activations with quantised weight matrices, threaded
//! over blocks of weight rows.
//!
//! The activations are quantised once per weight format (`Acts`), then every weight row is
//! dotted with every activation row. Each task owns a block of weight rows and walks all
//! activation rows for it, so a weight row is read from memory once per product.

use super::weights::Matrix;
use crate::quant::{self, GgmlType};
use rayon::prelude::*;

/// Weight types whose activations are quantised the same way share one quantised copy.
fn act_format(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_K | GgmlType::Q6_K => GgmlType::Q4_K,
        other => other,
    }
}

/// Activation rows `[n, cols]` quantised for the weight formats used so far.
#[derive(Default)]
pub struct Acts {
    n: usize,
    cols: usize,
    /// (format, row bytes, bytes `[n, row bytes]`).
    formats: Vec<(GgmlType, usize, Vec<u8>)>,
    valid: Vec<bool>,
}

impl Acts {
    /// Starts a new set of activations; previously quantised copies become stale.
    pub fn reset(&mut self, n: usize, cols: usize) {
        self.n = n;
        self.cols = cols;
        self.valid.iter_mut().for_each(|v| *v = false);
    }

    /// The activations quantised for weights of type `ty`, quantising `x` on first use.
    fn get(&mut self, ty: GgmlType, x: &[f32]) -> (&[u8], usize) {
        let fmt = act_format(ty);
        let i = match self.formats.iter().position(|f| f.0 == fmt) {
            Some(i) => i,
            None => {
                self.formats.push((fmt, 0, Vec::new()));
                self.valid.push(false);
                self.formats.len() - 1
            }
        };
        if !self.valid[i] {
            let (cols, n) = (self.cols, self.n);
            let rb = ty.act_row_bytes(cols);
            let buf = &mut self.formats[i].2;
            buf.resize(n * rb, 0);
            buf.par_chunks_mut(rb)
                .zip(x.par_chunks(cols))
                .for_each(|(dst, src)| quant::quantize_acts(ty, src, dst));
            self.formats[i].1 = rb;
            self.valid[i] = true;
        }
        (&self.formats[i].2, self.formats[i].1)
    }
}

/// Scratch for the transposed product.
#[derive(Default)]
pub struct MatmulScratch {
    yt: Vec<f32>,
}

/// `y[t, r] = sum_c x[t, c] * w[r, c]` for `t < n`: `x` is `[n, w.cols]`, `y` `[n, w.rows]`.
/// `acts` must have been `reset(n, w.cols)` for this `x`.
pub fn matmul(
    w: &Matrix,
    w_bytes: &[u8],
    x: &[f32],
    acts: &mut Acts,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    let n = acts.n;
    debug_assert_eq!(x.len(), n * w.cols);
    debug_assert_eq!(y.len(), n * w.rows);
    let (a, arb) = acts.get(w.ty, x);
    let (ty, cols, wrb) = (w.ty, w.cols, w.row_bytes);
    let rows_per_task = rows_per_task(w.rows);
    if n == 1 {
        y.par_chunks_mut(rows_per_task)
            .zip(w_bytes.par_chunks(rows_per_task * wrb))
            .for_each(|(yc, wc)| {
                for (yr, wr) in yc.iter_mut().zip(wc.chunks_exact(wrb)) {
                    *yr = quant::vec_dot(ty, cols, wr, a);
                }
            });
        return;
    }
    // Transposed result `[rows, n]` so that each task writes one contiguous block.
    scratch.yt.resize(w.rows * n, 0.0);
    scratch
        .yt
        .par_chunks_mut(rows_per_task * n)
        .zip(w_bytes.par_chunks(rows_per_task * wrb))
        .for_each(|(yc, wc)| {
            for (yr, wr) in yc.chunks_exact_mut(n).zip(wc.chunks_exact(wrb)) {
                for (t, v) in yr.iter_mut().enumerate() {
                    *v = quant::vec_dot(ty, cols, wr, &a[t * arb..(t + 1) * arb]);
                }
            }
        });
    for (r, col) in scratch.yt.chunks_exact(n).enumerate() {
        for (t, &v) in col.iter().enumerate() {
            y[t * w.rows + r] = v;
        }
    }
}

/// Enough tasks to balance the threads, few enough that each is worth scheduling.
fn rows_per_task(rows: usize) -> usize {
    let tasks = rayon::current_num_threads() * 4;
    rows.div_ceil(tasks).max(16)
}
