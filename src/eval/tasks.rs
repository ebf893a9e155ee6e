//! Generation tasks, full cache against compressed: greedy answers to AlpacaEval
//! instructions (agreement) and to GSM8K problems (accuracy). The full cache's answers are
//! computed once and every compressed arm is compared with them.

use super::data::{AlpacaItem, GsmCase};
use super::metrics::{last_number, rouge_l_f1, words};
use super::Engine;
use crate::compress::{CompressedCache, KvSettings};
use crate::error::Result;
use crate::model::Workspace;
use indicatif::ProgressBar;

/// Index of the largest logit (the first of equals, as the greedy sampler picks).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Index of the largest logit outside `skip` (the first of equals); the plain argmax if
/// `skip` covers every id.
fn argmax_except(logits: &[f32], skip: &[u32]) -> u32 {
    let mut best: Option<usize> = None;
    for (i, &x) in logits.iter().enumerate() {
        if !skip.contains(&(i as u32)) && best.is_none_or(|b| x > logits[b]) {
            best = Some(i);
        }
    }
    best.map_or_else(|| argmax(logits), |b| b as u32)
}

/// Greedy continuation from `logits` (the cache's last prediction): up to `max_tokens`
/// tokens, stopping before an end-of-generation token or at the end of the context.
pub fn continue_greedy(
    engine: &Engine,
    ws: &mut Workspace,
    cache: &mut CompressedCache,
    logits: &[f32],
    max_tokens: usize,
) -> Result<Vec<u32>> {
    greedy_loop(engine, ws, cache, logits, max_tokens, 0, &mut |_, _| true)
}

/// [`continue_greedy`] that also stops as soon as `done(answer so far)` holds (tasks that
/// know when an answer is complete save the tokens after it).
pub fn continue_greedy_until(
    engine: &Engine,
    ws: &mut Workspace,
    cache: &mut CompressedCache,
    logits: &[f32],
    max_tokens: usize,
    mut done: impl FnMut(&[u32]) -> bool,
) -> Result<Vec<u32>> {
    greedy_loop(engine, ws, cache, logits, max_tokens, 0, &mut |_, ids| {
        !done(ids)
    })
}

/// The greedy loop behind every generation task. End-of-generation tokens are masked until
/// `min_tokens` tokens have been generated (long-generation runs force the full length).
/// `step(cache, answer)` runs each time the answer's last token has entered the cache and
/// returns whether to go on; the last token returned is not fed (nothing would read its
/// logits).
pub fn greedy_loop(
    engine: &Engine,
    ws: &mut Workspace,
    cache: &mut CompressedCache,
    logits: &[f32],
    max_tokens: usize,
    min_tokens: usize,
    step: &mut dyn FnMut(&CompressedCache, &[u32]) -> bool,
) -> Result<Vec<u32>> {
    let eog = engine.tokenizer.eog_ids();
    let pick = |logits: &[f32], generated: usize| {
        if generated < min_tokens {
            argmax_except(logits, eog)
        } else {
            argmax(logits)
        }
    };
    let mut out = Vec::new();
    let mut id = pick(logits, 0);
    while out.len() < max_tokens && !engine.tokenizer.is_eog(id) {
        out.push(id);
        if out.len() == max_tokens || cache.kv().seq_len() >= engine.model.cfg.n_ctx {
            break;
        }
        let logits = cache.decode(engine.model, ws, id)?;
        if !step(cache, &out) {
            break;
        }
        id = pick(logits, out.len());
    }
    Ok(out)
}

/// Greedy answer to `prompt` from an empty cache with `settings`.
pub fn greedy_answer(
    engine: &Engine,
    ws: &mut Workspace,
    settings: &KvSettings,
    prompt: &[u32],
    max_tokens: usize,
) -> Result<Vec<u32>> {
    let mut cache = engine.cache(settings)?;
    let logits = cache.prefill(engine.model, ws, prompt)?;
    continue_greedy(engine, ws, &mut cache, &logits, max_tokens)
}

