//! `fastgen fetch`: download the pinned models ahead of time.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct FetchArgs {
    /// Models to fetch: smollm2, qwen2.5-0.5b, gemma3-270m, or all (default: smollm2).
    names: Vec<String>,
}

pub fn run(a: FetchArgs) -> Result<()> {
    let names: Vec<&str> = if a.names.is_empty() {
        vec![fastgen::fetch::DEFAULT_MODEL]
    } else {
        a.names.iter().map(String::as_str).collect()
    };
    fastgen::fetch::fetch_cli(&names)?;
    Ok(())
}
