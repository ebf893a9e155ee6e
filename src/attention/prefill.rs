//! Prefill: tiles of query rows against blocks of keys with an online softmax (flash
//! attention), tasks of (KV head, block of query rows).

use super::*;
use std::ops::Range;

/// Query rows and keys per prefill tile.
pub(super) const Q_BLOCK: usize = 32;
pub(super) const K_BLOCK: usize = 64;

/// Prefill: tokens at `positions` (already appended) attend causally over their layer
/// (over the last `window` positions only, for a sliding-window layer). `q`, `out`:
/// `[n_tokens, n_heads * head_dim]`. Tasks are (KV head, block of query rows); each walks
/// the keys its rows see in blocks with an online softmax.
pub fn attend_batch(
    heads: &[HeadCache],
    q: &[f32],
    positions: &[u32],
    window: Option<u32>,
    n_heads: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    attend_batch_with(
        heads,
        q,
        positions,
        window,
        n_heads,
        head_dim,
        out,
        x86::has_avx512(),
    )
}

/// [`attend_batch`] with the AVX-512 tile kernel or the portable one.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_batch_with(
    heads: &[HeadCache],
    q: &[f32],
    positions: &[u32],
    window: Option<u32>,
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
            let head = heads[h].view();
            let seen: Vec<Range<usize>> = (positions[r0..r1].iter())
                .map(|&p| head.seen_by(p, window))
                .collect();
            if avx512 {
                // SAFETY: `avx512` only when the CPU has it.
                unsafe { tile.run_avx512(head, q, q_dim, h * span, r0, &seen) }
            } else {
                tile.run_body(head, q, q_dim, h * span, r0, &seen)
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
pub(super) struct Tile {
    pub(super) hd: usize,
    pub(super) group: usize,
    /// `[head_dim, K_BLOCK]`.
    pub(super) kt: Vec<f32>,
    /// `[K_BLOCK, head_dim]`.
    pub(super) v: Vec<f32>,
    /// Conversion buffer `[K_BLOCK, head_dim]`.
    pub(super) tmp: Vec<f32>,
    /// Scaled queries `[Q_BLOCK, group, head_dim]`.
    pub(super) q: Vec<f32>,
    /// Running max and sum `[Q_BLOCK * group]`.
    pub(super) m: Vec<f32>,
    /// (in f64, as the reference softmax sums)
    pub(super) l: Vec<f64>,
    /// Output `[Q_BLOCK, group * head_dim]`.
    pub(super) out: Vec<f32>,
}

impl Tile {
    pub(super) fn new(hd: usize, group: usize) -> Tile {
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
    pub(super) unsafe fn run_avx512(
        &mut self,
        head: HeadView,
        q: &[f32],
        q_dim: usize,
        col: usize,
        r0: usize,
        seen: &[Range<usize>],
    ) {
        let group = self.group;
        if !self.hd.is_multiple_of(16) {
            return self.run_body(head, q, q_dim, col, r0, seen);
        }
        let rows = seen.len();
        self.start(q, q_dim, col, r0, rows);
        let (k_min, k_max) = key_span(seen);
        let mut pbuf = [[0f32; K_BLOCK]; 4];
        for k0 in (k_min..k_max).step_by(K_BLOCK) {
            let nk = K_BLOCK.min(k_max - k0);
            self.load_block(head, k0, nk);
            // Rows are in position order, so both ends of what they see increase: the rows
            // that see this block from its first key on are a run [first, whole); the rows
            // after it start inside the block (a sliding window's lower edge) and take the
            // portable step.
            let first = seen.partition_point(|r| r.end <= k0);
            let whole = first.max(seen.partition_point(|r| r.start <= k0));
            let qvs = first * group..whole * group;
            for g0 in qvs.clone().step_by(4) {
                let si: [usize; 4] = std::array::from_fn(|k| (g0 + k).min(qvs.end - 1));
                let lims: [usize; 4] = std::array::from_fn(|k| {
                    if g0 + k < qvs.end {
                        (seen[si[k] / group].end - k0).min(nk)
                    } else {
                        0
                    }
                });
                x86::attend_block4(self, si, lims, &mut pbuf);
            }
            for (i, r) in seen.iter().enumerate().skip(whole) {
                self.row_block(i, k0, nk, r);
            }
        }
        self.finish(rows);
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn run_avx512(
        &mut self,
        head: HeadView,
        q: &[f32],
        q_dim: usize,
        col: usize,
        r0: usize,
        seen: &[Range<usize>],
    ) {
        self.run_body(head, q, q_dim, col, r0, seen)
    }

    /// Rows `r0 .. r0 + seen.len()` (query columns `col ..` of `q`), row `i` seeing slots
    /// `seen[i]` of `head`. Leaves the outputs in `self.out`.
    #[inline(always)]
    pub(super) fn run_body(
        &mut self,
        head: HeadView,
        q: &[f32],
        q_dim: usize,
        col: usize,
        r0: usize,
        seen: &[Range<usize>],
    ) {
        let rows = seen.len();
        self.start(q, q_dim, col, r0, rows);
        let (k_min, k_max) = key_span(seen);
        for k0 in (k_min..k_max).step_by(K_BLOCK) {
            let nk = K_BLOCK.min(k_max - k0);
            self.load_block(head, k0, nk);
            for (i, r) in seen.iter().enumerate() {
                self.row_block(i, k0, nk, r);
            }
        }
        self.finish(rows);
    }

    /// Row `i`'s query heads against the loaded block of keys `k0 .. k0 + nk`, counting only
    /// the slots in `seen` (the online-softmax step).
    #[inline(always)]
    pub(super) fn row_block(&mut self, i: usize, k0: usize, nk: usize, seen: &Range<usize>) {
        let (hd, group) = (self.hd, self.group);
        if seen.is_empty() || seen.end <= k0 || seen.start >= k0 + nk {
            return;
        }
        let from = seen.start.saturating_sub(k0);
        let lim = (seen.end - k0).min(nk);
        let mut s = [0f32; K_BLOCK];
        for g in 0..group {
            let qv = &self.q[(i * group + g) * hd..][..hd];
            s.fill(0.0);
            for (d, &x) in qv.iter().enumerate() {
                let kr: &[f32; K_BLOCK] = self.kt[d * K_BLOCK..][..K_BLOCK].try_into().unwrap();
                for j in 0..K_BLOCK {
                    s[j] += x * kr[j];
                }
            }
            let mut bmax = f32::NEG_INFINITY;
            for &x in &s[from..lim] {
                bmax = bmax.max(x);
            }
            let si = i * group + g;
            let m_new = self.m[si].max(bmax);
            let f = exp_fast(self.m[si] - m_new);
            let mut sum = 0f64;
            for (j, x) in s.iter_mut().enumerate() {
                let e = exp_fast(*x - m_new);
                *x = if (from..lim).contains(&j) { e } else { 0.0 };
                sum += *x as f64;
            }
            self.m[si] = m_new;
            self.l[si] = self.l[si] * f as f64 + sum;
            let o = &mut self.out[si * hd..(si + 1) * hd];
            if f != 1.0 {
                o.iter_mut().for_each(|x| *x *= f);
            }
            for (j, &p) in s[..lim].iter().enumerate().skip(from) {
                let vr = &self.v[j * hd..(j + 1) * hd];
                for (x, &y) in o.iter_mut().zip(vr) {
                    *x += p * y;
                }
            }
        }
    }

    /// Copies the scaled queries of `rows` rows and resets the softmax state.
    #[inline(always)]
    pub(super) fn start(&mut self, q: &[f32], q_dim: usize, col: usize, r0: usize, rows: usize) {
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
    pub(super) fn load_block(&mut self, head: HeadView, k0: usize, nk: usize) {
        let hd = self.hd;
        head.keys.rows_f32(hd, k0, nk, &mut self.tmp);
        for (j, row) in self.tmp[..nk * hd].chunks_exact(hd).enumerate() {
            for (d, &x) in row.iter().enumerate() {
                self.kt[d * K_BLOCK + j] = x;
            }
        }
        for d in 0..hd {
            self.kt[d * K_BLOCK + nk..(d + 1) * K_BLOCK].fill(0.0);
        }
        head.values.rows_f32(hd, k0, nk, &mut self.v);
    }

    /// Divides each output by its softmax sum.
    #[inline(always)]
    pub(super) fn finish(&mut self, rows: usize) {
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

/// The slots some row sees: from the lowest first slot, rounded down to a block boundary
/// (blocks stay aligned as without a window), to the highest end.
fn key_span(seen: &[Range<usize>]) -> (usize, usize) {
    let lo = seen.iter().map(|r| r.start).min().unwrap_or(0);
    let hi = seen.iter().map(|r| r.end).max().unwrap_or(0);
    (lo / K_BLOCK * K_BLOCK, hi)
}