/// Greedy answers to every prompt under `settings`; `pb` advances once per prompt.
pub fn answers(
    engine: &Engine,
    settings: &KvSettings,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    pb: &ProgressBar,
) -> Result<Vec<Vec<u32>>> {
    let mut ws = engine.workspace();
    prompts
        .iter()
        .map(|p| {
            let a = greedy_answer(engine, &mut ws, settings, p, max_tokens);
            pb.inc(1);
            a
        })
        .collect()
}

/// AlpacaEval instructions as chat prompts.
pub fn alpaca_prompts(engine: &Engine, items: &[AlpacaItem]) -> Result<Vec<Vec<u32>>> {
    items
        .iter()
        .map(|it| engine.tokenizer.encode(&engine.chat_text(&it.instruction)?))
        .collect()
}

/// GSM8K problems as chat prompts asking for the number on the last line.
pub fn gsm8k_prompts(engine: &Engine, cases: &[GsmCase]) -> Result<Vec<Vec<u32>>> {
    cases
        .iter()
        .map(|c| {
            let user = format!(
                "{}\nSolve this step by step, then write the final answer as a number on the last line.",
                c.prompt
            );
            engine.tokenizer.encode(&engine.chat_text(&user)?)
        })
        .collect()
}

/// How far compressed answers agree with the full cache's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Agreement {
    pub n: usize,
    /// Share of answers identical token for token.
    pub exact_match: f64,
    /// Mean index of the first token that differs (an answer's length when identical, the
    /// shorter length when one is a prefix of the other).
    pub first_divergence: f64,
    /// Mean ROUGE-L F1 of the compressed answer's words against the full answer's.
    pub rouge_l: f64,
}

/// Index of the first differing token.
pub fn first_divergence(a: &[u32], b: &[u32]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// Agreement of `kv` answers with `full` answers (pairwise; `None` for no answers).
pub fn agreement(engine: &Engine, full: &[Vec<u32>], kv: &[Vec<u32>]) -> Option<Agreement> {
    let n = full.len().min(kv.len());
    if n == 0 {
        return None;
    }
    let (mut exact, mut div, mut rouge) = (0usize, 0usize, 0.0);
    for (f, k) in full.iter().zip(kv) {
        exact += usize::from(f == k);
        div += first_divergence(f, k);
        rouge += rouge_l_f1(
            &words(&engine.tokenizer.decode(k)),
            &words(&engine.tokenizer.decode(f)),
        );
    }
    Some(Agreement {
        n,
        exact_match: exact as f64 / n as f64,
        first_divergence: div as f64 / n as f64,
        rouge_l: rouge / n as f64,
    })
}

/// Whether the last number of each answer is the case's expected answer.
pub fn gsm8k_correct(engine: &Engine, cases: &[GsmCase], answers: &[Vec<u32>]) -> Vec<bool> {
    cases
        .iter()
        .zip(answers)
        .map(|(c, a)| last_number(&engine.tokenizer.decode(a)).is_some_and(|x| x == c.answer()))
        .collect()
}

/// Share of `true`s (0 for none).
pub fn share(hits: &[bool]) -> f64 {
    if hits.is_empty() {
        0.0
    } else {
        hits.iter().filter(|&&h| h).count() as f64 / hits.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_divergence_by_hand() {
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 2, 3]), 3);
        assert_eq!(first_divergence(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(first_divergence(&[5], &[1]), 0);
        assert_eq!(first_divergence(&[], &[1]), 0);
    }

    #[test]
    fn argmax_takes_the_first_of_equals() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
        assert_eq!(argmax(&[3.0]), 0);
    }

    #[test]
    fn argmax_except_skips_masked_ids() {
        assert_eq!(argmax_except(&[0.0, 5.0, 2.0, 2.0], &[1]), 2);
        assert_eq!(argmax_except(&[9.0, 5.0, 7.0], &[0, 2]), 1);
        assert_eq!(argmax_except(&[1.0, 3.0], &[]), 1);
        // Everything masked: the plain argmax rather than an out-of-vocabulary id.
        assert_eq!(argmax_except(&[1.0, 3.0], &[0, 1]), 1);
    }

    #[test]
    fn share_counts_trues() {
        assert_eq!(share(&[true, false, true, true]), 0.75);
        assert_eq!(share(&[]), 0.0);
    }
}
