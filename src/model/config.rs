//! Hyperparameters of a decoder-only transformer, read from GGUF metadata.
//!
//! Each number is filled from the file's own keys (`{arch}.block_count`,
//! `{arch}.rope.freq_base`, ...); what GGUF does not record comes from the architecture's
//! spec (`arch`).

use super::arch::{self, ArchSpec};
use crate::error::{Error, Result};
use crate::gguf::Gguf;
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
        let layers = match spec.sliding {
            None => vec![
                LayerSpec {
                    window: None,
                    rope_theta,
                };
                n_layers
            ],
            Some(sl) => {
                let window = get("attention.sliding_window")?;
                let window = u32::try_from(window)
                    .ok()
                    .filter(|&w| w > 0)
                    .ok_or_else(|| {
                        Error::Metadata(format!(
                            "{} = {window} out of range",
                            key("attention.sliding_window")
                        ))
                    })?;
                (0..n_layers)
                    .map(|l| match l % sl.period < sl.period - 1 {
                        true => LayerSpec {
                            window: Some(window),
                            rope_theta: sl.rope_base,
                        },
                        false => LayerSpec {
                            window: None,
                            rope_theta,
                        },
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
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!(
                "rope.freq_base {} must be positive",
                self.rope_theta
            ));
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

fn to_usize(v: u64, key: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Metadata(format!("{key} = {v} is too large")))
}
