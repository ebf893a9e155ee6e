//! Hyperparameters of a decoder-only transformer, read from GGUF metadata.
//!
//! Each number is filled from the file's own keys (`{arch}.block_count`,
//! `{arch}.rope.freq_base`, ...); what GGUF does not record comes from the architecture's
//! spec (`arch`).

use super::arch::{self, ArchSpec, Sliding};
use crate::error::{Error, Result};
use crate::gguf::{Gguf, MetaValue};
use crate::kv_cache::{KvCache, KvDtype};

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: String,
    pub n_layers: usize,
    pub n_embd: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    /// Context length the model was trained for; the largest sequence we accept.
    pub n_ctx: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    /// Dimensions of each head that RoPE rotates (the rest pass through).
    pub rope_dims: usize,
    /// Linear RoPE scaling (llama.cpp's `freq_scale`): positions are multiplied by it,
    /// `1 / {arch}.rope.scaling.factor`; 1 without scaling. See [`rope_freq_scale`].
    pub rope_freq_scale: f32,
    pub rms_eps: f32,
    /// What the architecture does that the file does not say.
    pub spec: ArchSpec,
    /// Per layer: its attention window and RoPE base.
    pub layers: Vec<LayerSpec>,
}

/// What differs from one layer to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    /// Sliding-window layers: a query at position `p` sees the keys at positions
    /// `p - window + 1 ..= p`. `None`: every earlier position.
    pub window: Option<u32>,
    pub rope_theta: f32,
    /// Multiplies the positions before RoPE ([`ModelConfig::rope_freq_scale`] on global
    /// layers; 1 on sliding ones, which llama.cpp never scales for the architectures here).
    pub rope_freq_scale: f32,
}

impl ModelConfig {
    pub fn from_gguf(g: &Gguf) -> Result<ModelConfig> {
        let arch = g.arch()?.to_string();
        let spec = arch::spec(&arch)?;
        let key = |k: &str| format!("{arch}.{k}");
        let get = |k: &str| -> Result<usize> { to_usize(g.get_u64(&key(k))?, &key(k)) };

        let n_layers = get("block_count")?;
        let n_embd = get("embedding_length")?;
        let n_heads = get("attention.head_count")?;
        let n_kv_heads = match g.get(&key("attention.head_count_kv")) {
            Some(_) => get("attention.head_count_kv")?,
            None => n_heads,
        };
        let n_ff = get("feed_forward_length")?;
        let n_ctx = get("context_length")?;
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::Metadata(format!(
                "{n_heads} query heads cannot be grouped over {n_kv_heads} KV heads"
            )));
        }
        let head_dim = match g.get(&key("attention.key_length")) {
            Some(_) => get("attention.key_length")?,
            None => n_embd / n_heads,
        };
        // Value heads as wide as key heads (llama.cpp asserts it for every architecture here).
        if g.get(&key("attention.value_length")).is_some() {
            let v = get("attention.value_length")?;
            if v != head_dim {
                return Err(Error::Metadata(format!(
                    "{} = {v} differs from the key head width {head_dim}",
                    key("attention.value_length")
                )));
            }
        }
        let rope_dims = match g.get(&key("rope.dimension_count")) {
            Some(_) => get("rope.dimension_count")?,
            None => head_dim,
        };
        let rope_theta = match g.get(&key("rope.freq_base")) {
            Some(_) => g.get_f32(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let rms_eps = g.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let vocab_size = g.get_str_array("tokenizer.ggml.tokens")?.len();
        let rope_freq_scale = rope_freq_scale(g, &arch)?;
        let global = LayerSpec {
            window: None,
            rope_theta,
            rope_freq_scale,
        };
        let layers = match spec.sliding {
            None => vec![global; n_layers],
            Some(sl) => {
                // llama.cpp (src/models/gemma3.cpp): no sliding layers unless the file gives
                // a non-zero window; the sliding layers' base may be given by the file.
                let window = match g.get_u64_opt(&key("attention.sliding_window"))? {
                    None | Some(0) => None,
                    Some(w) => Some(u32::try_from(w).map_err(|_| {
                        Error::Metadata(format!(
                            "{} = {w} out of range",
                            key("attention.sliding_window")
                        ))
                    })?),
                };
                let sliding_base = match g.get(&key("rope.freq_base_swa")) {
                    Some(_) => g.get_f32(&key("rope.freq_base_swa"))?,
                    None => sl.rope_base,
                };
                let slides = sliding_layers(g, &key("attention.sliding_window_pattern"), sl, n_layers)?;
                (0..n_layers)
                    .map(|l| match window {
                        Some(w) if slides[l] => LayerSpec {
                            window: Some(w),
                            rope_theta: sliding_base,
                            rope_freq_scale: 1.0,
                        },
                        _ => global,
                    })
                    .collect()
            }
        };

        let cfg = ModelConfig {
            arch,
            n_layers,
            n_embd,
            n_heads,
            n_kv_heads,
            head_dim,
            n_ff,
            n_ctx,
            vocab_size,
            rope_theta,
            rope_dims,
            rope_freq_scale,
            rms_eps,
            spec,
            layers,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Bounds that keep every buffer size computed from these numbers sane.
    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Metadata(what));
        if !(1..=1024).contains(&self.n_layers) {
            return bad(format!(
                "block_count {} out of range 1..=1024",
                self.n_layers
            ));
        }
        if !(1..=65536).contains(&self.n_embd) || !(1..=1 << 20).contains(&self.n_ff) {
            return bad(format!(
                "embedding_length {} or feed_forward_length {} out of range",
                self.n_embd, self.n_ff
            ));
        }
        if self.head_dim == 0 || self.head_dim > 1024 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head dimension {} must be even and at most 1024",
                self.head_dim
            ));
        }
        if self.n_heads * self.head_dim > 1 << 20 {
            return bad(format!(
                "{} heads of {} dims is too large",
                self.n_heads, self.head_dim
            ));
        }
        if self.rope_dims > self.head_dim || !self.rope_dims.is_multiple_of(2) {
            return bad(format!(
                "rope.dimension_count {} must be even and at most the head dimension {}",
                self.rope_dims, self.head_dim
            ));
        }
        if self.n_ctx == 0 || self.n_ctx > 1 << 24 {
            return bad(format!("context_length {} out of range", self.n_ctx));
        }
        for l in &self.layers {
            if !(l.rope_theta.is_finite() && l.rope_theta > 0.0) {
                return bad(format!("RoPE base {} must be positive", l.rope_theta));
            }
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            return bad(format!(
                "layer_norm_rms_epsilon {} out of range",
                self.rms_eps
            ));
        }
        if self.vocab_size == 0 {
            return bad("empty vocabulary".into());
        }
        Ok(())
    }

    /// An empty cache for this model: its shape, and the sliding windows of its layers.
    pub fn new_cache(&self, dtype: KvDtype) -> KvCache {
        let windows = self.layers.iter().map(|l| l.window).collect();
        KvCache::new(self.n_layers, self.n_kv_heads, self.head_dim, dtype).with_windows(windows)
    }

    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// Which layers slide: `{arch}.attention.sliding_window_pattern` when the file has it (an
