//! SnapKV (Li et al. 2024) and Ada-KV on SnapKV (Feng et al. 2024): the strongest one-shot
//! eviction baselines, in the same per-head buffers as FastGen.
//!
//! After prefill, each KV head scores every prompt token by the attention it receives from
//! the observation window (the last W prompt rows), smooths the scores over neighbouring
//! positions, and keeps the window plus the best other tokens. Nothing is evicted while
//! decoding: the head's policy becomes `full`.
//!
//! - Scores come from the profiler's column sums over the window rows (its profiled rows
//!   start at `S - W` for these methods, [`KvSettings::profile_start`]): the same softmax rows
//!   the tail of replay holds, summed as they arrive, so no attention is computed twice and
//!   no `W x S` rows are held until compression.
//! - Grouped-query attention: a KV head's score of a token is the *sum* over its query heads
//!   (the same ranking as their mean, the group size being fixed), because one cached entry
//!   serves every query head of the group, so its worth is the attention the group gives it.
//! - Scores are divided by `rows x group`: each head's mean window-attention distribution,
//!   summing to 1 over all keys. Softmax rows make heads comparable (Ada-KV's condition).
//! - Pooling (`--snap-pool`, default `max`): max keeps every peak's score intact (a sink or
//!   a lone heavy token is never diluted by cold neighbours) and lifts the tokens around a
//!   peak to it, so a kept token brings its neighbours (words span several tokens). `avg`,
//!   the SnapKV reference's default, is the alternative (over the positions in range).

use super::head::HeadState;
use super::policy::{Budget, Policy};
use super::profile::{HeadProfile, Profiler};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use std::fmt;
use std::str::FromStr;

/// How window scores are smoothed over neighbouring positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pool {
    /// The largest score within `kernel / 2` positions either side.
    #[default]
    Max,
    /// The mean of the scores within `kernel / 2` positions either side (in range).
    Avg,
}

impl FromStr for Pool {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pool> {
        match s {
            "max" => Ok(Pool::Max),
            "avg" => Ok(Pool::Avg),
            _ => Err(Error::InvalidSetting(format!(
                "--snap-pool '{s}': expected max or avg"
            ))),
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pool::Max => "max",
            Pool::Avg => "avg",
        })
    }
}

/// The settings of `--kv snapkv` and `--kv adakv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapSettings {
    /// Observation window W: the last W prompt rows score the tokens, and are kept.
    pub window: usize,
    /// Pooling kernel, odd (1: no pooling).
    pub kernel: usize,
    /// Kept share of the prompt per head (window included), in (0, 1]: each head keeps
    /// `ceil(budget * S)` prompt tokens (Ada-KV: the layer keeps that many per head).
    pub budget: f64,
    pub pool: Pool,
}

impl Default for SnapSettings {
    fn default() -> SnapSettings {
        SnapSettings {
            window: 32,
            kernel: 7,
            budget: 0.5,
            pool: Pool::Max,
        }
    }
}

impl SnapSettings {
    pub fn validate(&self) -> Result<()> {
        if self.window == 0 {
            return Err(Error::InvalidSetting(
                "--snap-window must be at least 1".into(),
            ));
        }
        if self.kernel.is_multiple_of(2) {
            return Err(Error::InvalidSetting(format!(
                "--snap-kernel must be odd (1: no pooling), got {}",
                self.kernel
            )));
        }
        if !(self.budget > 0.0 && self.budget <= 1.0) {
            return Err(Error::InvalidSetting(format!(
                "--snap-budget must be in (0, 1], got {}",
                self.budget
            )));
        }
        Ok(())
    }

    /// The window of a prompt of `s` tokens.
    pub fn window_len(&self, s: usize) -> usize {
        self.window.min(s)
    }

    /// Prompt tokens one head keeps in all: `ceil(budget * s)`, never less than the window
    /// (which is always kept).
    pub fn kept_per_head(&self, s: usize) -> usize {
        Budget::Ratio(self.budget).of(s).max(self.window_len(s))
    }

