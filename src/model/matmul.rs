//! Matrix products `Y = X W^T` of f32 activations with quantised weight matrices, on the
//! thread pool of [`crate::pool`].
//!
//! The activations are quantised once per activation format (`Acts`), then the integer dot
//! kernels of [`crate::quant`] run over them:
//!
//! - decode (one activation row): one dot per weight row (see [`dot_rows`] for why not the
//!   four-row kernel); the rows of every matrix in the call are cut into chunks that threads
//!   take from a shared counter.
//! - prefill (several rows): `dot_tile` over (activation block x weight-row block) tiles, so
//!   a block of weight rows stays in L1 while the block of activation rows (L2) streams past.
//!
//! Several matrices that read the same input (Q/K/V; gate/up) go through in one parallel
//! step ([`matmul_many`], [`matmul_gated`]), which halves or thirds the steps per layer.
//!
//! Exact mode ([`Acts::set_exact`], for evaluation): the activations stay f32 and each
//! weight row is dequantised and dotted in f32 ([`exact_product`]). Slower, but a change of
//! KV cache is then not drowned by the 8-bit activation rounding, which alone moves the
//! logits by a KL divergence of about 0.003 on SmolLM2.

use super::arch::GatedAct;
use super::ops::gated;
use super::weights::Matrix;
use crate::pool::{self, Chunks};
use crate::quant::{self, GgmlType};

/// Weight types whose activations are quantised the same way share one quantised copy.
fn act_format(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q4_1,
        GgmlType::F32 | GgmlType::BF16 => GgmlType::F32,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            GgmlType::Q4_K
        }
        other => other,
    }
}

/// Activation rows `[n, cols]` quantised for the weight formats used so far.
#[derive(Default)]
pub struct Acts {
    n: usize,
    cols: usize,
    /// (format, row bytes, bytes `[n, row bytes]`, valid for the current rows).
    formats: Vec<(GgmlType, usize, Vec<u8>, bool)>,
    /// Products in f32 on dequantised weights, activations unquantised.
    exact: bool,
}

/// Rows per task when activations are quantised in parallel.
const QUANT_ROWS: usize = 16;

impl Acts {
    /// Starts a new set of activations; previously quantised copies become stale.
    pub fn reset(&mut self, n: usize, cols: usize) {
        self.n = n;
        self.cols = cols;
        self.formats.iter_mut().for_each(|f| f.3 = false);
    }

    /// Exact mode on or off (see the module comment).
    pub fn set_exact(&mut self, exact: bool) {
        self.exact = exact;
    }

    /// Makes sure `x` is quantised for weights of each type in `tys`.
    fn prepare(&mut self, tys: &[GgmlType], x: &[f32]) {
        let (cols, n) = (self.cols, self.n);
        for &ty in tys {
            let fmt = act_format(ty);
            let i = match self.formats.iter().position(|f| f.0 == fmt) {
                Some(i) => i,
                None => {
                    self.formats.push((fmt, 0, Vec::new(), false));
                    self.formats.len() - 1
                }
            };
            let f = &mut self.formats[i];
            if f.3 {
                continue;
            }
            let rb = ty.act_row_bytes(cols);
            f.1 = rb;
            f.3 = true;
            f.2.resize(n * rb, 0);
            if n < QUANT_ROWS {
                for (dst, src) in f.2.chunks_exact_mut(rb).zip(x.chunks_exact(cols)) {
                    quant::quantize_acts(ty, src, dst);
                }
                continue;
            }
            let dst = SyncPtr(f.2.as_mut_ptr());
            let chunks = Chunks::new(n, QUANT_ROWS);
            pool::global().run(&|_| {
                while let Some(r) = chunks.next() {
                    // SAFETY: chunks are disjoint row ranges of the buffer.
                    let d = unsafe { dst.slice(r.start * rb, r.len() * rb) };
                    for (dst, src) in d
                        .chunks_exact_mut(rb)
                        .zip(x[r.start * cols..r.end * cols].chunks_exact(cols))
                    {
                        quant::quantize_acts(ty, src, dst);
                    }
                }
            });
        }
    }

