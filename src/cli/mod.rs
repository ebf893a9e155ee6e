//! Command-line interface: shared argument groups and dispatch.

mod bench;
mod eval;
mod fetch;
mod profile;
mod run;
#[cfg(feature = "server")]
mod serve;
mod tokenize;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use fastgen::chat::{ChatMessage, ChatTemplate};
use fastgen::compress::{
    parse_candidates, Budget, CacheFactory, CompressedCache, FastGenSettings, KvSettings,
    PartSettings, SnapSettings,
};
use fastgen::fetch as fetcher;
use fastgen::kv_cache::KvDtype;
use fastgen::model::Model;
use fastgen::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

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
    /// Profile a prompt: each KV head's FastGen policy and recovery, per-layer histogram,
    /// and the layer x KV-head policy map as SVG and PNG.
    Profile(profile::ProfileArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
    /// Measure prompt and decode speed (llama-bench style), optionally against llama.cpp.
    Bench(bench::BenchArgs),
    /// Measure what a compressed cache costs in quality against the full cache (ppl, niah,
    /// agree, gsm8k, sweep, longgen).
    Eval(eval::EvalArgs),
}

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Profile(a) => profile::run(a),
        #[cfg(feature = "server")]
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Eval(a) => eval::run(a),
    }
}

/// Which model to use and how many threads to run it on.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A known model name (smollm2, qwen2.5-0.5b, gemma3-270m), fetched on first use, or a path to a GGUF file.
    #[arg(long, short = 'm', default_value = fetcher::DEFAULT_MODEL)]
    pub model: String,
    /// Worker threads (default: the number of cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

/// A loaded model with its tokenizer. Its chat template is compiled only by the commands
/// that render one ([`Loaded::chat_template`]): a template that does not compile never
/// breaks `--raw` or `tokenize`.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
}

impl Loaded {
    /// The chat template: the one in `file` if given (with the model's BOS and EOS texts),
    /// else the model's own (`None` for a model without one).
    pub fn chat_template(&self, file: Option<&Path>) -> Result<Option<ChatTemplate>> {
        let g = self.model.gguf();
        match file {
            Some(f) => {
                let source = read_bounded(f, MAX_TEMPLATE_FILE_BYTES, "chat template file")?;
                let name = format!("chat template file {}", f.display());
                Ok(Some(ChatTemplate::with_gguf_tokens(g, &source, &name)?))
            }
            None => {
                let name = format!(
                    "{}'s tokenizer.chat_template",
                    self.model
                        .path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                );
                ChatTemplate::from_gguf_named(g, &name).map_err(|e| {
                    anyhow::anyhow!("{e} (--raw, or --chat-template FILE, runs without it)")
                })
            }
        }
    }
}

/// Largest chat template file (`--chat-template`): real ones are a few KiB.
const MAX_TEMPLATE_FILE_BYTES: u64 = 1 << 20;

/// A text file of at most `limit` bytes (a prompt, a template), refused before it is read
/// if larger; `what` names it in errors.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let mut text = String::new();
    // One byte past the limit tells a file at the limit from a larger one (even a pipe).
    let read = file
        .take(limit + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if read as u64 > limit {
        bail!(
            "{what} {} is larger than the limit of {limit} bytes",
            path.display()
        );
    }
    Ok(text)
}

/// Bytes per token of context a prompt file may hold: real text has 3 to 6, so a file past
/// this cannot fit the context (with `--prompt-tokens`, cut it first).
const PROMPT_FILE_BYTES_PER_TOKEN: u64 = 64;

/// Largest prompt file for a context of `n_ctx` tokens (at least 1 MiB).
fn prompt_file_limit(n_ctx: usize) -> u64 {
    (n_ctx as u64)
        .saturating_mul(PROMPT_FILE_BYTES_PER_TOKEN)
        .max(1 << 20)
}

impl ModelArgs {
    /// Only the model's tokenizer, from its GGUF metadata (the weights are not loaded, so
    /// this works for architectures the engine cannot run).
    pub fn load_tokenizer(&self) -> Result<Tokenizer> {
        let path = fetcher::resolve_model(&self.model)?;
        let g = fastgen::gguf::Gguf::open(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Tokenizer::from_gguf(&g)?)
    }

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
        Ok(Loaded { model, tokenizer })
    }
}