    /// A short description, e.g. `50% W=32 k=7 max`.
    pub fn label(&self) -> String {
        format!(
            "{}% W={} k={} {}",
            self.budget * 100.0,
            self.window,
            self.kernel,
            self.pool
        )
    }
}

/// A head's mean window-attention distribution over the prompt's keys: the group's column
/// sums over the profiled rows (the window), divided by rows x group.
pub fn window_scores(profile: &HeadProfile) -> Vec<f64> {
    let n = (profile.rows() * profile.group()).max(1) as f64;
    profile
        .group_colsum()
        .into_iter()
        .map(|c| c as f64 / n)
        .collect()
}

/// Smooths `scores` over `kernel` neighbouring positions (`kernel / 2` each side, cut at the
/// ends). `kernel` is odd; 1 returns the scores.
pub fn pool(scores: &[f64], kernel: usize, how: Pool) -> Vec<f64> {
    let r = kernel / 2;
    (0..scores.len())
        .map(|j| {
            let span = &scores[j.saturating_sub(r)..(j + r + 1).min(scores.len())];
            match how {
                Pool::Max => span.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Pool::Avg => span.iter().sum::<f64>() / span.len() as f64,
            }
        })
        .collect()
}

/// What one KV head keeps of a prompt of `keep.len()` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapChoice {
    pub keep: Vec<bool>,
    /// Share of the window rows' attention that falls on kept tokens (group mean).
    pub retained: f64,
}

/// The choices of one layer's KV heads, from their profiles over the window rows. SnapKV
/// (`ada` false): each head keeps its window and the top `kept_per_head - W` other tokens by
/// pooled score. Ada-KV: every head keeps its window, and one top-k over all heads' pooled
/// scores fills the layer's remaining `heads x (kept_per_head - W)` slots. Ties go to the
/// higher raw score (a max-pooled plateau keeps its peak first), then the earlier head and
/// position.
pub fn choose_layer(profiles: &[HeadProfile], snap: &SnapSettings, ada: bool) -> Vec<SnapChoice> {
    let Some(first) = profiles.first() else {
        return Vec::new();
    };
    let s = first.seq_len();
    let w = snap.window_len(s);
    let prefix = s - w;
    let extra = snap.kept_per_head(s) - w;
    let scores: Vec<Vec<f64>> = profiles.iter().map(window_scores).collect();
    let pooled: Vec<Vec<f64>> = scores
        .iter()
        .map(|sc| pool(&sc[..prefix], snap.kernel, snap.pool))
        .collect();
    let mut keep: Vec<Vec<bool>> = profiles
        .iter()
        .map(|_| (0..s).map(|j| j >= prefix).collect())
        .collect();
    if ada {
        // Candidate i is head i / prefix, position i % prefix.
        let at = |v: &[Vec<f64>], i: usize| v[i / prefix][i % prefix];
        let all = profiles.len() * prefix;
        let best = best(
            all,
            |i| at(&pooled, i),
            |i| at(&scores, i),
            profiles.len() * extra,
        );
        for i in best {
            keep[i / prefix][i % prefix] = true;
        }
    } else {
        for ((k, p), sc) in keep.iter_mut().zip(&pooled).zip(&scores) {
            for j in best(prefix, |j| p[j], |j| sc[j], extra) {
                k[j] = true;
            }
        }
    }
    keep.into_iter()
        .zip(&scores)
        .map(|(keep, sc)| SnapChoice {
            retained: sc
                .iter()
                .zip(&keep)
                .filter(|(_, &k)| k)
                .map(|(a, _)| a)
                .sum(),
            keep,
        })
        .collect()
}

/// The `k` best of candidates `0..n` by `pooled`, then `raw`, then the lower index.
fn best(
    n: usize,
    pooled: impl Fn(usize) -> f64,
    raw: impl Fn(usize) -> f64,
    k: usize,
) -> Vec<usize> {
    let mut c: Vec<usize> = (0..n).collect();
    if k < n {
        let by = |a: &usize, b: &usize| {
            (pooled(*b).total_cmp(&pooled(*a)))
                .then(raw(*b).total_cmp(&raw(*a)))
                .then(a.cmp(b))
        };
        if k > 0 {
            c.select_nth_unstable_by(k - 1, by);
        }
        c.truncate(k);
    }
    c
}

