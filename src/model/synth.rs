//! Random-weight GGUF files of a given architecture, for conformance tests against llama.cpp
//! without a real model of that architecture.
//!
//! A [`SynthModel`] is a handful of layers with the metadata keys and tensor names of real
//! files (`{arch}.block_count`, `blk.N.attn_q_norm.weight`, `rope_freqs.weight`...), random
//! weights from a fixed seed, and the vocabulary size of SmolLM2 (49,152). Writing the same
//! model twice gives the same bytes on any machine: the weights come from integer arithmetic
//! (splitmix64, uniform values) and the quantisers are ggml's reference rounding.
//!
//! The tokenizer metadata only matters to tools that tokenize text: `examples/synth_gguf.rs`
//! copies SmolLM2's (gpt2 BPE with merges, pre-tokenizer `smollm`) so that llama.cpp loads the
//! file and tokenizes prompts; the tests write a placeholder vocabulary of the same size,
//! which gives the same weights and so the same logits for the same token ids.
//!
//! The scales are chosen so that the model is not a uniform distribution over the vocabulary:
//! unit-variance residual stream, attention scores of a few units, and an output projection
//! whose logits spread over several units, so that the top-10 log-probabilities (and the
//! argmax) are a meaningful comparison. Attention and the feed-forward add to the stream as
//! much as the embedding does, so what a layer computes (QK norm, RoPE angles) shows in the
//! logits.

use crate::error::{Error, Result};
use crate::gguf::write::GgufWriter;
use crate::gguf::{Gguf, MetaValue};
use crate::quant::{blocks::write_f16, scalar, GgmlType};
use std::path::Path;

/// Vocabulary size of SmolLM2, whose tokenizer the synthetic files carry.
pub const VOCAB: usize = 49_152;

/// A synthetic model: its shape, weight type and seed.
#[derive(Debug, Clone)]
pub struct SynthModel {
    /// Short name: the fixture is `tests/reference/greedy-{name}.jsonl`.
    pub name: &'static str,
    /// `general.architecture`.
    pub arch: &'static str,
    pub n_layers: usize,
    pub n_embd: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Written as `{arch}.attention.key_length` / `value_length` when it is not
    /// `n_embd / n_heads`.
    pub head_dim: usize,
    pub n_ff: usize,
    /// Type of the matrices (F32, F16 or Q8_0); norms and factors are always F32.
    pub weights: GgmlType,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// QK-norm tensors (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// `rope_freqs.weight`, `[head_dim / 2]`.
    pub rope_freqs: Option<Vec<f32>>,
    /// Linear RoPE scaling factor (`{arch}.rope.scaling.type = linear`, `.factor`).
    pub rope_linear: Option<f32>,
    /// Standard deviation of the logits before the final norm's weights.
    pub logit_scale: f32,
    pub seed: u64,
}

impl SynthModel {
    /// Qwen3-shaped: QK norm, 8 query heads of 128 over 2 KV heads on a 256-wide stream (the
    /// query width, 1,024, is not the embedding width), NEOX RoPE, F32 weights.
    pub fn qwen3() -> SynthModel {
        SynthModel {
            name: "synth-qwen3",
            arch: "qwen3",
            n_layers: 3,
            n_embd: 256,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 128,
            n_ff: 768,
            weights: GgmlType::F32,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            qk_norm: true,
            rope_freqs: None,
            rope_linear: None,
            logit_scale: 4.0,
            seed: 0x5157_454e_3301,
        }
    }

    /// Llama 3.1-shaped RoPE: `rope_freqs.weight` as llama.cpp's converter computes it for
    /// `rope_scaling = {rope_type: llama3, factor: 8, low_freq_factor: 1,
    /// high_freq_factor: 4, original_max_position_embeddings: ORIG_CTX}` ([`llama3_factors`]),
    /// with an original context of 256 tokens instead of 8,192 so that the factors bite
    /// within the fixture's prompts (with 8,192 only positions in the thousands would feel
    /// them). 8 heads of 64 over 2 KV heads, F16 weights.
    pub fn llama_rope_freqs() -> SynthModel {
        const ORIG_CTX: f32 = 256.0;
        let theta = 500_000.0;
        SynthModel {
            name: "synth-llama3-rope",
            arch: "llama",
            n_layers: 3,
            n_embd: 512,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 64,
            n_ff: 1024,
            weights: GgmlType::F16,
            rope_theta: theta,
            rms_eps: 1e-5,
            qk_norm: false,
            rope_freqs: Some(llama3_factors(64, theta, 8.0, 1.0, 4.0, ORIG_CTX)),
            rope_linear: None,
            logit_scale: 4.0,
            seed: 0x4c4c_4d33_5246,
        }
    }

