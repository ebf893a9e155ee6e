//! The portable reference: one KV head's group at a time, keys converted to f32 first. The
//! fast paths are tested against it, and it takes the shapes they do not.

use super::*;

/// Reference attention of the queries of one KV head's group for one query position.
///
/// `q`: `[group, head_dim]`; `out`: `[group, head_dim]`; `probs`: `[group, visible]` on return,
/// the softmax of each query head over the visible slots. `keys`/`values` are the head's
/// visible rows as f32.
pub(super) fn attend_group(
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
pub(super) fn attend_one_reference(
    heads: &[HeadCache],
    q: &[f32],
    pos: u32,
    window: Option<u32>,
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
        let seen = head.view().seen_by(pos, window);
        let n = seen.len();
        let keys = head.keys_f32(seen.start, seen.end, &mut ks);
        let values = head.values_f32(seen.start, seen.end, &mut vs);
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
