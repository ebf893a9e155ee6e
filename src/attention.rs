//! Scaled dot-product attention over the per-(layer, KV head) cache buffers.
//!
//! Grouped-query attention: the `group` query heads that share a KV head are handled in one
//! pass over that head's keys and values. Any head may hold any subset of positions (slots
//! are in increasing position order), so the causal mask is "slots up to `visible(pos)`".
//!
//! Decode ([`attend_one`]) splits each head's slots into chunks that the threads of the pool
//! take in parallel (split-K, as flash-decoding): a chunk yields its scores, their local
//! maximum and exp-sum, and its part of the output; the parts are merged with the global
//! maximum. On AVX-512 the keys and values are read as stored (f16 or f32) and converted in
//! registers; elsewhere the portable reference below runs.
//!
//! Prefill ([`attend_batch`]) works in tiles: a block of query rows against a block of keys
//! (converted to f32 once per tile, keys transposed so scores are plain vector FMAs), with an
//! online softmax carried across key blocks (flash attention).

use crate::kv_cache::{HeadCache, RowsRef};
use crate::model::ops::softmax;
use crate::pool::{self, Chunks};
use std::cell::RefCell;

/// Dot product written with eight independent lanes so that it vectorises.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `acc += w * v`.
#[inline]
fn axpy(acc: &mut [f32], w: f32, v: &[f32]) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a += w * x;
    }
}

/// Reference attention of the queries of one KV head's group for one query position.
///
/// `q`: `[group, head_dim]`; `out`: `[group, head_dim]`; `probs`: `[group, visible]` on return,
/// the softmax of each query head over the visible slots. `keys`/`values` are the head's
/// visible rows as f32.
fn attend_group(
    keys: &[f32],
    values: &[f32],
    q: &[f32],
    head_dim: usize,
    out: &mut [f32],
    probs: &mut [f32],
) {
    let n = keys.len() / head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    for (qh, (oh, ph)) in q.chunks_exact(head_dim).zip(
        out.chunks_exact_mut(head_dim)
            .zip(probs.chunks_exact_mut(n)),
    ) {
        for (p, k) in ph.iter_mut().zip(keys.chunks_exact(head_dim)) {
            *p = dot(qh, k) * scale;
        }
        softmax(ph);
        oh.fill(0.0);
        for (&p, v) in ph.iter().zip(values.chunks_exact(head_dim)) {
            axpy(oh, p, v);
        }
    }
}

/// The portable decode path: [`attend_group`] per KV head, keys converted to f32 first.
fn attend_one_reference(
    heads: &[HeadCache],
    q: &[f32],
    pos: u32,
    head_dim: usize,
    out: &mut [f32],
    mut probs_out: Option<&mut Vec<Vec<f32>>>,
) {
    let group = q.len() / head_dim / heads.len();
    let span = group * head_dim;
    if let Some(p) = probs_out.as_deref_mut() {
        p.resize_with(heads.len(), Vec::new);
    }
    let (mut ks, mut vs, mut own) = (Vec::new(), Vec::new(), Vec::new());
    for (h, head) in heads.iter().enumerate() {
        let n = head.visible(pos);
        let keys = head.keys_f32(0, n, &mut ks);
        let values = head.values_f32(0, n, &mut vs);
        let probs = match probs_out.as_deref_mut() {
            Some(p) => &mut p[h],
            None => &mut own,
        };
        probs.resize(group * n, 0.0);
        let (qg, og) = (
            &q[h * span..(h + 1) * span],
            &mut out[h * span..(h + 1) * span],
        );
        if n == 0 {
            og.fill(0.0);
            continue;
        }
        attend_group(keys, values, qg, head_dim, og, probs);
    }
}

/// A raw pointer that threads of one pool step share to write disjoint parts of a buffer.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: only used to write disjoint ranges from the threads of one pool step.
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Per-call buffers of [`attend_one`], kept on the calling thread so that decoding
/// allocates nothing once they have grown.
#[derive(Default)]
struct DecodeScratch {
    /// Scores then unnormalised probabilities, per KV head `[group, len]`, when the caller
    /// does not want them.
    probs: Vec<f32>,
    /// Per task: `[group, 2 + head_dim]` = (local max, local exp-sum, local output).
    part: Vec<f32>,
    /// Per KV head: (visible slots, first task, offset into `probs`).
    heads: Vec<(usize, usize, usize)>,
    /// Per KV head, where its probabilities go.
    dst: Vec<SyncPtr>,
}

thread_local! {
    static DECODE: RefCell<DecodeScratch> = RefCell::default();
}

/// Slots per decode task.
const DECODE_CHUNK: usize = 256;

/// Work below this many (slot x query head) pairs runs on the calling thread alone.
const DECODE_SERIAL: usize = 1024;

/// Decode: one token at position `pos` (already appended to every head) attends over its
/// layer. `q`, `out`: `[n_heads, head_dim]`. When `probs_out` is given, it receives, for each
/// KV head, the group's probabilities `[group, len]` over that head's visible slots.
pub fn attend_one(
    heads: &[HeadCache],
    q: &[f32],
    pos: u32,
    head_dim: usize,
    out: &mut [f32],
    probs_out: Option<&mut Vec<Vec<f32>>>,
) {
    if heads.is_empty() {
        return;
    }
    if head_dim == 0 || head_dim > MAX_HD || q.len() / heads.len() > MAX_GROUP_DIM {
        return attend_one_reference(heads, q, pos, head_dim, out, probs_out);
    }
    let kernel = chunk_kernel(head_dim);
    DECODE.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => attend_one_fast(&mut s, kernel, heads, q, pos, head_dim, out, probs_out),
        // Re-entered from inside a call on this thread: use fresh buffers.
        Err(_) => attend_one_fast(
            &mut DecodeScratch::default(),
            kernel,
            heads,
            q,
            pos,
            head_dim,
            out,
            probs_out,
        ),
    })
}

