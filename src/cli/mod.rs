//! Command-line interface: shared argument groups and dispatch.

mod fetch;
mod run;
#[cfg(feature = "server")]
mod serve;
mod tokenize;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fastgen::chat::ChatTemplate;
use fastgen::fetch as fetcher;
use fastgen::model::Model;
use fastgen::tokenizer::Tokenizer;

#[derive(Parser)]
#[command(
    name = "fastgen",
    version,
    about = "LLM inference on the CPU with FastGen adaptive KV-cache compression"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt (chat-formatted unless --raw).
    Run(run::RunArgs),
    /// Print the token ids of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Download the pinned models into $FASTGEN_HOME/models.
    Fetch(fetch::FetchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Fetch(a) => fetch::run(a),
        #[cfg(feature = "server")]
        Command::Serve(a) => serve::run(a),
    }
}

/// Which model to use and how many threads to run it on.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A known model name (smollm2, qwen2.5-0.5b), fetched on first use, or a path to a GGUF file.
    #[arg(long, short = 'm', default_value = fetcher::DEFAULT_MODEL)]
    pub model: String,
    /// Worker threads (default: the number of cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

/// A loaded model with its tokenizer and chat template.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        if let Some(n) = self.threads {
            anyhow::ensure!(n >= 1, "--threads must be at least 1");
            // Fails only if the pool was already built; then the first setting stands.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global();
        }
        let path = fetcher::resolve_model(&self.model)?;
        let model = Model::load(&path).with_context(|| format!("loading {}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf(model.gguf())?;
        let template = ChatTemplate::from_gguf(model.gguf())?;
        Ok(Loaded {
            model,
            tokenizer,
            template,
        })
    }
}