    /// The activations quantised for weights of type `ty` (after `prepare`).
    fn get(&self, ty: GgmlType) -> (&[u8], usize) {
        let fmt = act_format(ty);
        let f = self
            .formats
            .iter()
            .find(|f| f.0 == fmt && f.3)
            .expect("activations prepared for this weight type");
        (&f.2, f.1)
    }
}

/// Scratch for the products (kept for the API; the products allocate nothing per call).
#[derive(Default)]
pub struct MatmulScratch {}

/// A raw pointer that threads of one step share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: only used to write disjoint ranges from the threads of one pool step.
unsafe impl<T> Sync for SyncPtr<T> {}
unsafe impl<T> Send for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// # Safety
    /// `[start, start + len)` must be inside the buffer and touched by no other thread.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// One product of a [`matmul_many`] call: `y = x w^T`, `y` is `[n, w.rows]`.
pub struct MatJob<'a> {
    pub w: &'a Matrix,
    pub bytes: &'a [u8],
    pub y: &'a mut [f32],
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
    matmul_many(
        &mut [MatJob {
            w,
            bytes: w_bytes,
            y,
        }],
        x,
        acts,
        scratch,
    );
}

/// Decode rows per task: big enough that taking a task costs little next to it.
fn decode_chunk(total_rows: usize, threads: usize) -> usize {
    (total_rows / (threads * 6))
        .clamp(16, 256)
        .next_multiple_of(4)
}

/// Prefill tile: activation rows and weight rows per task.
const ACT_BLOCK: usize = 64;
const ROW_BLOCK: usize = 32;

/// Several products of the same input `x` (`[n, cols]`, every `w.cols == cols`) in one step.
pub fn matmul_many(jobs: &mut [MatJob], x: &[f32], acts: &mut Acts, scratch: &mut MatmulScratch) {
    // Fixed-size bookkeeping (no allocation per call): a few products per step.
    for group in jobs.chunks_mut(MAX_JOBS) {
        matmul_group(group, x, acts, scratch);
    }
}

/// Products per parallel step of [`matmul_many`].
const MAX_JOBS: usize = 4;

fn matmul_group(jobs: &mut [MatJob], x: &[f32], acts: &mut Acts, _scratch: &mut MatmulScratch) {
    let n = acts.n;
    let mut tys = [GgmlType::F32; MAX_JOBS];
    let mut outs = [SyncPtr(std::ptr::null_mut::<f32>()); MAX_JOBS];
    for (i, j) in jobs.iter_mut().enumerate() {
        assert_eq!(j.w.cols, acts.cols, "{}: input width", j.w.name);
        assert_eq!(j.y.len(), n * j.w.rows, "{}: output size", j.w.name);
        assert!(
            j.bytes.len() >= j.w.rows * j.w.row_bytes,
            "{}: bytes",
            j.w.name
        );
        tys[i] = j.w.ty;
        outs[i] = SyncPtr(j.y.as_mut_ptr());
    }
    assert_eq!(x.len(), n * acts.cols, "input size");
    if acts.exact {
        for j in jobs.iter_mut() {
            exact_product(j.w, j.bytes, x, n, j.y);
        }
        return;
    }
    acts.prepare(&tys[..jobs.len()], x);
    let acts = &*acts;
    let jobs = &*jobs;
    let threads = pool::global().threads();
    if n == 1 {
        let total: usize = jobs.iter().map(|j| j.w.rows).sum();
        let chunk = decode_chunk(total, threads);
        let plan = Plan::new(jobs.iter().map(|j| j.w.rows.div_ceil(chunk)));
        let tasks = Chunks::new(plan.total(), 1);
        pool::global().run(&|_| {
            while let Some(t) = tasks.next() {
                let (j, c) = plan.locate(t.start);
                let job = &jobs[j];
                let (a, _) = acts.get(job.w.ty);
                let r0 = c * chunk;
                let r1 = (r0 + chunk).min(job.w.rows);
                let rb = job.w.row_bytes;
                // SAFETY: each (job, chunk) is one task, so the rows are this thread's.
                let out = unsafe { outs[j].slice(r0, r1 - r0) };
                dot_rows(
                    job.w.ty,
                    job.w.cols,
                    &job.bytes[r0 * rb..r1 * rb],
                    rb,
                    a,
                    out,
                );
            }
        });
        return;
    }
    let n_ab = n.div_ceil(ACT_BLOCK);
    let plan = Plan::new(jobs.iter().map(|j| n_ab * j.w.rows.div_ceil(ROW_BLOCK)));
    let tasks = Chunks::new(plan.total(), 1);
    pool::global().run(&|_| {
        let mut tile = [0f32; ACT_BLOCK * ROW_BLOCK];
        while let Some(t) = tasks.next() {
            let (j, i) = plan.locate(t.start);
            let job = &jobs[j];
            let n_rb = job.w.rows.div_ceil(ROW_BLOCK);
            let (ab, rblk) = (i / n_rb, i % n_rb);
            let (a0, r0) = (ab * ACT_BLOCK, rblk * ROW_BLOCK);
            let (na, nr) = (ACT_BLOCK.min(n - a0), ROW_BLOCK.min(job.w.rows - r0));
            tile_product(job.w, job.bytes, acts, a0, na, r0, nr, &mut tile);
            let rows = job.w.rows;
            for (k, src) in tile.chunks_exact(ROW_BLOCK).take(na).enumerate() {
                // SAFETY: this task owns rows r0..r0 + nr of activation rows a0..a0 + na.
                let dst = unsafe { outs[j].slice((a0 + k) * rows + r0, nr) };
                dst.copy_from_slice(&src[..nr]);
            }
        }
    });
}

