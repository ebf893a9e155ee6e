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
    #[error("unsupported architecture '{0}' (supported: {known})", known = crate::model::arch::names().join(", "))]
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