    /// A plain Llama with grouped-query attention (8 query heads over 2 KV heads of 64), the
    /// control: Q8_0 weights, base 10,000, no scaling.
    pub fn llama_gqa() -> SynthModel {
        SynthModel {
            name: "synth-llama-gqa",
            arch: "llama",
            n_layers: 2,
            n_embd: 512,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 64,
            n_ff: 1024,
            weights: GgmlType::Q8_0,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            qk_norm: false,
            rope_freqs: None,
            rope_linear: None,
            logit_scale: 4.0,
            seed: 0x4c4c_4d47_5141,
        }
    }

    /// A Llama declaring linear RoPE scaling (`llama.rope.scaling.type = linear`, factor 4:
    /// positions divided by 4), 4 heads of 64 over 2 KV heads on a 256-wide stream, F16.
    pub fn llama_linear() -> SynthModel {
        SynthModel {
            name: "synth-llama-linear",
            arch: "llama",
            n_layers: 2,
            n_embd: 256,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            n_ff: 768,
            weights: GgmlType::F16,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            qk_norm: false,
            rope_freqs: None,
            rope_linear: Some(4.0),
            logit_scale: 4.0,
            seed: 0x4c4c_4d4c_494e,
        }
    }

    /// Every synthetic model that has a fixture.
    pub fn all() -> Vec<SynthModel> {
        vec![
            Self::qwen3(),
            Self::llama_rope_freqs(),
            Self::llama_gqa(),
            Self::llama_linear(),
        ]
    }

    /// The model called `name` (see [`SynthModel::all`]).
    pub fn by_name(name: &str) -> Option<SynthModel> {
        Self::all().into_iter().find(|m| m.name == name)
    }

    /// The file's bytes. `tokenizer`: a GGUF whose `tokenizer.*` keys are copied (its
    /// vocabulary must have [`VOCAB`] tokens); `None` writes a placeholder vocabulary.
    pub fn build(&self, tokenizer: Option<&Gguf>) -> Result<Vec<u8>> {
        Ok(self.writer(tokenizer)?.build())
    }

