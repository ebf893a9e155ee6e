//! Profiling (FASTGEN.md 3): the recovery of every candidate policy for every KV head,
//! from the prompt's attention, without an S x S map.
//!
//! For one query head with causal prompt attention `A` (rows `i`, keys `j`) and a policy
//! that keeps a column set `K` (class parts and the frequent set) plus, for row `i`, the
//! window `(i - w, i]`, the retained mass summed over profiled rows is
//!
//! ```text
//!   sum_i sum_j A[i,j] [j in K or j in window(i)]
//!     = sum_j W[j] + sum_{j in K} (C[j] - W[j])          (= sum_{j in K} C[j] without a window)
//! ```
//!
//! with `C[j] = sum_i A[i,j]` (column sums) and `W[j] = sum_i A[i,j] [j in window(i)]`
//! (column sums inside each row's window). Both are accumulated row by row, so one pass over
//! the rows, with memory `O(S)` per query head and `O(S)` per row in flight, gives the exact
//! recovery of every candidate: no second pass, whatever the frequent set turns out to be.
//! Recovery is that sum divided by the number of profiled rows (no renormalisation).

use super::choice::{choice, recoveries_until};
use super::policy::{keep_set, Params, Policy};
use super::replay::{replay_recovery, Tail};
use crate::error::{Error, Result};
use crate::kv_cache::HeadCache;
use crate::model::ops::softmax_fast;
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// How the recoveries of a group's query heads make the KV head's recovery (FASTGEN.md 5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GqaAgg {
    /// The worst query head: keeps the paper's per-head guarantee.
    #[default]
    Min,
    Mean,
}

impl FromStr for GqaAgg {
    type Err = Error;
    fn from_str(s: &str) -> Result<GqaAgg> {
        match s {
            "min" => Ok(GqaAgg::Min),
            "mean" => Ok(GqaAgg::Mean),
            _ => Err(Error::InvalidSetting(format!(
                "--gqa-agg '{s}': expected min or mean"
            ))),
        }
    }
}

impl fmt::Display for GqaAgg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GqaAgg::Min => "min",
            GqaAgg::Mean => "mean",
        })
    }
}

/// Which prompt rows are profiled. Everything profiling derives comes from these rows only:
/// the recoveries, the column sums that choose the frequent set, and the score seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileRows {
    /// Every prompt row (the paper).
    #[default]
    All,
    /// Only the last `W` rows: early rows are trivially covered by the window.
    Last(usize),
}

impl ProfileRows {
    /// First profiled position of a prompt of `s` tokens.
    pub fn start(self, s: usize) -> usize {
        match self {
            ProfileRows::All => 0,
            ProfileRows::Last(w) => s.saturating_sub(w),
        }
    }
}

impl FromStr for ProfileRows {
    type Err = Error;
    fn from_str(s: &str) -> Result<ProfileRows> {
        let bad = || {
            Error::InvalidSetting(format!(
                "--profile-rows '{s}': expected all or last:W with W >= 1"
            ))
        };
        if s == "all" {
            return Ok(ProfileRows::All);
        }
        let w: usize = s
            .strip_prefix("last:")
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        if w == 0 {
            return Err(bad());
        }
        Ok(ProfileRows::Last(w))
    }
}

impl fmt::Display for ProfileRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileRows::All => f.write_str("all"),
            ProfileRows::Last(w) => write!(f, "last:{w}"),
        }
    }
}

/// Column statistics of one query head.
#[derive(Debug, Clone)]
struct QueryStats {
    colsum: Vec<f64>,    // [S] C[j]
    wcol: Vec<Vec<f64>>, // [widths][S] W[j] for each window width
    /// Replay: rows `tail_from..S` of the attention map, `[S - tail_from, S]` (empty until
    /// the first tail row arrives, and again once replayed).
    tail: Vec<f32>,
}