/// `tile[k * ROW_BLOCK + r]` = dot of weight row `r0 + r` with activation row `a0 + k`.
#[allow(clippy::too_many_arguments)]
fn tile_product(
    w: &Matrix,
    bytes: &[u8],
    acts: &Acts,
    a0: usize,
    na: usize,
    r0: usize,
    nr: usize,
    tile: &mut [f32],
) {
    let (a, arb) = acts.get(w.ty);
    let rb = w.row_bytes;
    quant::dot_tile(
        w.ty,
        w.cols,
        &bytes[r0 * rb..(r0 + nr) * rb],
        rb,
        nr,
        &a[a0 * arb..(a0 + na) * arb],
        arb,
        na,
        tile,
        ROW_BLOCK,
    );
}

/// Gated feed-forward input: `out = act(x gate^T) * (x up^T)`, `out` `[n, gate.rows]`,
/// both products and the activation in one step (no `[n, n_ff]` intermediate for `up`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gated(
    act: GatedAct,
    gate: &Matrix,
    gate_bytes: &[u8],
    up: &Matrix,
    up_bytes: &[u8],
    x: &[f32],
    acts: &mut Acts,
    out: &mut [f32],
    _scratch: &mut MatmulScratch,
) {
    let n = acts.n;
    let rows = gate.rows;
    assert_eq!(up.rows, rows, "gate and up rows");
    assert!(
        gate.cols == acts.cols && up.cols == acts.cols,
        "input width"
    );
    assert_eq!(x.len(), n * acts.cols, "input size");
    assert_eq!(out.len(), n * rows, "output size");
    if acts.exact {
        // Evaluation only: one `[n, n_ff]` buffer per call is acceptable here.
        let mut u = vec![0f32; n * rows];
        exact_product(gate, gate_bytes, x, n, out);
        exact_product(up, up_bytes, x, n, &mut u);
        gated(act, out, &u);
        return;
    }
    acts.prepare(&[gate.ty, up.ty], x);
    let acts = &*acts;
    let dst = SyncPtr(out.as_mut_ptr());
    let threads = pool::global().threads();
    if n == 1 {
        const MAX_CHUNK: usize = 256;
        let chunk = decode_chunk(2 * rows, threads).min(MAX_CHUNK);
        let tasks = Chunks::new(rows, chunk);
        let (ag, _) = acts.get(gate.ty);
        let (au, _) = acts.get(up.ty);
        pool::global().run(&|_| {
            let mut u = [0f32; MAX_CHUNK];
            while let Some(r) = tasks.next() {
                // SAFETY: the chunks are disjoint ranges of `out`.
                let g = unsafe { dst.slice(r.start, r.len()) };
                let (grb, urb) = (gate.row_bytes, up.row_bytes);
                let gw = &gate_bytes[r.start * grb..r.end * grb];
                dot_rows(gate.ty, gate.cols, gw, grb, ag, g);
                let uw = &up_bytes[r.start * urb..r.end * urb];
                let u = &mut u[..r.len()];
                dot_rows(up.ty, up.cols, uw, urb, au, u);
                gated(act, g, u);
            }
        });
        return;
    }
    let n_ab = n.div_ceil(ACT_BLOCK);
    let n_rb = rows.div_ceil(ROW_BLOCK);
    let tasks = Chunks::new(n_ab * n_rb, 1);
    pool::global().run(&|_| {
        let mut tg = [0f32; ACT_BLOCK * ROW_BLOCK];
        let mut tu = [0f32; ACT_BLOCK * ROW_BLOCK];
        while let Some(t) = tasks.next() {
            let (ab, rblk) = (t.start / n_rb, t.start % n_rb);
            let (a0, r0) = (ab * ACT_BLOCK, rblk * ROW_BLOCK);
            let (na, nr) = (ACT_BLOCK.min(n - a0), ROW_BLOCK.min(rows - r0));
            tile_product(gate, gate_bytes, acts, a0, na, r0, nr, &mut tg);
            tile_product(up, up_bytes, acts, a0, na, r0, nr, &mut tu);
            for k in 0..na {
                let g = &mut tg[k * ROW_BLOCK..k * ROW_BLOCK + nr];
                gated(act, g, &tu[k * ROW_BLOCK..k * ROW_BLOCK + nr]);
                // SAFETY: this task owns rows r0..r0 + nr of activation rows a0..a0 + na.
                unsafe { dst.slice((a0 + k) * rows + r0, nr) }.copy_from_slice(g);
            }
        }
    });
}

