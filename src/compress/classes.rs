//! Token classes from the vocabulary (FASTGEN.md 5.1 and 5.2).
//!
//! A class is a set of flags. `CONTROL` and `PUNCT` belong to a vocabulary id; `SINK` belongs
//! to a position (the first `sink_tokens` positions of a sequence, the attention sink). The
//! `special` part keeps `CONTROL | SINK`, the `punct` part `PUNCT`, the `sink` part `SINK`.

use crate::tokenizer::{token_type, Tokenizer};
use unicode_categories::UnicodeCategories;

/// The token is a control token of the vocabulary (`<|im_start|>`, `<|endoftext|>`, ...).
pub const CONTROL: u8 = 1;
/// The token's text, trimmed of whitespace, is Unicode punctuation only.
pub const PUNCT: u8 = 2;
/// The position is one of the first `sink_tokens` of the sequence.
pub const SINK: u8 = 4;

/// Flags of every vocabulary id (`CONTROL`, `PUNCT`; never `SINK`).
#[derive(Debug, Clone)]
pub struct TokenClasses {
    flags: Vec<u8>, // [vocab]
}

impl TokenClasses {
    /// Classes of a model's vocabulary. `punct_whitespace` also counts whitespace-only tokens
    /// (spaces, newlines) as punctuation, as cold-compress does; FastGen's default leaves
    /// them out.
    pub fn from_tokenizer(tok: &Tokenizer, punct_whitespace: bool) -> TokenClasses {
        let [without, with] = TokenClasses::both(tok);
        if punct_whitespace {
            with
        } else {
            without
        }
    }

    /// Both settings of `punct_whitespace`, `[false, true]`, from one pass over the
    /// vocabulary (the pass is the costly part: 13 ms on SmolLM2, 29 ms on Qwen2.5).
    pub fn both(tok: &Tokenizer) -> [TokenClasses; 2] {
        let n = tok.vocab_size();
        let (mut without, mut with) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for id in 0..n as u32 {
            let (a, b) = if tok.token_type(id) == token_type::CONTROL {
                (CONTROL, CONTROL)
            } else {
                match std::str::from_utf8(&tok.token_bytes(id)) {
                    Ok(text) => {
                        let punct = |ws| if is_punct_text(text, ws) { PUNCT } else { 0 };
                        (punct(false), punct(true))
                    }
                    Err(_) => (0, 0),
                }
            };
            without.push(a);
            with.push(b);
        }
        [without, with].map(|flags| TokenClasses { flags })
    }

    /// Classes given directly (tests, other tokenizers): one flag byte per id.
    pub fn from_flags(flags: Vec<u8>) -> TokenClasses {
        TokenClasses { flags }
    }

    /// Flags of `id`; 0 for ids outside the vocabulary.
    pub fn of(&self, id: u32) -> u8 {
        self.flags.get(id as usize).copied().unwrap_or(0)
    }

    /// Flags of token `id` at sequence position `pos`.
    pub fn at(&self, id: u32, pos: usize, sink_tokens: usize) -> u8 {
        self.of(id) | if pos < sink_tokens { SINK } else { 0 }
    }

    pub fn vocab_size(&self) -> usize {
        self.flags.len()
    }

    /// How many ids carry `flag`.
    pub fn count(&self, flag: u8) -> usize {
        self.flags.iter().filter(|&&f| f & flag != 0).count()
    }
}

/// FASTGEN.md 5.2: trim whitespace; punctuation if what remains is non-empty and every
/// character is Unicode punctuation (general category P*). With `include_whitespace`, a
/// non-empty whitespace-only text counts too.
pub fn is_punct_text(text: &str, include_whitespace: bool) -> bool {
    let t = text.trim();
    if t.is_empty() {
        return include_whitespace && !text.is_empty();
    }
    t.chars().all(|c| c.is_punctuation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_by_unicode_category() {
        for p in [
            ".", ",", " :", "?\n", "!", ";", "\"", "'", "(", ")]", "...", "—", "«", "、",
        ] {
            assert!(is_punct_text(p, false), "{p:?}");
        }
        // Symbols are not punctuation (Unicode Sm/Sc/Sk), nor are words or mixed text.
        for p in ["+", "$", "=", "^", "a.", " the", "1", ".a", ""] {
            assert!(!is_punct_text(p, false), "{p:?}");
        }
    }

    #[test]
    fn whitespace_only_is_a_setting() {
        for w in [" ", "\n", "\n\n", "\t "] {
            assert!(!is_punct_text(w, false), "{w:?}");
            assert!(is_punct_text(w, true), "{w:?}");
        }
        assert!(!is_punct_text("", true));
    }

    #[test]
    fn sink_is_a_position_class() {
        let c = TokenClasses::from_flags(vec![0, CONTROL, PUNCT]);
        assert_eq!(c.at(0, 0, 1), SINK);
        assert_eq!(c.at(0, 1, 1), 0);
        assert_eq!(c.at(1, 3, 4), CONTROL | SINK);
        assert_eq!(c.at(2, 5, 0), PUNCT);
        assert_eq!(c.at(99, 5, 0), 0);
        assert_eq!(c.count(CONTROL | PUNCT), 2);
    }
}