/// The prompt attention statistics of one KV head: per query head of its group, column
/// sums and in-window column sums over the profiled rows.
#[derive(Debug, Clone)]
pub struct HeadProfile {
    len: usize,
    params: Params,
    /// Window widths for which in-window sums are kept: every `Params::window` a policy
    /// can have at `n = len` (the local window and the grace window).
    widths: Vec<usize>,
    queries: Vec<QueryStats>, // [group]
    rows: usize,
    /// First row kept for replay (`len`: no replay).
    tail_from: usize,
    /// Replayed recoveries of the first candidates, per query head (`replay`).
    replayed: Vec<Vec<f64>>,
}

impl HeadProfile {
    /// Empty statistics for a prompt of `len` tokens and `group` query heads, for policies
    /// with the parameters `params`.
    pub fn new(group: usize, len: usize, params: &Params) -> HeadProfile {
        let widths = params.windows(len);
        let q = QueryStats {
            colsum: vec![0.0; len],
            wcol: vec![vec![0.0; len]; widths.len()],
            tail: Vec::new(),
        };
        HeadProfile {
            len,
            params: *params,
            widths,
            queries: vec![q; group],
            rows: 0,
            tail_from: len,
            replayed: Vec::new(),
        }
    }

    /// Keeps rows `from..len` for replay.
    fn keep_tail(mut self, from: usize) -> HeadProfile {
        self.tail_from = from.min(self.len);
        self
    }

    /// Statistics of whole attention maps `maps[query head][row][key]` (rows in `rows`
    /// only): for tests and small examples. Each row is a softmax over keys `0..=row`.
    pub fn from_maps(
        maps: &[Vec<Vec<f32>>],
        rows: std::ops::Range<usize>,
        params: &Params,
    ) -> HeadProfile {
        HeadProfile::from_maps_replay(maps, rows, params, 0)
    }

    /// [`HeadProfile::from_maps`], keeping the last `replay` profiled rows for
    /// [`HeadProfile::replay`].
    pub fn from_maps_replay(
        maps: &[Vec<Vec<f32>>],
        rows: std::ops::Range<usize>,
        params: &Params,
        replay: usize,
    ) -> HeadProfile {
        let len = maps[0].len();
        let from = len.saturating_sub(replay).max(rows.start);
        let mut p = HeadProfile::new(maps.len(), len, params).keep_tail(from);
        for i in rows {
            for (h, map) in maps.iter().enumerate() {
                p.add_row(h, i, &map[i][..=i]);
            }
            p.rows += 1;
        }
        p
    }

    /// Adds one row of query head `h` at position `i`; `probs[j]` is `A[i, j]`, `j <= i`.
    /// Call [`HeadProfile::count_rows`] once per row for the whole group.
    fn add_row(&mut self, h: usize, i: usize, probs: &[f32]) {
        let widths = &self.widths;
        let (len, from) = (self.len, self.tail_from);
        let q = &mut self.queries[h];
        add_row_to(q, widths, i, probs);
        add_tail_row(q, len, from, i, probs);
    }

