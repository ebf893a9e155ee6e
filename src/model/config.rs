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

/// Most layers a model may have (real ones have at most a few hundred).
pub const MAX_LAYERS: usize = 1024;

impl ModelConfig {
    pub fn from_gguf(g: &Gguf) -> Result<ModelConfig> {
        let arch = g.arch()?.to_string();
        let spec = arch::spec(&arch)?;
        let key = |k: &str| format!("{arch}.{k}");
        let get = |k: &str| -> Result<usize> { to_usize(g.get_u64(&key(k))?, &key(k)) };

        let n_layers = get("block_count")?;
        // Before any per-layer table is built from it.
        if !(1..=MAX_LAYERS).contains(&n_layers) {
            return Err(Error::Metadata(format!(
                "{} = {n_layers} out of range 1..={MAX_LAYERS}",
                key("block_count")
            )));
        }
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
        // LongRoPE (Phi-3 128k, Phi-3.5): per-frequency factors chosen by context length and
        // an attention factor; not implemented (llama.cpp: `llama_model::get_rope_factors`).
        for t in ["rope_factors_long.weight", "rope_factors_short.weight"] {
            if g.tensor(t).is_some() {
                return Err(Error::Metadata(format!(
                    "tensor '{t}': LongRoPE (Phi-3 128k, Phi-3.5) is not supported"
                )));
            }
        }
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
                let slides =
                    sliding_layers(g, &key("attention.sliding_window_pattern"), sl, n_layers)?;
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
    let by_period =
        |n: usize| -> Vec<bool> { (0..n_layers).map(|l| n == 0 || l % n < n - 1).collect() };
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
                None | Some(0.0) => Ok(1.0),
                Some(f) if f.is_finite() && f > 0.0 => Ok(1.0 / f),
                Some(f) => Err(Error::Metadata(format!(
                    "{factor_key} = {f} must be positive"
                ))),
            }
        }
        other => Err(Error::Metadata(format!(
            "{type_key} = '{}': only linear RoPE scaling is supported (not yarn, longrope)",
            crate::error::shown(other)
        ))),
    }
}

