//! `gemma3`: Gemma 3 (text; Gemma-3-270m is the one at hand).
//!
//! - Sliding-window attention on five layers of every six (`l % 6 < 5`), over the last
//!   `gemma3.attention.sliding_window` tokens (512), the query's own included; every sixth
//!   layer is global. llama.cpp defaults the pattern (`set_swa_pattern(6)`, unless the file
//!   has `gemma3.attention.sliding_window_pattern`) and the sliding layers' RoPE base, 10,000
//!   (`rope_freq_base_train_swa`, unless the file has `gemma3.rope.freq_base_swa`); the global
//!   layers take `gemma3.rope.freq_base` (1,000,000) and the file's linear RoPE scaling (the
//!   larger Gemma 3 models have a factor of 8), the sliding ones none.
//! - RoPE on halves (LLAMA_ROPE_TYPE_NEOX), head_dim 256 (`attention.key_length`), so the
//!   query width (4 x 256) differs from the embedding width (640). One KV head (MQA).
//! - RMS norm of each query and key head before RoPE; norms before and after each
//!   sub-block (the converter already added Gemma's `1 +` to every norm weight).
//! - The embedding is multiplied by `sqrt(n_embd)`; GELU (tanh) gated feed-forward; output
//!   tied to the embedding; no logit soft-cap (Gemma 2 had one, Gemma 3 does not).
//! - Queries are scaled by `1/sqrt(head_dim)` as everywhere here (llama.cpp uses
//!   `1/sqrt(n_embd / n_head)` for the 27B model only).
//! - A base model adds BOS (`tokenizer.ggml.add_bos_token`); SentencePiece vocabulary.

use super::{ArchSpec, EmbedScale, GateUp, GatedAct, Norms, Presence, RopeStyle, Sliding};

pub const SPEC: ArchSpec = ArchSpec {
    name: "gemma3",
    rope: RopeStyle::Neox,
    qkv_bias: Presence::Optional,
    qk_norm: true,
    norms: Norms::PreAndPost,
    act: GatedAct::GeluTanh,
    gate_up: GateUp::Separate,
    embed_scale: EmbedScale::SqrtEmbd,
    sliding: Some(Sliding {
        period: 6,
        rope_base: 10_000.0,
    }),
    rope_freqs: false,
};
