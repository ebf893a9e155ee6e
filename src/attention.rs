//! Scaled dot-product attention over the per-(layer, KV head) cache buffers.
//!
//! Grouped-query attention: the `group` query heads that share a KV head are handled in one
//! pass over that head's keys and values. Any head may hold any subset of positions (slots
//! are in increasing position order), so the causal mask is "slots up to `visible(pos)`".

use crate::kv_cache::HeadCache;
use crate::model::ops::softmax;
use rayon::prelude::*;

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

/// Attention of the queries of one KV head's group for one query position.
///
/// `q`: `[group, head_dim]`; `out`: `[group, head_dim]`; `probs`: `[group, visible]` on return,
/// the softmax of each query head over the visible slots (FastGen profiling and heavy-hitter
/// scores read these). `keys`/`values` are the head's visible rows already as f32.
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

/// Per-thread buffers for attention.
#[derive(Default)]
pub struct AttnScratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    probs: Vec<f32>,
}

/// Decode: one token at position `pos` (already appended to every head) attends over its
/// layer. `q`, `out`: `[n_heads, head_dim]`. When `probs_out` is given, it receives, for each
/// KV head, the group's probabilities `[group, len]` over that head's slots.
pub fn attend_one(
    heads: &[HeadCache],
    q: &[f32],
    pos: u32,
    head_dim: usize,
    out: &mut [f32],
    probs_out: Option<&mut Vec<Vec<f32>>>,
) {
    let group = q.len() / head_dim / heads.len();
    let span = group * head_dim;
    let results: Vec<Vec<f32>> = heads
        .par_iter()
        .zip(q.par_chunks_exact(span).zip(out.par_chunks_exact_mut(span)))
        .map(|(head, (qg, og))| {
            let mut s = AttnScratch::default();
            let n = head.visible(pos);
            let keys = head.keys_f32(0, n, &mut s.keys);
            let values = head.values_f32(0, n, &mut s.values);
            s.probs.resize(group * n, 0.0);
            attend_group(keys, values, qg, head_dim, og, &mut s.probs);
            s.probs
        })
        .collect();
    if let Some(p) = probs_out {
        *p = results;
    }
}

/// Prefill: tokens at `positions` (already appended) attend causally over their layer.
/// `q`, `out`: `[n_tokens, n_heads * head_dim]`. Work is split by KV head and by blocks of
/// query rows; each block converts its head's keys and values once.
pub fn attend_batch(
    heads: &[HeadCache],
    q: &[f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    const ROWS: usize = 32;
    let n_tok = positions.len();
    let q_dim = n_heads * head_dim;
    let group = n_heads / heads.len();
    let span = group * head_dim;
    let blocks: Vec<(usize, usize)> = (0..heads.len())
        .flat_map(|h| (0..n_tok).step_by(ROWS).map(move |r| (h, r)))
        .collect();
    // Each block produces its rows of one group: [rows, span].
    let parts: Vec<Vec<f32>> = blocks
        .par_iter()
        .map(|&(h, r0)| {
            let r1 = (r0 + ROWS).min(n_tok);
            let head = &heads[h];
            let mut s = AttnScratch::default();
            let n_max = head.visible(positions[r1 - 1]);
            let keys = head.keys_f32(0, n_max, &mut s.keys);
            let values = head.values_f32(0, n_max, &mut s.values);
            let mut part = vec![0.0f32; (r1 - r0) * span];
            for (i, r) in (r0..r1).enumerate() {
                let n = head.visible(positions[r]);
                s.probs.resize(group * n, 0.0);
                let qg = &q[r * q_dim + h * span..r * q_dim + (h + 1) * span];
                attend_group(
                    &keys[..n * head_dim],
                    &values[..n * head_dim],
                    qg,
                    head_dim,
                    &mut part[i * span..(i + 1) * span],
                    &mut s.probs,
                );
            }
            part
        })
        .collect();
    for (&(h, r0), part) in blocks.iter().zip(&parts) {
        for (i, row) in part.chunks_exact(span).enumerate() {
            let r = r0 + i;
            out[r * q_dim + h * span..r * q_dim + (h + 1) * span].copy_from_slice(row);
        }
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
            assert_eq!(&batch[p * 8..(p + 1) * 8], &one[..]);
        }
        // Token 0 sees only itself: its outputs are its own values.
        assert_eq!(&batch[0..2], &[1.0, 0.0]);
    }
}