    /// The file as a [`GgufWriter`] (for tests that change a key or a tensor before writing).
    pub fn writer(&self, tokenizer: Option<&Gguf>) -> Result<GgufWriter> {
        let arch = self.arch;
        let key = |k: &str| format!("{arch}.{k}");
        let mut w = GgufWriter::new()
            .kv("general.architecture", MetaValue::Str(arch.into()))
            .kv("general.name", MetaValue::Str(self.name.into()))
            .kv(
                "general.file_type",
                MetaValue::U32(file_type(self.weights)?),
            )
            .kv(&key("block_count"), u32v(self.n_layers))
            .kv(&key("context_length"), MetaValue::U32(8192))
            .kv(&key("embedding_length"), u32v(self.n_embd))
            .kv(&key("feed_forward_length"), u32v(self.n_ff))
            .kv(&key("attention.head_count"), u32v(self.n_heads))
            .kv(&key("attention.head_count_kv"), u32v(self.n_kv_heads))
            .kv(&key("rope.freq_base"), MetaValue::F32(self.rope_theta))
            .kv(&key("rope.dimension_count"), u32v(self.head_dim))
            .kv(
                &key("attention.layer_norm_rms_epsilon"),
                MetaValue::F32(self.rms_eps),
            );
        if self.head_dim * self.n_heads != self.n_embd {
            w = w
                .kv(&key("attention.key_length"), u32v(self.head_dim))
                .kv(&key("attention.value_length"), u32v(self.head_dim));
        }
        if let Some(f) = self.rope_linear {
            w = w
                .kv(&key("rope.scaling.type"), MetaValue::Str("linear".into()))
                .kv(&key("rope.scaling.factor"), MetaValue::F32(f));
        }
        match tokenizer {
            Some(t) => {
                let n = t.get_str_array("tokenizer.ggml.tokens")?.len();
                if n != VOCAB {
                    return Err(Error::InvalidSetting(format!(
                        "the tokenizer has {n} tokens, the synthetic models {VOCAB}"
                    )));
                }
                for (k, v) in t
                    .metadata
                    .iter()
                    .filter(|(k, _)| k.starts_with("tokenizer."))
                {
                    w = w.kv(k, v.clone());
                }
            }
            None => {
                let tokens = (0..VOCAB).map(|i| MetaValue::Str(format!("<{i}>")));
                w = w
                    .kv("tokenizer.ggml.model", MetaValue::Str("gpt2".into()))
                    .kv("tokenizer.ggml.tokens", MetaValue::Array(tokens.collect()));
            }
        }

        let (d, hd, ff) = (self.n_embd, self.head_dim, self.n_ff);
        let (qd, kvd) = (self.n_heads * hd, self.n_kv_heads * hd);
        let inv = |n: usize| 1.0 / (n as f32).sqrt();
        let mut t = Tensors {
            w,
            ty: self.weights,
            seed: self.seed,
        };
        // Unit-variance embeddings; the output's logits spread over `logit_scale` units.
        t.matrix("token_embd.weight", VOCAB, d, 1.0)?;
        t.norm("output_norm.weight", d, 1.0, 0.1);
        t.matrix("output.weight", VOCAB, d, self.logit_scale * inv(d))?;
        if let Some(f) = &self.rope_freqs {
            t.w =
                t.w.tensor("rope_freqs.weight", &[f.len() as u64], 0, f32_bytes(f));
        }
        for l in 0..self.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            t.norm(&n("attn_norm.weight"), d, 1.0, 0.2);
            // Without QK norm, queries twice the keys' scale: scores of about 2 units.
            // With it, the projections' scale washes out (a real Qwen3's queries and keys
            // are far from unit RMS, as these are) and the norm weights set the scores.
            let (q_scale, k_scale) = match self.qk_norm {
                true => (6.0, 3.0),
                false => (2.0, 1.0),
            };
            t.matrix(&n("attn_q.weight"), qd, d, q_scale * inv(d))?;
            t.matrix(&n("attn_k.weight"), kvd, d, k_scale * inv(d))?;
            t.matrix(&n("attn_v.weight"), kvd, d, inv(d))?;
            if self.qk_norm {
                t.norm(&n("attn_q_norm.weight"), hd, 1.5, 0.5);
                t.norm(&n("attn_k_norm.weight"), hd, 1.0, 0.5);
            }
            // Attention averages values: scale its output up so it weighs as much as the
            // embedding in the residual stream.
            t.matrix(&n("attn_output.weight"), d, qd, 2.0 * inv(qd))?;
            t.norm(&n("ffn_norm.weight"), d, 1.0, 0.2);
            t.matrix(&n("ffn_gate.weight"), ff, d, inv(d))?;
            t.matrix(&n("ffn_up.weight"), ff, d, inv(d))?;
            t.matrix(&n("ffn_down.weight"), d, ff, 2.0 * inv(ff))?;
        }
        Ok(t.w)
    }

    /// Writes the file (see [`SynthModel::build`]).
    pub fn write(&self, path: &Path, tokenizer: Option<&Gguf>) -> Result<()> {
        std::fs::write(path, self.build(tokenizer)?).map_err(|e| Error::io(path, e))
    }
}

/// RoPE frequency factors as llama.cpp's converter computes them for a `llama3` rope scaling
/// (conversion/llama.py, `generate_extra_tensors`): for each frequency
/// `f_i = base^(-2i / dim)` with wavelength `2 pi / f_i`, the factor is 1 below
/// `orig_ctx / high`, `factor` above `orig_ctx / low`, and in between
/// `1 / ((1 - s) / factor + s)` with `s = (orig_ctx / wavelength - low) / (high - low)`.
/// llama.cpp divides frequency `i` by factor `i`.
pub fn llama3_factors(
    dim: usize,
    base: f32,
    factor: f32,
    low: f32,
    high: f32,
    orig_ctx: f32,
) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (orig_ctx / low, orig_ctx / high);
    (0..dim / 2)
        .map(|i| {
            // The converter computes the frequencies in f32 (torch); so does this.
            let freq = 1.0 / base.powf((2 * i) as f32 / dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let s = (orig_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - s) / factor + s)
            }
        })
        .collect()
}

