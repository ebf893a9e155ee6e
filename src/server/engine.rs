//! The server's engine adapter: the one place where the server meets the library's model,
//! tokenizer and generation loop.
//!
//! # The KV-policy seam
//!
//! A request's `kv_policy` and `kv_recovery` arrive as a `kv::KvRequest`, are granted a
//! recovery T by admission (`kv::KvGrant`), and reach the library in exactly one function,
//! [`Engine::run_request`], which returns the request's [`KvReport`]. The KV budget asks
//! one function, `kv::estimate_kv_bytes`, what a request would hold at a given T.
//!
//! `run_request` builds the library's `KvSettings` from (kind, recovery), runs generation over
//! a `CompressedCache` (which profiles the heads on the prompt and compresses for `fastgen`,
//! or applies a fixed baseline), and turns the library's `KvReport` into `kv_stats`.
//! Admission reserves `estimate_kv_bytes` for the request while it runs.

use super::batch::{Hooks, Scheduler, Submission};
use super::conversations::{Conversations, Reuse};
use super::error::ApiError;
use super::kv::{recovery_adjustable, KvGrant, KvKind, KvShape};
use super::metrics::EngineGauges;
use super::request::Prompt;
use fastgen::chat::ChatTemplate;
use fastgen::compress::{CacheFactory, KvReport as LibKvReport};
use fastgen::fetch;
use fastgen::generate::Timing;
use fastgen::kv_cache::KvDtype;
use fastgen::model::Model;
use fastgen::sampling::SamplerConfig;
use fastgen::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

/// The `kv_stats` of a finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct KvReport {
    pub requested: KvKind,
    /// The policy that actually ran.
    pub applied: String,
    pub recovery_requested: f64,
    pub recovery: f64,
    pub pruned_ratio: f64,
    pub kv_bytes_allocated: u64,
    pub kv_bytes_full: u64,
    pub profile_ms: f64,
    /// FastGen: the length compression starts at, and where it did (None: the sequence
    /// stayed shorter, so nothing was compressed).
    pub compress_from: usize,
    pub compressed_at: Option<usize>,
    /// Heads per policy (e.g. {"full": 90}).
    pub policy_histogram: BTreeMap<String, usize>,
    /// How much of the prompt came from the conversation's kept cache.
    pub reuse: Reuse,
}

impl KvReport {
    /// Figures of the library's accounting for one finished sequence.
    pub fn from_library(r: &LibKvReport, grant: &KvGrant, reuse: &Reuse) -> KvReport {
        let mut policy_histogram = BTreeMap::new();
        for layer in &r.policies {
            for p in layer {
                *policy_histogram.entry(p.clone()).or_insert(0) += 1;
            }
        }
        KvReport {
            requested: grant.kind,
            applied: grant.kind.to_string(),
            recovery_requested: grant.recovery_requested,
            recovery: grant.recovery,
            pruned_ratio: r.pruned_ratio,
            kv_bytes_allocated: r.kv_bytes_allocated as u64,
            kv_bytes_full: r.kv_bytes_full as u64,
            profile_ms: r.profile_ms,
            compress_from: r.compress_from,
            compressed_at: r.compressed_at,
            policy_histogram,
            reuse: *reuse,
        }
    }

    pub fn to_json(&self) -> Value {
        let t = |x: f64| (x * 1e4).round() / 1e4;
        let adjustable = recovery_adjustable(self.requested);
        json!({
            "kv_policy": self.requested.to_string(),
            "kv_policy_applied": self.applied,
            "kv_recovery": adjustable.then(|| t(self.recovery)),
            "kv_recovery_requested": adjustable.then(|| t(self.recovery_requested)),
            "pruned_ratio": self.pruned_ratio,
            "kv_bytes_allocated": self.kv_bytes_allocated,
            "kv_bytes_full": self.kv_bytes_full,
            "profile_ms": self.profile_ms,
            "kv_compress_from": adjustable.then_some(self.compress_from),
            "compressed_at": self.compressed_at,
            "policy_histogram": self.policy_histogram,
            "prompt_tokens_reused": self.reuse.tokens,
            "prompt_reused_pruned_ratio": self.reuse.lost,
        })
    }
}

