//! Long free generation (`fastgen eval longgen`), where decode-time eviction works hardest:
//! LongBench-Write requests answered greedily at a forced length (end-of-generation tokens
//! are masked until then), full cache against the cache under test. Measured per prompt: the
//! compressed cache's pruned ratio as the answer grows and its KV bytes at the end, how
//! degenerate each answer is, and how far the compressed answer follows the full one.

use super::data::WritePrompt;
use super::degeneration::{distinct_n, longest_loop};
use super::metrics::rouge_l_f1;
use super::tasks::{first_divergence, greedy_loop};
use super::Engine;
use crate::compress::{CompressedCache, KvSettings};
use crate::error::{Error, Result};
use crate::model::Workspace;
use indicatif::ProgressBar;
use serde::Serialize;

/// The pruned ratio is sampled every this many generated tokens (and at the end).
pub const SAMPLE_EVERY: usize = 128;

/// The cache's pruned ratio when `generated` answer tokens had entered it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrunedSample {
    pub generated: usize,
    pub pruned_ratio: f64,
}

/// One arm's answer to one prompt, with the state of its cache.
#[derive(Debug, Clone)]
pub struct ArmRun {
    pub ids: Vec<u32>,
    pub pruned: Vec<PrunedSample>,
    /// Averaged over every decode step.
    pub pruned_ratio_mean: f64,
    /// With the whole answer in the cache.
    pub kv_bytes_allocated: usize,
}

/// LongBench-Write requests as chat prompts.
pub fn prompts(engine: &Engine, items: &[WritePrompt]) -> Result<Vec<Vec<u32>>> {
    items
        .iter()
        .map(|it| engine.tokenizer.encode(&engine.chat_text(&it.prompt)?))
        .collect()
}

/// Fails, naming the prompt, if a prompt and a `tokens`-long answer exceed the context.
pub fn check_context(engine: &Engine, prompts: &[Vec<u32>], tokens: usize) -> Result<()> {
    let ctx = engine.model.cfg.n_ctx;
    match prompts.iter().position(|p| p.len() + tokens > ctx) {
        Some(i) => Err(Error::InvalidSetting(format!(
            "prompt {} has {} tokens: with an answer of {tokens} tokens it exceeds the model's \
             context of {ctx}",
            i + 1,
            prompts[i].len()
        ))),
        None => Ok(()),
    }
}

/// A `tokens`-long greedy answer to `prompt` under `settings`; `pb` advances once per token.
pub fn generate(
    engine: &Engine,
    ws: &mut Workspace,
    settings: &KvSettings,
    prompt: &[u32],
    tokens: usize,
    pb: &ProgressBar,
) -> Result<ArmRun> {
    let mut cache = engine.cache(settings)?;
    // A full cache then allocates exactly what it will hold: the yardstick for bytes.
    cache.reserve_full(prompt.len() + tokens);
    let logits = cache.prefill(engine.model, ws, prompt)?;
    let mut pruned = Vec::new();
    let mut sample = |c: &CompressedCache, answer: &[u32]| {
        pb.inc(1);
        let generated = answer.len();
        if generated.is_multiple_of(SAMPLE_EVERY) {
            pruned.push(PrunedSample {
                generated,
                pruned_ratio: c.pruned_ratio(),
            });
        }
        true
    };
    let ids = greedy_loop(engine, ws, &mut cache, &logits, tokens, tokens, &mut sample)?;
    let Some(&last) = ids.last().filter(|_| ids.len() == tokens) else {
        return Err(Error::InvalidSetting(format!(
            "the answer stopped after {} of {tokens} tokens",
            ids.len()
        )));
    };
    // The greedy loop does not feed its last token; feeding it puts the whole answer in the
    // cache, so the end sample and the bytes are those of prompt + `tokens`.
    cache.decode(engine.model, ws, last)?;
    pb.inc(1);
    pruned.push(PrunedSample {
        generated: tokens,
        pruned_ratio: cache.pruned_ratio(),
    });
    let report = cache.report();
    Ok(ArmRun {
        ids,
        pruned,
        pruned_ratio_mean: report.pruned_ratio_mean,
        kv_bytes_allocated: report.kv_bytes_allocated,
    })
}

