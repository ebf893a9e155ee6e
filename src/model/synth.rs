//! Random-weight GGUF files of a given architecture, for conformance tests against llama.cpp
//! without a real model of that architecture.
//!
//! A [`SynthModel`] is a handful of layers with the metadata keys and tensor names of real
//! files (`{arch}.block_count`, `blk.N.attn_q_norm.weight`, `rope_freqs.weight`...), random
//! weights from a fixed seed, and the vocabulary size of SmolLM2 (49,152). Writing the same
//! model twice gives the same bytes on any machine: the weights come from integer arithmetic
//! (splitmix64, uniform values) and the quantisers are ggml's reference rounding.
//!
//! Quantised matrices can also be random blocks ([`Quants::RandomBlocks`]): every byte of
//! every block random (quants, packed sub-block scales and mins, high bits), then the
//! block's f16 scales (`d`, and `m` / `dmin` where the type has one) set to fixed multiples
//! of one value with a random sign per block, that value chosen so that the dequantised
//! matrix has the standard deviation the model asks for. Every bit pattern of a type's
//! fields occurs (a Q8_0 quant of -128, a Q6_K sub-block scale of -128, Q4_K's packed
//! 6-bit scales all over their range), which rounding real values would never give, and no
//! quantiser has to be written for a type: [`TYPES`] holds one line per type.
//! [`SynthModel::of_type`] is a small Llama whose every matrix is of one type.
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