/// Everything a request needs from the engine once admitted.
#[derive(Debug, Clone)]
pub struct Job {
    pub prompt_ids: Vec<u32>,
    /// Already capped by the context.
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Generate past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Continue a kept conversation and keep this one (`conversations`).
    pub cache_prompt: bool,
    pub kv: KvGrant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// End-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
    /// The client went away or the server is shutting down.
    Cancelled,
}

impl Finish {
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Finish::Stop => Some("stop"),
            Finish::Length => Some("length"),
            Finish::Cancelled => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub timing: Timing,
    pub kv: KvReport,
}

/// A loaded model with what requests need to reach it. Shared by all requests.
pub struct Engine {
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
    /// The chat template, none for a base model, or why the model's does not compile.
    pub template: Result<Option<ChatTemplate>, String>,
    /// The `/v1/models` id: the short name when the file is a pinned model, else its stem.
    pub id: String,
    /// Other names a request's `model` may use (file name and stem).
    pub aliases: Vec<String>,
    pub created: u64,
    /// Every request's cache element type.
    kv_dtype: KvDtype,
    /// Finished requests' caches, continued by the next turn of their conversation.
    pub conversations: Arc<Conversations>,
    /// To the scheduler thread, which runs every admitted request (`batch`); it ends when
    /// the engine is dropped.
    scheduler: Sender<Submission>,
    /// KV bytes of the running requests, as the scheduler last counted them.
    in_use: Arc<AtomicU64>,
}

impl Engine {
    /// Loads nothing: takes the model and starts the scheduler thread. `kept_bytes` bounds
    /// the conversations kept between turns.
    pub fn new(
        model: Model,
        tokenizer: Tokenizer,
        template: Result<Option<ChatTemplate>, String>,
        kv_dtype: KvDtype,
        kept_bytes: u64,
    ) -> std::io::Result<Engine> {
        let (id, aliases) = model_names(&model.path);
        let created = std::fs::metadata(&model.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let model = Arc::new(model);
        let tokenizer = Arc::new(tokenizer);
        let conversations = Arc::new(Conversations::new(kept_bytes));
        let in_use = Arc::new(AtomicU64::new(0));
        let scheduler = Scheduler {
            in_use: Arc::clone(&in_use),
            caches: CacheFactory::new(&model.cfg, &tokenizer, kv_dtype),
            model: Arc::clone(&model),
            tokenizer: Arc::clone(&tokenizer),
            conversations: Arc::clone(&conversations),
        };
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("fastgen-batch".into())
            .spawn(move || scheduler.run(rx))?;
        Ok(Engine {
            model,
            tokenizer,
            template,
            id,
            aliases,
            created,
            kv_dtype,
            conversations,
            scheduler: tx,
            in_use,
        })
    }

    /// What `/metrics` shows of the engine now.
    pub fn gauges(&self) -> EngineGauges {
        let kept = self.conversations.stats();
        EngineGauges {
            kv_bytes_in_use: self.in_use.load(Ordering::Relaxed),
            kept_conversations: kept.entries,
            kept_bytes: kept.bytes,
        }
    }

    /// Whether a request's `model` names this model.
    pub fn serves(&self, name: &str) -> bool {
        name == self.id || self.aliases.iter().any(|a| a == name)
    }

    pub fn n_ctx(&self) -> usize {
        self.model.cfg.n_ctx
    }

    pub fn kv_shape(&self) -> KvShape {
        let c = &self.model.cfg;
        KvShape {
            n_layers: c.n_layers,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            dtype: self.kv_dtype,
        }
    }

    /// The prompt as token ids, checked against the vocabulary and the context.
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
        let param = prompt.param();
        let ids = match prompt {
            Prompt::Chat(messages) => {
                let tpl = (self.template.as_ref())
                    .map_err(|e| ApiError::invalid_param("messages", e.clone()))?
                    .as_ref()
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "messages",
                            "this model has no chat template; use /v1/completions",
                        )
                    })?;
                let text = tpl
                    .render(messages, true)
                    .map_err(|e| ApiError::invalid_param("messages", e.to_string()))?;
                self.tokenizer
                    .encode_chat_prompt(&text)
                    .map_err(|e| ApiError::internal(format!("tokenizing the prompt: {e}")))?
            }
            Prompt::Text(text) => self.encode(text)?,
            Prompt::Tokens(ids) => ids.clone(),
        };
        if ids.is_empty() {
            return Err(ApiError::invalid_param(param, "the prompt is empty"));
        }
        let vocab = self.model.cfg.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::invalid_param(
                param,
                format!("token id {bad} is outside the vocabulary of {vocab} tokens"),
            ));
        }
        if ids.len() > self.n_ctx() {
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "This model's maximum context length is {} tokens, but the prompt has {} tokens",
                    self.n_ctx(),
                    ids.len()
                ),
            )
            .with_code("context_length_exceeded"));
        }
        Ok(ids)
    }

    /// A text prompt with BOS first when the model asks for it, as llama-server does.
    fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode_prompt(text)
            .map_err(|e| ApiError::internal(format!("tokenizing the prompt: {e}")))
    }

    /// Hands an admitted request to the scheduler, which runs it with the others and
    /// reports through `hooks` (see `batch`); its KV cache is freed (or kept for the
    /// conversation's next turn) before `on_done` is called.
    pub fn submit(&self, job: Job, hooks: Hooks) {
        if let Err(back) = self.scheduler.send(Submission { job, hooks }) {
            let msg = "the scheduler has stopped";
            (back.0.hooks.on_done)(Err(ApiError::internal(msg)));
        }
    }
}

