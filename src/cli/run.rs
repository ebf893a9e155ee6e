//! `fastgen run`: generate from a prompt, streaming text to stdout and timing to stderr.

use super::{Loaded, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use fastgen::chat::ChatMessage;
use fastgen::generate::{generate, GenerateOptions, Generation};
use fastgen::kv_cache::KvDtype;
use fastgen::model::Workspace;
use fastgen::sampling::SamplerConfig;
use fastgen::tokenizer::StreamDecoder;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// The prompt text (or use --prompt-file / --prompt-ids).
    prompt: Option<String>,
    /// Read the prompt text from a file.
    #[arg(long, conflicts_with_all = ["prompt", "prompt_ids"])]
    prompt_file: Option<PathBuf>,
    /// Read the prompt as a JSON array of token ids (sent as is).
    #[arg(long, conflicts_with = "prompt")]
    prompt_ids: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
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
    /// Send the text as is, without the model's chat template.
    #[arg(long)]
    raw: bool,
    /// Record the K most likely tokens of each step (in --json).
    #[arg(long, default_value_t = 0)]
    top_logprobs: usize,
    /// Write the prompt, tokens, log-probabilities and timing as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Element type of the KV cache.
    #[arg(long, default_value = "f16", value_parser = ["f16", "f32"])]
    kv_dtype: String,
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
    let loaded = a.model.load()?;
    let prompt_ids = prompt_ids(&a, &loaded)?;
    let dtype = if a.kv_dtype == "f32" {
        KvDtype::F32
    } else {
        KvDtype::F16
    };
    let model = &loaded.model;
    let mut cache = model.new_cache(dtype);
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
    if let Some(path) = &a.json {
        let doc = json_report(&loaded, &prompt_ids, &gen);
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The prompt as token ids: from --prompt-ids, or the text (chat-formatted unless --raw).
fn prompt_ids(a: &RunArgs, loaded: &Loaded) -> Result<Vec<u32>> {
    if let Some(path) = &a.prompt_ids {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let ids: Vec<u32> = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON array of token ids", path.display()))?;
        return Ok(ids);
    }
    let text = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading prompt file {}", f.display()))?,
        (None, None) => bail!("give a prompt, --prompt-file or --prompt-ids"),
    };
    let text = match (&loaded.template, a.raw) {
        (Some(tpl), false) => tpl.render(&[ChatMessage::new("user", &text)], true)?,
        _ => text,
    };
    Ok(loaded.tokenizer.encode(&text)?)
}

fn json_report(loaded: &Loaded, prompt_ids: &[u32], gen: &Generation) -> serde_json::Value {
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
    })
}
