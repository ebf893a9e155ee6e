//! The library's one error type. Everything read from a file, a request or the command line
//! that is wrong ends here, with a message naming the problem; nothing in the library panics
//! on bad input.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{0}: not a GGUF file")]
    NotGguf(String),
    /// The file claims to be GGUF but its contents are inconsistent or truncated.
    #[error("malformed GGUF: {0}")]
    Gguf(String),
    #[error("unsupported architecture '{0}' (general.architecture; supported: {known})", known = crate::model::arch::names().join(", "))]
    UnsupportedArch(String),
    #[error("unsupported tensor type {0}")]
    UnsupportedTensorType(String),
    #[error("model metadata: {0}")]
    Metadata(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("prompt of {tokens} tokens does not fit in the context of {ctx} tokens")]
    ContextOverflow { tokens: usize, ctx: usize },
    /// The forward pass gave NaN or infinite logits: broken weights (or a kernel bug), never
    /// bad input. `step` counts generated tokens (0: the logits of the prompt's last token).
    #[error(
        "the model produced {what} logits at step {step} of generation: do the weights hold \
         NaN or inf?"
    )]
    NonFiniteLogits { what: &'static str, step: usize },
    #[error("fetch: {0}")]
    Fetch(String),
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// Running evaluation programs (HumanEval's answers): no Python 3, or no child process.
    #[error("sandbox: {0}")]
    Sandbox(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Longest text from a file or a request echoed in an error, in characters.
pub const SHOWN_CHARS: usize = 200;

/// Text from a file or a request, fit for a one-line error: control characters escaped
/// (`\n`, `\u{1b}`), and cut after [`SHOWN_CHARS`] characters with the full length noted.
pub fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push_str(&format!("... ({} bytes in all)", text.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_is_one_short_line() {
        assert_eq!(shown("llama"), "llama");
        assert_eq!(shown("a\nb\u{1b}[31m\t"), "a\\nb\\u{1b}[31m\\t");
        let long = "x".repeat(100_000);
        let s = shown(&long);
        assert!(s.starts_with(&"x".repeat(SHOWN_CHARS)));
        assert!(s.ends_with("... (100000 bytes in all)"), "{s}");
        // Cut by characters, not bytes: 200 two-byte characters, then the note.
        let e = shown(&"é".repeat(300));
        assert_eq!(
            e,
            format!("{}... (600 bytes in all)", "é".repeat(SHOWN_CHARS))
        );
    }
}