/// Compresses every head of `kv` (holding the whole prompt) to its choice and shrinks its
/// buffers to fit; returns the heads' states, all `full` from now on (no eviction while
/// decoding) with their retained window attention as recovery.
pub fn compress(
    kv: &mut KvCache,
    profiler: &Profiler,
    snap: &SnapSettings,
    ada: bool,
) -> Vec<HeadState> {
    let n_kv = kv.n_kv_heads;
    let mut states = Vec::with_capacity(profiler.heads.len());
    for (l, profiles) in profiler.heads.chunks(n_kv).enumerate() {
        if kv.window(l).is_some() {
            // A sliding-window layer keeps its window (the model's rule).
            states.extend((0..n_kv).map(|_| HeadState::new(Policy::FULL, Vec::new())));
            continue;
        }
        for (h, c) in choose_layer(profiles, snap, ada).into_iter().enumerate() {
            let head = kv.head_mut(l, h);
            // Called right after prefill: the head holds exactly the profiled prompt.
            debug_assert_eq!(head.len(), c.keep.len());
            if head.len() == c.keep.len() {
                head.retain(&c.keep);
            }
            head.shrink_to_fit();
            let mut st = HeadState::new(Policy::FULL, Vec::new());
            st.recovery = Some(c.retained);
            states.push(st);
        }
    }
    states
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{KvKind, KvSettings};

    #[test]
    fn settings_parse_validate_and_name_themselves() {
        let s = KvSettings::preset("adakv").unwrap();
        assert_eq!(s.kind, KvKind::AdaKv);
        assert_eq!(s.label(), "adakv 50% W=32 k=7 max");
        assert!(s.needs_profile() && s.is_snap());
        // Decoding never evicts; prefill profiles only the window.
        assert_eq!(s.fixed_policy(), Some(Policy::FULL));
        assert_eq!((s.profile_start(1000), s.profile_start(20)), (968, 0));
        assert_eq!(KvSettings::default().profile_start(1000), 0);
        assert_eq!("avg".parse::<Pool>().unwrap(), Pool::Avg);
        let e = "mean".parse::<Pool>().unwrap_err().to_string();
        assert!(e.contains("--snap-pool"), "{e}");
        let bad = [
            (
                SnapSettings {
                    window: 0,
                    ..SnapSettings::default()
                },
                "--snap-window",
            ),
            (
                SnapSettings {
                    kernel: 4,
                    ..SnapSettings::default()
                },
                "--snap-kernel",
            ),
            (
                SnapSettings {
                    kernel: 0,
                    ..SnapSettings::default()
                },
                "--snap-kernel",
            ),
            (
                SnapSettings {
                    budget: 0.0,
                    ..SnapSettings::default()
                },
                "--snap-budget",
            ),
            (
                SnapSettings {
                    budget: 1.5,
                    ..SnapSettings::default()
                },
                "--snap-budget",
            ),
            (
                SnapSettings {
                    budget: f64::NAN,
                    ..SnapSettings::default()
                },
                "--snap-budget",
            ),
        ];
        for (snap, name) in bad {
            let e = KvSettings::with_kind(KvKind::SnapKv)
                .with(|s| s.snap = snap)
                .validate()
                .unwrap_err();
            assert!(matches!(e, Error::InvalidSetting(_)));
            assert!(e.to_string().contains(name), "{e} should name {name}");
        }
    }

    #[test]
    fn budgets_are_ceilings_and_never_below_the_window() {
        let s = SnapSettings::default();
        assert_eq!(s.kept_per_head(1000), 500);
        assert_eq!(s.kept_per_head(1001), 501);
        assert_eq!(s.kept_per_head(40), 32);
        assert_eq!(s.kept_per_head(10), 10);
        let all = SnapSettings { budget: 1.0, ..s };
        assert_eq!(all.kept_per_head(777), 777);
    }
}
