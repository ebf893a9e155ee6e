//! Evaluation: how much a compressed KV cache changes what the model says, measured against
//! the full cache with the yardsticks of `docs/FASTGEN.md` section 8.
//!
//! - `metrics`: KL divergence, same-top rate, ROUGE-L, answer extraction (pure functions).
//! - `data`: AlpacaEval, GSM8K, LongBench-Write and the essays, from the pinned packages.
//! - `niah`: needle-in-a-haystack contexts (pure text building).
//! - `fidelity`: teacher-forced comparison of caches on long prose (`eval ppl`).
//! - `tasks`: generation tasks, full cache against compressed: needle questions asked of a
//!   compressed context, AlpacaEval agreement, GSM8K accuracy.
//! - `longgen`: long forced-length generation, full against compressed: pruned ratio over
//!   time, bytes, degeneration and agreement.
//! - `degeneration`: distinct-n and the longest verbatim loop of token ids (pure functions).
//! - `sweep`: every method at several budgets, budgets matched to FastGen's; results,
//!   report and plots.
//! - `plot`: quality against kept fraction, one curve per method.
//! - `humaneval`: HumanEval pass@1, answers run in a sandboxed Python process.

pub mod data;
pub mod degeneration;
pub mod fidelity;
pub mod humaneval;
pub mod longgen;
pub mod metrics;
pub mod needle;
pub mod niah;
pub mod plot;
pub mod sweep;
pub mod tasks;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::compress::{CacheFactory, CompressedCache, KvSettings};
use crate::error::Result;
use crate::kv_cache::KvDtype;
use crate::model::{Model, Workspace};
use crate::tokenizer::Tokenizer;

/// The model under evaluation and what every cache of it needs.
pub struct Engine<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub template: Option<&'a ChatTemplate>,
    /// Matrix products in f32 (activations not quantised): see [`Engine::workspace`].
    pub exact: bool,
    caches: CacheFactory,
}

impl<'a> Engine<'a> {
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        template: Option<&'a ChatTemplate>,
        dtype: KvDtype,
    ) -> Engine<'a> {
        Engine {
            model,
            tokenizer,
            template,
            exact: false,
            caches: CacheFactory::new(&model.cfg, tokenizer, dtype),
        }
    }

    /// Activation buffers for this engine's forward passes, in exact mode when asked: the
    /// 8-bit activation rounding alone puts a KL divergence floor near 0.003 (SmolLM2)
    /// under any change of cache, which hides smaller differences between methods.
    pub fn workspace(&self) -> Workspace {
        let mut ws = Workspace::default();
        ws.set_exact(self.exact);
        ws
    }

    /// An empty cache with these settings.
    pub fn cache(&self, settings: &KvSettings) -> Result<CompressedCache> {
        self.caches.cache(settings)
    }

    /// Plain text to ids, with the BOS token first when the model asks for one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode_prompt(text)
    }

    /// A user turn in the model's chat template (the text as is without one), ready for the
    /// assistant's answer.
    pub fn chat_text(&self, user: &str) -> Result<String> {
        match self.template {
            Some(t) => t.render(&[ChatMessage::user(user)], true),
            None => Ok(user.to_string()),
        }
    }
}