    pub fn count_rows(&mut self, n: usize) {
        self.rows += n;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn group(&self) -> usize {
        self.queries.len()
    }

    /// The prompt length the statistics cover (keys `0..seq_len`).
    pub fn seq_len(&self) -> usize {
        self.len
    }

    /// Column sums summed over the group's query heads: the frequent scores and the seeds
    /// of the cumulative scores (FASTGEN.md 3, 5.3).
    pub fn group_colsum(&self) -> Vec<f32> {
        (0..self.len)
            .map(|j| self.queries.iter().map(|q| q.colsum[j]).sum::<f64>() as f32)
            .collect()
    }

    /// Replays the kept tail rows as decoding (`replay`) for the candidates in order, until
    /// one's aggregated recovery reaches `threshold` (or for all of them with `all`, as the
    /// budget mode needs); [`choose_policy`] then reads these recoveries. Frees the tail.
    pub fn replay(
        &mut self,
        pos_classes: &[u8],
        candidates: &[Policy],
        threshold: f64,
        agg: GqaAgg,
        all: bool,
    ) {
        if self.tail_from >= self.len || self.queries.iter().any(|q| q.tail.is_empty()) {
            return;
        }
        // The scores the cache would hold at n = tail_from: column sums minus the tail rows.
        let from = self.tail_from;
        let mut seeds = vec![0.0f64; from];
        for q in &self.queries {
            for (j, s) in seeds.iter_mut().enumerate() {
                *s += q.colsum[j];
            }
            for row in q.tail.chunks_exact(self.len) {
                for (s, &a) in seeds.iter_mut().zip(row) {
                    *s -= a as f64;
                }
            }
        }
        let seeds: Vec<f32> = seeds.into_iter().map(|s| s.max(0.0) as f32).collect();
        let rows: Vec<Vec<f32>> = self
            .queries
            .iter_mut()
            .map(|q| std::mem::take(&mut q.tail))
            .collect();
        let tail = Tail {
            rows: &rows,
            from,
            len: self.len,
        };
        let mut replayed = Vec::new();
        recoveries_until(candidates.len(), threshold, all, |i| {
            let r = replay_recovery(candidates[i], tail, &seeds, pos_classes, &self.params);
            let a = aggregate(&r, agg);
            replayed.push(r);
            a
        });
        self.replayed = replayed;
    }

    /// Recovery of candidate `index` (`policy`): replayed when [`HeadProfile::replay`]
    /// measured it, else the paper's.
    pub fn candidate_recovery(&self, index: usize, policy: Policy, pos_classes: &[u8]) -> Vec<f64> {
        match self.replayed.get(index) {
            Some(r) => r.clone(),
            None => self.recovery(policy, pos_classes),
        }
    }

    /// Recovery of `policy` for each query head of the group.
    ///
    /// The policy's column set is taken at `n = S` over positions `0..S` (as right after
    /// prefill); its recent window (`Params::window`) applies to each row.
    pub fn recovery(&self, policy: Policy, pos_classes: &[u8]) -> Vec<f64> {
        let params = &self.params;
        let s = self.len;
        if policy.is_full() || self.rows == 0 {
            return vec![1.0; self.group()];
        }
        let seeds = self.group_colsum();
        let positions: Vec<u32> = (0..s as u32).collect();
        // The column set: every part but the row-dependent window.
        let no_window = Params {
            grace: 0,
            grace_all: 0,
            ..*params
        };
        let cols = keep_set(
            policy.without(super::policy::Part::Local),
            &positions,
            pos_classes,
            &seeds,
            s,
            &no_window,
        );
        let w = params.window(policy, s);
        // Tracked by construction: `w` is one of the widths of `new`.
        let wi = self.widths.iter().position(|&x| x == w);
        self.queries
            .iter()
            .map(|q| {
                let total = match wi {
                    None => (0..s)
                        .filter(|&j| cols[j])
                        .map(|j| q.colsum[j])
                        .sum::<f64>(),
                    Some(wi) => {
                        let wc = &q.wcol[wi];
                        wc.iter().sum::<f64>()
                            + (0..s)
                                .filter(|&j| cols[j])
                                .map(|j| q.colsum[j] - wc[j])
                                .sum::<f64>()
                    }
                };
                total / self.rows as f64
            })
            .collect()
    }
}

#[inline(always)]
fn add_row_to(q: &mut QueryStats, widths: &[usize], i: usize, probs: &[f32]) {
    let colsum = &mut q.colsum[..probs.len()];
    for j in 0..probs.len() {
        colsum[j] += probs[j] as f64;
    }
    for (wc, &w) in q.wcol.iter_mut().zip(widths) {
        // Window (i - w, i] = keys i + 1 - w ..= i.
        let from = (i + 1).saturating_sub(w);
        let (wc, p) = (&mut wc[from..=i], &probs[from..=i]);
        for j in 0..p.len() {
            wc[j] += p[j] as f64;
        }
    }
}

/// Replay: copies row `i` into the tail when it is one of the last rows.
#[inline(always)]
fn add_tail_row(q: &mut QueryStats, len: usize, from: usize, i: usize, probs: &[f32]) {
    if i < from {
        return;
    }
    if q.tail.is_empty() {
        q.tail = vec![0.0; (len - from) * len];
    }
    let at = (i - from) * len;
    q.tail[at..at + probs.len()].copy_from_slice(probs);
}

/// Aggregates per-query-head recoveries into one.
pub fn aggregate(rec: &[f64], agg: GqaAgg) -> f64 {
    match agg {
        GqaAgg::Min => rec.iter().copied().fold(f64::INFINITY, f64::min),
        GqaAgg::Mean => rec.iter().sum::<f64>() / rec.len().max(1) as f64,
    }
}

/// A head's choice: the first candidate whose recovery reaches the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub index: usize,
    pub policy: Policy,
    /// Aggregated recovery of the chosen policy.
    pub recovery: f64,
    /// Aggregated recovery of every candidate up to and including the chosen one.
    pub tried: Vec<f64>,
}

