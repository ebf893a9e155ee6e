//! Throughput benchmarks shaped like llama.cpp's `llama-bench`: `pp<N>` (a prompt of N
//! tokens in one go, tokens/s) and `tg<N> @ d<D>` (N tokens decoded one at a time after D
//! tokens of context, tokens/s). The context is real prose (the essays), not random ids,
//! because what FastGen keeps depends on content.
//!
//! Every test runs under a KV cache method (`compress::KvSettings`): `full` is the plain
//! engine (the compressed cache passes straight through to the model); FastGen and the
//! baselines profile and compress when the depth is prefilled, and evict after every
//! decoded token, so their rows show what compression does to speed.
//!
//! A decode test with `seqs` above 1 decodes that many sequences together, one forward pass
//! per step over one row of each (`Model::forward_batch`), and reports the aggregate
//! tokens/s: what a server gains by reading the weights once for all running requests.

use crate::compress::{CacheFactory, CompressedCache, KvKind, KvSettings};
use crate::error::{Error, Result};
use crate::kv_cache::{KvCache, KvDtype};
use crate::model::{Model, Workspace};
use std::time::Instant;

/// What a test measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `tokens` prompt tokens in one forward pass, from an empty cache.
    Prompt { tokens: usize },
    /// `tokens` decode steps after `depth` tokens of context, for `seqs` sequences at once.
    Gen {
        tokens: usize,
        depth: usize,
        seqs: usize,
    },
}

impl Test {
    /// The name llama-bench gives the test: `pp512`, `tg64 @ d2048`; a batch of 8
    /// sequences adds ` x8`.
    pub fn name(&self) -> String {
        match *self {
            Test::Prompt { tokens } => format!("pp{tokens}"),
            Test::Gen {
                tokens,
                depth,
                seqs: 1,
            } => format!("tg{tokens} @ d{depth}"),
            Test::Gen {
                tokens,
                depth,
                seqs,
            } => format!("tg{tokens} @ d{depth} x{seqs}"),
        }
    }
    /// Sequences the test runs together.
    pub fn seqs(&self) -> usize {
        match *self {
            Test::Prompt { .. } => 1,
            Test::Gen { seqs, .. } => seqs,
        }
    }
    /// Prose tokens the test needs (a compressing cache at depth 0 is given one token of
    /// prompt: it cannot decode before a prefill).
    fn tokens_needed(&self) -> usize {
        match *self {
            Test::Prompt { tokens } => tokens,
            Test::Gen { tokens, depth, .. } => depth.max(1) + tokens,
        }
    }
}

/// One run of a test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Tokens/s over all the test's sequences.
    pub tok_s: f64,
    /// Decode tests: mean KV-cache bytes read per decoded token (keys and values of every
    /// slot its sequence's step attends over). 0 for prompt tests.
    pub kv_bytes_per_token: f64,
    /// Tokens per second of CPU time of the calling thread (time it was not running does
    /// not count), where the OS reports it; 0 otherwise. With one thread this measures the
    /// code rather than the machine's other load.
    pub cpu_tok_s: f64,
    /// The cache after the test: pruned ratio averaged over decode steps (after prefill for
    /// prompt tests), bytes its buffers hold, and profiling time.
    pub pruned_ratio: f64,
    pub kv_bytes_allocated: usize,
    pub profile_ms: f64,
}

/// Peak resident set size of this process (VmHWM), where Linux reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Restarts the peak-RSS count from the current RSS (Linux `clear_refs` 5), so the next
/// reading covers only what follows; `false` where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Nanoseconds the calling thread has run on a CPU (Linux scheduler accounting).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Tokens/s of wall and thread CPU time for `tokens` processed by `f`.
fn timed(tokens: usize, f: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    f()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => tokens as f64 / ((b - a) as f64 / 1e9),
        _ => 0.0,
    };
    Ok((tokens as f64 / wall, cpu))
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

/// Context a decode test prefills: full decodes from an empty cache, a compressing one
/// needs a prompt (one token at depth 0).
fn context_depth(kv: &KvSettings, depth: usize) -> usize {
    if kv.kind == KvKind::Full {
        depth
    } else {
        depth.max(1)
    }
}

/// KV bytes a decode step at the cache's current state reads.
fn kv_bytes(cache: &KvCache) -> usize {
    cache.kept_entries() * cache.dtype.entry_bytes(cache.head_dim)
}

/// Runs benchmark tests on one model, reusing its workspace.
pub struct Bench<'m> {
    pub model: &'m Model,
    prose: Vec<u32>,
    ws: Workspace,
    caches: CacheFactory,
}