/// Answers to every prompt under `settings`.
pub fn run_arm(
    engine: &Engine,
    settings: &KvSettings,
    prompts: &[Vec<u32>],
    tokens: usize,
    pb: &ProgressBar,
) -> Result<Vec<ArmRun>> {
    let mut ws = engine.workspace();
    prompts
        .iter()
        .map(|p| generate(engine, &mut ws, settings, p, tokens, pb))
        .collect()
}

/// How degenerate one answer is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Degeneration {
    /// distinct-1 to distinct-4 of the answer's ids.
    pub distinct: [f64; 4],
    /// Tokens in the longest stretch made of one block repeated back to back.
    pub longest_loop: usize,
}

impl Degeneration {
    /// Fails for answers shorter than 4 tokens (no 4-grams).
    pub fn of(ids: &[u32]) -> Result<Degeneration> {
        let mut distinct = [0.0; 4];
        for (n, d) in distinct.iter_mut().enumerate() {
            *d = distinct_n(ids, n + 1).ok_or_else(|| {
                Error::InvalidSetting(format!(
                    "distinct-{} needs at least {} tokens; the answer has {}",
                    n + 1,
                    n + 1,
                    ids.len()
                ))
            })?;
        }
        Ok(Degeneration {
            distinct,
            longest_loop: longest_loop(ids),
        })
    }
}

/// Everything measured on one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct PromptResult {
    pub index: usize,
    #[serde(rename = "type")]
    pub kind: String,
    /// Words the request asks for.
    pub length_words: usize,
    pub prompt_tokens: usize,
    pub full: Degeneration,
    pub kv: Degeneration,
    /// The compressed cache's pruned ratio every `SAMPLE_EVERY` tokens and at the end.
    pub pruned: Vec<PrunedSample>,
    pub pruned_ratio_mean: f64,
    pub kv_bytes_allocated: usize,
    pub kv_bytes_allocated_full: usize,
    /// ROUGE-L F1 of the compressed answer's ids against the full answer's.
    pub rouge_l: f64,
    /// Index of the first token where the answers differ (the length if identical).
    pub first_divergence: usize,
    pub identical: bool,
    pub text_full: String,
    pub text_kv: String,
}

/// Pairs each prompt's two answers and measures them.
pub fn compare(
    engine: &Engine,
    items: &[WritePrompt],
    prompts: &[Vec<u32>],
    full: &[ArmRun],
    kv: &[ArmRun],
) -> Result<Vec<PromptResult>> {
    items
        .iter()
        .zip(prompts)
        .zip(full.iter().zip(kv))
        .enumerate()
        .map(|(i, ((item, prompt), (f, k)))| {
            Ok(PromptResult {
                index: i + 1,
                kind: item.kind.clone(),
                length_words: item.length,
                prompt_tokens: prompt.len(),
                full: Degeneration::of(&f.ids)?,
                kv: Degeneration::of(&k.ids)?,
                pruned: k.pruned.clone(),
                pruned_ratio_mean: k.pruned_ratio_mean,
                kv_bytes_allocated: k.kv_bytes_allocated,
                kv_bytes_allocated_full: f.kv_bytes_allocated,
                rouge_l: rouge_l_f1(&k.ids, &f.ids),
                first_divergence: first_divergence(&k.ids, &f.ids),
                identical: k.ids == f.ids,
                text_full: engine.tokenizer.decode(&f.ids),
                text_kv: engine.tokenizer.decode(&k.ids),
            })
        })
        .collect()
}

/// Means over prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    /// Mean pruned ratio at each sample point.
    pub pruned: Vec<PrunedSample>,
    pub pruned_ratio_mean: f64,
    pub kv_bytes_allocated: f64,
    pub kv_bytes_allocated_full: f64,
    pub distinct_full: [f64; 4],
    pub distinct_kv: [f64; 4],
    /// Mean distinct-4 of the compressed answers over that of the full ones.
    pub distinct4_ratio: f64,
    pub longest_loop_full: f64,
    pub longest_loop_kv: f64,
    pub longest_loop_full_max: usize,
    pub longest_loop_kv_max: usize,
    pub rouge_l: f64,
    pub first_divergence: f64,
    /// Answers identical to the full cache's, token for token.
    pub identical: usize,
}

impl Summary {
    /// The mean pruned ratio with the whole answer in the cache (the last sample).
    pub fn pruned_end(&self) -> f64 {
        self.pruned.last().map_or(0.0, |p| p.pruned_ratio)
    }
}