use super::arch::GateUp;
use crate::error::{Error, Result};
use crate::gguf::write::GgufWriter;
use crate::gguf::{Gguf, MetaValue};
use crate::quant::blocks::{
    read_f16, write_f16, Q2_K_OFF_D, Q2_K_OFF_DMIN, Q3_K_OFF_D, Q6_K_OFF_D,
};
use crate::quant::{dequantize_row, scalar, GgmlType};
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
    /// Type of the matrices (any of [`TYPES`]); norms and factors are always F32.
    pub weights: GgmlType,
    /// How quantised matrices are made (float types always hold rounded random values).
    pub quants: Quants,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// QK-norm tensors (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// `rope_freqs.weight`, `[head_dim / 2]`.
    pub rope_freqs: Option<Vec<f32>>,
    /// Linear RoPE scaling factor (`{arch}.rope.scaling.type = linear`, `.factor`).
    pub rope_linear: Option<f32>,
    /// Q, K and V in one `attn_qkv` tensor (Phi-3) instead of three. Gate and up are fused
    /// in `ffn_up` when the architecture says so (its spec's `gate_up`).
    pub fused_qkv: bool,
    /// `{arch}.attention.sliding_window`, when the file has the key.
    pub sliding_window: Option<u32>,
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
            head_dim: 128,
            n_ff: 768,
            weights: GgmlType::F32,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            qk_norm: true,
            seed: 0x5157_454e_3301,
            ..Self::llama_gqa()
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
            n_layers: 3,
            weights: GgmlType::F16,
            rope_theta: theta,
            rope_freqs: Some(llama3_factors(64, theta, 8.0, 1.0, 4.0, ORIG_CTX)),
            seed: 0x4c4c_4d33_5246,
            ..Self::llama_gqa()
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
            quants: Quants::Rounded,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            qk_norm: false,
            rope_freqs: None,
            rope_linear: None,
            fused_qkv: false,
            sliding_window: None,
            logit_scale: 4.0,
            seed: 0x4c4c_4d47_5141,
        }
    }

    /// A Llama declaring linear RoPE scaling (`llama.rope.scaling.type = linear`, factor 4:
    /// positions divided by 4), 4 heads of 64 over 2 KV heads on a 256-wide stream, F16.
    pub fn llama_linear() -> SynthModel {
        SynthModel {
            name: "synth-llama-linear",
            n_embd: 256,
            n_heads: 4,
            n_ff: 768,
            weights: GgmlType::F16,
            rope_linear: Some(4.0),
            seed: 0x4c4c_4d4c_494e,
            ..Self::llama_gqa()
        }
    }

    /// Phi-3-shaped: Q, K and V fused in `attn_qkv`, gate and up fused in `ffn_up`, NEOX
    /// RoPE, heads of 96 (Phi-3-mini's width; 4 over 2 KV heads, as Phi-3-medium groups
    /// them), F16. The file declares a sliding window of 64 tokens, which llama.cpp ignores
    /// for this architecture (the fixture's prompts reach 1,024 tokens, so applying it
    /// would show).
    pub fn phi3() -> SynthModel {
        SynthModel {
            name: "synth-phi3",
            arch: "phi3",
            n_embd: 384,
            n_heads: 4,
            head_dim: 96,
            weights: GgmlType::F16,
            fused_qkv: true,
            sliding_window: Some(64),
            seed: 0x5048_4933_0001,
            ..Self::llama_gqa()
        }
    }

    /// The conformance model of tensor type `ty` (named in [`TYPES`], e.g. `synth-q4_k`): a
    /// plain Llama, 2 layers, 4 query heads of 64 over 2 KV heads on a 256-wide stream,
    /// feed-forward 768 (every row a whole number of 256-element K-quant super-blocks), every
    /// matrix of type `ty` (random blocks; BF16 holds rounded random values), including the
    /// token embedding and the output projection. `None` for a type without one.
    pub fn of_type(ty: GgmlType) -> Option<SynthModel> {
        let name = TYPES.iter().find(|t| t.ty == ty)?.model?;
        Some(SynthModel {
            name,
            n_embd: 256,
            n_heads: 4,
            n_ff: 768,
            weights: ty,
            quants: Quants::RandomBlocks,
            seed: fnv1a(name),
            ..Self::llama_gqa()
        })
    }

    /// Every synthetic model that has a fixture.
    pub fn all() -> Vec<SynthModel> {
        let mut all = vec![
            Self::qwen3(),
            Self::llama_rope_freqs(),
            Self::llama_gqa(),
            Self::llama_linear(),
            Self::phi3(),
        ];
        all.extend(TYPES.iter().filter_map(|t| Self::of_type(t.ty)));
        all
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
        // llama.cpp gives Phi-3's special tokens their attributes when `general.name`
        // contains "phi3" (llama-vocab.cpp), looking up `</s>`, which SmolLM2's vocabulary
        // lacks: the name in the file leaves the "3" out.
        let general_name = self.name.replace("phi3", "phi");
        let mut w = GgufWriter::new()
            .kv("general.architecture", MetaValue::Str(arch.into()))
            .kv("general.name", MetaValue::Str(general_name))
            .kv(
                "general.file_type",
                MetaValue::U32(type_entry(self.weights)?.ftype),
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
        if let Some(win) = self.sliding_window {
            w = w.kv(&key("attention.sliding_window"), MetaValue::U32(win));
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

        let spec = super::arch::spec(arch)?;
        let (d, hd, ff) = (self.n_embd, self.head_dim, self.n_ff);
        let (qd, kvd) = (self.n_heads * hd, self.n_kv_heads * hd);
        let inv = |n: usize| 1.0 / (n as f32).sqrt();
        let mut t = Tensors {
            w,
            ty: self.weights,
            quants: self.quants,
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
            let (q, k, v) = (n("attn_q.weight"), n("attn_k.weight"), n("attn_v.weight"));
            let qkv = [
                (q.as_str(), qd, q_scale * inv(d)),
                (k.as_str(), kvd, k_scale * inv(d)),
                (v.as_str(), kvd, inv(d)),
            ];
            match self.fused_qkv {
                true => t.fused(&n("attn_qkv.weight"), d, &qkv)?,
                false => {
                    for part in qkv {
                        t.fused(part.0, d, &[part])?;
                    }
                }
            }
            if self.qk_norm {
                t.norm(&n("attn_q_norm.weight"), hd, 1.5, 0.5);
                t.norm(&n("attn_k_norm.weight"), hd, 1.0, 0.5);
            }
            // Attention averages values: scale its output up so it weighs as much as the
            // embedding in the residual stream.
            t.matrix(&n("attn_output.weight"), d, qd, 2.0 * inv(qd))?;
            t.norm(&n("ffn_norm.weight"), d, 1.0, 0.2);
            let (gate, up) = (n("ffn_gate.weight"), n("ffn_up.weight"));
            match spec.gate_up {
                GateUp::Separate => {
                    t.matrix(&gate, ff, d, inv(d))?;
                    t.matrix(&up, ff, d, inv(d))?;
                }
                // The gate's rows, then the up projection's, in one `ffn_up`.
                GateUp::Fused => t.fused(&up, d, &[(&gate, ff, inv(d)), (&up, ff, inv(d))])?,
            }
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

/// How quantised matrices are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quants {
    /// Uniform random values rounded by ggml's reference quantiser (Q8_0 only).
    Rounded,
    /// Random blocks with scales set for the asked spread (module docs).
    RandomBlocks,
}

/// A tensor type as the synthetic files hold it: the one table to extend when the engine
/// learns a type.
#[derive(Debug, Clone, Copy)]
pub struct SynthType {
    pub ty: GgmlType,
    /// `general.file_type` of a file whose matrices are all `ty`: the llama_ftype that
    /// llama.cpp guesses from a file's commonest type when the key is missing
    /// (`llama_model_loader`), e.g. MOSTLY_Q4_K_M (15) for Q4_K, MOSTLY_Q3_K_M (12) for Q3_K.
    pub ftype: u32,
    /// The f16 scale fields of a random block: byte offset in the block, and the field's
    /// value as a multiple of the block's signed scale `s`. Where a type adds an offset
    /// (Q4_1's and Q5_1's `m`, the K-quants' `dmin` times a random 6-bit min), the multiple
    /// centres the weights: `m = -7.5 d` for four-bit quants 0..=15, `dmin = 7.5 d` when
    /// the random scales and mins have the same mean (Q2_K: `dmin = 1.5 d`, the mean of its
    /// two-bit quants). Types whose quants are signed already (Q3_K's signed 6-bit scales
    /// times quants -4..=3, IQ4_NL's levels -127..=113, mean -5.9) have `d` alone. Empty
    /// for float types.
    pub scales: &'static [(usize, f32)],
    /// The name of its conformance model ([`SynthModel::of_type`]), if it has one.
    pub model: Option<&'static str>,
}

/// Every type the synthetic files can hold. F32 and F16 have no conformance model of their
/// own (at 256 x 49,152 their embedding alone would be 50 and 25 MB; the qwen3, llama3-rope
/// and llama-linear models are F32 and F16).
#[rustfmt::skip]
pub const TYPES: &[SynthType] = &[
    SynthType { ty: GgmlType::F32, ftype: 0, scales: &[], model: None },
    SynthType { ty: GgmlType::F16, ftype: 1, scales: &[], model: None },
    SynthType { ty: GgmlType::Q4_0, ftype: 2, scales: &[(0, 1.0)], model: Some("synth-q4_0") },
    SynthType { ty: GgmlType::Q4_1, ftype: 3, scales: &[(0, 1.0), (2, -7.5)], model: Some("synth-q4_1") },
    SynthType { ty: GgmlType::Q5_0, ftype: 8, scales: &[(0, 1.0)], model: Some("synth-q5_0") },
    SynthType { ty: GgmlType::Q5_1, ftype: 9, scales: &[(0, 1.0), (2, -15.5)], model: Some("synth-q5_1") },
    SynthType { ty: GgmlType::Q8_0, ftype: 7, scales: &[(0, 1.0)], model: Some("synth-q8_0") },
    SynthType { ty: GgmlType::IQ4_NL, ftype: 25, scales: &[(0, 1.0)], model: Some("synth-iq4_nl") },
    SynthType { ty: GgmlType::Q2_K, ftype: 10, scales: &[(Q2_K_OFF_D, 1.0), (Q2_K_OFF_DMIN, 1.5)], model: Some("synth-q2_k") },
    SynthType { ty: GgmlType::Q3_K, ftype: 12, scales: &[(Q3_K_OFF_D, 1.0)], model: Some("synth-q3_k") },
    SynthType { ty: GgmlType::Q4_K, ftype: 15, scales: &[(0, 1.0), (2, 7.5)], model: Some("synth-q4_k") },
    SynthType { ty: GgmlType::Q5_K, ftype: 17, scales: &[(0, 1.0), (2, 15.5)], model: Some("synth-q5_k") },
    SynthType { ty: GgmlType::Q6_K, ftype: 18, scales: &[(Q6_K_OFF_D, 1.0)], model: Some("synth-q6_k") },
    SynthType { ty: GgmlType::BF16, ftype: 32, scales: &[], model: Some("synth-bf16") },
];

/// The [`TYPES`] entry of `ty`.
pub fn type_entry(ty: GgmlType) -> Result<&'static SynthType> {
    TYPES.iter().find(|t| t.ty == ty).ok_or_else(|| {
        Error::InvalidSetting(format!(
            "synthetic files do not hold {} tensors yet (model::synth::TYPES)",
            ty.name()
        ))
    })
}

/// The tensors being written, each from its own random stream.
struct Tensors {
    w: GgufWriter,
    ty: GgmlType,
    quants: Quants,
    seed: u64,
}

impl Tensors {
    fn rng(&self, name: &str) -> SplitMix {
        SplitMix(self.seed ^ fnv1a(name))
    }

    /// Uniform values of standard deviation `std` (half-width `std * sqrt(3)`), one stream per
    /// tensor name.
    fn values(&self, name: &str, n: usize, std: f32) -> Vec<f32> {
        let mut rng = self.rng(name);
        let half_width = std * 3f32.sqrt();
        (0..n).map(|_| rng.uniform() * half_width).collect()
    }

    /// A `[rows, cols]` matrix in the model's weight type.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize, std: f32) -> Result<()> {
        self.fused(name, cols, &[(name, rows, std)])
    }

    /// One matrix `name` made of `parts` stacked by rows, each `(stream, rows, std)`: the
    /// rows that a matrix called `stream` would have on its own (so a fused `attn_qkv` holds
    /// the bytes of the separate `attn_q`, `attn_k` and `attn_v`).
    fn fused(&mut self, name: &str, cols: usize, parts: &[(&str, usize, f32)]) -> Result<()> {
        let mut data = Vec::new();
        for &(stream, rows, std) in parts {
            data.extend(self.matrix_bytes(stream, rows, cols, std)?);
        }
        let rows: usize = parts.iter().map(|p| p.1).sum();
        let ty = self.ty.id();
        let w = std::mem::take(&mut self.w);
        self.w = w.tensor(name, &[cols as u64, rows as u64], ty, data);
        Ok(())
    }

    /// The bytes of a `[rows, cols]` matrix from stream `name`, in the model's weight type.
    fn matrix_bytes(&self, name: &str, rows: usize, cols: usize, std: f32) -> Result<Vec<u8>> {
        let entry = type_entry(self.ty)?;
        Ok(match (self.ty, self.quants) {
            (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16, _) => {
                round_floats(self.ty, &self.values(name, rows * cols, std))
            }
            (GgmlType::Q8_0, Quants::Rounded) => {
                let x = self.values(name, rows * cols, std);
                let mut b = vec![0u8; self.ty.row_bytes(cols)? * rows];
                scalar::quantize_q8_0(&x, &mut b);
                b
            }
            (_, Quants::RandomBlocks) => self.random_blocks(name, rows, cols, std, entry.scales)?,
            (other, Quants::Rounded) => {
                return Err(Error::InvalidSetting(format!(
                    "synthetic {} weights are random blocks, not rounded values",
                    other.name()
                )))
            }
        })
    }

    /// `rows` rows of random blocks (module docs) whose dequantised values have standard
    /// deviation `std`: each block's bytes random, its `scales` fields set to their multiples
    /// of +-1 (one random sign per block), the matrix dequantised to measure its RMS, and
    /// the fields multiplied by `std / rms`. All in fixed-order arithmetic: the same bytes
    /// everywhere.
    fn random_blocks(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        std: f32,
        scales: &[(usize, f32)],
    ) -> Result<Vec<u8>> {
        let row_bytes = self.ty.row_bytes(cols)?;
        let mut rng = self.rng(name);
        let mut b = vec![0u8; row_bytes * rows];
        for block in b.chunks_exact_mut(self.ty.block_bytes()) {
            for chunk in block.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
            }
            let sign = if rng.next() >> 63 == 0 { 1.0 } else { -1.0 };
            for &(off, multiple) in scales {
                write_f16(block, off, sign * multiple);
            }
        }
        let mut row = vec![0f32; cols];
        let mut sum_sq = 0f64;
        for r in b.chunks_exact(row_bytes) {
            dequantize_row(self.ty, r, &mut row);
            sum_sq += row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        }
        let s = std / (sum_sq / (rows * cols) as f64).sqrt() as f32;
        for block in b.chunks_exact_mut(self.ty.block_bytes()) {
            for &(off, _) in scales {
                write_f16(block, off, read_f16(block, off) * s);
            }
        }
        Ok(b)
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

/// F32, F16 or BF16 bytes of `x`, rounded to nearest even.
fn round_floats(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F16 => x
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect(),
        GgmlType::BF16 => x
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
            .collect(),
        _ => f32_bytes(x),
    }
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

    /// Every type's random blocks dequantise to the asked spread around zero, and the
    /// conformance models load.
    #[test]
    fn random_blocks_have_the_asked_spread() {
        for entry in TYPES {
            let t = Tensors {
                w: GgufWriter::new(),
                ty: entry.ty,
                quants: Quants::RandomBlocks,
                seed: 7,
            };
            let (rows, cols) = (64, 512);
            let mut t = t;
            t.matrix("m", rows, cols, 0.05).unwrap();
            let spec = &t.w.tensors[0];
            assert_eq!(spec.type_id, entry.ty.id());
            let mut x = vec![0f32; rows * cols];
            for (r, y) in spec
                .data
                .chunks_exact(entry.ty.row_bytes(cols).unwrap())
                .zip(x.chunks_exact_mut(cols))
            {
                dequantize_row(entry.ty, r, y);
            }
            let n = x.len() as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            let rms = (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n).sqrt();
            let name = entry.ty.name();
            // f16 scales: within a few parts per thousand of the asked RMS.
            assert!((rms - 0.05).abs() < 0.05 * 0.01, "{name}: rms {rms}");
            // Random signs per block (and centring multiples): mean far below the spread.
            assert!(mean.abs() < 0.1 * 0.05, "{name}: mean {mean}");
            if let Some(m) = SynthModel::of_type(entry.ty) {
                let m = SynthModel { n_layers: 1, ..m };
                let g = Gguf::from_bytes(m.build(None).unwrap()).unwrap();
                let cfg = crate::model::ModelConfig::from_gguf(&g).unwrap();
                let w = crate::model::weights::Weights::load(&g, &cfg).unwrap();
                assert_eq!((w.output.ty, w.layers[0].w_down.ty), (entry.ty, entry.ty));
            }
        }
    }

    /// Fused tensors hold the separate ones' rows, and the loader's row ranges find them:
    /// phi3 (`attn_qkv`, gate+up in `ffn_up`) against the same seed as a llama (separate).
    #[test]
    fn fused_tensors_read_as_the_separate_ones() {
        let fused = SynthModel {
            n_layers: 1,
            ..SynthModel::phi3()
        };
        let separate = SynthModel {
            arch: "llama",
            fused_qkv: false,
            ..fused.clone()
        };
        let load = |m: &SynthModel| {
            let g = Gguf::from_bytes(m.build(None).unwrap()).unwrap();
            let cfg = crate::model::ModelConfig::from_gguf(&g).unwrap();
            let w = crate::model::weights::Weights::load(&g, &cfg).unwrap();
            (g, w)
        };
        let ((gf, wf), (gs, ws)) = (load(&fused), load(&separate));
        assert!(
            gf.tensor("blk.0.attn_qkv.weight").is_some()
                && gf.tensor("blk.0.attn_q.weight").is_none()
        );
        assert!(gf.tensor("blk.0.ffn_gate.weight").is_none());
        let (lf, ls) = (&wf.layers[0], &ws.layers[0]);
        for (a, b) in [
            (&lf.wq, &ls.wq),
            (&lf.wk, &ls.wk),
            (&lf.wv, &ls.wv),
            (&lf.w_gate, &ls.w_gate),
            (&lf.w_up, &ls.w_up),
        ] {
            assert_eq!((a.rows, a.cols), (b.rows, b.cols), "{}", a.name);
            assert!(
                gf.tensor_bytes(&a.tensor) == gs.tensor_bytes(&b.tensor),
                "{}",
                a.name
            );
        }
        assert_eq!(lf.w_up.rows, 1024);
    }

    #[test]
    fn uniform_values_have_the_asked_spread() {
        let t = Tensors {
            w: GgufWriter::new(),
            ty: GgmlType::F32,
            quants: Quants::Rounded,
            seed: 1,
        };
        let x = t.values("x", 100_000, 2.0);
        let var = x.iter().map(|v| (v * v) as f64).sum::<f64>() / x.len() as f64;
        assert!((var.sqrt() - 2.0).abs() < 0.02, "{}", var.sqrt());
    }
}
