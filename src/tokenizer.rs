//! Byte-level BPE tokenizer built from GGUF metadata. STUB: API contract only (helper "tokenizer").

use crate::error::Result;
use crate::gguf::Gguf;

pub struct Tokenizer {}

impl Tokenizer {
    pub fn from_gguf(_g: &Gguf) -> Result<Tokenizer> {
        todo!()
    }
    /// Text to ids; control tokens written in the text are recognised; nothing is prepended.
    pub fn encode(&self, _text: &str) -> Result<Vec<u32>> {
        todo!()
    }
    /// Ids to text (lossy on invalid UTF-8).
    pub fn decode(&self, _ids: &[u32]) -> String {
        todo!()
    }
    pub fn vocab_size(&self) -> usize {
        todo!()
    }
    /// End-of-generation ids (EOS, EOT, `<|im_end|>`, ...).
    pub fn eog_ids(&self) -> &[u32] {
        todo!()
    }
    /// Token text as stored in the vocabulary (byte-level alphabet) and its GGUF type.
    pub fn token_type(&self, _id: u32) -> u32 {
        todo!()
    }
    /// The raw bytes of one token (for streaming decode and token classes).
    pub fn token_bytes(&self, _id: u32) -> Vec<u8> {
        todo!()
    }
}

/// Streams decoded text token by token, emitting only complete UTF-8.
pub struct StreamDecoder {}