/// Decode rows: `out[r] = dot(w row r, a)`, one row at a time.
///
/// The one-row kernel, not `quant::vec_dot_rows`: when the matrix streams from memory (as
/// in decoding) the four-row kernel ran at half the speed of one row at a time (Qwen2.5-0.5B,
/// one thread, tokens per CPU-second: 28 vs 61; SmolLM2: 108 vs 210; software prefetch in
/// the four-row kernel recovered little), although it wins when the matrix sits in L2.
fn dot_rows(ty: GgmlType, n: usize, w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    let k = quant::kernels();
    for (o, wr) in out.iter_mut().zip(w.chunks_exact(rb)) {
        *o = k.vec_dot(ty, n, wr, a);
    }
}

/// Weight rows dequantised per task in exact mode (a block that stays in L2).
const EXACT_ROWS: usize = 16;

/// `y = x w^T` in f32: each task dequantises `EXACT_ROWS` weight rows, then dots them with
/// every activation row.
fn exact_product(w: &Matrix, bytes: &[u8], x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols, rb) = (w.rows, w.cols, w.row_bytes);
    let out = SyncPtr(y.as_mut_ptr());
    let tasks = Chunks::new(rows, EXACT_ROWS);
    pool::global().run(&|_| {
        let mut wf = vec![0f32; EXACT_ROWS * cols];
        while let Some(r) = tasks.next() {
            for (k, dst) in wf.chunks_exact_mut(cols).take(r.len()).enumerate() {
                let row = r.start + k;
                quant::dequantize_row(w.ty, &bytes[row * rb..(row + 1) * rb], dst);
            }
            for (t, xr) in x.chunks_exact(cols).take(n).enumerate() {
                // SAFETY: this task owns columns r of every output row.
                let o = unsafe { out.slice(t * rows + r.start, r.len()) };
                for (o, wr) in o.iter_mut().zip(wf.chunks_exact(cols)) {
                    *o = crate::attention::dot(wr, xr);
                }
            }
        }
    });
}

/// Tasks of several jobs numbered one after the other.
struct Plan {
    /// Index of each job's first task, and the total at `starts[jobs]`.
    starts: [usize; MAX_JOBS + 1],
    jobs: usize,
}

