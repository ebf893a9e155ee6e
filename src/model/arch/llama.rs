//! `llama`: Llama 1/2, SmolLM2 and the many files that declare this architecture.
//!
//! - RoPE on adjacent pairs: the GGUF converter permutes the Q and K rows so that llama.cpp's
//!   interleaved rotation gives the original model's (LLM_ARCH_LLAMA uses LLAMA_ROPE_TYPE_NORM).
//! - Pre-norm blocks (RMS norm before attention and before the feed-forward), SwiGLU MLP.
//! - No Q/K/V biases in the original models; llama.cpp loads them when a file has them.
//! - The output projection may be tied to the token embedding (no `output.weight`).
//! - Llama 3.1 and later: `rope_freqs.weight` (`[rope_dims / 2]`, f32) divides each RoPE
//!   frequency by its factor (the converter computes them from the model's `llama3` rope
//!   scaling); llama.cpp passes it to `ggml_rope_ext` as `freq_factors`.
//! - Mistral 7B v0.x files declare this architecture (the converter maps
//!   `MistralForCausalLM` to `llama`): nothing more is needed. v0.1's 4,096-token sliding
//!   window is not applied: the converter writes no `llama.attention.sliding_window` for it,
//!   and llama.cpp's llama architecture never reads that key (`src/models/llama.cpp`), so
//!   every layer attends to the whole context there and here.

use super::{ArchSpec, Presence, RopeStyle};

pub const SPEC: ArchSpec = ArchSpec {
    name: "llama",
    rope: RopeStyle::Interleaved,
    qkv_bias: Presence::Optional,
    rope_freqs: true,
    ..ArchSpec::BASE
};
