//! Replay (beyond the paper, issue 8): the recovery of a policy measured as decoding would
//! see it.
//!
//! The paper's recovery (`profile`) scores a static keep set against every prompt row, so
//! early rows, whose whole context sits inside the local window, inflate it, and the frequent
//! set is a top-k of column sums that decoding never reproduces (a new token enters with only
//! its attention to itself). Replay instead treats the last `W` prompt rows as decode steps:
//! compress to the policy at `n = S - W`, then for each row `i` append position `i`, measure
//! the row's attention on the kept slots, add the row to the scores and evict with
//! [`keep_set`] at `n = i + 1`, exactly as [`crate::compress::evict_step`] does. Memory is the
//! `W x S` tail rows per query head, never `S x S`.

use super::policy::{keep_set, Params, Part, Policy};

/// The last rows of one KV head's prompt attention: per query head, rows `from..len`,
/// each stored over `len` keys (keys after the row are zero).
#[derive(Debug, Clone, Copy)]
pub struct Tail<'a> {
    /// `rows[g]` is query head `g`'s `[len - from, len]` rows, row-major.
    pub rows: &'a [Vec<f32>],
    pub from: usize,
    pub len: usize,
}

impl Tail<'_> {
    fn row(&self, g: usize, i: usize) -> &[f32] {
        let r = i - self.from;
        &self.rows[g][r * self.len..r * self.len + i + 1]
    }
}

/// Mean retained attention of `policy` over the tail rows replayed as decode steps, per
/// query head. `seeds[pos]` (`pos < tail.from`) are the group's column sums over the
/// profiled rows before the tail: the cumulative scores the cache would start from.
pub fn replay_recovery(
    policy: Policy,
    tail: Tail<'_>,
    seeds: &[f32],
    pos_classes: &[u8],
    params: &Params,
) -> Vec<f64> {
    let group = tail.rows.len();
    let steps = tail.len - tail.from;
    if policy.is_full() || steps == 0 {
        return vec![1.0; group];
    }
    let mut positions: Vec<u32> = (0..tail.from as u32).collect();
    let mut scores: Vec<f32> = seeds[..tail.from].to_vec();
    if tail.from > 0 {
        let keep = keep_set(policy, &positions, pos_classes, &scores, tail.from, params);
        retain(&mut positions, &mut scores, &keep);
    }
    let mut mass = vec![0.0f64; group];
    let mut step = Step {
        class: pos_classes[..tail.len]
            .iter()
            .map(|&c| policy.keeps_class(c))
            .collect(),
        ..Step::default()
    };
    let scored = policy.needs_scores();
    for i in tail.from..tail.len {
        positions.push(i as u32);
        scores.push(0.0);
        for (g, m) in mass.iter_mut().enumerate() {
            let row = tail.row(g, i);
            let mut sum = 0.0f64;
            if scored {
                for (s, &p) in scores.iter_mut().zip(&positions) {
                    let a = row[p as usize];
                    sum += a as f64;
                    *s += a;
                }
            } else {
                sum = positions.iter().map(|&p| row[p as usize] as f64).sum();
            }
            *m += sum;
        }
        step.keep(policy, &positions, &scores, i + 1, params);
        retain(&mut positions, &mut scores, &step.keep);
    }
    mass.iter().map(|m| m / steps as f64).collect()
}

/// [`keep_set`] with buffers reused across steps: the same set (class parts, the window,
/// and the top `frequent` slots by the same order, ties to the earlier slot), without the
/// per-part allocations, since replay runs it for every row and candidate.
#[derive(Default)]
struct Step {
    /// Per position: kept by the policy's class parts.
    class: Vec<bool>,
    keep: Vec<bool>,
    /// Frequent candidates: (rank key, slot).
    cand: Vec<(f32, u32)>,
}

impl Step {
    fn keep(
        &mut self,
        policy: Policy,
        positions: &[u32],
        scores: &[f32],
        n: usize,
        params: &Params,
    ) {
        let from = n - params.window(policy, n);
        let frequent = policy.contains(Part::Frequent);
        self.keep.clear();
        self.cand.clear();
        for (s, &p) in positions.iter().enumerate() {
            let class = self.class[p as usize];
            self.keep.push(class || p as usize >= from);
            if frequent && !class {
                let key = if params.causal {
                    scores[s] / (n - p as usize).max(1) as f32
                } else {
                    scores[s]
                };
                self.cand.push((key, s as u32));
            }
        }
        let k = params.frequent.of(n);
        if self.cand.len() > k {
            if k == 0 {
                return;
            }
            let by = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            self.cand.select_nth_unstable_by(k - 1, by);
            self.cand.truncate(k);
        }
        for &(_, s) in &self.cand {
            self.keep[s as usize] = true;
        }
    }
}

fn retain(positions: &mut Vec<u32>, scores: &mut Vec<f32>, keep: &[bool]) {
    let mut k = keep.iter();
    positions.retain(|_| *k.next().unwrap_or(&true));
    let mut k = keep.iter();
    scores.retain(|_| *k.next().unwrap_or(&true));
}
