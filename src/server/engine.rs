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

use super::error::ApiError;
use super::kv::{recovery_adjustable, KvGrant, KvKind, KvShape};
use super::request::Prompt;
use super::stop::StopMatcher;
use fastgen::chat::ChatTemplate;
use fastgen::compress::{CacheFactory, KvReport as LibKvReport, KvSettings};
use fastgen::fetch;
use fastgen::generate::{generate, GenerateOptions, StopReason, Timing};
use fastgen::kv_cache::KvDtype;
use fastgen::model::{Model, Workspace};
use fastgen::sampling::SamplerConfig;
use fastgen::tokenizer::{StreamDecoder, Tokenizer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

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
}

impl KvReport {
    /// Figures of the library's accounting for one finished sequence.
    fn from_library(r: &LibKvReport, grant: &KvGrant) -> KvReport {
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
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// The chat template, none for a base model, or why the model's does not compile.
    pub template: Result<Option<ChatTemplate>, String>,
    /// The `/v1/models` id: the short name when the file is a pinned model, else its stem.
    pub id: String,
    /// Other names a request's `model` may use (file name and stem).
    pub aliases: Vec<String>,
    pub created: u64,
    /// Every request's cache, in the element type the server was started with.
    caches: CacheFactory,
    /// Activation buffers of finished requests, reused by the next ones.
    workspaces: Mutex<Vec<Workspace>>,
}

impl Engine {
    pub fn new(
        model: Model,
        tokenizer: Tokenizer,
        template: Result<Option<ChatTemplate>, String>,
        kv_dtype: KvDtype,
    ) -> Engine {
        let (id, aliases) = model_names(&model.path);
        let created = std::fs::metadata(&model.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let caches = CacheFactory::new(&model.cfg, &tokenizer, kv_dtype);
        Engine {
            caches,
            model,
            tokenizer,
            template,
            id,
            aliases,
            created,
            workspaces: Mutex::new(Vec::new()),
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
            dtype: self.caches.dtype(),
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

    /// Runs one admitted request to its end on the calling (blocking) thread. `on_text`
    /// receives the text as it is generated (stop sequences removed) and returns false when
    /// its receiver is gone; that, or `cancel`, stops the generation at the next token. The
    /// request's KV cache is dropped before this returns.
    pub fn run_request(
        &self,
        job: &Job,
        cancel: &dyn Fn() -> bool,
        on_kv_bytes: &mut dyn FnMut(i64),
        on_text: &mut dyn FnMut(String) -> bool,
    ) -> Result<Outcome, ApiError> {
        let opts = GenerateOptions {
            max_tokens: job.max_tokens,
            sampler: job.sampler.clone(),
            top_logprobs: 0,
        };
        let settings = KvSettings::with_kind(job.kv.kind).with(|s| {
            s.fastgen.recovery = job.kv.recovery;
            s.fastgen.compress_from = job.kv.compress_from;
        });
        let mut cache = self
            .caches
            .cache(&settings)
            .map_err(|e| ApiError::internal(format!("KV settings: {e}")))?;
        // A full cache gets exactly what admission estimated (prompt plus generation), so
        // the budget bounds its real bytes.
        cache.reserve_full((job.prompt_ids.len() + job.max_tokens).min(self.model.cfg.n_ctx));
        // Admission reserved this much for the request; it is held until the cache is freed.
        let held = job.kv.reserved_bytes as i64;
        on_kv_bytes(held);

        let mut ws = self
            .workspaces
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        let mut decoder = StreamDecoder::new(&self.tokenizer);
        let mut stops = StopMatcher::new(job.stop.clone());
        let mut receiver_gone = false;
        let eog = if job.ignore_eos {
            Vec::new()
        } else {
            self.tokenizer.eog_ids().to_vec()
        };
        let result = generate(
            &self.model,
            &mut cache,
            &mut ws,
            &job.prompt_ids,
            &opts,
            &eog,
            &mut |id| {
                let text = stops.push(&decoder.push(id));
                if !text.is_empty() && !on_text(text) {
                    receiver_gone = true;
                }
                !(receiver_gone || stops.stopped() || cancel())
            },
        );
        let report = KvReport::from_library(&cache.report(), &job.kv);
        // Free the KV at once, whatever happens next.
        drop(cache);
        on_kv_bytes(-held);
        if let Ok(mut pool) = self.workspaces.lock() {
            pool.push(ws);
        }
        let gen = result.map_err(|e| ApiError::internal(format!("generation failed: {e}")))?;

        let finish = if stops.stopped() {
            Finish::Stop
        } else {
            match gen.stop {
                StopReason::EndOfGeneration => Finish::Stop,
                StopReason::MaxTokens | StopReason::ContextFull => Finish::Length,
                StopReason::Cancelled => Finish::Cancelled,
            }
        };
        if finish != Finish::Cancelled {
            // The tail: an unfinished character, then text held back for a stop sequence.
            let mut tail = stops.push(&decoder.flush());
            if !stops.stopped() {
                tail.push_str(&stops.finish());
            }
            if !tail.is_empty() {
                on_text(tail);
            }
        }
        Ok(Outcome {
            finish: if stops.stopped() {
                Finish::Stop
            } else {
                finish
            },
            prompt_tokens: job.prompt_ids.len(),
            completion_tokens: gen.generated_ids.len(),
            timing: gen.timing,
            kv: report,
        })
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
        let j = KvReport::from_library(&lib, &grant).to_json();
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