/// array of one bool per layer, or a period `n`: layer `l` slides when `l % n < n - 1`, every
/// layer when `n` is 0, as llama.cpp's `set_swa_pattern`), else the architecture's period.
fn sliding_layers(g: &Gguf, key: &str, sl: Sliding, n_layers: usize) -> Result<Vec<bool>> {
    let by_period = |n: usize| -> Vec<bool> {
        (0..n_layers).map(|l| n == 0 || l % n < n - 1).collect()
    };
    match g.get(key) {
        None => Ok(by_period(sl.period)),
        Some(MetaValue::Array(items)) => {
            let slides = (items.iter())
                .map(|v| match v {
                    MetaValue::Bool(b) => Ok(*b),
                    other => Err(Error::Metadata(format!(
                        "{key} holds {}, expected bools",
                        other.describe()
                    ))),
                })
                .collect::<Result<Vec<bool>>>()?;
            if slides.len() < n_layers {
                return Err(Error::Metadata(format!(
                    "{key} has {} entries for {n_layers} layers",
                    slides.len()
                )));
            }
            Ok(slides)
        }
        Some(_) => Ok(by_period(to_usize(g.get_u64(key)?, key)?)),
    }
}

/// Linear RoPE scaling, as llama.cpp reads it (`llama_model::load_hparams` in
/// src/llama-model.cpp, `llama_context` in src/llama-context.cpp): the type
/// `{arch}.rope.scaling.type` defaults to `linear`; the factor is `{arch}.rope.scaling.factor`
/// (or the older `{arch}.rope.scale_linear`), 0 or absent meaning none, and positions are
/// multiplied by `freq_scale = 1 / factor`; type `none` never scales. Every other type (yarn,
/// longrope) changes RoPE in ways not implemented here and is refused naming the key, and so
/// is `{arch}.rope.scaling.attn_factor` other than 1 (it multiplies RoPE's sines and
/// cosines).
fn rope_freq_scale(g: &Gguf, arch: &str) -> Result<f32> {
    let type_key = format!("{arch}.rope.scaling.type");
    let kind = g.get_str_opt(&type_key)?.unwrap_or("linear");
    let attn_key = format!("{arch}.rope.scaling.attn_factor");
    if let Some(a) = g.get_f32_opt(&attn_key)? {
        if a != 1.0 {
            return Err(Error::Metadata(format!(
                "{attn_key} = {a}: RoPE attention factors are not supported"
            )));
        }
    }
    match kind {
        "none" => Ok(1.0),
        "linear" => {
            let mut factor_key = format!("{arch}.rope.scaling.factor");
            if g.get(&factor_key).is_none() {
                factor_key = format!("{arch}.rope.scale_linear");
            }
            match g.get_f32_opt(&factor_key)? {
                None => Ok(1.0),
                Some(f) if f == 0.0 => Ok(1.0),
                Some(f) if f.is_finite() && f > 0.0 => Ok(1.0 / f),
                Some(f) => Err(Error::Metadata(format!(
                    "{factor_key} = {f} must be positive"
                ))),
            }
        }
        other => Err(Error::Metadata(format!(
            "{type_key} = '{other}': only linear RoPE scaling is supported (not yarn, longrope)"
        ))),
    }
}

fn to_usize(v: u64, key: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Metadata(format!("{key} = {v} is too large")))
}
