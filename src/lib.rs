//! fastgen: LLM inference on the CPU with FastGen adaptive per-head KV-cache compression
//! (Ge et al., ICLR 2024).
//!
//! Layers, bottom up: `gguf` reads model files; `quant` holds the tensor formats and their
//! dot products; `model` runs the forward pass over a `kv_cache`; `tokenizer`, `chat` and
//! `sampling` turn text into ids and logits into text; `generate` ties them into a loop;
//! `fetch` brings the pinned models and data onto the machine; `compress` is the compressed
//! cache (profiling, policies, eviction, accounting).

pub mod chat;
pub mod cpu;
pub mod error;
pub mod fetch;
pub mod gguf;
pub mod quant;
pub mod sampling;
pub mod tokenizer;

pub use error::{Error, Result};
pub mod attention;
pub mod bench;
pub mod compress;
pub mod eval;
pub mod generate;
pub mod kv_cache;
pub mod model;
pub mod perplexity;
pub mod pool;