/// `None` for no prompts.
pub fn summarise(results: &[PromptResult]) -> Option<Summary> {
    let first = results.first()?;
    let n = results.len() as f64;
    let mean = |f: &dyn Fn(&PromptResult) -> f64| results.iter().map(f).sum::<f64>() / n;
    let pruned = (0..first.pruned.len())
        .map(|i| PrunedSample {
            generated: first.pruned[i].generated,
            pruned_ratio: mean(&|r| r.pruned.get(i).map_or(0.0, |s| s.pruned_ratio)),
        })
        .collect();
    let distinct_full: [f64; 4] = std::array::from_fn(|k| mean(&|r| r.full.distinct[k]));
    let distinct_kv: [f64; 4] = std::array::from_fn(|k| mean(&|r| r.kv.distinct[k]));
    Some(Summary {
        n: results.len(),
        pruned,
        pruned_ratio_mean: mean(&|r| r.pruned_ratio_mean),
        kv_bytes_allocated: mean(&|r| r.kv_bytes_allocated as f64),
        kv_bytes_allocated_full: mean(&|r| r.kv_bytes_allocated_full as f64),
        distinct_full,
        distinct_kv,
        distinct4_ratio: distinct_kv[3] / distinct_full[3],
        longest_loop_full: mean(&|r| r.full.longest_loop as f64),
        longest_loop_kv: mean(&|r| r.kv.longest_loop as f64),
        longest_loop_full_max: results.iter().map(|r| r.full.longest_loop).max()?,
        longest_loop_kv_max: results.iter().map(|r| r.kv.longest_loop).max()?,
        rouge_l: mean(&|r| r.rouge_l),
        first_divergence: mean(&|r| r.first_divergence as f64),
        identical: results.iter().filter(|r| r.identical).count(),
    })
}

/// Sample points to print: at most 8 columns, always the last.
fn shown(samples: &[PrunedSample]) -> Vec<PrunedSample> {
    let step = samples.len().div_ceil(8).max(1);
    let mut out: Vec<PrunedSample> = samples.iter().rev().step_by(step).copied().collect();
    out.reverse();
    out
}

fn mib(bytes: f64) -> f64 {
    bytes / (1 << 20) as f64
}

