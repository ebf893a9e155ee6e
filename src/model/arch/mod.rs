//! Architectures as data: what a file's `general.architecture` means for the forward pass.
//!
//! Each architecture is one small file (`llama.rs`, `qwen2.rs`, `qwen3.rs`, `gemma3.rs`,
//! `phi3.rs`) whose header lists what is
//! special about it and whose [`ArchSpec`] states it; the forward pass and the weight loader
//! read the spec, never the architecture's name. Numbers a file records (layer count, rope
//! base, norm epsilon...) stay in `ModelConfig`, read from its metadata; the spec holds the
//! facts GGUF does not record, which llama.cpp hard-codes per architecture.

mod gemma3;
mod llama;
mod phi3;
mod qwen2;
mod qwen3;

use crate::error::{Error, Result};

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])` (llama; GGUF converters permute Q/K for this).
    Interleaved,
    /// Halves `(x[i], x[i + d/2])` (GPT-NeoX, Qwen2).
    Neox,
}

/// Whether a tensor must be in the file, may be, or must not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
}

/// Where a block's RMS norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norms {
    /// Before attention and before the feed-forward (`attn_norm`, `ffn_norm`).
    Pre,
    /// Also on each sub-block's output before the residual add (`post_attention_norm`,
    /// `post_ffw_norm`): Gemma 2/3.
    PreAndPost,
}

/// The feed-forward's gated activation: `down(act(gate x) * up x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatedAct {
    /// SiLU (SwiGLU).
    Silu,
    /// GELU, tanh approximation (GeGLU).
    GeluTanh,
}

/// How a file stores the feed-forward's gate and up projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateUp {
    /// `ffn_gate` and `ffn_up`, `[n_ff, n_embd]` each.
    Separate,
    /// One `ffn_up` of `[2 n_ff, n_embd]`, the gate's rows first, and no `ffn_gate` (Phi-3).
    Fused,
}

/// What multiplies the token embedding before the first layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedScale {
    One,
    /// `sqrt(n_embd)` (Gemma).
    SqrtEmbd,
}

/// Layers that attend over a sliding window of recent tokens; the window's length is the
/// file's `{arch}.attention.sliding_window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sliding {
    /// Layer `l` slides when `l % period < period - 1`: `period - 1` sliding layers, then
    /// one global layer (unless the file says otherwise in
    /// `{arch}.attention.sliding_window_pattern`).
    pub period: usize,
    /// RoPE base of the sliding layers unless the file gives `{arch}.rope.freq_base_swa`
    /// (the global ones take `{arch}.rope.freq_base`). Sliding layers' RoPE is never scaled.
    pub rope_base: f32,
}

/// The facts of an architecture that its files do not record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchSpec {
    /// `general.architecture` in the file.
    pub name: &'static str,
    pub rope: RopeStyle,
    /// Biases on the Q, K and V projections (`blk.N.attn_{q,k,v}.bias`).
    pub qkv_bias: Presence,
    /// RMS norm of each query and key head before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    pub norms: Norms,
    pub act: GatedAct,
    pub gate_up: GateUp,
    pub embed_scale: EmbedScale,
    pub sliding: Option<Sliding>,
    /// RoPE frequency factors from the file's `rope_freqs.weight` when it has one (Llama 3.1
    /// and later): llama.cpp passes them to `ggml_rope_ext` for a few architectures only
    /// (`llama_model::get_rope_factors`), the others do not load the tensor.
    pub rope_freqs: bool,
}

impl ArchSpec {
    /// The plain pre-norm SwiGLU decoder (Llama) that the others differ from.
    const BASE: ArchSpec = ArchSpec {
        name: "",
        rope: RopeStyle::Interleaved,
        qkv_bias: Presence::Optional,
        qk_norm: false,
        norms: Norms::Pre,
        act: GatedAct::Silu,
        gate_up: GateUp::Separate,
        embed_scale: EmbedScale::One,
        sliding: None,
        rope_freqs: false,
    };
}

/// Every architecture fastgen runs. Anything else is refused by name.
const ARCHITECTURES: &[ArchSpec] = &[
    llama::SPEC,
    qwen2::SPEC,
    qwen3::SPEC,
    gemma3::SPEC,
    phi3::SPEC,
];

/// The spec of architecture `name`.
pub fn spec(name: &str) -> Result<ArchSpec> {
    ARCHITECTURES
        .iter()
        .find(|a| a.name == name)
        .copied()
        .ok_or_else(|| Error::UnsupportedArch(crate::error::shown(name)))
}

/// The names of the architectures fastgen runs, for messages.
pub fn names() -> Vec<&'static str> {
    ARCHITECTURES.iter().map(|a| a.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_architectures_have_specs_and_others_are_refused_by_name() {
        assert_eq!(spec("qwen2").unwrap().rope, RopeStyle::Neox);
        assert_eq!(spec("llama").unwrap().qkv_bias, Presence::Optional);
        assert_eq!(spec("gemma3").unwrap().sliding.unwrap().period, 6);
        let e = spec("gemma2").unwrap_err().to_string();
        assert!(e.contains("gemma2"), "{e}");
        assert!(spec("qwen3").unwrap().qk_norm);
        assert!(spec("llama").unwrap().rope_freqs && !spec("qwen3").unwrap().rope_freqs);
        assert_eq!(spec("qwen3").unwrap().rope, RopeStyle::Neox);
        assert_eq!(spec("phi3").unwrap().gate_up, GateUp::Fused);
        assert_eq!(spec("phi3").unwrap().rope, RopeStyle::Neox);
        assert!(spec("phi3").unwrap().sliding.is_none());
        assert_eq!(names(), ["llama", "qwen2", "qwen3", "gemma3", "phi3"]);
    }
}
