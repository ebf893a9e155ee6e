//! `qwen3`: Qwen3 (dense; the MoE models are `qwen3moe`, not run here).
//!
//! Qwen2's block with two changes, as llama.cpp's graph for it (`src/models/qwen3.cpp`) has:
//!
//! - RMS norm of each query and key head (`attn_q_norm`, `attn_k_norm`, one weight per head
//!   dimension) after the projections and before RoPE; the norm's epsilon is the file's
//!   `qwen3.attention.layer_norm_rms_epsilon`, as for the block norms.
//! - No Q/K/V biases in the released models (llama.cpp still adds them when a file has them).
//! - The head dimension is `qwen3.attention.key_length` (128), not `n_embd / n_head`: the query
//!   width differs from the embedding width (Qwen3-0.6B: 16 x 128 = 2,048 against 1,024).
//!   llama.cpp asserts that the value heads are as wide and that RoPE turns whole heads.
//!
//! Otherwise as Qwen2: RoPE on the two halves of each head (LLAMA_ROPE_TYPE_NEOX), base from
//! `qwen3.rope.freq_base` (1,000,000), pre-norm blocks, SwiGLU, grouped-query attention,
//! queries scaled by `1/sqrt(head_dim)`, output tied to the embedding in the small models.
//! llama.cpp passes no RoPE frequency factors for this architecture.

use super::{ArchSpec, Presence, RopeStyle};

pub const SPEC: ArchSpec = ArchSpec {
    name: "qwen3",
    rope: RopeStyle::Neox,
    qkv_bias: Presence::Optional,
    qk_norm: true,
    ..ArchSpec::BASE
};
