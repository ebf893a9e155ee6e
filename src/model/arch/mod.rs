//! Architectures as data: what a file's `general.architecture` means for the forward pass.
//!
//! Each architecture is one small file (`llama.rs`, `qwen2.rs`) whose header lists what is
//! special about it and whose [`ArchSpec`] states it; the forward pass and the weight loader
//! read the spec, never the architecture's name. Numbers a file records (layer count, rope
//! base, norm epsilon...) stay in `ModelConfig`, read from its metadata; the spec holds the
//! facts GGUF does not record, which llama.cpp hard-codes per architecture.

mod llama;
mod qwen2;

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

/// The facts of an architecture that its files do not record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchSpec {
    /// `general.architecture` in the file.
    pub name: &'static str,
    pub rope: RopeStyle,
    /// Biases on the Q, K and V projections (`blk.N.attn_{q,k,v}.bias`).
    pub qkv_bias: Presence,
}

/// Every architecture fastgen runs. Anything else is refused by name.
const ARCHITECTURES: &[ArchSpec] = &[llama::SPEC, qwen2::SPEC];

/// The spec of architecture `name`.
pub fn spec(name: &str) -> Result<ArchSpec> {
    ARCHITECTURES
        .iter()
        .find(|a| a.name == name)
        .copied()
        .ok_or_else(|| Error::UnsupportedArch(name.to_string()))
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
        let e = spec("gemma3").unwrap_err().to_string();
        assert!(e.contains("gemma3"), "{e}");
        assert_eq!(names(), ["llama", "qwen2"]);
    }
}