/// Where the prompt comes from.
#[derive(Args, Clone)]
pub struct PromptArgs {
    /// The prompt text (or use --prompt-file / --prompt-ids).
    prompt: Option<String>,
    /// Read the prompt text from a file.
    #[arg(long, conflicts_with_all = ["prompt", "prompt_ids"])]
    prompt_file: Option<PathBuf>,
    /// Read the prompt as a JSON array of token ids (sent as is).
    #[arg(long, conflicts_with = "prompt")]
    prompt_ids: Option<PathBuf>,
    /// Send the text as is, without the model's chat template.
    #[arg(long)]
    raw: bool,
    /// Use the chat template in this file instead of the model's (Jinja, as in
    /// tokenizer.chat_template).
    #[arg(long, conflicts_with_all = ["raw", "prompt_ids"])]
    chat_template: Option<PathBuf>,
    /// Keep only the first N prompt tokens (after the chat template, if any).
    #[arg(long)]
    prompt_tokens: Option<usize>,
}

impl PromptArgs {
    /// The prompt as token ids: from --prompt-ids, or the text (chat-formatted unless --raw).
    pub fn ids(&self, loaded: &Loaded) -> Result<Vec<u32>> {
        let mut ids = self.all_ids(loaded)?;
        if let Some(n) = self.prompt_tokens {
            anyhow::ensure!(n >= 1, "--prompt-tokens must be at least 1");
            ids.truncate(n);
        }
        Ok(ids)
    }

    fn all_ids(&self, loaded: &Loaded) -> Result<Vec<u32>> {
        // A prompt that could fit the context is far smaller than this: the file is refused
        // before it is read, not after its tokens fill memory.
        let limit = prompt_file_limit(loaded.model.cfg.n_ctx);
        if let Some(path) = &self.prompt_ids {
            let text = read_bounded(path, limit, "prompt ids file")?;
            let ids: Vec<u32> = serde_json::from_str(&text).with_context(|| {
                format!("{}: expected a JSON array of token ids", path.display())
            })?;
            return Ok(ids);
        }
        let text = match (&self.prompt, &self.prompt_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read_bounded(f, limit, "prompt file")?,
            (None, None) => bail!("give a prompt, --prompt-file or --prompt-ids"),
        };
        if self.raw {
            return Ok(loaded.tokenizer.encode_prompt(&text)?);
        }
        // BOS first when the model asks for it, as llama.cpp tokenizes a prompt.
        Ok(match loaded.chat_template(self.chat_template.as_deref())? {
            Some(tpl) => {
                let rendered = tpl.render(&[ChatMessage::new("user", &text)], true)?;
                loaded.tokenizer.encode_chat_prompt(&rendered)?
            }
            None => {
                eprintln!(
                    "note: this model has no chat template (a base model): the prompt is \
                     continued as plain text, as with --raw"
                );
                loaded.tokenizer.encode_prompt(&text)?
            }
        })
    }
}

/// The KV cache: its method (FastGen or a baseline) and their settings.
#[derive(Args, Clone)]
pub struct KvArgs {
    /// KV-cache method: fastgen (adaptive per KV head, with replay, grace and causal scores),
    /// fastgen-paper (the paper's rules), full, window (sink tokens + recent, StreamingLLM),
    /// h2o (local + frequent on every head), snapkv (each head keeps its top prompt tokens by
    /// the observation window's attention, then evicts nothing), adakv (snapkv with one
    /// top-k per layer), or fixed:PARTS on every head (parts: special, punct, frequent, local,
    /// sink, full; e.g. fixed:special+punct+frequent).
    #[arg(long, default_value = "fastgen")]
    kv: String,
    /// FastGen recovery threshold T: each KV head takes the first candidate keeping this
    /// share of its attention (default 0.92; fastgen-paper 0.95).
    #[arg(long, allow_negative_numbers = true)]
    recovery: Option<f64>,
    /// r_l: the local part keeps the last ceil(r_l * n) tokens.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    r_local: f64,
    /// r_f: the frequent part keeps ceil(r_f * n) heavy hitters.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    r_frequent: f64,
    /// Leading positions counted as special tokens (the attention sink).
    #[arg(long, default_value_t = 1)]
    sink_tokens: usize,
    /// How a grouped-query KV head aggregates its query heads' recoveries: min or mean
    /// (default: mean; fastgen-paper min).
    #[arg(long)]
    gqa_agg: Option<String>,
    /// Count whitespace-only tokens as punctuation.
    #[arg(long)]
    punct_whitespace: bool,
    /// Prompt rows profiled: all, or last:W (the last W rows) (default: all).
    #[arg(long)]
    profile_rows: Option<String>,
    /// FastGen candidates, cheapest first, comma-separated, ending with full (default:
    /// special, special+punct, special+punct+frequent+local, full; fastgen-paper adds
    /// special+punct+frequent before +local, the paper's list).
    #[arg(long)]
    candidates: Option<String>,
    /// Window baseline: recent window as a share of the sequence (default 0.3).
    #[arg(long, conflicts_with = "window_tokens", allow_negative_numbers = true)]
    window_ratio: Option<f64>,
    /// Window baseline: recent window as a token count.
    #[arg(long)]
    window_tokens: Option<usize>,
    /// snapkv/adakv: observation window W, the last W prompt rows (default 32).
    #[arg(long)]
    snap_window: Option<usize>,
    /// snapkv/adakv: pooling kernel over neighbouring positions, odd (default 7; 1: none).
    #[arg(long)]
    snap_kernel: Option<usize>,
    /// snapkv/adakv: kept share of the prompt per head, window included (default 0.5).
    #[arg(long, allow_negative_numbers = true)]
    snap_budget: Option<f64>,
    /// snapkv/adakv: pooling, max or avg (default max).
    #[arg(long)]
    snap_pool: Option<String>,
    /// Policies with frequent also keep the last N tokens (0: the paper's rule).
    #[arg(long)]
    frequent_grace: Option<usize>,
    /// FastGen: measure recovery by replaying the last W prompt rows as decode steps
    /// (0: the paper's static recovery; default 128, fastgen-paper 0).
    #[arg(long)]
    replay: Option<usize>,
    /// FastGen: every compressed policy keeps the last N tokens (default 32, fastgen-paper 0).
    #[arg(long)]
    grace: Option<usize>,
    /// FastGen: heavy-hitter scores, sum (cumulative attention) or causal (mean attention
    /// over the rows after the token) (default causal, fastgen-paper sum).
    #[arg(long)]
    hh_scores: Option<String>,
    /// FastGen: pick T to fit a memory budget for the compressed prompt: a kept ratio
    /// (0.6, 60%) or bytes (50000000, 48MiB); the KV line reports the T picked.
    #[arg(long)]
    kv_budget: Option<String>,
    /// FastGen: keep the full cache until the sequence (prompt and answer) holds N tokens,
    /// then choose every head's policy from all rows so far and compress (default 512,
    /// fastgen-paper 0; 0 compresses right after the prompt).
    #[arg(long)]
    compress_from: Option<usize>,
    /// Element type of the KV cache: f16 or f32.
    #[arg(long, default_value = "f16")]
    kv_dtype: KvDtype,
}