#[allow(clippy::too_many_arguments)]
fn attend_one_fast(
    s: &mut DecodeScratch,
    kernel: ChunkFn,
    heads: &[HeadCache],
    q: &[f32],
    pos: u32,
    head_dim: usize,
    out: &mut [f32],
    mut probs_out: Option<&mut Vec<Vec<f32>>>,
) {
    let hd = head_dim;
    let group = q.len() / hd / heads.len();
    let span = group * hd;
    let threads = pool::global().threads();
    let total: usize = heads.iter().map(|h| h.visible(pos)).sum();
    let serial = total * group < DECODE_SERIAL || threads == 1;
    // Chunks of a fixed size, whatever the thread count, so that results do not depend on
    // it (the split changes the rounding of the merged softmax).
    let chunk = DECODE_CHUNK;
    // Lay out heads, tasks and probability buffers.
    s.heads.clear();
    let (mut tasks, mut off) = (0, 0);
    for head in heads {
        let n = head.visible(pos);
        s.heads.push((n, tasks, off));
        tasks += n.div_ceil(chunk.min(n.max(1)));
        off += group * n;
    }
    s.dst.clear();
    match probs_out.as_deref_mut() {
        Some(p) => {
            p.resize_with(heads.len(), Vec::new);
            for (v, &(n, _, _)) in p.iter_mut().zip(&s.heads) {
                v.resize(group * n, 0.0);
                s.dst.push(SyncPtr(v.as_mut_ptr()));
            }
        }
        None => {
            s.probs.resize(off, 0.0);
            for &(_, _, o) in &s.heads {
                // SAFETY: `o <= off == s.probs.len()`.
                s.dst.push(SyncPtr(unsafe { s.probs.as_mut_ptr().add(o) }));
            }
        }
    }
    let pstride = 2 + hd;
    s.part.resize(tasks * group * pstride, 0.0);
    let part = SyncPtr(s.part.as_mut_ptr());
    let scale = 1.0 / (hd as f32).sqrt();
    let (lay, dst) = (&s.heads, &s.dst);
    let want_probs = probs_out.is_some();
    // Task `t` of head `h`: slots `c * chunk ..` of that head.
    let locate = |t: usize| {
        let h = lay.partition_point(|&(_, first, _)| first <= t) - 1;
        (h, t - lay[h].1)
    };
    let merged = |h: usize| -> (usize, usize) {
        let (n, first, _) = lay[h];
        (first, n.div_ceil(chunk.min(n.max(1))))
    };
    let work = Chunks::new(tasks, 1);
    let scores = |_: usize| {
        let mut qs = [0f32; MAX_GROUP_DIM];
        while let Some(t) = work.next() {
            let (h, c) = locate(t.start);
            let n = lay[h].0;
            let (j0, j1) = (c * chunk.min(n), ((c + 1) * chunk.min(n)).min(n));
            let qg = &q[h * span..(h + 1) * span];
            for (d, &x) in qs.iter_mut().zip(qg) {
                *d = x * scale;
            }
            // SAFETY: task `t` owns its part and columns j0..j1 of its head's rows.
            unsafe {
                let p = std::slice::from_raw_parts_mut(
                    part.ptr().add(t.start * group * pstride),
                    group * pstride,
                );
                kernel(&heads[h], &qs[..span], group, j0, j1, dst[h].ptr(), n, p);
            }
        }
    };
    // Normalises each chunk's probabilities with its head's global max and sum.
    let rescale = Chunks::new(tasks, 1);
    let normalise = |_: usize| {
        while let Some(t) = rescale.next() {
            let (h, c) = locate(t.start);
            let n = lay[h].0;
            let (j0, j1) = (c * chunk.min(n), ((c + 1) * chunk.min(n)).min(n));
            let (first, count) = merged(h);
            // SAFETY: the parts are complete (previous step) and only read here.
            let parts = unsafe {
                std::slice::from_raw_parts(
                    part.ptr().add(first * group * pstride),
                    count * group * pstride,
                )
            };
            for g in 0..group {
                let (m_max, sum) = global_max_sum(parts, group, pstride, g);
                let mine = parts[(c * group + g) * pstride];
                let f = (mine - m_max).exp() / sum;
                // SAFETY: columns j0..j1 of row g belong to this task.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(dst[h].ptr().add(g * n + j0), j1 - j0)
                };
                row.iter_mut().for_each(|p| *p *= f);
            }
        }
    };
    if serial {
        scores(0);
        if want_probs {
            normalise(0);
        }
    } else {
        pool::global().run(&scores);
        if want_probs {
            pool::global().run(&normalise);
        }
    }
    // Merge the parts of each head into the output.
    for (h, og) in out.chunks_exact_mut(span).enumerate().take(heads.len()) {
        let (first, count) = merged(h);
        let parts = &s.part[first * group * pstride..(first + count) * group * pstride];
        for (g, o) in og.chunks_exact_mut(hd).enumerate() {
            o.fill(0.0);
            if count == 0 {
                continue;
            }
            let (m_max, sum) = global_max_sum(parts, group, pstride, g);
            for c in 0..count {
                let p = &parts[(c * group + g) * pstride..][..pstride];
                let f = (p[0] - m_max).exp() / sum;
                axpy(o, f, &p[2..]);
            }
        }
    }
}

/// Global maximum and exp-sum of query head `g` over the parts of one head.
fn global_max_sum(parts: &[f32], group: usize, pstride: usize, g: usize) -> (f32, f32) {
    let count = parts.len() / (group * pstride);
    let m_max = (0..count)
        .map(|c| parts[(c * group + g) * pstride])
        .fold(f32::NEG_INFINITY, f32::max);
    let sum = (0..count)
        .map(|c| {
            let p = &parts[(c * group + g) * pstride..];
            p[1] * (p[0] - m_max).exp()
        })
        .sum();
    (m_max, sum)
}

