//! Throughput benchmarks shaped like llama.cpp's `llama-bench`: `pp<N>` (a prompt of N
//! tokens in one go, tokens/s) and `tg<N> @ d<D>` (N tokens decoded one at a time after D
//! tokens of context, tokens/s). The context is real prose (the essays), not random ids,
//! because what FastGen keeps depends on content.
//!
//! A decode test runs under a [`CachePolicy`]: the cache it starts from and what happens to
//! it once the depth is filled. [`FullCache`] keeps everything; compression policies plug in
//! here, so each depth can be measured under each policy with the same code.

use crate::error::{Error, Result};
use crate::kv_cache::{KvCache, KvDtype};
use crate::model::{Model, Workspace};
use std::time::Instant;

/// How a decode test treats the KV cache.
pub trait CachePolicy {
    /// Short name for reports (`full`, ...).
    fn name(&self) -> &str;
    /// An empty cache for `model`.
    fn new_cache(&self, model: &Model) -> KvCache;
    /// Called once the depth tokens are in the cache, before the timed decode steps.
    fn after_prefill(&self, _model: &Model, _cache: &mut KvCache) -> Result<()> {
        Ok(())
    }
}

/// Keeps every token (the engine's default).
pub struct FullCache(pub KvDtype);

impl CachePolicy for FullCache {
    fn name(&self) -> &str {
        "full"
    }
    fn new_cache(&self, model: &Model) -> KvCache {
        model.new_cache(self.0)
    }
}

/// What a test measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `tokens` prompt tokens in one forward pass, from an empty cache.
    Prompt { tokens: usize },
    /// `tokens` decode steps after `depth` tokens of context.
    Gen { tokens: usize, depth: usize },
}

impl Test {
    /// The name llama-bench gives the test: `pp512`, `tg64 @ d2048`.
    pub fn name(&self) -> String {
        match *self {
            Test::Prompt { tokens } => format!("pp{tokens}"),
            Test::Gen { tokens, depth } => format!("tg{tokens} @ d{depth}"),
        }
    }
    /// Prose tokens the test needs.
    fn tokens_needed(&self) -> usize {
        match *self {
            Test::Prompt { tokens } => tokens,
            Test::Gen { tokens, depth } => depth + tokens,
        }
    }
}

/// One run of a test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub tok_s: f64,
    /// Decode tests: mean KV-cache bytes read per decoded token (keys and values of every
    /// slot each step attends over). 0 for prompt tests.
    pub kv_bytes_per_token: f64,
}

/// Median, minimum and maximum of a list (empty gives zeros).
pub fn summary(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[0], s[n - 1])
}

/// `n` tokens of prose for the benchmark prompts: the essays in order (starting with
/// `worked.txt`), tokenized, without special tokens.
pub fn prose_tokens(model: &Model, n: usize) -> Result<Vec<u32>> {
    let tok = crate::tokenizer::Tokenizer::from_gguf(model.gguf())?;
    let mut names = crate::fetch::essay_names()?;
    if let Some(i) = names.iter().position(|s| s == "worked.txt") {
        names.rotate_left(i);
    }
    let mut out = Vec::with_capacity(n);
    for name in &names {
        if out.len() >= n {
            break;
        }
        let text = crate::fetch::essay_text(name)?;
        out.extend(tok.encode(&text)?);
    }
    if out.len() < n {
        return Err(Error::InvalidSetting(format!(
            "the essays hold only {} tokens; {n} needed",
            out.len()
        )));
    }
    out.truncate(n);
    Ok(out)
}

/// Bytes of weights a decode step reads: every layer matrix and the output matrix (the
/// token embedding contributes one row, which is left out).
pub fn weight_bytes_per_token(model: &Model) -> usize {
    let w = &model.weights;
    let m = |x: &crate::model::weights::Matrix| x.tensor.n_bytes;
    let layers: usize = w
        .layers
        .iter()
        .map(|l| {
            m(&l.wq) + m(&l.wk) + m(&l.wv) + m(&l.wo) + m(&l.w_gate) + m(&l.w_up) + m(&l.w_down)
        })
        .sum();
    layers + m(&w.output)
}

/// KV bytes a decode step at the cache's current state reads.
fn kv_bytes(cache: &KvCache) -> usize {
    cache.kept_entries() * cache.head_dim * 2 * cache.dtype.bytes()
}

/// Runs benchmark tests on one model, reusing its workspace.
pub struct Bench<'m> {
    pub model: &'m Model,
    prose: Vec<u32>,
    ws: Workspace,
}

impl<'m> Bench<'m> {
    /// Prepares prose for the largest of `tests`.
    pub fn new(model: &'m Model, tests: &[Test]) -> Result<Bench<'m>> {
        let need = tests.iter().map(|t| t.tokens_needed()).max().unwrap_or(0);
        if need > model.cfg.n_ctx {
            return Err(Error::ContextOverflow {
                tokens: need,
                ctx: model.cfg.n_ctx,
            });
        }
        let prose = prose_tokens(model, need)?;
        Ok(Bench {
            model,
            prose,
            ws: Workspace::default(),
        })
    }

    /// One run of `test` (decode tests under `policy`).
    pub fn run(&mut self, test: Test, policy: &dyn CachePolicy) -> Result<Sample> {
        let model = self.model;
        let mut cache = policy.new_cache(model);
        match test {
            Test::Prompt { tokens } => {
                let t0 = Instant::now();
                model.prefill(&self.prose[..tokens], &mut cache, &mut self.ws)?;
                Ok(Sample {
                    tok_s: tokens as f64 / t0.elapsed().as_secs_f64(),
                    kv_bytes_per_token: 0.0,
                })
            }
            Test::Gen { tokens, depth } => {
                if depth > 0 {
                    model.forward(
                        &self.prose[..depth],
                        &mut cache,
                        &mut self.ws,
                        depth,
                        &mut |_, _| {},
                    )?;
                }
                policy.after_prefill(model, &mut cache)?;
                let mut kv = 0usize;
                let t0 = Instant::now();
                for &t in &self.prose[depth..depth + tokens] {
                    model.decode(t, &mut cache, &mut self.ws)?;
                    kv += kv_bytes(&cache);
                }
                let secs = t0.elapsed().as_secs_f64();
                Ok(Sample {
                    tok_s: tokens as f64 / secs,
                    kv_bytes_per_token: kv as f64 / tokens.max(1) as f64,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_gives_median_and_spread() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(summary(&[]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn test_names_follow_llama_bench() {
        assert_eq!(Test::Prompt { tokens: 512 }.name(), "pp512");
        assert_eq!(
            Test::Gen {
                tokens: 64,
                depth: 2048
            }
            .name(),
            "tg64 @ d2048"
        );
    }
}