/// FASTGEN.md 3: the first candidate with aggregated recovery `>= threshold`. If none
/// reaches it (a list not ending in `full`), the last candidate.
pub fn choose_policy(
    profile: &HeadProfile,
    pos_classes: &[u8],
    candidates: &[Policy],
    threshold: f64,
    agg: GqaAgg,
) -> Choice {
    if candidates.is_empty() {
        return Choice {
            index: 0,
            policy: Policy::FULL,
            recovery: 1.0,
            tried: Vec::new(),
        };
    }
    let tried = recoveries_until(candidates.len(), threshold, false, |i| {
        aggregate(
            &profile.candidate_recovery(i, candidates[i], pos_classes),
            agg,
        )
    });
    let index = choice(&tried, threshold);
    Choice {
        index,
        policy: candidates[index],
        recovery: tried[index],
        tried,
    }
}

/// What replay needs to choose, layer by layer, as soon as a layer's last profiled row is
/// observed (so only the layers in flight hold their tail rows).
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// Replayed rows W.
    pub rows: usize,
    pub candidates: Vec<Policy>,
    pub threshold: f64,
    pub agg: GqaAgg,
    /// Replay every candidate (the budget mode chooses T afterwards).
    pub all: bool,
}

/// Accumulates the statistics of every (layer, KV head) over the rows `start..len` of a
/// sequence of `len` tokens: the prompt's rows in prefill and, when compression is deferred
/// until the sequence is `len` long, the decoded rows too, one at a time.
#[derive(Debug, Clone)]
pub struct Profiler {
    pub heads: Vec<HeadProfile>, // [n_layers * n_kv_heads]
    /// The sequence length whose rows are profiled.
    len: usize,
    n_kv_heads: usize,
    head_dim: usize,
    /// First profiled position.
    start: usize,
    replay: Option<ReplayPlan>,
}

