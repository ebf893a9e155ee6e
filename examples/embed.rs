//! fastgen from Rust: load a model, make a FastGen cache, stream a chat answer, and read what
//! the cache kept. The library path the `fastgen` binary takes, without the command line.
//!
//! ```sh
//! cargo run --release --example embed -- "Write a haiku about the sea."
//! ```

use fastgen::chat::{ChatMessage, ChatTemplate};
use fastgen::compress::{CacheFactory, KvSettings};
use fastgen::fetch;
use fastgen::generate::{generate, GenerateOptions};
use fastgen::kv_cache::KvDtype;
use fastgen::model::{Model, Workspace};
use fastgen::sampling::SamplerConfig;
use fastgen::tokenizer::{StreamDecoder, Tokenizer};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or("Why is the sky blue?".into());

    // A pinned model by its short name (fetched and checked on first use), or any GGUF path.
    let path = fetch::resolve_model("smollm2")?;
    let model = Model::load(&path)?;
    let tokenizer = Tokenizer::from_gguf(model.gguf())?;
    let template =
        ChatTemplate::from_gguf(model.gguf())?.ok_or("the model has no chat template")?;
    let text = template.render(&[ChatMessage::new("user", question)], true)?;
    let prompt = tokenizer.encode(&text)?;

    // The default FastGen cache (`--kv fastgen`) with one setting changed: T = 0.95. It stays
    // whole until the sequence holds `compress_from` (512) tokens, so a short chat is answered
    // exactly as with the full cache; `KvSettings::paper()` and `KvSettings::with_kind` give
    // the paper's rules and the baselines.
    let caches = CacheFactory::new(&model.cfg, &tokenizer, KvDtype::F16);
    let settings = KvSettings::default().with(|s| s.fastgen.recovery = 0.95);
    let mut cache = caches.cache(&settings)?;

    let opts = GenerateOptions {
        max_tokens: 128,
        sampler: SamplerConfig::greedy(),
        top_logprobs: 0,
    };
    let mut ws = Workspace::default();
    let mut stream = StreamDecoder::new(&tokenizer);
    let mut out = std::io::stdout();
    let gen = generate(
        &model,
        &mut cache,
        &mut ws,
        &prompt,
        &opts,
        tokenizer.eog_ids(),
        &mut |id| {
            write!(out, "{}", stream.push(id))
                .and_then(|_| out.flush())
                .is_ok()
        },
    )?;
    println!("{}", stream.flush());

    let report = cache.report();
    eprintln!(
        "{} tokens at {:.1} tok/s; {}",
        gen.timing.generated_tokens,
        gen.timing.decode_tok_s(),
        report.summary()
    );
    Ok(())
}
