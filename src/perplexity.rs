//! Perplexity by llama.cpp's `llama-perplexity` protocol: cut the token stream into
//! consecutive chunks of `ctx` tokens, evaluate each from an empty cache, and score only the
//! second half of each chunk (the first half gives every scored token enough context). For a
//! model that starts its prompts with BOS (Gemma), the stream is tokenized with it and each
//! chunk's first token is replaced by BOS, as llama.cpp does.

use crate::error::{Error, Result};
use crate::kv_cache::KvDtype;
use crate::model::{Model, Workspace};

#[derive(Debug, Clone)]
pub struct PerplexityReport {
    pub ppl: f64,
    /// Standard error of the perplexity (delta method on the mean log-likelihood).
    pub ppl_err: f64,
    /// Running perplexity after each chunk.
    pub running: Vec<f64>,
    pub scored_tokens: usize,
}

/// Negative log-likelihood of `target` under `logits` (log-sum-exp in f64).
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

/// Perplexity over the first `chunks` chunks of `ctx` tokens of `tokens`, each chunk starting
/// with `bos` when given. `on_chunk(i, running_ppl)` reports progress.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    bos: Option<u32>,
    ctx: usize,
    chunks: usize,
    on_chunk: &mut dyn FnMut(usize, f64),
) -> Result<PerplexityReport> {
    if ctx < 4 {
        return Err(Error::InvalidSetting(format!(
            "perplexity context {ctx} is too small"
        )));
    }
    let available = tokens.len() / ctx;
    if available == 0 {
        return Err(Error::InvalidSetting(format!(
            "the text has {} tokens, fewer than one chunk of {ctx}",
            tokens.len()
        )));
    }
    let chunks = chunks.min(available);
    let first = ctx / 2;
    let mut ws = Workspace::default();
    let mut nlls: Vec<f64> = Vec::new();
    let mut running = Vec::new();
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        let mut cache = model.new_cache(KvDtype::F16);
        model.forward(&chunk, &mut cache, &mut ws, first, &mut |i, logits| {
            if i + 1 < ctx {
                nlls.push(nll(logits, chunk[i + 1]));
            }
        })?;
        let mean = nlls.iter().sum::<f64>() / nlls.len() as f64;
        running.push(mean.exp());
        on_chunk(c, mean.exp());
    }
    let n = nlls.len() as f64;
    let mean = nlls.iter().sum::<f64>() / n;
    let var = nlls.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let ppl = mean.exp();
    Ok(PerplexityReport {
        ppl,
        ppl_err: ppl * (var / n).sqrt(),
        running,
        scored_tokens: nlls.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::nll;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let l = [0.5f32; 8];
        assert!((nll(&l, 3) - 8f64.ln()).abs() < 1e-12);
    }
}
