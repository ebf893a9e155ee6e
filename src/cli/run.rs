//! `fastgen run`: generate from a prompt, streaming text to stdout and timing to stderr.

use super::{KvArgs, Loaded, ModelArgs, PromptArgs};
use anyhow::{Context, Result};
use clap::Args;
use fastgen::compress::{CompressedCache, KvReport};
use fastgen::generate::{generate, GenerateOptions, Generation};
use fastgen::model::Workspace;
use fastgen::sampling::SamplerConfig;
use fastgen::tokenizer::StreamDecoder;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    kv: KvArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with this much probability (1 = all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Record the K most likely tokens of each step (in --json).
    #[arg(long, default_value_t = 0)]
    top_logprobs: usize,
    /// Write the prompt, tokens, log-probabilities, timing and KV accounting as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampler: SamplerConfig {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        top_logprobs: a.top_logprobs,
    };
    // Settings are checked before the model is loaded, so a typo fails at once.
    opts.sampler.validate()?;
    let settings = a.kv.settings()?;
    let loaded = a.model.load()?;
    let prompt_ids = a.prompt.ids(&loaded)?;
    let model = &loaded.model;
    let mut cache: CompressedCache = a.kv.new_cache(&loaded, settings)?;
    let mut ws = Workspace::default();
    let mut stream = StreamDecoder::new(&loaded.tokenizer);
    let mut stdout = std::io::stdout().lock();
    let eog = loaded.tokenizer.eog_ids().to_vec();
    let gen = generate(
        model,
        &mut cache,
        &mut ws,
        &prompt_ids,
        &opts,
        &eog,
        &mut |id| {
            let text = stream.push(id);
            // A closed stdout (e.g. `| head`) stops generation instead of failing later.
            stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
                .is_ok()
        },
    )?;
    let _ = write!(stdout, "{}", stream.flush());
    let _ = writeln!(stdout).and_then(|_| stdout.flush());
    let t = &gen.timing;
    eprintln!(
        "prompt {} tokens, prefill {:.1} tok/s ({:.0} ms); generated {} tokens, decode {:.1} tok/s",
        t.prompt_tokens,
        t.prefill_tok_s(),
        t.prefill_ms,
        t.generated_tokens,
        t.decode_tok_s()
    );
    let kv = cache.report();
    eprintln!("{}", kv.summary());
    if let Some(path) = &a.json {
        let doc = json_report(&loaded, &prompt_ids, &gen, &kv);
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn json_report(
    loaded: &Loaded,
    prompt_ids: &[u32],
    gen: &Generation,
    kv: &KvReport,
) -> serde_json::Value {
    let t = &gen.timing;
    // The end-of-generation token ends the text; it is not part of it.
    let visible: Vec<u32> = gen
        .generated_ids
        .iter()
        .copied()
        .filter(|&id| !loaded.tokenizer.is_eog(id))
        .collect();
    json!({
        "model": loaded.model.path.display().to_string(),
        "prompt_ids": prompt_ids,
        "generated_ids": gen.generated_ids,
        "text": loaded.tokenizer.decode(&visible),
        "steps": gen.steps.iter().map(|s| json!({
            "id": s.id,
            "logprob": s.logprob,
            "top": s.top.iter().map(|&(id, lp)| json!([id, lp])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "timing": {
            "prefill_ms": t.prefill_ms,
            "decode_ms": t.decode_ms,
            "prefill_tok_s": t.prefill_tok_s(),
            "decode_tok_s": t.decode_tok_s(),
        },
        "kv": kv.to_json(),
    })
}