fn to_usize(v: u64, key: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Metadata(format!("{key} = {v} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::write::GgufWriter;
    use crate::model::synth::SynthModel;
    use crate::model::weights::Weights;
    use crate::quant::GgmlType;

    /// A one-layer synthetic model of `arch` as a writer, to change before parsing.
    fn tiny(arch: &'static str) -> GgufWriter {
        let m = SynthModel {
            arch,
            n_layers: 1,
            n_embd: 64,
            n_heads: 2,
            n_kv_heads: 1,
            // qwen3: heads wider than n_embd / n_head, as `attention.key_length` says.
            head_dim: if arch == "qwen3" { 64 } else { 32 },
            n_ff: 64,
            weights: GgmlType::Q8_0,
            qk_norm: arch == "qwen3",
            ..SynthModel::llama_gqa()
        };
        m.writer(None).unwrap()
    }

    fn set(mut w: GgufWriter, key: &str, v: MetaValue) -> GgufWriter {
        w.kvs.retain(|(k, _)| k != key);
        w.kv(key, v)
    }

    /// The config and weights of the file, or the error's message.
    fn load(w: &GgufWriter) -> std::result::Result<(ModelConfig, Weights), String> {
        let g = Gguf::from_bytes(w.build()).unwrap();
        let cfg = ModelConfig::from_gguf(&g).map_err(|e| e.to_string())?;
        let weights = Weights::load(&g, &cfg).map_err(|e| e.to_string())?;
        Ok((cfg, weights))
    }

    /// Phi-3's 128k models: LongRoPE factors are refused by name; the 4k models' sliding
    /// window is ignored as llama.cpp ignores it for phi3.
    #[test]
    fn phi3_refuses_longrope_and_ignores_its_sliding_window() {
        // llama (Mistral 7B v0.x files) ignores the key too, as llama.cpp does.
        for arch in ["phi3", "llama"] {
            let key = format!("{arch}.attention.sliding_window");
            let (cfg, _) = load(&tiny(arch).kv(&key, MetaValue::U32(8))).unwrap();
            assert!(cfg.layers.iter().all(|l| l.window.is_none()), "{arch}");
        }
        for t in ["rope_factors_long.weight", "rope_factors_short.weight"] {
            let w = tiny("phi3").tensor(t, &[16], 0, vec![0u8; 64]);
            let e = load(&w).err().unwrap();
            assert!(e.contains(t) && e.contains("LongRoPE"), "{e}");
        }
    }

    #[test]
    fn linear_rope_scaling_divides_positions_by_the_factor() {
        let (cfg, _) = load(&tiny("llama")).unwrap();
        assert_eq!(cfg.rope_freq_scale, 1.0);
        let w = tiny("llama");
        let w = set(
            w,
            "llama.rope.scaling.type",
            MetaValue::Str("linear".into()),
        );
        let (cfg, _) = load(&set(w, "llama.rope.scaling.factor", MetaValue::F32(4.0))).unwrap();
        assert_eq!(cfg.layers[0].rope_freq_scale, 0.25);
        // The type defaults to linear; the older key name; `none` never scales.
        let w = set(
            tiny("llama"),
            "llama.rope.scale_linear",
            MetaValue::F32(2.0),
        );
        assert_eq!(load(&w).unwrap().0.rope_freq_scale, 0.5);
        let w = set(w, "llama.rope.scaling.type", MetaValue::Str("none".into()));
        assert_eq!(load(&w).unwrap().0.rope_freq_scale, 1.0);
    }

    #[test]
    fn other_rope_scalings_are_refused_naming_the_key() {
        for kind in ["yarn", "longrope", "dynamic"] {
            let w = set(
                tiny("qwen3"),
                "qwen3.rope.scaling.type",
                MetaValue::Str(kind.into()),
            );
            let e = load(&w).err().unwrap();
            assert!(
                e.contains("qwen3.rope.scaling.type") && e.contains(kind),
                "{e}"
            );
        }
        let w = set(
            tiny("llama"),
            "llama.rope.scaling.attn_factor",
            MetaValue::F32(0.8),
        );
        let e = load(&w).err().unwrap();
        assert!(e.contains("llama.rope.scaling.attn_factor"), "{e}");
        let w = set(
            tiny("llama"),
            "llama.rope.scaling.factor",
            MetaValue::F32(-2.0),
        );
        assert!(load(&w).err().unwrap().contains("must be positive"));
    }

    #[test]
    fn value_heads_must_be_as_wide_as_key_heads() {
        let w = set(
            tiny("qwen3"),
            "qwen3.attention.value_length",
            MetaValue::U32(32),
        );
        let e = load(&w).err().unwrap();
        assert!(e.contains("qwen3.attention.value_length = 32"), "{e}");
    }

    #[test]
    fn rope_factors_are_read_for_llama_and_refused_elsewhere() {
        let factors: Vec<u8> = (0..16)
            .flat_map(|i| (1.0 + i as f32).to_le_bytes())
            .collect();
        let w = tiny("llama").tensor("rope_freqs.weight", &[16], 0, factors.clone());
        let (_, weights) = load(&w).unwrap();
        assert_eq!(weights.rope_freqs.unwrap()[15], 16.0);
        // llama.cpp does not load the tensor for qwen3, and refuses a file with a tensor it
        // did not load; so do we.
        let w = tiny("qwen3").tensor("rope_freqs.weight", &[16], 0, factors);
        let e = load(&w).err().unwrap();
        assert!(
            e.contains("'rope_freqs.weight' is not part of the qwen3"),
            "{e}"
        );
        let bad: Vec<u8> = (0..16).flat_map(|_| 0f32.to_le_bytes()).collect();
        let w = tiny("llama").tensor("rope_freqs.weight", &[16], 0, bad);
        assert!(load(&w).err().unwrap().contains("positive factors"));
    }

    #[test]
    fn unused_tensors_are_refused() {
        let bias: Vec<u8> = (0..64).flat_map(|_| 0.5f32.to_le_bytes()).collect();
        let w = tiny("llama").tensor("blk.0.attn_output.bias", &[64], 0, bias);
        let e = load(&w).err().unwrap();
        assert!(e.contains("'blk.0.attn_output.bias'"), "{e}");
    }

    #[test]
    fn qwen3_heads_come_from_key_length() {
        let (cfg, weights) = load(&tiny("qwen3")).unwrap();
        assert_eq!((cfg.head_dim, cfg.q_dim(), cfg.kv_dim()), (64, 128, 64));
        assert!(weights.layers[0].q_norm.is_some() && weights.layers[0].bq.is_none());
    }
}