impl KvArgs {
    /// The validated settings (checked before any model is loaded).
    pub fn settings(&self) -> Result<KvSettings> {
        let window = match (self.window_ratio, self.window_tokens) {
            (_, Some(k)) => Budget::Tokens(k),
            (Some(r), None) => Budget::Ratio(r),
            (None, None) => KvSettings::default().window,
        };
        // The method's preset, then every flag given.
        let base = KvSettings::preset(&self.kv)?;
        let fastgen = &base.fastgen;
        let s = KvSettings {
            kind: base.kind,
            parts: PartSettings {
                r_local: self.r_local,
                r_frequent: self.r_frequent,
                sink_tokens: self.sink_tokens,
                punct_whitespace: self.punct_whitespace,
                frequent_grace: self.frequent_grace.unwrap_or(base.parts.frequent_grace),
            },
            window,
            snap: SnapSettings {
                window: self.snap_window.unwrap_or(base.snap.window),
                kernel: self.snap_kernel.unwrap_or(base.snap.kernel),
                budget: self.snap_budget.unwrap_or(base.snap.budget),
                pool: (self.snap_pool.as_deref()).map_or(Ok(base.snap.pool), str::parse)?,
            },
            fastgen: FastGenSettings {
                recovery: self.recovery.unwrap_or(fastgen.recovery),
                gqa_agg: (self.gqa_agg.as_deref()).map_or(Ok(fastgen.gqa_agg), str::parse)?,
                profile_rows: (self.profile_rows.as_deref())
                    .map_or(Ok(fastgen.profile_rows), str::parse)?,
                candidates: match &self.candidates {
                    Some(c) => parse_candidates(c)?,
                    None => fastgen.candidates.clone(),
                },
                replay: self.replay.unwrap_or(fastgen.replay),
                grace: self.grace.unwrap_or(fastgen.grace),
                hh_scores: (self.hh_scores.as_deref()).map_or(Ok(fastgen.hh_scores), str::parse)?,
                budget: self.kv_budget.as_deref().map(str::parse).transpose()?,
                compress_from: self.compress_from.unwrap_or(fastgen.compress_from),
            },
        };
        s.validate()?;
        Ok(s)
    }

    pub fn dtype(&self) -> KvDtype {
        self.kv_dtype
    }

    /// An empty compressed cache for the loaded model.
    pub fn new_cache(&self, loaded: &Loaded, settings: KvSettings) -> Result<CompressedCache> {
        let caches = CacheFactory::new(&loaded.model.cfg, &loaded.tokenizer, self.dtype());
        Ok(caches.cache(&settings)?)
    }
}
