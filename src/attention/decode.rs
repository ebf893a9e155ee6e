//! Decode: one query row per sequence attends over its layer, each head's slots split into
//! chunks that the pool's threads take in parallel (split-K), merged by the global maximum.

use super::*;

/// Per-call buffers of [`attend_one`], kept on the calling thread so that decoding
/// allocates nothing once they have grown.
#[derive(Default)]
pub(super) struct DecodeScratch {
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
pub(super) const DECODE_CHUNK: usize = 256;

/// Work below this many (slot x query head) pairs runs on the calling thread alone.
pub(super) const DECODE_SERIAL: usize = 1024;

/// Decode: one token at position `pos` (already appended to every head) attends over its
/// layer (over the last `window` positions only, for a sliding-window layer). `q`, `out`:
/// `[n_heads, head_dim]`. When `probs_out` is given, it receives, for each KV head, the
/// group's probabilities `[group, len]` over the slots it sees ([`HeadView::seen_by`]).
pub fn attend_one(
    heads: &[HeadCache],
    q: &[f32],
    pos: u32,
    window: Option<u32>,
    head_dim: usize,
    out: &mut [f32],
    probs_out: Option<&mut Vec<Vec<f32>>>,
) {
    if heads.is_empty() {
        return;
    }
    if head_dim == 0 || head_dim > MAX_HD || q.len() / heads.len() > MAX_GROUP_DIM {
        return attend_one_reference(heads, q, pos, window, head_dim, out, probs_out);
    }
    let kernel = chunk_kernel(head_dim);
    DECODE.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => attend_one_fast(
            &mut s, kernel, heads, q, pos, window, head_dim, out, probs_out,
        ),
        // Re-entered from inside a call on this thread: use fresh buffers.
        Err(_) => attend_one_fast(
            &mut DecodeScratch::default(),
            kernel,
            heads,
            q,
            pos,
            window,
            head_dim,
            out,
            probs_out,
        ),
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn attend_one_fast(
    s: &mut DecodeScratch,
    kernel: ChunkFn,
    heads: &[HeadCache],
    q: &[f32],
    pos: u32,
    window: Option<u32>,
    head_dim: usize,
    out: &mut [f32],
    mut probs_out: Option<&mut Vec<Vec<f32>>>,
) {
    let hd = head_dim;
    fn seen(h: &HeadCache, pos: u32, window: Option<u32>) -> HeadView<'_> {
        h.view().seen(pos, window)
    }
    let group = q.len() / hd / heads.len();
    let span = group * hd;
    let threads = pool::global().threads();
    let total: usize = heads.iter().map(|h| seen(h, pos, window).len()).sum();
    let serial = total * group < DECODE_SERIAL || threads == 1;
    // Chunks of a fixed size, whatever the thread count, so that results do not depend on
    // it (the split changes the rounding of the merged softmax).
    let chunk = DECODE_CHUNK;
    // Lay out heads, tasks and probability buffers.
    s.heads.clear();
    let (mut tasks, mut off) = (0, 0);
    for head in heads {
        let n = seen(head, pos, window).len();
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
                kernel(
                    seen(&heads[h], pos, window),
                    &qs[..span],
                    group,
                    j0,
                    j1,
                    dst[h].ptr(),
                    n,
                    p,
                );
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
pub(super) fn global_max_sum(parts: &[f32], group: usize, pstride: usize, g: usize) -> (f32, f32) {
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
pub(super) const MAX_GROUP_DIM: usize = 1024;
pub(super) const MAX_HD: usize = 256;

/// One decode task: slots `j0..j1` of `head` for the `group` scaled queries `q`
/// (`[group, hd]`). Writes `exp(score - local max)` into columns `j0..j1` of the rows
/// `probs + g * stride`, and `part[g] = (local max, local sum, sum_j p_j v_j)` (rows of
/// `2 + hd`).
///
/// # Safety
/// `probs` rows hold `stride >= j1` floats, no other thread touches their columns
/// `j0..j1`; `j0 < j1 <= head.len()`; `head.head_dim <= MAX_HD`; the CPU runs the kernel
/// (as [`chunk_kernels`] checks).
pub(super) type ChunkFn =
    unsafe fn(HeadView, &[f32], usize, usize, usize, *mut f32, usize, &mut [f32]);

/// The decode kernels this CPU runs for head dimension `hd`, best first (for tests).
#[cfg(test)]
pub(super) fn chunk_kernels(hd: usize) -> Vec<(&'static str, ChunkFn)> {
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
pub(super) fn chunk_kernel(hd: usize) -> ChunkFn {
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
pub(super) unsafe fn decode_chunk_avx2(
    head: HeadView,
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
pub(super) unsafe fn decode_chunk_avx2(
    head: HeadView,
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
pub(super) unsafe fn decode_chunk_portable(
    head: HeadView,
    q: &[f32],
    group: usize,
    j0: usize,
    j1: usize,
    probs: *mut f32,
    stride: usize,
    part: &mut [f32],
) {
    const B: usize = 16;
    let hd = head.head_dim;
    let mut buf = [0f32; B * MAX_HD];
    let n = j1 - j0;
    let row = |g: usize| std::slice::from_raw_parts_mut(probs.add(g * stride + j0), n);
    for b0 in (0..n).step_by(B) {
        let nk = B.min(n - b0);
        head.keys.rows_f32(hd, j0 + b0, nk, &mut buf);
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
        head.values.rows_f32(hd, j0 + b0, nk, &mut buf);
        for g in 0..group {
            let r = row(g);
            let o = &mut part[g * (2 + hd) + 2..(g + 1) * (2 + hd)];
            for (i, v) in buf[..nk * hd].chunks_exact(hd).enumerate() {
                axpy(o, r[b0 + i], v);
            }
        }
    }
}
