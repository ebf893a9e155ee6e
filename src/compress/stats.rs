//! Accounting (FASTGEN.md 6): pruned ratio, bytes, policies, recovery, profiling time.

use super::head::HeadState;
use super::settings::{KvKind, KvSettings};
use crate::kv_cache::KvCache;
use serde_json::{json, Value};

/// Bytes of the heads' cumulative-score state.
pub fn score_bytes(heads: &[HeadState]) -> usize {
    (heads.iter())
        .map(|h| h.scores.capacity() * std::mem::size_of::<f32>())
        .sum()
}

/// Counters a cache keeps as it runs.
#[derive(Debug, Clone, Default)]
pub struct KvStats {
    /// Profiling, choosing and compressing: inside `prefill_ms`, plus the decode steps'
    /// profiling when compression is deferred past the prompt.
    pub profile_ms: f64,
    /// The whole prefill, profiling included.
    pub prefill_ms: f64,
    /// Sum over decode steps of the pruned ratio after the step's eviction.
    pub pruned_sum: f64,
    pub decode_steps: usize,
    /// FastGen: the threshold T the heads were chosen with (picked by the budget mode).
    pub recovery_used: Option<f64>,
    /// Budget mode: whether the chosen policies fit the budget (false: even T = 0 did not).
    pub budget_met: Option<bool>,
    /// The sequence length at which the policies were chosen and applied (None: not yet).
    pub compressed_at: Option<usize>,
}

/// A snapshot of a cache's accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct KvReport {
    /// The method, e.g. `fastgen`, `window`, `fixed:special+punct`.
    pub policy: String,
    /// FastGen's threshold T (None for the baselines); in budget mode, the T it picked.
    pub recovery: Option<f64>,
    /// The settings in short, e.g. `fastgen T=0.95 replay:128 grace:8 hh:causal`.
    pub label: String,
    /// Budget mode: the budget, and whether the chosen policies fit it on the prompt.
    pub budget: Option<String>,
    pub budget_met: Option<bool>,
    /// The sequence length at which the heads were compressed; None while compression is
    /// deferred (and for `full`).
    pub compressed_at: Option<usize>,
    /// FastGen's deferral length (`KvSettings::compress_from`; 0 for the other methods).
    pub compress_from: usize,
    pub seq_len: usize,
    pub kept_entries: usize,
    /// `1 - kept / (layers * kv_heads * n)` now.
    pub pruned_ratio: f64,
    /// The pruned ratio averaged over decode steps (the current one if none).
    pub pruned_ratio_mean: f64,
    /// Bytes a full cache holds for the same tokens.
    pub kv_bytes_full: usize,
    /// Kept entries x bytes per entry.
    pub kv_bytes_kept: usize,
    /// Bytes the key and value buffers have allocated.
    pub kv_bytes_allocated: usize,
    /// Bytes of the cumulative-score state.
    pub score_bytes: usize,
    pub profile_ms: f64,
    pub prefill_ms: f64,
    /// Policy name per KV head, per layer.
    pub policies: Vec<Vec<String>>,
    /// Recovery of each head's policy on the prompt, when profiled.
    pub head_recovery: Vec<Vec<Option<f64>>>,
    /// Per layer: (policy, number of KV heads), in the candidate list's order.
    pub histogram: Vec<Vec<(String, usize)>>,
    /// Per layer: kept entries over `kv_heads * n`.
    pub layer_kept: Vec<f64>,
    /// The window of each sliding-window layer (the model's own; named `sliding:W` in
    /// `policies`): their evictions count in `pruned_ratio` under every method.
    pub sliding: Vec<u32>,
}

