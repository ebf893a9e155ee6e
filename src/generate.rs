//! The generation loop: prefill the prompt, then sample and decode one token at a time until
//! an end-of-generation token, `max_tokens`, or the end of the context.

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::model::ops::all_finite;
use crate::model::{Model, Workspace};
use crate::sampling::{log_softmax_top, logprob_of, Sampler, SamplerConfig};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// How many of the most likely tokens to record per step (0 = none).
    pub top_logprobs: usize,
}

/// One generated token with its log-probability and the runners-up.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndOfGeneration,
    MaxTokens,
    ContextFull,
    /// The caller's token callback asked to stop.
    Cancelled,
}

#[derive(Debug, Clone, Default)]
pub struct Timing {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

impl Timing {
    pub fn prefill_tok_s(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_ms)
    }
    /// Tokens decoded after the first (the first comes from the prefill's logits).
    pub fn decode_tok_s(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.decode_ms)
    }
}

fn rate(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 / (ms / 1000.0)
    } else {
        0.0
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub generated_ids: Vec<u32>,
    pub steps: Vec<Step>,
    pub stop: StopReason,
    pub timing: Timing,
}

/// A sequence's cache as the generation loop drives it: the plain full cache, or a
/// compressed one (`compress::CompressedCache`), which profiles in prefill and evicts after
/// each decode step.
pub trait Sequence {
    /// Runs the prompt; returns its last token's logits.
    fn prefill(&mut self, model: &Model, ws: &mut Workspace, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Runs one token; returns its logits (valid until the next call).
    fn decode<'w>(&mut self, model: &Model, ws: &'w mut Workspace, token: u32)
        -> Result<&'w [f32]>;
    /// Tokens seen so far.
    fn seq_len(&self) -> usize;
}

impl Sequence for KvCache {
    fn prefill(&mut self, model: &Model, ws: &mut Workspace, tokens: &[u32]) -> Result<Vec<f32>> {
        model.prefill(tokens, self, ws)
    }
    fn decode<'w>(
        &mut self,
        model: &Model,
        ws: &'w mut Workspace,
        token: u32,
    ) -> Result<&'w [f32]> {
        model.decode(token, self, ws)
    }
    fn seq_len(&self) -> usize {
        KvCache::seq_len(self)
    }
}

/// Refuses logits holding NaN or an infinity: sampling would quietly pick token 0 (argmax
/// skips NaN) and the run would look like it worked. Microseconds next to a forward pass.
pub fn check_finite(logits: &[f32], step: usize) -> Result<()> {
    if all_finite(logits) {
        return Ok(());
    }
    let what = if logits.iter().any(|x| x.is_nan()) {
        "NaN"
    } else {
        "infinite"
    };
    Err(Error::NonFiniteLogits { what, step })
}

/// Generates from `prompt` (appended to `cache`). `on_token` sees each token as it is chosen
/// and returns `false` to stop.
pub fn generate<S: Sequence + ?Sized>(
    model: &Model,
    cache: &mut S,
    ws: &mut Workspace,
    prompt: &[u32],
    opts: &GenerateOptions,
    eog: &[u32],
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut sampler = Sampler::new(opts.sampler.clone())?;
    let t0 = Instant::now();
    let mut logits = cache.prefill(model, ws, prompt)?;
    let mut timing = Timing {
        prompt_tokens: prompt.len(),
        prefill_ms: t0.elapsed().as_secs_f64() * 1e3,
        ..Timing::default()
    };
    let t1 = Instant::now();
    let mut out = Generation {
        generated_ids: Vec::new(),
        steps: Vec::new(),
        stop: StopReason::MaxTokens,
        timing: Timing::default(),
    };
    while out.generated_ids.len() < opts.max_tokens {
        check_finite(&logits, out.generated_ids.len())?;
        let id = sampler.sample(&logits);
        out.steps.push(Step {
            id,
            logprob: logprob_of(&logits, id),
            top: log_softmax_top(&logits, opts.top_logprobs),
        });
        out.generated_ids.push(id);
        if eog.contains(&id) {
            out.stop = StopReason::EndOfGeneration;
            break;
        }
        if !on_token(id) {
            out.stop = StopReason::Cancelled;
            break;
        }
        if out.generated_ids.len() == opts.max_tokens {
            break;
        }
        if cache.seq_len() >= model.cfg.n_ctx {
            out.stop = StopReason::ContextFull;
            break;
        }
        logits.copy_from_slice(cache.decode(model, ws, id)?);
    }
    timing.generated_tokens = out.generated_ids.len();
    timing.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    out.timing = timing;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_logits_are_named() {
        assert!(check_finite(&[0.0, -3.5, 1e30, f32::MAX], 0).is_ok());
        assert!(check_finite(&[], 0).is_ok());
        let msg = |l: &[f32], step| check_finite(l, step).unwrap_err().to_string();
        assert_eq!(
            msg(&[1.0, f32::NAN, 2.0], 3),
            "the model produced NaN logits at step 3 of generation: do the weights hold NaN \
             or inf?"
        );
        assert!(msg(&[1.0, f32::INFINITY], 0).contains("infinite logits at step 0"));
        assert!(msg(&[f32::NEG_INFINITY, 1.0], 0).contains("infinite logits"));
        // In the eight-wide body as well as the remainder.
        let mut long = vec![0.5f32; 1003];
        long[17] = f32::NAN;
        assert!(msg(&long, 1).contains("NaN logits at step 1"));
    }
}