impl Plan {
    /// At most `MAX_JOBS` counts.
    fn new(counts: impl Iterator<Item = usize>) -> Plan {
        let mut p = Plan {
            starts: [0; MAX_JOBS + 1],
            jobs: 0,
        };
        for c in counts.take(MAX_JOBS) {
            p.starts[p.jobs + 1] = p.starts[p.jobs] + c;
            p.jobs += 1;
        }
        p
    }
    fn total(&self) -> usize {
        self.starts[self.jobs]
    }
    /// (job, task index within the job) of global task `t < total()`.
    fn locate(&self, t: usize) -> (usize, usize) {
        let j = self.starts[..=self.jobs].partition_point(|&s| s <= t) - 1;
        (j, t - self.starts[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::TensorInfo;

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

    /// A random matrix of type `ty`: random quants, small finite scales.
    fn random_matrix(rng: &mut Lcg, ty: GgmlType, rows: usize, cols: usize) -> (Matrix, Vec<u8>) {
        use crate::quant::blocks;
        let rb = ty.row_bytes(cols).unwrap();
        let mut bytes: Vec<u8> = (0..rows * rb).map(|_| rng.next() as u8).collect();
        let scales: &[usize] = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[blocks::Q6_K_OFF_D],
            GgmlType::Q2_K => &[blocks::Q2_K_OFF_D, blocks::Q2_K_OFF_DMIN],
            GgmlType::Q3_K => &[blocks::Q3_K_OFF_D],
            _ => &[0],
        };
        for blk in bytes.chunks_exact_mut(ty.block_bytes()) {
            for &o in scales {
                blocks::write_f16(blk, o, rng.f() / 16.0);
            }
        }
        let tensor = TensorInfo {
            name: "w".into(),
            dims: vec![cols, rows],
            ty,
            offset: 0,
            n_bytes: bytes.len(),
        };
        let m = Matrix {
            name: "w".into(),
            ty,
            rows,
            cols,
            tensor,
            row_bytes: rb,
        };
        (m, bytes)
    }

    /// `y[t, r]` by one `vec_dot` per (row, token).
    fn reference(m: &Matrix, w: &[u8], x: &[f32], n: usize) -> Vec<f32> {
        let mut a = vec![0u8; m.ty.act_row_bytes(m.cols)];
        let mut y = vec![0f32; n * m.rows];
        for t in 0..n {
            quant::quantize_acts(m.ty, &x[t * m.cols..(t + 1) * m.cols], &mut a);
            for r in 0..m.rows {
                let wr = &w[r * m.row_bytes..(r + 1) * m.row_bytes];
                y[t * m.rows + r] = quant::vec_dot(m.ty, m.cols, wr, &a);
            }
        }
        y
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn products_match_one_dot_at_a_time() {
        let mut rng = Lcg(3);
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q6_K,
            GgmlType::Q5_K,
            GgmlType::Q5_1,
            GgmlType::BF16,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::IQ4_NL,
        ] {
            let cols = 512;
            // Row counts that do not divide the chunk, tile or 4-row sizes.
            let (m1, w1) = random_matrix(&mut rng, ty, 70, cols);
            let (m2, w2) = random_matrix(&mut rng, GgmlType::Q4_K, 37, cols);
            for n in [1, 3, 65, 130] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
                let (mut y1, mut y2) = (vec![0f32; n * m1.rows], vec![0f32; n * m2.rows]);
                let mut acts = Acts::default();
                acts.reset(n, cols);
                let mut jobs = [
                    MatJob {
                        w: &m1,
                        bytes: &w1,
                        y: &mut y1,
                    },
                    MatJob {
                        w: &m2,
                        bytes: &w2,
                        y: &mut y2,
                    },
                ];
                matmul_many(&mut jobs, &x, &mut acts, &mut MatmulScratch::default());
                close(&y1, &reference(&m1, &w1, &x, n));
                close(&y2, &reference(&m2, &w2, &x, n));
            }
        }
    }

    #[test]
    fn gated_product_matches_separate_products() {
        let mut rng = Lcg(5);
        let cols = 256;
        let (g, wg) = random_matrix(&mut rng, GgmlType::Q4_1, 90, cols);
        let (u, wu) = random_matrix(&mut rng, GgmlType::Q5_0, 90, cols);
        for (n, act) in [
            (1, GatedAct::Silu),
            (70, GatedAct::Silu),
            (1, GatedAct::GeluTanh),
            (70, GatedAct::GeluTanh),
        ] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
            let mut out = vec![0f32; n * 90];
            let mut acts = Acts::default();
            acts.reset(n, cols);
            let mut s = MatmulScratch::default();
            matmul_gated(act, &g, &wg, &u, &wu, &x, &mut acts, &mut out, &mut s);
            let mut want = reference(&g, &wg, &x, n);
            gated(act, &mut want, &reference(&u, &wu, &x, n));
            close(&out, &want);
        }
    }