/// The one-screen report: means, then one line per prompt.
pub fn render(label: &str, tokens: usize, s: &Summary, results: &[PromptResult]) -> String {
    let mut out = format!(
        "longgen: {} LongBench-Write prompts, {tokens} greedy tokens each (end-of-generation \
         masked until then)\narm: {label}, against the full cache\n\n",
        s.n
    );
    let cols = shown(&s.pruned);
    out += "pruned % at token";
    for c in &cols {
        out += &format!(" {:>6}", c.generated);
    }
    out += "\n          (mean)";
    for c in &cols {
        out += &format!(" {:>6.1}", 100.0 * c.pruned_ratio);
    }
    out += &format!(
        "\nmean over all decode steps {:.1} %; KV at the end {:.1} MiB allocated, full cache \
         {:.1} MiB ({:.1} %)\n\n",
        100.0 * s.pruned_ratio_mean,
        mib(s.kv_bytes_allocated),
        mib(s.kv_bytes_allocated_full),
        100.0 * s.kv_bytes_allocated / s.kv_bytes_allocated_full
    );
    out += "                   full      arm\n";
    for k in 0..4 {
        out += &format!(
            "distinct-{}       {:>6.3}   {:>6.3}\n",
            k + 1,
            s.distinct_full[k],
            s.distinct_kv[k]
        );
    }
    out += &format!(
        "longest loop     {:>6.1}   {:>6.1}   tokens, mean (max {} / {})\n\
         distinct-4 arm/full: {:.3}\n\
         agreement: ROUGE-L F1 of ids {:.3}, first divergence at token {:.1} (mean), {} of {} \
         identical\n\n",
        s.longest_loop_full,
        s.longest_loop_kv,
        s.longest_loop_full_max,
        s.longest_loop_kv_max,
        s.distinct4_ratio,
        s.rouge_l,
        s.first_divergence,
        s.identical,
        s.n
    );
    out +=
        " #  type                 words prompt pruned% KV/full d4 full d4 arm loop full loop arm \
            ROUGE-L diverge\n";
    for r in results {
        let kind: String = r.kind.chars().take(20).collect();
        out += &format!(
            "{:>2}  {kind:<20} {:>5} {:>6} {:>7.1} {:>7.3} {:>7.3} {:>6.3} {:>9} {:>8} {:>7.3} {:>7}\n",
            r.index,
            r.length_words,
            r.prompt_tokens,
            100.0 * r.pruned.last().map_or(0.0, |p| p.pruned_ratio),
            r.kv_bytes_allocated as f64 / r.kv_bytes_allocated_full.max(1) as f64,
            r.full.distinct[3],
            r.kv.distinct[3],
            r.full.longest_loop,
            r.kv.longest_loop,
            r.rouge_l,
            r.first_divergence
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(kv_ids: &[u32], full_ids: &[u32], end_pruned: f64) -> PromptResult {
        PromptResult {
            index: 1,
            kind: "Functional Writing".into(),
            length_words: 100,
            prompt_tokens: 30,
            full: Degeneration::of(full_ids).unwrap(),
            kv: Degeneration::of(kv_ids).unwrap(),
            pruned: vec![
                PrunedSample {
                    generated: 4,
                    pruned_ratio: end_pruned / 2.0,
                },
                PrunedSample {
                    generated: kv_ids.len(),
                    pruned_ratio: end_pruned,
                },
            ],
            pruned_ratio_mean: end_pruned / 2.0,
            kv_bytes_allocated: 300,
            kv_bytes_allocated_full: 1000,
            rouge_l: rouge_l_f1(kv_ids, full_ids),
            first_divergence: first_divergence(kv_ids, full_ids),
            identical: kv_ids == full_ids,
            text_full: String::new(),
            text_kv: String::new(),
        }
    }

    #[test]
    fn summary_means_by_hand() {
        let varied = [1, 2, 3, 4, 5, 6, 7, 8];
        let looped = [1, 2, 1, 2, 1, 2, 1, 2];
        let rs = [result(&varied, &varied, 0.4), result(&looped, &varied, 0.6)];
        let s = summarise(&rs).unwrap();
        assert_eq!(s.n, 2);
        assert_eq!(s.identical, 1);
        // Full: distinct-4 1 twice; arm: 1 and 2/5 (12 21 12 21 12 ... two distinct of five).
        assert_eq!(s.distinct_full[3], 1.0);
        assert!((s.distinct_kv[3] - 0.7).abs() < 1e-12);
        assert!((s.distinct4_ratio - 0.7).abs() < 1e-12);
        assert_eq!((s.longest_loop_full, s.longest_loop_kv), (0.0, 4.0));
        assert_eq!((s.longest_loop_full_max, s.longest_loop_kv_max), (0, 8));
        // Identical: 8 (the length); 1 2 1.. against 1 2 3..: 2.
        assert_eq!(s.first_divergence, 5.0);
        assert!((s.pruned[1].pruned_ratio - 0.5).abs() < 1e-12);
        assert_eq!(s.pruned_end(), s.pruned[1].pruned_ratio);
        assert_eq!(s.pruned[1].generated, 8);
        assert_eq!(s.kv_bytes_allocated, 300.0);
        assert!(summarise(&[]).is_none());
        let text = render("fastgen T=0.95", 8, &s, &rs);
        assert!(text.contains("distinct-4 arm/full: 0.700"), "{text}");
        assert!(text.contains("1 of 2 identical"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with(" 1  Functional"))
                .count(),
            2
        );
    }

    #[test]
    fn degeneration_needs_four_tokens() {
        assert!(Degeneration::of(&[1, 2, 3]).is_err());
        let d = Degeneration::of(&[3, 3, 3, 3]).unwrap();
        assert_eq!(d.distinct, [0.25, 1.0 / 3.0, 0.5, 1.0]);
        assert_eq!(d.longest_loop, 4);
    }

    #[test]
    fn at_most_eight_columns_ending_at_the_end() {
        let samples: Vec<PrunedSample> = (1..=17)
            .map(|k| PrunedSample {
                generated: 128 * k,
                pruned_ratio: 0.0,
            })
            .collect();
        let s = shown(&samples);
        assert!(s.len() <= 8, "{}", s.len());
        assert_eq!(s.last().unwrap().generated, 128 * 17);
        assert_eq!(shown(&samples[..8]).len(), 8);
    }
}
