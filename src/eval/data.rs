//! Evaluation data from the pinned packages (fetched on first use): AlpacaEval instructions
//! (with the reference answers, for chat-formatted text), GSM8K cases and LongBench-Write
//! prompts.

use crate::error::{Error, Result};
use crate::fetch;

/// One AlpacaEval item: the instruction and the baseline model's answer.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AlpacaItem {
    pub instruction: String,
    pub output: String,
}

/// The first `n` AlpacaEval instructions (all 805 if `n` is larger).
pub fn alpaca(n: usize) -> Result<Vec<AlpacaItem>> {
    let path = fetch::data_file("alpaca-eval")?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut items: Vec<AlpacaItem> = serde_json::from_str(&text).map_err(|e| {
        Error::Fetch(format!(
            "{}: not the AlpacaEval JSON list: {e}",
            path.display()
        ))
    })?;
    items.truncate(n);
    Ok(items)
}

/// One GSM8K case: the word problem and its numeric answer.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct GsmCase {
    pub prompt: String,
    pub expected: serde_json::Value,
}

impl GsmCase {
    /// The expected answer as a normalised number string.
    pub fn answer(&self) -> String {
        let raw = match &self.expected {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        super::metrics::normalise_number(raw.trim())
    }
}

/// The first `n` GSM8K cases (100 in the package).
pub fn gsm8k(n: usize) -> Result<Vec<GsmCase>> {
    jsonl("gsm8k", n)
}

/// One LongBench-Write prompt: the writing request, its category and the length it asks for.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct WritePrompt {
    pub prompt: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Words the request asks for.
    pub length: usize,
}

/// The first `n` English LongBench-Write prompts (60 in the package).
pub fn longbench_write(n: usize) -> Result<Vec<WritePrompt>> {
    jsonl("longbench-write", n)
}

/// The first `n` records of a data set stored as JSON lines.
fn jsonl<T: serde::de::DeserializeOwned>(name: &str, n: usize) -> Result<Vec<T>> {
    let path = fetch::data_file(name)?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Fetch(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// The Paul Graham essays concatenated in name order (the haystack and long-prose text).
pub fn essays() -> Result<String> {
    let mut out = String::new();
    for name in fetch::essay_names()? {
        out.push_str(fetch::essay_text(&name)?.trim());
        out.push_str("\n\n");
    }
    Ok(out)
}