impl Profiler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        group: usize,
        head_dim: usize,
        prompt_len: usize,
        start: usize,
        params: &Params,
        replay: Option<ReplayPlan>,
    ) -> Profiler {
        let from = match &replay {
            Some(r) => prompt_len.saturating_sub(r.rows).max(start),
            None => prompt_len,
        };
        let head = HeadProfile::new(group, prompt_len, params).keep_tail(from);
        Profiler {
            heads: vec![head; n_layers * n_kv_heads],
            len: prompt_len,
            n_kv_heads,
            head_dim,
            start,
            replay,
        }
    }

    /// The sequence length whose rows are profiled (where compression happens).
    pub fn seq_len(&self) -> usize {
        self.len
    }

    /// One layer's batch of rows: `q` `[n, n_heads * head_dim]` after RoPE at `positions`,
    /// over the layer's full-cache `heads`. Recomputes each profiled row's softmax (the same
    /// dot and softmax as attention) one row at a time per query head. `pos_classes` covers
    /// at least `0..=positions[last]` (replay reads it at the last row).
    pub fn observe(
        &mut self,
        layer: usize,
        q: &[f32],
        positions: &[u32],
        heads: &[HeadCache],
        pos_classes: &[u8],
    ) {
        let hd = self.head_dim;
        let start = self.start;
        let rows: Vec<usize> = (0..positions.len())
            .filter(|&r| positions[r] as usize >= start)
            .collect();
        let Some(&last) = rows.last() else {
            return;
        };
        let n_kv = self.n_kv_heads;
        let replay = self.replay.as_ref();
        let profiles = &mut self.heads[layer * n_kv..(layer + 1) * n_kv];
        let group = profiles[0].group();
        let q_dim = n_kv * group * hd;
        profiles
            .par_iter_mut()
            .zip(heads.par_iter())
            .enumerate()
            .for_each(|(h, (prof, head))| {
                let mut kbuf = Vec::new();
                let n_max = head.visible(positions[last]);
                let keys = head.keys_f32(0, n_max, &mut kbuf);
                let n_pad = n_max.div_ceil(BLOCK) * BLOCK;
                // [n_pad / BLOCK, hd, BLOCK]: each block of keys transposed, zero padded.
                let mut keys_t = vec![0.0f32; hd * n_pad];
                for (j, k) in keys.chunks_exact(hd).enumerate() {
                    let (b, t) = (j / BLOCK, j % BLOCK);
                    for (d, &v) in k.iter().enumerate() {
                        keys_t[(b * hd + d) * BLOCK + t] = v;
                    }
                }
                let keys_t = &keys_t;
                // A head compressed earlier (a conversation's next turn) holds only some
                // positions: each row's probabilities over its slots are scattered to their
                // positions, so evicted positions simply get no attention.
                let slot_pos = &head.positions()[..n_max];
                let contiguous = slot_pos.last().is_none_or(|&p| p as usize + 1 == n_max);
                let cols = (!contiguous).then_some(slot_pos);
                let widths = &prof.widths;
                let (len, tail_from) = (prof.len, prof.tail_from);
                let rows = &rows;
                prof.queries
                    .par_iter_mut()
                    .enumerate()
                    .for_each(|(g, stats)| {
                        let task = QueryTask {
                            keys_t,
                            n_keys: n_pad,
                            q,
                            q_dim,
                            offset: (h * group + g) * hd,
                            hd,
                            rows,
                            positions,
                            cols,
                            len,
                            tail_from,
                        };
                        task.run(stats, widths);
                    });
                prof.count_rows(rows.len());
                if let Some(r) = replay.filter(|_| positions[last] as usize + 1 == len) {
                    prof.replay(pos_classes, &r.candidates, r.threshold, r.agg, r.all);
                }
            });
    }

    /// One decoded row at `pos` of one layer, from attention's own probabilities:
    /// `probs[h]` is KV head `h`'s `[group, pos + 1]` (while profiling, the cache is full,
    /// so slot `j` is position `j`). Nothing is recomputed: a deferred cache's decode step
    /// costs only the statistics' O(pos) updates.
    pub fn observe_row(
        &mut self,
        layer: usize,
        pos: usize,
        probs: &[Vec<f32>],
        pos_classes: &[u8],
    ) {
        if pos < self.start {
            return;
        }
        let n_kv = self.n_kv_heads;
        let profiles = &mut self.heads[layer * n_kv..(layer + 1) * n_kv];
        for (prof, p) in profiles.iter_mut().zip(probs) {
            for (g, row) in p.chunks_exact(pos + 1).enumerate() {
                prof.add_row(g, pos, row);
            }
            prof.count_rows(1);
        }
        if let Some(r) = self.replay.as_ref().filter(|_| pos + 1 == self.len) {
            profiles.par_iter_mut().for_each(|prof| {
                prof.replay(pos_classes, &r.candidates, r.threshold, r.agg, r.all)
            });
        }
    }
}

