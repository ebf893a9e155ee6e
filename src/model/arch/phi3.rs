//! `phi3`: Phi-3 (mini and medium, 4k context) and the files that declare this architecture.
//!
//! A pre-norm SwiGLU decoder like Llama, stored differently, as llama.cpp reads it
//! (`src/models/phi3.cpp`):
//!
//! - Q, K and V in one matrix `attn_qkv`, `[q_dim + 2 kv_dim, n_embd]`: the query rows, then
//!   the key rows, then the value rows (llama.cpp's `build_qkv` takes views of the fused
//!   product at those offsets). Any architecture here may have it (llama.cpp's
//!   `create_tensor_qkv` takes `attn_qkv` when a file has it, else `attn_q/k/v`); Phi-3's
//!   files always do.
//! - Gate and up projections in one `ffn_up`, `[2 n_ff, n_embd]`, and no `ffn_gate`: the
//!   first `n_ff` rows are the gate, the next `n_ff` the up projection (llama.cpp applies
//!   `ggml_swiglu` to the fused product, not swapped: SiLU of the first half times the
//!   second half).
//! - fastgen reads both as row ranges of the file's tensor, in place (`weights::Matrix::row_range`):
//!   the same bytes and kernels as separate tensors, nothing copied.
//! - RoPE on the two halves of each head (llama.cpp: LLAMA_ROPE_TYPE_NEOX for this
//!   architecture), over `rope.dimension_count` dimensions (all of Phi-3's 96); queries scaled
//!   by `1/sqrt(head_dim)`.
//! - `phi3.attention.sliding_window` (2047 in Phi-3-mini-4k; the converter writes 0 for
//!   Phi-4) is ignored: llama.cpp disables sliding-window attention for this architecture
//!   whatever the file says (`load_arch_hparams`: "Phi SWA is currently disabled"), so every
//!   layer attends to the whole context, here too.
//! - The 128k models (Phi-3-mini-128k, Phi-3.5) use LongRoPE: `rope_factors_long/short`
//!   tensors and `phi3.rope.scaling.attn_factor`; refused (`ModelConfig`), naming the tensor.
//! - No biases in the released models (llama.cpp would add separate Q/K/V biases when a file
//!   has them, as here); output not tied to the embedding (llama.cpp falls back to the
//!   embedding when `output.weight` is missing, as here). SentencePiece vocabulary, BOS.

use super::{ArchSpec, GateUp, Presence, RopeStyle};

pub const SPEC: ArchSpec = ArchSpec {
    name: "phi3",
    rope: RopeStyle::Neox,
    qkv_bias: Presence::Optional,
    gate_up: GateUp::Fused,
    ..ArchSpec::BASE
};