/// (id, aliases) of a model file: the pinned short name if the file is one, else the stem.
fn model_names(path: &Path) -> (String, Vec<String>) {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = path
        .file_stem()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short = fetch::known_models()
        .into_iter()
        .map(|(name, _)| name)
        .find(|name| fetch::model_spec(name).is_some_and(|s| s.file_name == file));
    match short {
        Some(name) => (name.to_string(), vec![stem, file]),
        None => (stem.clone(), vec![file]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_files_are_named_by_short_name() {
        let (id, aliases) = model_names(Path::new("/x/SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert_eq!(id, "smollm2");
        assert!(aliases.contains(&"SmolLM2-135M-Instruct.Q4_1".to_string()));
        let (id, aliases) = model_names(Path::new("/x/other.gguf"));
        assert_eq!(
            (id.as_str(), aliases),
            ("other", vec!["other.gguf".to_string()])
        );
    }

    #[test]
    fn report_json_has_the_kv_fields() {
        let lib = LibKvReport {
            policy: "fastgen".into(),
            recovery: Some(0.9),
            label: "fastgen T=0.9".into(),
            budget: None,
            budget_met: None,
            compressed_at: Some(5),
            compress_from: 0,
            seq_len: 5,
            kept_entries: 12,
            pruned_ratio: 0.4,
            pruned_ratio_mean: 0.35,
            kv_bytes_full: 800,
            kv_bytes_kept: 480,
            kv_bytes_allocated: 496,
            score_bytes: 20,
            profile_ms: 1.5,
            prefill_ms: 10.0,
            policies: vec![
                vec!["full".into(), "special+punct+frequent+local".into()],
                vec!["full".into(), "full".into()],
            ],
            head_recovery: vec![vec![None, Some(0.97)], vec![None, None]],
            histogram: Vec::new(),
            layer_kept: vec![0.8, 1.0],
            sliding: Vec::new(),
        };
        let grant = KvGrant {
            kind: KvKind::FastGen,
            recovery_requested: 0.95,
            recovery: 0.9,
            compress_from: 512,
            reserved_bytes: 0,
        };
        let j = KvReport::from_library(&lib, &grant, &Reuse::default()).to_json();
        for key in [
            "pruned_ratio",
            "kv_bytes_allocated",
            "kv_bytes_full",
            "profile_ms",
            "policy_histogram",
        ] {
            assert!(j.get(key).is_some(), "{key} missing: {j}");
        }
        assert_eq!(j["kv_bytes_allocated"], 496);
        assert_eq!(j["kv_bytes_full"], 800);
        assert_eq!(j["pruned_ratio"], 0.4);
        assert_eq!(j["policy_histogram"]["full"], 3);
        assert_eq!(j["policy_histogram"]["special+punct+frequent+local"], 1);
        assert_eq!(j["kv_recovery"], 0.9);
        assert_eq!(j["compressed_at"], 5);
        assert_eq!(j["kv_policy"], "fastgen");
    }
}
