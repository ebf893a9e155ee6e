//! One (layer, KV head) of a compressed cache: its policy and cumulative scores
//! ([`HeadState`]), and what happens to its buffers: compression to the policy's set right
//! after the policy is chosen, eviction after each decode step (Algorithm 2), and the spare
//! slots that keep both from reallocating per token.

use super::policy::{keep_set, Params, Policy};
use crate::kv_cache::{HeadCache, KvCache};

/// Spare slots of a compressing cache while decoding. Right after prefill every head is
/// shrunk to fit (allocated = kept). Before each decode step a full head grows by exactly
/// `DECODE_SPARE` slots; after it, a head with more than `2 * DECODE_SPARE` free slots is
/// trimmed to `DECODE_SPARE`. So while decoding, allocated bytes exceed kept entries x bytes
/// per entry by at most `2 * DECODE_SPARE` entries per head, instead of Vec doubling.
pub const DECODE_SPARE: usize = 8;

/// One (layer, KV head)'s policy and scores.
#[derive(Debug, Clone)]
pub struct HeadState {
    pub policy: Policy,
    /// Index of the policy in the candidate list (FastGen), for histograms.
    pub candidate: Option<usize>,
    /// Aggregated recovery of the policy on the prompt, when it was profiled.
    pub recovery: Option<f64>,
    /// FastGen: the recovery of the candidate just before the chosen one, which fell short
    /// of T (why a `full` head is full); None for the first candidate and the baselines.
    pub shortfall: Option<f64>,
    /// Cumulative attention of each slot, summed over the group's query heads; only for
    /// policies with `frequent` (empty otherwise).
    pub(super) scores: Vec<f32>, // [len]
}

impl HeadState {
    /// A head with `policy` and the cumulative scores of its slots (empty unless the policy
    /// needs them).
    pub fn new(policy: Policy, scores: Vec<f32>) -> HeadState {
        HeadState {
            policy,
            candidate: None,
            recovery: None,
            shortfall: None,
            scores,
        }
    }
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }
}

/// Right after prefill: keeps `policy`'s set of a head holding positions `0..n` and shrinks
/// its buffers to fit. `seeds[pos]` are the prompt column sums (read for `frequent`).
/// Returns the kept slots' seeds, the head's initial cumulative scores (empty unless the
/// policy needs scores).
pub fn compress_head(
    head: &mut HeadCache,
    policy: Policy,
    pos_classes: &[u8],
    seeds: &[f32],
    n: usize,
    params: &Params,
) -> Vec<f32> {
    let mut scores = Vec::new();
    if !policy.is_full() {
        let keep = keep_set(policy, head.positions(), pos_classes, seeds, n, params);
        if policy.needs_scores() {
            scores = (head.positions().iter().zip(&keep))
                .filter(|(_, &k)| k)
                .map(|(&p, _)| seeds[p as usize])
                .collect();
        }
        head.retain(&keep);
    }
    head.shrink_to_fit();
    scores
}

/// One head's decode step after attention: add this step's attention to the scores (the
/// new slot enters with its attention to itself), apply the policy, trim spare capacity.
/// `probs` is the group's `[group, len]` probabilities over the head's slots.
pub fn evict_step(
    head: &mut HeadCache,
    st: &mut HeadState,
    probs: Option<&[f32]>,
    pos_classes: &[u8],
    n: usize,
    params: &Params,
) {
    if !st.policy.is_full() {
        let needs_scores = st.policy.needs_scores();
        if needs_scores {
            let len = head.len();
            if st.scores.capacity() < len {
                st.scores
                    .reserve_exact(len + DECODE_SPARE - st.scores.len());
            }
            st.scores.resize(len, 0.0);
            if let Some(p) = probs {
                for g in p.chunks_exact(len) {
                    st.scores.iter_mut().zip(g).for_each(|(s, &x)| *s += x);
                }
            }
        }
        let keep = keep_set(
            st.policy,
            head.positions(),
            pos_classes,
            &st.scores,
            n,
            params,
        );
        if keep.iter().any(|&k| !k) {
            head.retain(&keep);
            if needs_scores {
                let mut it = keep.iter();
                st.scores.retain(|_| *it.next().unwrap_or(&true));
            }
        }
        if st.scores.capacity() > st.scores.len() + 2 * DECODE_SPARE {
            st.scores.shrink_to(st.scores.len() + DECODE_SPARE);
        }
    }
    if head.capacity() > head.len() + 2 * DECODE_SPARE {
        head.shrink_to(head.len() + DECODE_SPARE);
    }
}

/// Before a decode step: every head gets room for the new token in an exact step of
/// `DECODE_SPARE` (the forward pass's own `reserve` would double the buffers).
pub(super) fn make_room(kv: &mut KvCache) {
    for l in 0..kv.n_layers {
        for head in kv.layer_mut(l) {
            if head.capacity() == head.len() {
                head.reserve_exact(DECODE_SPARE);
            }
        }
    }
}
