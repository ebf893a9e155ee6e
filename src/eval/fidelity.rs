//! Teacher-forced fidelity of compressed caches against the full cache (`fastgen eval ppl`),
//! the yardstick of llama-perplexity's KL-divergence section.
//!
//! Each window of the text: prefill `ctx` tokens (a compressing cache profiles and
//! compresses here), then feed the next `eval` tokens one at a time, as generation would, so
//! the compressed cache keeps evicting. Every prediction (the prefill's last one and each
//! decode step's but the last) is compared with the full cache's on the same tokens. The full
//! cache runs once per window, in lockstep with every compressed arm.

use super::metrics::{compare, KldSummary, TokenCompare};
use super::Engine;
use crate::compress::KvSettings;
use crate::error::{Error, Result};
use indicatif::ProgressBar;

/// How the text is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Tokens prefilled (and compressed) per window.
    pub ctx: usize,
    /// Tokens predicted one at a time after the prefill.
    pub eval: usize,
    /// Most windows to run (the text may hold more).
    pub max_windows: usize,
}

impl Windows {
    /// Start offsets of the windows that fit in `n_tokens` (non-overlapping).
    pub fn starts(&self, n_tokens: usize, n_ctx: usize) -> Result<Vec<usize>> {
        if self.ctx == 0 || self.eval == 0 || self.max_windows == 0 {
            return Err(Error::InvalidSetting(
                "--ctx, --eval and --windows must be at least 1".into(),
            ));
        }
        let span = self.ctx + self.eval;
        if span > n_ctx {
            return Err(Error::ContextOverflow {
                tokens: span,
                ctx: n_ctx,
            });
        }
        if span > n_tokens {
            return Err(Error::InvalidSetting(format!(
                "the text holds {n_tokens} tokens; one window needs --ctx + --eval = {span}"
            )));
        }
        Ok((0..n_tokens / span)
            .take(self.max_windows)
            .map(|w| w * span)
            .collect())
    }
}

/// One compressed arm over all windows.
#[derive(Debug, Clone)]
pub struct ArmFidelity {
    pub rows: Vec<TokenCompare>,
    /// Pruned ratio averaged over decode steps, then over windows.
    pub pruned_ratio: f64,
    /// At the end of each window, averaged over windows.
    pub kv_bytes_allocated: f64,
    pub kv_bytes_full: f64,
    /// Profiling time per window, averaged.
    pub profile_ms: f64,
}

impl ArmFidelity {
    pub fn summary(&self) -> Option<KldSummary> {
        KldSummary::from(&self.rows)
    }
    /// Share of the full cache's entries kept (the budget baselines are matched to).
    pub fn kept_ratio(&self) -> f64 {
        1.0 - self.pruned_ratio
    }
}

/// Runs every arm against the full cache over the windows of `tokens`. `pb` advances once
/// per predicted position.
pub fn compare_arms(
    engine: &Engine,
    tokens: &[u32],
    windows: Windows,
    arms: &[KvSettings],
    pb: &ProgressBar,
) -> Result<Vec<ArmFidelity>> {
    let model = engine.model;
    let starts = windows.starts(tokens.len(), model.cfg.n_ctx)?;
    pb.set_length((starts.len() * windows.eval) as u64);
    let mut out: Vec<ArmFidelity> = arms
        .iter()
        .map(|_| ArmFidelity {
            rows: Vec::new(),
            pruned_ratio: 0.0,
            kv_bytes_allocated: 0.0,
            kv_bytes_full: 0.0,
            profile_ms: 0.0,
        })
        .collect();
    let mut ws = engine.workspace();
    let full_settings = KvSettings::with_kind(crate::compress::KvKind::Full);
    for &start in &starts {
        let ctx = &tokens[start..start + windows.ctx];
        let next = &tokens[start + windows.ctx..start + windows.ctx + windows.eval];
        let mut full = engine.cache(&full_settings)?;
        let mut caches = arms
            .iter()
            .map(|s| engine.cache(s))
            .collect::<Result<Vec<_>>>()?;
        let mut full_logits = full.prefill(model, &mut ws, ctx)?;
        let mut arm_logits = caches
            .iter_mut()
            .map(|c| c.prefill(model, &mut ws, ctx))
            .collect::<Result<Vec<_>>>()?;
        for (i, &target) in next.iter().enumerate() {
            if i > 0 {
                // Feed the previous target: the text, not what either cache predicted.
                let fed = next[i - 1];
                full_logits.copy_from_slice(full.decode(model, &mut ws, fed)?);
                for (c, l) in caches.iter_mut().zip(&mut arm_logits) {
                    l.copy_from_slice(c.decode(model, &mut ws, fed)?);
                }
            }
            for (o, l) in out.iter_mut().zip(&arm_logits) {
                o.rows.push(compare(&full_logits, l, target));
            }
            pb.inc(1);
        }
        for (o, c) in out.iter_mut().zip(&caches) {
            let r = c.report();
            o.pruned_ratio += r.pruned_ratio_mean;
            o.kv_bytes_allocated += r.kv_bytes_allocated as f64;
            o.kv_bytes_full += r.kv_bytes_full as f64;
            o.profile_ms += r.profile_ms;
        }
    }
    let n = starts.len() as f64;
    for o in &mut out {
        o.pruned_ratio /= n;
        o.kv_bytes_allocated /= n;
        o.kv_bytes_full /= n;
        o.profile_ms /= n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_the_text_without_overlap() {
        let w = Windows {
            ctx: 100,
            eval: 20,
            max_windows: 10,
        };
        assert_eq!(w.starts(365, 8192).unwrap(), vec![0, 120, 240]);
        let one = Windows {
            max_windows: 1,
            ..w
        };
        assert_eq!(one.starts(365, 8192).unwrap(), vec![0]);
    }

    #[test]
    fn bad_windows_are_errors() {
        let w = Windows {
            ctx: 100,
            eval: 20,
            max_windows: 1,
        };
        assert!(matches!(w.starts(100, 8192), Err(Error::InvalidSetting(_))));
        assert!(matches!(
            w.starts(1000, 64),
            Err(Error::ContextOverflow { .. })
        ));
        for bad in [
            Windows { ctx: 0, ..w },
            Windows { eval: 0, ..w },
            Windows {
                max_windows: 0,
                ..w
            },
        ] {
            assert!(bad.starts(1000, 8192).is_err());
        }
    }
}