    /// `y[t, r]` in f64 on the dequantised weights and unrounded activations, and the bound
    /// on f32 summation error each element may carry: `1e-6 * sum |w x|`.
    fn exact_reference(m: &Matrix, w: &[u8], x: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut wr = vec![0f32; m.cols];
        let (mut y, mut tol) = (vec![0f32; n * m.rows], vec![0f32; n * m.rows]);
        for r in 0..m.rows {
            quant::dequantize_row(m.ty, &w[r * m.row_bytes..(r + 1) * m.row_bytes], &mut wr);
            for t in 0..n {
                let xr = &x[t * m.cols..(t + 1) * m.cols];
                let terms = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64);
                y[t * m.rows + r] = terms.clone().sum::<f64>() as f32;
                tol[t * m.rows + r] = 1e-6 * terms.map(f64::abs).sum::<f64>() as f32;
            }
        }
        (y, tol)
    }

    fn within(got: &[f32], want: &[f32], tol: &[f32]) {
        for (i, ((g, w), t)) in got.iter().zip(want).zip(tol).enumerate() {
            assert!(
                (g - w).abs() <= *t + 1e-6,
                "{i}: {g} vs {w} (tolerance {t})"
            );
        }
    }

    #[test]
    fn exact_products_use_unrounded_activations() {
        let mut rng = Lcg(11);
        let cols = 256;
        let (g, wg) = random_matrix(&mut rng, GgmlType::Q4_K, 41, cols);
        let (u, wu) = random_matrix(&mut rng, GgmlType::Q8_0, 41, cols);
        for n in [1, 3, 70] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
            let mut acts = Acts::default();
            acts.set_exact(true);
            acts.reset(n, cols);
            let mut s = MatmulScratch::default();
            let mut y = vec![0f32; n * g.rows];
            matmul(&g, &wg, &x, &mut acts, &mut y, &mut s);
            let (want, tol) = exact_reference(&g, &wg, &x, n);
            within(&y, &want, &tol);
            // The 8-bit path is off by far more than f32 summation: the mode matters.
            let rounded = reference(&g, &wg, &x, n);
            let off = (rounded.iter().zip(&want).zip(&tol))
                .filter(|((a, b), t)| (*a - *b).abs() > 10.0 * *t);
            assert!(
                off.count() > y.len() / 2,
                "8-bit activations as exact as f32?"
            );
            let mut out = vec![0f32; n * g.rows];
            matmul_gated(
                GatedAct::Silu,
                &g,
                &wg,
                &u,
                &wu,
                &x,
                &mut acts,
                &mut out,
                &mut s,
            );
            // The gated product is the two exact products, gated: the same f32 sums.
            let mut up = vec![0f32; n * u.rows];
            matmul(&u, &wu, &x, &mut acts, &mut up, &mut s);
            let (want_up, tol_up) = exact_reference(&u, &wu, &x, n);
            within(&up, &want_up, &tol_up);
            gated(GatedAct::Silu, &mut y, &up);
            assert_eq!(out, y);
        }
    }

    #[test]
    fn plan_locates_tasks_across_jobs() {
        let p = Plan::new([3, 0, 2].into_iter());
        assert_eq!(p.total(), 5);
        assert_eq!(p.locate(0), (0, 0));
        assert_eq!(p.locate(2), (0, 2));
        assert_eq!(p.locate(3), (2, 0));
        assert_eq!(p.locate(4), (2, 1));
    }
}