impl KvReport {
    /// The report of a cache's buffers `kv`, its `settings`, its heads' states (layer-major)
    /// and counters.
    pub fn of(kv: &KvCache, s: &KvSettings, heads: &[HeadState], st: &KvStats) -> KvReport {
        let entry = kv.dtype.entry_bytes(kv.head_dim);
        let n_kv = kv.n_kv_heads;
        let layers: Vec<&[HeadState]> = heads.chunks(n_kv.max(1)).collect();
        // A sliding-window layer's heads follow the model's window, not a policy of ours.
        let names: Vec<Vec<String>> = (layers.iter().enumerate())
            .map(|(l, hs)| {
                hs.iter()
                    .map(|h| match kv.window(l) {
                        Some(w) => format!("sliding:{w}"),
                        None => h.policy.to_string(),
                    })
                    .collect()
            })
            .collect();
        let head_recovery = layers
            .iter()
            .map(|hs| hs.iter().map(|h| h.recovery).collect())
            .collect();

        // Order: the candidate list for FastGen, then any other policy by name.
        let order = s.policy_order();
        let histogram = names
            .iter()
            .map(|hs| {
                let mut counts: Vec<(String, usize)> = Vec::new();
                for name in hs.iter().cloned() {
                    match counts.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, k)) => *k += 1,
                        None => counts.push((name, 1)),
                    }
                }
                let rank = |n: &str| order.iter().position(|o| o == n).unwrap_or(order.len());
                counts.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
                counts
            })
            .collect();
        let layer_kept = (0..kv.n_layers)
            .map(|l| {
                let kept: usize = kv.layer(l).iter().map(|h| h.len()).sum();
                ratio(kept, n_kv * kv.seq_len())
            })
            .collect();
        let pruned = kv.pruned_ratio();
        KvReport {
            policy: s.kind.to_string(),
            recovery: st
                .recovery_used
                .or((s.kind == KvKind::FastGen).then_some(s.fastgen.recovery)),
            label: s.label(),
            budget: s.fastgen.budget.map(|b| b.to_string()),
            budget_met: st.budget_met,
            compressed_at: st.compressed_at,
            compress_from: if s.kind == KvKind::FastGen {
                s.fastgen.compress_from
            } else {
                0
            },
            seq_len: kv.seq_len(),
            kept_entries: kv.kept_entries(),
            pruned_ratio: pruned,
            pruned_ratio_mean: if st.decode_steps > 0 {
                st.pruned_sum / st.decode_steps as f64
            } else {
                pruned
            },
            kv_bytes_full: kv.full_bytes(),
            kv_bytes_kept: kv.kept_entries() * entry,
            kv_bytes_allocated: kv.allocated_bytes(),
            score_bytes: score_bytes(heads),
            profile_ms: st.profile_ms,
            prefill_ms: st.prefill_ms,
            head_recovery,
            histogram,
            layer_kept,
            sliding: (0..kv.n_layers).filter_map(|l| kv.window(l)).collect(),
            policies: names,
        }
    }

    /// Profiling time as a share of prefill time.
    pub fn profile_share(&self) -> f64 {
        if self.prefill_ms > 0.0 {
            self.profile_ms / self.prefill_ms
        } else {
            0.0
        }
    }

    /// Allocated KV bytes over the full cache's bytes.
    pub fn allocated_ratio(&self) -> f64 {
        ratio(self.kv_bytes_allocated, self.kv_bytes_full)
    }

    /// Kept KV bytes over the full cache's bytes (`1 - pruned_ratio`).
    pub fn kept_ratio(&self) -> f64 {
        ratio(self.kv_bytes_kept, self.kv_bytes_full)
    }

    /// One line for stderr.
    pub fn summary(&self) -> String {
        const MIB: f64 = 1024.0 * 1024.0;
        let what = match (&self.budget, self.recovery) {
            (Some(_), Some(t)) => format!(
                "{} (picked T={t:.4}{})",
                self.label,
                if self.budget_met == Some(false) {
                    ", over budget even at T=0"
                } else {
                    ""
                }
            ),
            _ => self.label.clone(),
        };
        if self.compressed_at.is_none() && self.compress_from > self.seq_len {
            return format!(
                "kv {what}: not compressed: {} tokens, under the {} at which compression starts; KV {:.2} MiB",
                self.seq_len,
                self.compress_from,
                self.kv_bytes_allocated as f64 / MIB,
            );
        }
        let sliding = match self.sliding.first() {
            Some(w) => format!(
                "; {} of {} layers keep the model's {w}-token sliding window",
                self.sliding.len(),
                self.policies.len()
            ),
            None => String::new(),
        };
        format!(
            "kv {what}: pruned {:.1}% (mean {:.1}%), KV {:.2} MiB full -> {:.2} MiB kept ({:.2} MiB allocated, +{:.3} MiB scores), profile {:.0} ms ({:.1}% of prefill){sliding}",
            100.0 * self.pruned_ratio,
            100.0 * self.pruned_ratio_mean,
            self.kv_bytes_full as f64 / MIB,
            self.kv_bytes_kept as f64 / MIB,
            self.kv_bytes_allocated as f64 / MIB,
            self.score_bytes as f64 / MIB,
            self.profile_ms,
            100.0 * self.profile_share(),
        )
    }

    /// Per layer, e.g. `layer  3: special+punct+frequent+local 2, full 1`.
    pub fn histogram_lines(&self) -> Vec<String> {
        self.histogram
            .iter()
            .enumerate()
            .map(|(l, counts)| {
                let parts: Vec<String> = counts.iter().map(|(n, k)| format!("{n} {k}")).collect();
                format!("layer {l:>2}: {}", parts.join(", "))
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "policy": self.policy,
            "recovery": self.recovery,
            "label": self.label,
            "budget": self.budget,
            "budget_met": self.budget_met,
            "compressed_at": self.compressed_at,
            "compress_from": self.compress_from,
            "seq_len": self.seq_len,
            "kept_entries": self.kept_entries,
            "pruned_ratio": self.pruned_ratio,
            "pruned_ratio_mean": self.pruned_ratio_mean,
            "kv_bytes_full": self.kv_bytes_full,
            "kv_bytes_kept": self.kv_bytes_kept,
            "kv_bytes_allocated": self.kv_bytes_allocated,
            "score_bytes": self.score_bytes,
            "profile_ms": self.profile_ms,
            "prefill_ms": self.prefill_ms,
            "profile_share": self.profile_share(),
            "policies": self.policies,
            "head_recovery": self.head_recovery,
            "layer_kept": self.layer_kept,
            "histogram": self.histogram.iter().map(|counts| {
                counts.iter().map(|(n, k)| json!([n, k])).collect::<Vec<_>>()
            }).collect::<Vec<_>>(),
        })
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