/// The tensors being written, each from its own random stream.
struct Tensors {
    w: GgufWriter,
    ty: GgmlType,
    seed: u64,
}

impl Tensors {
    /// Uniform values of standard deviation `std` (half-width `std * sqrt(3)`), one stream per
    /// tensor name.
    fn values(&self, name: &str, n: usize, std: f32) -> Vec<f32> {
        let mut rng = SplitMix(self.seed ^ fnv1a(name));
        let half_width = std * 3f32.sqrt();
        (0..n).map(|_| rng.uniform() * half_width).collect()
    }

    /// A `[rows, cols]` matrix in the model's weight type.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize, std: f32) -> Result<()> {
        let x = self.values(name, rows * cols, std);
        let data = match self.ty {
            GgmlType::F32 => f32_bytes(&x),
            GgmlType::F16 => {
                let mut b = vec![0u8; x.len() * 2];
                for (i, &v) in x.iter().enumerate() {
                    write_f16(&mut b, 2 * i, v);
                }
                b
            }
            GgmlType::Q8_0 => {
                let mut b = vec![0u8; self.ty.row_bytes(cols)? * rows];
                scalar::quantize_q8_0(&x, &mut b);
                b
            }
            other => {
                return Err(Error::InvalidSetting(format!(
                    "synthetic weights are F32, F16 or Q8_0, not {}",
                    other.name()
                )))
            }
        };
        let ty = self.ty.id();
        let w = std::mem::take(&mut self.w);
        self.w = w.tensor(name, &[cols as u64, rows as u64], ty, data);
        Ok(())
    }

    /// A norm weight vector: `center` plus uniform values within `spread`, F32.
    fn norm(&mut self, name: &str, len: usize, center: f32, spread: f32) {
        let x: Vec<f32> = (self.values(name, len, 1.0 / 3f32.sqrt()).iter())
            .map(|v| center + spread * v)
            .collect();
        let w = std::mem::take(&mut self.w);
        self.w = w.tensor(name, &[len as u64], 0, f32_bytes(&x));
    }
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn u32v(n: usize) -> MetaValue {
    MetaValue::U32(n as u32)
}

/// `general.file_type` (llama_ftype) of an all-`ty` file.
fn file_type(ty: GgmlType) -> Result<u32> {
    Ok(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        other => {
            return Err(Error::InvalidSetting(format!(
                "synthetic weights are F32, F16 or Q8_0, not {}",
                other.name()
            )))
        }
    })
}

/// splitmix64: a tiny, fixed generator (the same numbers everywhere).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1): 24 random bits, exact in f32.
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// FNV-1a of a tensor name: its stream's seed.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_factors_match_the_converters_formula() {
        // Llama 3.1 8B: head_dim 128, base 500,000, factor 8, low 1, high 4, context 8,192.
        let f = llama3_factors(128, 500_000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0); // wavelength 2 pi, far below 2,048
        assert_eq!(f[63], 8.0); // wavelength in the millions, above 8,192
                                // Monotone in between, and some factors strictly between 1 and 8.
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
        assert!(f.iter().any(|&v| v > 1.0 && v < 8.0));
    }

    #[test]
    fn the_same_model_gives_the_same_bytes_and_loads() {
        let m = SynthModel {
            n_layers: 1,
            ..SynthModel::qwen3()
        };
        let a = m.build(None).unwrap();
        assert_eq!(a, m.build(None).unwrap());
        let g = Gguf::from_bytes(a).unwrap();
        let cfg = crate::model::ModelConfig::from_gguf(&g).unwrap();
        assert_eq!((cfg.head_dim, cfg.q_dim(), cfg.n_embd), (128, 1024, 256));
        crate::model::weights::Weights::load(&g, &cfg).unwrap();
    }

    #[test]
    fn uniform_values_have_the_asked_spread() {
        let t = Tensors {
            w: GgufWriter::new(),
            ty: GgmlType::F32,
            seed: 1,
        };
        let x = t.values("x", 100_000, 2.0);
        let var = x.iter().map(|v| (v * v) as f64).sum::<f64>() / x.len() as f64;
        assert!((var.sqrt() - 2.0).abs() < 0.02, "{}", var.sqrt());
    }
}