/// Largest `group * head_dim` and head dimension of the split-K decode path (the reference
/// path takes anything larger).
const MAX_GROUP_DIM: usize = 1024;
const MAX_HD: usize = 256;

/// One decode task: slots `j0..j1` of `head` for the `group` scaled queries `q`
/// (`[group, hd]`). Writes `exp(score - local max)` into columns `j0..j1` of the rows
/// `probs + g * stride`, and `part[g] = (local max, local sum, sum_j p_j v_j)` (rows of
/// `2 + hd`).
///
/// # Safety
/// `probs` rows hold `stride >= j1` floats, no other thread touches their columns
/// `j0..j1`; `j0 < j1 <= head.len()`; `head.head_dim() <= MAX_HD`; the CPU runs the kernel
/// (as [`chunk_kernels`] checks).
type ChunkFn = unsafe fn(&HeadCache, &[f32], usize, usize, usize, *mut f32, usize, &mut [f32]);

/// The decode kernels this CPU runs for head dimension `hd`, best first (for tests).
#[cfg(test)]
fn chunk_kernels(hd: usize) -> Vec<(&'static str, ChunkFn)> {
    let mut v: Vec<(&'static str, ChunkFn)> = Vec::new();
    if x86::usable(hd) {
        v.push(("avx512", x86::decode_chunk));
    }
    if x86::has_avx2() {
        v.push(("avx2", decode_chunk_avx2));
    }
    v.push(("portable", decode_chunk_portable));
    v
}

/// The best decode kernel for head dimension `hd`.
fn chunk_kernel(hd: usize) -> ChunkFn {
    if x86::usable(hd) {
        x86::decode_chunk
    } else if x86::has_avx2() {
        decode_chunk_avx2
    } else {
        decode_chunk_portable
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_chunk_avx2(
    head: &HeadCache,
    q: &[f32],
    group: usize,
    j0: usize,
    j1: usize,
    probs: *mut f32,
    stride: usize,
    part: &mut [f32],
) {
    decode_chunk_portable(head, q, group, j0, j1, probs, stride, part)
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_chunk_avx2(
    head: &HeadCache,
    q: &[f32],
    group: usize,
    j0: usize,
    j1: usize,
    probs: *mut f32,
    stride: usize,
    part: &mut [f32],
) {
    decode_chunk_portable(head, q, group, j0, j1, probs, stride, part)
}

/// The decode task ([`ChunkFn`]) in plain Rust: blocks of 16 rows converted to f32 on the stack, then
/// loops the compiler vectorises (with AVX2 when called through `decode_chunk_avx2`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::missing_safety_doc)]
unsafe fn decode_chunk_portable(
    head: &HeadCache,
    q: &[f32],
    group: usize,
    j0: usize,
    j1: usize,
    probs: *mut f32,
    stride: usize,
    part: &mut [f32],
) {
    const B: usize = 16;
    let hd = head.head_dim();
    let mut buf = [0f32; B * MAX_HD];
    let n = j1 - j0;
    let row = |g: usize| std::slice::from_raw_parts_mut(probs.add(g * stride + j0), n);
    for b0 in (0..n).step_by(B) {
        let nk = B.min(n - b0);
        rows_f32(head.keys_raw(), hd, j0 + b0, nk, &mut buf);
        for g in 0..group {
            let qg = &q[g * hd..(g + 1) * hd];
            let r = row(g);
            for (i, k) in buf[..nk * hd].chunks_exact(hd).enumerate() {
                r[b0 + i] = dot(qg, k);
            }
        }
    }
    for g in 0..group {
        let r = row(g);
        let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for x in r.iter_mut() {
            *x = exp_fast(*x - m);
            sum += *x as f64;
        }
        let p = &mut part[g * (2 + hd)..(g + 1) * (2 + hd)];
        p[0] = m;
        p[1] = sum as f32;
        p[2..].fill(0.0);
    }
    for b0 in (0..n).step_by(B) {
        let nk = B.min(n - b0);
        rows_f32(head.values_raw(), hd, j0 + b0, nk, &mut buf);
        for g in 0..group {
            let r = row(g);
            let o = &mut part[g * (2 + hd) + 2..(g + 1) * (2 + hd)];
            for (i, v) in buf[..nk * hd].chunks_exact(hd).enumerate() {
                axpy(o, r[b0 + i], v);
            }
        }
    }
}

// ------------------------------------------------------------------------------ prefill

/// Query rows and keys per prefill tile.
const Q_BLOCK: usize = 32;
const K_BLOCK: usize = 64;

/// Prefill: tokens at `positions` (already appended) attend causally over their layer.
/// `q`, `out`: `[n_tokens, n_heads * head_dim]`. Tasks are (KV head, block of query rows);
/// each walks its head's visible keys in blocks with an online softmax.
pub fn attend_batch(
    heads: &[HeadCache],
    q: &[f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    attend_batch_with(
        heads,
        q,
        positions,
        n_heads,
        head_dim,
        out,
        x86::has_avx512(),
    )
}

/// [`attend_batch`] with the AVX-512 tile kernel or the portable one.
fn attend_batch_with(
    heads: &[HeadCache],
    q: &[f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    out: &mut [f32],
    avx512: bool,
) {
    let n_tok = positions.len();
    if heads.is_empty() || n_tok == 0 {
        return;
    }
    let q_dim = n_heads * head_dim;
    let group = n_heads / heads.len();
    let span = group * head_dim;
    let n_qb = n_tok.div_ceil(Q_BLOCK);
    let tasks = Chunks::new(heads.len() * n_qb, 1);
    let dst = SyncPtr(out.as_mut_ptr());
    pool::global().run(&|_| {
        let mut tile = Tile::new(head_dim, group);
        while let Some(t) = tasks.next() {
            // Later query blocks have more keys: hand them out first.
            let t = heads.len() * n_qb - 1 - t.start;
            let (h, qb) = (t % heads.len(), t / heads.len());
            let r0 = qb * Q_BLOCK;
            let r1 = (r0 + Q_BLOCK).min(n_tok);
            let head = &heads[h];
            let vis: Vec<usize> = positions[r0..r1].iter().map(|&p| head.visible(p)).collect();
            if avx512 {
                // SAFETY: `avx512` only when the CPU has it.
                unsafe { tile.run_avx512(head, q, q_dim, h * span, r0, &vis) }
            } else {
                tile.run_body(head, q, q_dim, h * span, r0, &vis)
            }
            for (i, o) in tile.out.chunks_exact(span).take(r1 - r0).enumerate() {
                let r = r0 + i;
                // SAFETY: row r, columns of KV head h, belong to this task.
                let d = unsafe {
                    std::slice::from_raw_parts_mut(dst.ptr().add(r * q_dim + h * span), span)
                };
                d.copy_from_slice(o);
            }
        }
    });
}

/// Buffers of one prefill task: transposed keys, values, and the running softmax state of
/// each (query row, query head).
struct Tile {
    hd: usize,
    group: usize,
    /// `[head_dim, K_BLOCK]`.
    kt: Vec<f32>,
    /// `[K_BLOCK, head_dim]`.
    v: Vec<f32>,
    /// Conversion buffer `[K_BLOCK, head_dim]`.
    tmp: Vec<f32>,
    /// Scaled queries `[Q_BLOCK, group, head_dim]`.
    q: Vec<f32>,
    /// Running max and sum `[Q_BLOCK * group]`.
    m: Vec<f32>,
    /// (in f64, as the reference softmax sums)
    l: Vec<f64>,
    /// Output `[Q_BLOCK, group * head_dim]`.
    out: Vec<f32>,
}

impl Tile {
    fn new(hd: usize, group: usize) -> Tile {
        Tile {
            hd,
            group,
            kt: vec![0.0; hd * K_BLOCK],
            v: vec![0.0; K_BLOCK * hd],
            tmp: vec![0.0; K_BLOCK * hd],
            q: vec![0.0; Q_BLOCK * group * hd],
            m: vec![0.0; Q_BLOCK * group],
            l: vec![0.0; Q_BLOCK * group],
            out: vec![0.0; Q_BLOCK * group * hd],
        }
    }

    /// [`Tile::run_body`] with the AVX-512 block kernel: four query vectors at a time
    /// against a block of keys, scores and outputs held in registers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn run_avx512(
        &mut self,
        head: &HeadCache,
        q: &[f32],
        q_dim: usize,
        col: usize,
        r0: usize,
        vis: &[usize],
    ) {
        let (hd, group) = (self.hd, self.group);
        if !hd.is_multiple_of(16) {
            return self.run_body(head, q, q_dim, col, r0, vis);
        }
        let rows = vis.len();
        self.start(q, q_dim, col, r0, rows);
        let n_max = vis.iter().copied().max().unwrap_or(0);
        let mut pbuf = [[0f32; K_BLOCK]; 4];
        for k0 in (0..n_max).step_by(K_BLOCK) {
            let nk = K_BLOCK.min(n_max - k0);
            self.load_block(head, k0, nk);
            // Rows are in position order: the ones that see this block are a suffix.
            let first = vis.partition_point(|&n| n <= k0);
            let qvs = first * group..rows * group;
            for g0 in qvs.clone().step_by(4) {
                let si: [usize; 4] = std::array::from_fn(|k| (g0 + k).min(qvs.end - 1));
                let lims: [usize; 4] = std::array::from_fn(|k| {
                    if g0 + k < qvs.end {
                        (vis[si[k] / group] - k0).min(nk)
                    } else {
                        0
                    }
                });
                x86::attend_block4(self, si, lims, &mut pbuf);
            }
        }
        self.finish(rows);
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_avx512(
        &mut self,
        head: &HeadCache,
        q: &[f32],
        q_dim: usize,
        col: usize,
        r0: usize,
        vis: &[usize],
    ) {
        self.run_body(head, q, q_dim, col, r0, vis)
    }

    /// Rows `r0 .. r0 + vis.len()` (query columns `col ..` of `q`), row `i` seeing slots
    /// `0..vis[i]` of `head`. Leaves the outputs in `self.out`.
    #[inline(always)]
    fn run_body(
        &mut self,
        head: &HeadCache,
        q: &[f32],
        q_dim: usize,
        col: usize,
        r0: usize,
        vis: &[usize],
    ) {
        let (hd, group) = (self.hd, self.group);
        let rows = vis.len();
        self.start(q, q_dim, col, r0, rows);
        let n_max = vis.iter().copied().max().unwrap_or(0);
        let mut s = [0f32; K_BLOCK];
        for k0 in (0..n_max).step_by(K_BLOCK) {
            let nk = K_BLOCK.min(n_max - k0);
            self.load_block(head, k0, nk);
            for (i, &n) in vis.iter().enumerate() {
                if n <= k0 {
                    continue;
                }
                let lim = (n - k0).min(nk);
                for g in 0..group {
                    let qv = &self.q[(i * group + g) * hd..][..hd];
                    s.fill(0.0);
                    for (d, &x) in qv.iter().enumerate() {
                        let kr: &[f32; K_BLOCK] =
                            self.kt[d * K_BLOCK..][..K_BLOCK].try_into().unwrap();
                        for j in 0..K_BLOCK {
                            s[j] += x * kr[j];
                        }
                    }
                    let mut bmax = f32::NEG_INFINITY;
                    for &x in &s[..lim] {
                        bmax = bmax.max(x);
                    }
                    let si = i * group + g;
                    let m_new = self.m[si].max(bmax);
                    let f = exp_fast(self.m[si] - m_new);
                    let mut sum = 0f64;
                    for (j, x) in s.iter_mut().enumerate() {
                        let e = exp_fast(*x - m_new);
                        *x = if j < lim { e } else { 0.0 };
                        sum += *x as f64;
                    }
                    self.m[si] = m_new;
                    self.l[si] = self.l[si] * f as f64 + sum;
                    let o = &mut self.out[si * hd..(si + 1) * hd];
                    if f != 1.0 {
                        o.iter_mut().for_each(|x| *x *= f);
                    }
                    for (j, &p) in s[..lim].iter().enumerate() {
                        let vr = &self.v[j * hd..(j + 1) * hd];
                        for (x, &y) in o.iter_mut().zip(vr) {
                            *x += p * y;
                        }
                    }
                }
            }
        }
        self.finish(rows);
    }

    /// Copies the scaled queries of `rows` rows and resets the softmax state.
    #[inline(always)]
    fn start(&mut self, q: &[f32], q_dim: usize, col: usize, r0: usize, rows: usize) {
        let (hd, group) = (self.hd, self.group);
        let scale = 1.0 / (hd as f32).sqrt();
        let span = group * hd;
        for i in 0..rows {
            let src = &q[(r0 + i) * q_dim + col..][..span];
            for (d, &x) in self.q[i * span..(i + 1) * span].iter_mut().zip(src) {
                *d = x * scale;
            }
        }
        self.m[..rows * group].fill(f32::NEG_INFINITY);
        self.l[..rows * group].fill(0.0);
        self.out[..rows * span].fill(0.0);
    }

    /// Keys `k0 .. k0 + nk` transposed into `kt[d][j]` (zero past `nk`), values into `v`.
    #[inline(always)]
    fn load_block(&mut self, head: &HeadCache, k0: usize, nk: usize) {
        let hd = self.hd;
        rows_f32(head.keys_raw(), hd, k0, nk, &mut self.tmp);
        for (j, row) in self.tmp[..nk * hd].chunks_exact(hd).enumerate() {
            for (d, &x) in row.iter().enumerate() {
                self.kt[d * K_BLOCK + j] = x;
            }
        }
        for d in 0..hd {
            self.kt[d * K_BLOCK + nk..(d + 1) * K_BLOCK].fill(0.0);
        }
        rows_f32(head.values_raw(), hd, k0, nk, &mut self.v);
    }

    /// Divides each output by its softmax sum.
    #[inline(always)]
    fn finish(&mut self, rows: usize) {
        let hd = self.hd;
        for si in 0..rows * self.group {
            let l = self.l[si];
            let inv = if l > 0.0 { (1.0 / l) as f32 } else { 0.0 };
            self.out[si * hd..(si + 1) * hd]
                .iter_mut()
                .for_each(|x| *x *= inv);
        }
    }
}

/// Rows `start .. start + n` of a `[len, hd]` buffer as f32 into `dst`.
fn rows_f32(r: RowsRef, hd: usize, start: usize, n: usize, dst: &mut [f32]) {
    let (a, b) = (start * hd, (start + n) * hd);
    match r {
        RowsRef::F32(v) => dst[..b - a].copy_from_slice(&v[a..b]),
        RowsRef::F16(v) => {
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[a..b], &mut dst[..b - a])
        }
    }
}

/// `e^x` to about 2 ulp for `x` in [-87, 88] (clamped outside), written so that a loop over
/// it vectorises: 2^n by exponent bits, `e^r` by a degree-6 polynomial on |r| <= ln2 / 2.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

// ------------------------------------------------------------------------------ decode kernels

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
mod x86 {
    use crate::kv_cache::{HeadCache, RowsRef};
    use std::arch::x86_64::*;

    use super::MAX_HD;

    pub use crate::cpu::{avx2 as has_avx2, avx512 as has_avx512};

    /// Whether the AVX-512 decode kernels handle this head size on this CPU.
    pub fn usable(hd: usize) -> bool {
        has_avx512() && hd.is_multiple_of(16) && hd > 0 && hd <= MAX_HD
    }

    /// Loads 16 elements of a row buffer as f32.
    trait Load: Copy {
        unsafe fn load(p: *const Self) -> __m512;
    }
    impl Load for half::f16 {
        #[inline(always)]
        unsafe fn load(p: *const Self) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
        }
    }
    impl Load for f32 {
        #[inline(always)]
        unsafe fn load(p: *const Self) -> __m512 {
            _mm512_loadu_ps(p)
        }
    }

    /// One decode task: slots `j0..j1` of `head` for the `group` scaled queries `q`
    /// (`[group, hd]`). Writes `exp(score - local max)` into columns `j0..j1` of the rows
    /// `probs + g * stride`, and `part[g] = (local max, local sum, sum_j p_j v_j)`.
    ///
    /// # Safety
    /// `usable(hd)`; `probs` rows hold `stride >= j1` floats; `j1 <= head.len()`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn decode_chunk(
        head: &HeadCache,
        q: &[f32],
        group: usize,
        j0: usize,
        j1: usize,
        probs: *mut f32,
        stride: usize,
        part: &mut [f32],
    ) {
        match (head.keys_raw(), head.values_raw()) {
            (RowsRef::F16(k), RowsRef::F16(v)) => chunk::<half::f16>(
                k.as_ptr(),
                v.as_ptr(),
                head.head_dim(),
                q,
                group,
                j0,
                j1,
                probs,
                stride,
                part,
            ),
            (RowsRef::F32(k), RowsRef::F32(v)) => chunk::<f32>(
                k.as_ptr(),
                v.as_ptr(),
                head.head_dim(),
                q,
                group,
                j0,
                j1,
                probs,
                stride,
                part,
            ),
            _ => unreachable!("keys and values share a dtype"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn chunk<T: Load>(
        k: *const T,
        v: *const T,
        hd: usize,
        q: &[f32],
        group: usize,
        j0: usize,
        j1: usize,
        probs: *mut f32,
        stride: usize,
        part: &mut [f32],
    ) {
        let nc = hd / 16;
        // Scores, 16 keys at a time: the keys are converted once into `kb`, then each query
        // head takes 16 dot products whose sums one transposing reduction gathers.
        let mut kb = [0f32; 16 * MAX_HD];
        let mut j = j0;
        while j < j1 {
            let nk = (j1 - j).min(16);
            for r in 0..16 {
                let src = k.add((j + r.min(nk - 1)) * hd);
                for c in 0..nc {
                    _mm512_storeu_ps(
                        kb.as_mut_ptr().add(r * hd + 16 * c),
                        T::load(src.add(16 * c)),
                    );
                }
            }
            let mask: __mmask16 = if nk == 16 { 0xFFFF } else { (1u16 << nk) - 1 };
            for g in 0..group {
                let qg = q.as_ptr().add(g * hd);
                let mut acc = [_mm512_setzero_ps(); 16];
                for c in 0..nc {
                    let qc = _mm512_loadu_ps(qg.add(16 * c));
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(
                            qc,
                            _mm512_loadu_ps(kb.as_ptr().add(r * hd + 16 * c)),
                            *a,
                        );
                    }
                }
                let sums = hsum16(acc);
                _mm512_mask_storeu_ps(probs.add(g * stride + j), mask, sums);
            }
            j += nk;
        }
        // Local softmax per query head.
        let n = j1 - j0;
        for g in 0..group {
            let (m, sum) = exp_row(probs.add(g * stride + j0), n);
            part[g * (2 + hd)] = m;
            part[g * (2 + hd) + 1] = sum as f32;
        }
        // Values: up to four query heads per pass over the chunk.
        let mut g0 = 0;
        while g0 < group {
            let gs = (group - g0).min(4);
            let p = probs.add(g0 * stride);
            let o = &mut part[g0 * (2 + hd)..];
            match (nc, gs) {
                (4, 1) => pv::<T, 4, 1>(v, j0, j1, p, stride, o),
                (4, 2) => pv::<T, 4, 2>(v, j0, j1, p, stride, o),
                (4, 3) => pv::<T, 4, 3>(v, j0, j1, p, stride, o),
                (4, 4) => pv::<T, 4, 4>(v, j0, j1, p, stride, o),
                (8, 1) => pv::<T, 8, 1>(v, j0, j1, p, stride, o),
                (8, 2) => pv::<T, 8, 2>(v, j0, j1, p, stride, o),
                (8, 3) => pv::<T, 8, 3>(v, j0, j1, p, stride, o),
                (8, 4) => pv::<T, 8, 4>(v, j0, j1, p, stride, o),
                _ => pv_any(v, hd, j0, j1, p, stride, gs, o),
            }
            g0 += gs;
        }
    }

    /// `o[g] = sum_j p[g][j] v_j` for `G` query heads, head_dim `16 * NC`; `o` rows are
    /// `2 + hd` apart with the sums at offset 2.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn pv<T: Load, const NC: usize, const G: usize>(
        v: *const T,
        j0: usize,
        j1: usize,
        p: *const f32,
        stride: usize,
        o: &mut [f32],
    ) {
        let hd = 16 * NC;
        let mut acc = [[_mm512_setzero_ps(); NC]; G];
        for j in j0..j1 {
            let vr = v.add(j * hd);
            let vv: [__m512; NC] = std::array::from_fn(|c| T::load(vr.add(16 * c)));
            for (g, a) in acc.iter_mut().enumerate() {
                let pg = _mm512_set1_ps(*p.add(g * stride + j));
                for c in 0..NC {
                    a[c] = _mm512_fmadd_ps(pg, vv[c], a[c]);
                }
            }
        }
        for (g, a) in acc.iter().enumerate() {
            for (c, x) in a.iter().enumerate() {
                _mm512_storeu_ps(o.as_mut_ptr().add(g * (2 + hd) + 2 + 16 * c), *x);
            }
        }
    }

    /// [`pv`] for any head_dim that is a multiple of 16, one query head at a time.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn pv_any<T: Load>(
        v: *const T,
        hd: usize,
        j0: usize,
        j1: usize,
        p: *const f32,
        stride: usize,
        gs: usize,
        o: &mut [f32],
    ) {
        for g in 0..gs {
            let out = o.as_mut_ptr().add(g * (2 + hd) + 2);
            for c in 0..hd / 16 {
                let mut a = _mm512_setzero_ps();
                for j in j0..j1 {
                    let pg = _mm512_set1_ps(*p.add(g * stride + j));
                    a = _mm512_fmadd_ps(pg, T::load(v.add(j * hd + 16 * c)), a);
                }
                _mm512_storeu_ps(out.add(16 * c), a);
            }
        }
    }

    /// `e^x` for 16 lanes, as [`super::exp_fast`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
            _mm512_set1_ps(88.0),
        );
        let t = _mm512_add_ps(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
            _mm512_set1_ps(0.5),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
        let r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693_145_75)));
        let r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(1.428_606_8e-6)));
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// `acc + x` with the 16 floats of `x` widened to f64 and folded onto 8 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn add_pd16(acc: __m512d, x: __m512) -> __m512d {
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
            _mm512_castps_pd(x),
        )));
        _mm512_add_pd(acc, _mm512_add_pd(lo, hi))
    }

    /// `x = exp(x - max x)` over `n` floats at `p`; returns (max, sum of the new values).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn exp_row(p: *mut f32, n: usize) -> (f32, f64) {
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let tail = (n % 16) as u32;
        let tmask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
        let full = n - n % 16;
        let mut mx = ninf;
        for i in (0..full).step_by(16) {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(p.add(i)));
        }
        if tail > 0 {
            mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, tmask, p.add(full)));
        }
        let m = _mm512_reduce_max_ps(mx);
        let mv = _mm512_set1_ps(m);
        // The sum in f64, as the reference softmax (`ops::softmax`) takes it.
        let mut sum = _mm512_setzero_pd();
        for i in (0..full).step_by(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mv));
            sum = add_pd16(sum, e);
            _mm512_storeu_ps(p.add(i), e);
        }
        if tail > 0 {
            let x = _mm512_maskz_loadu_ps(tmask, p.add(full));
            let e = _mm512_maskz_mov_ps(tmask, exp16(_mm512_sub_ps(x, mv)));
            sum = add_pd16(sum, e);
            _mm512_mask_storeu_ps(p.add(full), tmask, e);
        }
        (m, _mm512_reduce_add_pd(sum))
    }

    /// One key block of a prefill tile for four query vectors `si` (indices into the tile's
    /// queries and state), vector `k` seeing the block's first `lims[k]` keys (0: skip).
    /// Online softmax: the running max, sum and output of each vector are rescaled.
    ///
    /// # Safety
    /// AVX-512 CPU; `tile.hd` is a multiple of 16; the block is loaded.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn attend_block4(
        tile: &mut super::Tile,
        si: [usize; 4],
        lims: [usize; 4],
        pbuf: &mut [[f32; super::K_BLOCK]; 4],
    ) {
        const KB: usize = super::K_BLOCK;
        const NV: usize = KB / 16;
        let hd = tile.hd;
        let kt = tile.kt.as_ptr();
        let q: [*const f32; 4] = std::array::from_fn(|k| tile.q.as_ptr().add(si[k] * hd));
        // Scores: s[k] = q_k . key_j for the block's keys, 4 x 64 in registers.
        let mut acc = [[_mm512_setzero_ps(); NV]; 4];
        for d in 0..hd {
            let kr: [__m512; NV] =
                std::array::from_fn(|c| _mm512_loadu_ps(kt.add(d * KB + 16 * c)));
            for k in 0..4 {
                let b = _mm512_set1_ps(*q[k].add(d));
                for c in 0..NV {
                    acc[k][c] = _mm512_fmadd_ps(b, kr[c], acc[k][c]);
                }
            }
        }
        // Online softmax per vector; probabilities of masked keys are 0.
        let mut f = [1f32; 4];
        for k in 0..4 {
            let lim = lims[k];
            if lim == 0 {
                pbuf[k] = [0.0; KB];
                continue;
            }
            let masks: [__mmask16; NV] = std::array::from_fn(|c| {
                let n = lim.saturating_sub(16 * c).min(16);
                if n == 16 {
                    0xFFFF
                } else {
                    ((1u32 << n) - 1) as __mmask16
                }
            });
            let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut mx = ninf;
            for c in 0..NV {
                mx = _mm512_max_ps(mx, _mm512_mask_blend_ps(masks[c], ninf, acc[k][c]));
            }
            let bmax = _mm512_reduce_max_ps(mx);
            let m_old = tile.m[si[k]];
            let m_new = m_old.max(bmax);
            f[k] = super::exp_fast(m_old - m_new);
            let mn = _mm512_set1_ps(m_new);
            let mut sum = _mm512_setzero_pd();
            for c in 0..NV {
                let p = _mm512_maskz_mov_ps(masks[c], exp16(_mm512_sub_ps(acc[k][c], mn)));
                sum = add_pd16(sum, p);
                _mm512_storeu_ps(pbuf[k].as_mut_ptr().add(16 * c), p);
            }
            tile.m[si[k]] = m_new;
            tile.l[si[k]] = tile.l[si[k]] * f[k] as f64 + _mm512_reduce_add_pd(sum);
        }
        // Outputs: o_k = o_k f_k + sum_j p_kj v_j, 64 dimensions per pass.
        let jmax = lims.iter().copied().max().unwrap_or(0);
        let v = tile.v.as_ptr();
        let mut d0 = 0;
        while d0 < hd {
            match (hd - d0) / 16 {
                1 => pv_block::<1>(tile, v, hd, d0, jmax, &si, &f, pbuf),
                2 => pv_block::<2>(tile, v, hd, d0, jmax, &si, &f, pbuf),
                3 => pv_block::<3>(tile, v, hd, d0, jmax, &si, &f, pbuf),
                _ => pv_block::<4>(tile, v, hd, d0, jmax, &si, &f, pbuf),
            }
            d0 += 64;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn pv_block<const NC: usize>(
        tile: &mut super::Tile,
        v: *const f32,
        hd: usize,
        d0: usize,
        jmax: usize,
        si: &[usize; 4],
        f: &[f32; 4],
        pbuf: &[[f32; super::K_BLOCK]; 4],
    ) {
        let mut acc = [[_mm512_setzero_ps(); NC]; 4];
        for j in 0..jmax {
            let vr: [__m512; NC] =
                std::array::from_fn(|c| _mm512_loadu_ps(v.add(j * hd + d0 + 16 * c)));
            for k in 0..4 {
                let b = _mm512_set1_ps(pbuf[k][j]);
                for c in 0..NC {
                    acc[k][c] = _mm512_fmadd_ps(b, vr[c], acc[k][c]);
                }
            }
        }
        // Vectors repeated as padding (same `si`) must be written once.
        for k in 0..4 {
            if si[..k].contains(&si[k]) {
                continue;
            }
            let o = tile.out.as_mut_ptr().add(si[k] * hd + d0);
            let fk = _mm512_set1_ps(f[k]);
            for c in 0..NC {
                let prev = _mm512_loadu_ps(o.add(16 * c));
                _mm512_storeu_ps(o.add(16 * c), _mm512_fmadd_ps(prev, fk, acc[k][c]));
            }
        }
    }

    /// `[sum(a[0]), sum(a[1]), ..., sum(a[15])]`: a transposing reduction (adds of 128-bit
    /// lane shuffles, then in-lane shuffles) instead of sixteen horizontal sums.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub unsafe fn hsum16(a: [__m512; 16]) -> __m512 {
        // 16 -> 8: 128-bit lanes [x(L0+L2), x(L1+L3), y(L0+L2), y(L1+L3)].
        let b: [__m512; 8] = std::array::from_fn(|i| {
            let (x, y) = (a[2 * i], a[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
            )
        });
        // 8 -> 4: lane L of c[i] holds four partial sums of a[4i + L].
        let c: [__m512; 4] = std::array::from_fn(|i| {
            let (x, y) = (b[2 * i], b[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
            )
        });
        // In-lane: d0 = [c0 0+2, c1 0+2, c0 1+3, c1 1+3] per lane, d1 likewise for c2, c3.
        let d0 = _mm512_add_ps(
            _mm512_unpacklo_ps(c[0], c[1]),
            _mm512_unpackhi_ps(c[0], c[1]),
        );
        let d1 = _mm512_add_ps(
            _mm512_unpacklo_ps(c[2], c[3]),
            _mm512_unpackhi_ps(c[2], c[3]),
        );
        // Element m of lane L = sum of a[4m + L].
        let e = _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(d0, d1),
            _mm512_shuffle_ps::<0b11_10_11_10>(d0, d1),
        );
        let idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
        _mm512_permutexvar_ps(idx, e)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub use crate::cpu::{avx2 as has_avx2, avx512 as has_avx512};
    use crate::kv_cache::HeadCache;
    pub fn usable(_: usize) -> bool {
        false
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn decode_chunk(
        _: &HeadCache,
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: *mut f32,
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvDtype;

    #[test]
    fn one_key_gives_its_value_and_equal_scores_average() {
        let mut h = HeadCache::new(2, KvDtype::F32);
        h.push(0, &[1.0, 0.0], &[3.0, 4.0]);
        let mut out = vec![0.0; 2];
        attend_one(std::slice::from_ref(&h), &[5.0, 5.0], 0, 2, &mut out, None);
        assert_eq!(out, [3.0, 4.0]);
        h.push(1, &[1.0, 0.0], &[5.0, 0.0]);
        let mut probs = Vec::new();
        attend_one(
            std::slice::from_ref(&h),
            &[5.0, 5.0],
            1,
            2,
            &mut out,
            Some(&mut probs),
        );
        assert_eq!(out, [4.0, 2.0]);
        assert_eq!(probs, vec![vec![0.5, 0.5]]);
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
        attend_batch(&heads, &q, &[0, 1, 2], 4, 2, &mut batch);
        for p in 0..3 {
            let mut one = vec![0.0; 8];
            attend_one(&heads, &q[p * 8..(p + 1) * 8], p as u32, 2, &mut one, None);
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
            for lens in [[1usize, 3], [17, 40], [700, 2500]] {
                let heads = random_heads(&mut rng, 2, hd, dtype, &lens);
                let q: Vec<f32> = (0..2 * group * hd).map(|_| rng.f()).collect();
                let pos = 2 * 2500 + 5;
                let mut b = vec![0.0; q.len()];
                let mut pb = Vec::new();
                attend_one_reference(&heads, &q, pos, hd, &mut b, Some(&mut pb));
                for (name, kernel) in chunk_kernels(hd) {
                    let mut a = vec![0.0; q.len()];
                    let mut pa = Vec::new();
                    let mut s = DecodeScratch::default();
                    let (qq, h) = (&q, &heads);
                    attend_one_fast(&mut s, kernel, h, qq, pos, hd, &mut a, Some(&mut pa));
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
                    attend_one_fast(&mut s, kernel, h, qq, pos, hd, &mut c, None);
                    assert_eq!(a, c, "{name}");
                }
            }
        }
    }

    #[test]
    fn tiled_prefill_matches_one_at_a_time() {
        if !x86::has_avx512() {
            eprintln!(
                "tiled_prefill_matches_one_at_a_time: AVX-512 path skipped (not in use here)"
            );
        }
        let mut rng = Lcg(11);
        for (hd, group) in [(64, 3), (48, 2), (128, 7), (40, 1)] {
            for avx512 in [false, x86::has_avx512()] {
                check_prefill(&mut rng, hd, group, avx512);
            }
        }
    }

    fn check_prefill(rng: &mut Lcg, hd: usize, group: usize, avx512: bool) {
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
        attend_batch_with(&heads, &q, &positions, n_kv * group, hd, &mut batch, avx512);
        for (i, &p) in positions.iter().enumerate() {
            let mut one = vec![0.0; q_dim];
            attend_one_reference(
                &heads,
                &q[i * q_dim..(i + 1) * q_dim],
                p,
                hd,
                &mut one,
                None,
            );
            for (x, y) in batch[i * q_dim..(i + 1) * q_dim].iter().zip(&one) {
                assert!(
                    (x - y).abs() < 1e-4,
                    "hd {hd} group {group} avx512 {avx512} row {i}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn exp_fast_is_close_to_exp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_fast(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(f32::NEG_INFINITY) < 1e-37);
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
            let a: [__m512; 16] =
                std::array::from_fn(|i| _mm512_loadu_ps(vals.as_ptr().add(16 * i)));
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), x86::hsum16(a));
            for i in 0..16 {
                let want: f32 = vals[16 * i..16 * i + 16].iter().sum();
                assert_eq!(out[i], want);
            }
        }
    }
}