impl<'m> Bench<'m> {
    /// Prepares prose for the largest of `tests`.
    pub fn new(model: &'m Model, tests: &[Test], dtype: KvDtype) -> Result<Bench<'m>> {
        let need = tests.iter().map(|t| t.tokens_needed()).max().unwrap_or(0);
        if need > model.cfg.n_ctx {
            return Err(Error::ContextOverflow {
                tokens: need,
                ctx: model.cfg.n_ctx,
            });
        }
        let prose = prose_tokens(model, need)?;
        let tok = crate::tokenizer::Tokenizer::from_gguf(model.gguf())?;
        let caches = CacheFactory::new(&model.cfg, &tok, dtype);
        Ok(Bench {
            model,
            prose,
            ws: Workspace::default(),
            caches,
        })
    }

    /// One run of `test` under the cache method `kv`.
    pub fn run(&mut self, test: Test, kv: &KvSettings) -> Result<Sample> {
        if let Test::Gen {
            tokens,
            depth,
            seqs: 2..,
        } = test
        {
            return self.run_batch(tokens, depth, test.seqs(), kv);
        }
        let model = self.model;
        let mut cache = self.caches.cache(kv)?;
        let (prose, ws) = (&self.prose, &mut self.ws);
        let (tok_s, cpu_tok_s, kv_bytes_per_token) = match test {
            Test::Prompt { tokens } => {
                let (t, c) = timed(tokens, || {
                    cache.prefill(model, ws, &prose[..tokens]).map(|_| ())
                })?;
                (t, c, 0.0)
            }
            Test::Gen { tokens, depth, .. } => {
                let depth = context_depth(kv, depth);
                if depth > 0 {
                    cache.prefill(model, ws, &prose[..depth])?;
                }
                let mut read = 0usize;
                let (t, c) = timed(tokens, || {
                    for &t in &prose[depth..depth + tokens] {
                        cache.decode(model, ws, t)?;
                        read += kv_bytes(cache.kv());
                    }
                    Ok(())
                })?;
                (t, c, read as f64 / tokens.max(1) as f64)
            }
        };
        let report = cache.report();
        Ok(Sample {
            tok_s,
            kv_bytes_per_token,
            cpu_tok_s,
            pruned_ratio: report.pruned_ratio_mean,
            kv_bytes_allocated: report.kv_bytes_allocated,
            profile_ms: report.profile_ms,
        })
    }

    /// `seqs` sequences, each prefilled with the same `depth` tokens, then decoding `tokens`
    /// steps together: one forward pass per step over one row of each, each sequence
    /// profiling and evicting under `kv` as it would alone.
    fn run_batch(
        &mut self,
        tokens: usize,
        depth: usize,
        seqs: usize,
        kv: &KvSettings,
    ) -> Result<Sample> {
        let model = self.model;
        let depth = context_depth(kv, depth);
        let mut caches = Vec::with_capacity(seqs);
        for _ in 0..seqs {
            let mut c = self.caches.cache(kv)?;
            c.reserve_full(depth + tokens);
            if depth > 0 {
                c.prefill(model, &mut self.ws, &self.prose[..depth])?;
            }
            caches.push(c);
        }
        let (prose, ws) = (&self.prose, &mut self.ws);
        let mut read = 0usize;
        let mut step = vec![0; seqs];
        let (tok_s, cpu_tok_s) = timed(seqs * tokens, || {
            for &t in &prose[depth..depth + tokens] {
                let mut refs: Vec<&mut CompressedCache> = caches.iter_mut().collect();
                step.fill(t);
                CompressedCache::decode_batch(model, ws, &mut refs, &step, &mut |_, _| {})?;
                read += caches.iter().map(|c| kv_bytes(c.kv())).sum::<usize>();
            }
            Ok(())
        })?;
        let reports: Vec<_> = caches.iter().map(|c| c.report()).collect();
        let n = seqs as f64;
        Ok(Sample {
            tok_s,
            kv_bytes_per_token: read as f64 / (seqs * tokens).max(1) as f64,
            cpu_tok_s,
            pruned_ratio: reports.iter().map(|r| r.pruned_ratio_mean).sum::<f64>() / n,
            kv_bytes_allocated: reports.iter().map(|r| r.kv_bytes_allocated).sum(),
            profile_ms: reports.iter().map(|r| r.profile_ms).sum(),
        })
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
    fn peak_rss_is_read_from_proc() {
        // After a reset the peak is the current RSS; 64 MiB touched must raise it as much.
        assert!(reset_peak_rss(), "clear_refs on Linux");
        let before = peak_rss_bytes().expect("VmHWM on Linux");
        let big = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = peak_rss_bytes().unwrap();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        assert_eq!(std::hint::black_box(&big)[12345], 1);
    }

    #[test]
    fn test_names_follow_llama_bench() {
        assert_eq!(Test::Prompt { tokens: 512 }.name(), "pp512");
        assert_eq!(
            Test::Gen {
                tokens: 64,
                depth: 2048,
                seqs: 1
            }
            .name(),
            "tg64 @ d2048"
        );
        let batch = Test::Gen {
            tokens: 64,
            depth: 0,
            seqs: 8,
        };
        assert_eq!((batch.name().as_str(), batch.seqs()), ("tg64 @ d0 x8", 8));
    }
}
