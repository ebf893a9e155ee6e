//! `qwen2`: Qwen2 and Qwen2.5 (base, instruct and coder).
//!
//! - RoPE on the two halves of each head (llama.cpp: LLAMA_ROPE_TYPE_NEOX for this
//!   architecture), base from `qwen2.rope.freq_base` (1,000,000 in Qwen2.5).
//! - Biases on the Q, K and V projections (and none on the output projection).
//! - Pre-norm blocks, SwiGLU MLP, grouped-query attention (Qwen2.5-0.5B: 14 query heads over
//!   2 KV heads).

use super::{ArchSpec, Presence, RopeStyle};

pub const SPEC: ArchSpec = ArchSpec {
    name: "qwen2",
    rope: RopeStyle::Neox,
    qkv_bias: Presence::Required,
    ..ArchSpec::BASE
};