/// One query head's rows of one batch, over its KV head's keys `[n, hd]` (f32).
struct QueryTask<'a> {
    /// The KV head's keys in blocks of `BLOCK`, each transposed:
    /// `[n_keys / BLOCK, hd, BLOCK]`.
    keys_t: &'a [f32],
    n_keys: usize,
    q: &'a [f32], // [n_rows, q_dim]
    q_dim: usize,
    /// Start of this query head in a row of `q`.
    offset: usize,
    hd: usize,
    rows: &'a [usize],
    positions: &'a [u32],
    /// The position of each key slot, when the slots are not simply positions `0..n`.
    cols: Option<&'a [u32]>,
    /// The prompt length and the first row kept for replay.
    len: usize,
    tail_from: usize,
}

impl QueryTask<'_> {
    /// Computes each row's softmax over the keys at positions `<= pos` and adds it to
    /// `stats`.
    fn run(&self, stats: &mut QueryStats, widths: &[usize]) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx2() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.run_avx2(stats, widths) };
        }
        self.body(stats, widths);
    }

    /// The same loop compiled for AVX2 (the crate is built for baseline x86-64).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, stats: &mut QueryStats, widths: &[usize]) {
        self.body(stats, widths);
    }

    #[inline(always)]
    fn body(&self, stats: &mut QueryStats, widths: &[usize]) {
        let hd = self.hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut row: Vec<f32> = Vec::with_capacity(self.n_keys);
        let mut by_pos: Vec<f32> = Vec::new();
        for &r in self.rows {
            // Row `i` sees the slots at positions <= i: slots 0..=i of a full head.
            let i = self.positions[r] as usize;
            let seen = match self.cols {
                None => i + 1,
                Some(c) => c.partition_point(|&p| p as usize <= i),
            };
            let start = r * self.q_dim + self.offset;
            let qv = &self.q[start..start + hd];
            // Logits as `sum_d q[d] * keys_t[d, ..]`, BLOCK keys at a time held in
            // registers: contiguous multiply-adds, no per-key horizontal sums. The last block
            // may run past the last seen key (into later keys or zero padding); those are
            // dropped.
            let blocks = seen.div_ceil(BLOCK);
            row.clear();
            row.resize(blocks * BLOCK, 0.0);
            for (b, out) in row.chunks_exact_mut(BLOCK).enumerate() {
                let mut acc = [0.0f32; BLOCK];
                let kb = &self.keys_t[b * BLOCK * hd..(b + 1) * BLOCK * hd];
                for (k, &qd) in kb.chunks_exact(BLOCK).zip(qv) {
                    for t in 0..BLOCK {
                        acc[t] += qd * k[t];
                    }
                }
                for t in 0..BLOCK {
                    out[t] = acc[t] * scale;
                }
            }
            row.truncate(seen);
            softmax_fast(&mut row);
            let probs = match self.cols {
                None => &row,
                Some(c) => {
                    by_pos.clear();
                    by_pos.resize(i + 1, 0.0);
                    for (&p, &x) in c.iter().zip(&row) {
                        by_pos[p as usize] = x;
                    }
                    &by_pos
                }
            };
            add_row_to(stats, widths, i, probs);
            add_tail_row(stats, self.len, self.tail_from, i, probs);
        }
    }
}

/// Keys per register block of the logits kernel.
const BLOCK: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse() {
        assert_eq!("min".parse::<GqaAgg>().unwrap(), GqaAgg::Min);
        assert_eq!("mean".parse::<GqaAgg>().unwrap(), GqaAgg::Mean);
        assert!("max"
            .parse::<GqaAgg>()
            .unwrap_err()
            .to_string()
            .contains("--gqa-agg"));
        assert_eq!("all".parse::<ProfileRows>().unwrap(), ProfileRows::All);
        assert_eq!(
            "last:64".parse::<ProfileRows>().unwrap(),
            ProfileRows::Last(64)
        );
        for bad in ["last:0", "last:", "first:3", "64"] {
            let e = bad.parse::<ProfileRows>().unwrap_err().to_string();
            assert!(e.contains("--profile-rows"), "{e}");
        }
        assert_eq!(ProfileRows::Last(3).start(10), 7);
        assert_eq!(ProfileRows::Last(30).start(10), 0);
    }
}
